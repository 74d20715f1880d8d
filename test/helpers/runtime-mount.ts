/**
 * Mounts a snapshotter's mounts the way containerd 1.6 does (mount/mount_linux.go), so a test can
 * check what a runtime sees without containerd: `bind` is a (recursive) bind, remounted read-only
 * for `ro`; a `fuse3.<subtype>` mount runs the mount helper (`mount.fuse3 <source> <target> -o …
 * -t <subtype>`); anything else is mount(2) of the type with the options as data, `ro` as the flag.
 * Unmounting is umount2, as containerd's; for FUSE it then waits for the serving process to exit.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import type { MountSpec } from '../../src/graph/driver.js';
import { MS, mount, umount2 } from '../../src/sys/index.js';
import { eventually } from './wait.js';

export function mountLikeContainerd(spec: MountSpec, target: string): void {
  if (spec.type.startsWith('fuse3.')) {
    const args = [spec.source, target, ...spec.options.flatMap((o) => ['-o', o]), '-t', spec.type.slice('fuse3.'.length)];
    execFileSync('mount.fuse3', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    return;
  }
  const ro = spec.options.includes('ro');
  const data = spec.options.filter((o) => !['ro', 'rw', 'rbind', 'bind'].includes(o)).join(',');
  if (spec.type === 'bind') {
    mount(spec.source, target, '', MS.BIND | (spec.options.includes('rbind') ? MS.REC : 0));
    if (ro) mount('', target, '', MS.BIND | MS.REMOUNT | MS.RDONLY);
    return;
  }
  mount(spec.source, target, spec.type, ro ? MS.RDONLY : 0, data || undefined);
}

/** The fuse-overlayfs processes whose command line names something below `dir`. */
export function fuseProcessesNaming(dir: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
      if ((argv[0] ?? '').endsWith('fuse-overlayfs') && argv.some((a) => a === dir || a.includes(`${dir}/`))) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

export async function unmountLikeContainerd(target: string): Promise<void> {
  umount2(target);
  await eventually(`no fuse-overlayfs process serves ${target} any more`, () => fuseProcessesNaming(target).length === 0);
}

/** Mounts the one mount given at `target` as containerd does, runs `fn`, unmounts (also when `fn` throws). */
export async function withRuntimeMount(mounts: MountSpec[], target: string, fn: () => void): Promise<void> {
  if (mounts.length !== 1) throw new Error(`expected one mount, got ${JSON.stringify(mounts)}`);
  mountLikeContainerd(mounts[0]!, target);
  try {
    fn();
  } finally {
    await unmountLikeContainerd(target);
  }
}
