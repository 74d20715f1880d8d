/**
 * The two ways to mount the same overlay2 layers without unionctl's store: a bare kernel overlayfs
 * mount (the floor for mount latency: the very mount(2) — or fsopen/fsconfig for chains too long
 * for a page — that overlay2 issues, minus the store's locks, records and reference counts), and
 * fuse-overlayfs (the userspace overlay rootless podman uses) given the same directories.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { probeOverlay2 } from '../../src/drivers/overlay2/features.js';
import { mountOverlay, type UnionPaths } from '../../src/drivers/overlayfs/mount.js';
import { umount2 } from '../../src/sys/index.js';
import { sh } from '../measure.js';

/**
 * The union of overlay2 layer `id` as paths relative to the overlay2 home, read from the on-disk
 * format (DESIGN.md §4): its own diff on top, then the `l/<LID>` entries of its `lower` file.
 */
export function overlay2LowersOf(home: string, id: string): string[] {
  let lower = '';
  try {
    lower = readFileSync(join(home, id, 'lower'), 'utf8').trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; // a base layer has no lower file
  }
  return [join(id, 'diff'), ...(lower === '' ? [] : lower.split(':'))];
}

/**
 * A function that mounts `paths` (relative to `home`) at a target the way overlay2 would and returns
 * the method used. The kernel features are probed here, once, so a timed mount is only the mount.
 */
export function bareOverlayMounter(home: string): (target: string, paths: UnionPaths) => string {
  const settings = probeOverlay2(home);
  return (target, paths) => {
    mkdirSync(target, { recursive: true });
    return mountOverlay(home, target, paths, settings);
  };
}

export function bareUnmount(target: string): void {
  umount2(target, 0);
}

/**
 * fuse-overlayfs of the same branches (absolute paths). It returns once the filesystem is mounted
 * and its daemon has gone to the background.
 */
export function fuseOverlayMount(home: string, target: string, paths: UnionPaths): void {
  mkdirSync(target, { recursive: true });
  let opts = `lowerdir=${paths.lowers.map((p) => join(home, p)).join(':')}`;
  if (paths.upper !== undefined && paths.work !== undefined)
    opts += `,upperdir=${join(home, paths.upper)},workdir=${join(home, paths.work)}`;
  sh('fuse-overlayfs', ['-o', opts, target]);
}

export function fuseUnmount(target: string): void {
  sh('fusermount3', ['-u', target]);
}
