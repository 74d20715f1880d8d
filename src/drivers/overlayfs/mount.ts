/**
 * Mounting an overlay2 layer's union, in the three ways Docker's format allows:
 *
 * 1. absolute paths in one mount(2) data string (what Docker does while it fits a page);
 * 2. the same with paths relative to the home dir (`l/<LID>`, 28 bytes per lower), mounted from
 *    inside the home dir — Docker's fallback when the absolute form is longer than a page;
 * 3. the new mount API (fsopen/fsconfig/fsmount/move_mount, kernel ≥ 6.8) with one `lowerdir+`
 *    call per layer, for chains whose relative form does not fit a page either (≈140+ layers) —
 *    this also lifts Docker's 128-layer cap to the kernel's 500.
 */
import {
  assertDirsInside,
  AT_FDCWD,
  closeFd,
  FSCONFIG,
  fsconfig,
  fsmount,
  fsopen,
  mount,
  MOVE_MOUNT_F_EMPTY_PATH,
  moveMount,
} from '../../sys/index.js';
import { UnionctlError } from '../../errors.js';
import { join, relative } from 'node:path';
import type { MountSpec } from '../../graph/driver.js';

/** The branches of one union, as paths relative to the overlay2 home ("l/<LID>", "<id>/diff"). */
export interface UnionPaths {
  /** lowerdir entries, top first. A committed layer's own diff comes first here. */
  lowers: string[];
  /** Present for a writable union. */
  upper?: string;
  work?: string;
}

export interface MountSettings {
  /** The module has an `index` parameter: mount with index=off, as Docker does. */
  indexOff: boolean;
  /** In a user namespace overlay must use user.overlay.* xattrs. */
  userxattr: boolean;
  /** SELinux context for every file of the mount. */
  mountLabel?: string;
  pageSize: number;
  /** fsopen & co. and overlay's `lowerdir+` key are available. */
  newMountApi: boolean;
}

export type MountMethod = 'absolute' | 'relative' | 'new-api';

/** The options every union of this kernel is mounted with: index=off (as Docker does), userxattr (in a user namespace). */
function featureOptions(settings: Pick<MountSettings, 'indexOff' | 'userxattr'>): string[] {
  return [...(settings.indexOff ? ['index=off'] : []), ...(settings.userxattr ? ['userxattr'] : [])];
}

/**
 * Docker's mount data: "[index=off,][userxattr,]lowerdir=a:b[,upperdir=u,workdir=w][,context="label"]".
 * `base` is prefixed to every path ('' keeps them relative to the home).
 */
export function overlayMountData(
  paths: UnionPaths,
  settings: Pick<MountSettings, 'indexOff' | 'userxattr' | 'mountLabel'>,
  base: string,
): string {
  // Plain concatenation: both parts are clean paths we made (path.join's normalising showed up in profiles).
  const prefix = base === '' ? '' : `${base.replace(/\/+$/, '')}/`;
  const at = (p: string) => prefix + p;
  let data = [...featureOptions(settings), `lowerdir=${paths.lowers.map(at).join(':')}`].join(',');
  if (paths.upper !== undefined && paths.work !== undefined) data += `,upperdir=${at(paths.upper)},workdir=${at(paths.work)}`;
  // label.FormatMountLabel quotes the label (Go %q): context="system_u:object_r:…"
  if (settings.mountLabel) data += `,context=${JSON.stringify(settings.mountLabel)}`;
  return data;
}

/**
 * The mounts a runtime makes itself for a union of host directories (containerd's overlayfs
 * snapshotter's shapes): a writable union with lowers is one overlay; one without lowers is a
 * bind of the upper; a read-only union is a read-only bind of its one dir, or an overlay of two
 * or more lowers (overlayfs needs two lowers when there is no upper).
 */
export function overlayMountSpecs(
  dirs: { lowers: string[]; upper?: string; work?: string },
  settings: Pick<MountSettings, 'indexOff' | 'userxattr'>,
): MountSpec[] {
  const bind = (source: string, mode: 'rw' | 'ro'): MountSpec[] => [{ type: 'bind', source, options: [mode, 'rbind'] }];
  const flags = featureOptions(settings);
  const lowerdir = `lowerdir=${dirs.lowers.join(':')}`;
  if (dirs.upper !== undefined) {
    if (dirs.lowers.length === 0 || dirs.work === undefined) return bind(dirs.upper, 'rw');
    return [{ type: 'overlay', source: 'overlay', options: [...flags, `workdir=${dirs.work}`, `upperdir=${dirs.upper}`, lowerdir] }];
  }
  if (dirs.lowers.length === 1) return bind(dirs.lowers[0]!, 'ro');
  return [{ type: 'overlay', source: 'overlay', options: [...flags, lowerdir] }];
}

/** The method Docker's rules pick for this union: the first whose data fits a page. */
export function chooseMountMethod(home: string, paths: UnionPaths, settings: MountSettings): MountMethod {
  // mount(2) copies at most one page of data, NUL included.
  const fits = (data: string) => Buffer.byteLength(data) <= settings.pageSize - 1;
  if (fits(overlayMountData(paths, settings, home))) return 'absolute';
  if (fits(overlayMountData(paths, settings, ''))) return 'relative';
  if (settings.newMountApi) return 'new-api';
  throw new UnionctlError(
    'UNSUPPORTED',
    `cannot mount a union of ${paths.lowers.length} lower layers: the mount data does not fit a ${settings.pageSize}-byte page even with relative paths`,
    {
      hint: 'this kernel lacks the new mount API (fsopen, overlay lowerdir+; Linux ≥ 6.8) that deep chains need; flatten the image',
    },
  );
}

/**
 * Mounts the union at `target` (an existing empty dir inside `home`) and returns the method used,
 * after assertUnionInside: CORRUPT when a path of the union or the target leads outside the home.
 * Errors name the target and the method, with the kernel's errno.
 */
export function mountUnion(home: string, target: string, paths: UnionPaths, settings: MountSettings): MountMethod {
  assertUnionInside(home, target, paths);
  return mountOverlay(home, target, paths, settings);
}

/**
 * The mount itself, without mountUnion's checks of the paths: for a caller that owns every
 * directory involved (the benchmark's bare-mount floor, whose target is outside any store).
 */
export function mountOverlay(home: string, target: string, paths: UnionPaths, settings: MountSettings): MountMethod {
  const method = chooseMountMethod(home, paths, settings);
  try {
    if (method === 'absolute') mount('overlay', target, 'overlay', 0, overlayMountData(paths, settings, home));
    else if (method === 'relative') mountFromHome(home, target, overlayMountData(paths, settings, ''));
    else mountWithNewApi(home, target, paths, settings);
  } catch (e) {
    throw new UnionctlError(
      'SYSCALL',
      `cannot mount overlay at ${target} (${paths.lowers.length} lower layers, ${method} paths): ${(e as Error).message}`,
      {
        cause: e,
        hint: 'check dmesg for the overlayfs message explaining the refusal',
      },
    );
  }
  return method;
}

/**
 * The kernel follows symlinks in every path of the mount data and in the target: each must stay
 * inside the home before it is handed over, or a damaged layer (its work/ a symlink to some other
 * directory, which overlayfs would empty) makes the mount write outside the store. The layout's
 * only symlinks are overlay2's `l/<LID>` links, which may be followed as long as they stay inside
 * the home; nothing else may be a symlink. CORRUPT names the first path that does not fit.
 */
export function assertUnionInside(home: string, target: string, paths: UnionPaths): void {
  const mountPoint = relative(home, target);
  const own = [paths.upper, paths.work, mountPoint].filter((p): p is string => p !== undefined);
  const role = (p: string) => (p === mountPoint ? 'mount point' : p === paths.upper ? 'overlay upper dir' : 'overlay work dir');
  assertDirsInside(home, own, 'no-symlinks', role);
  assertDirsInside(
    home,
    paths.lowers.filter((p) => !p.startsWith('l/')),
    'no-symlinks',
    'overlay lower dir',
  );
  assertDirsInside(
    home,
    paths.lowers.filter((p) => p.startsWith('l/')),
    'beneath',
    'overlay lower dir',
  );
}

/**
 * mount(2) with paths relative to the home dir: the kernel resolves them against the process's
 * working directory, so chdir into the home, mount, chdir back. All three calls are synchronous
 * (mount is a koffi call), so no other JavaScript of this process runs while the working directory
 * is changed. (What could still see it is an async fs call with a *relative* path already handed to
 * libuv's thread pool; unionctl itself only uses absolute paths.) Docker does the same in a
 * re-exec'd child (mountFrom) because Go cannot chdir one thread safely.
 */
function mountFromHome(home: string, target: string, data: string): void {
  const previous = process.cwd();
  process.chdir(home);
  try {
    mount('overlay', target, 'overlay', 0, data);
  } finally {
    process.chdir(previous);
  }
}

/**
 * The new mount API: one fsconfig call per lower layer (`lowerdir+`, absolute paths), so the
 * number of layers is bounded by the kernel's stack limit (500), not by a page of mount data.
 */
function mountWithNewApi(home: string, target: string, paths: UnionPaths, settings: MountSettings): void {
  const fsFd = fsopen('overlay');
  let mountFd = -1;
  try {
    fsconfig(fsFd, FSCONFIG.SET_STRING, 'source', 'overlay'); // what mount(2) shows as the source, too
    if (settings.indexOff) fsconfig(fsFd, FSCONFIG.SET_STRING, 'index', 'off');
    if (settings.userxattr) fsconfig(fsFd, FSCONFIG.SET_FLAG, 'userxattr', null);
    for (const lower of paths.lowers) fsconfig(fsFd, FSCONFIG.SET_STRING, 'lowerdir+', join(home, lower));
    if (paths.upper !== undefined && paths.work !== undefined) {
      fsconfig(fsFd, FSCONFIG.SET_STRING, 'upperdir', join(home, paths.upper));
      fsconfig(fsFd, FSCONFIG.SET_STRING, 'workdir', join(home, paths.work));
    }
    // fsconfig takes the raw value: no quoting as in the mount(2) string.
    if (settings.mountLabel) fsconfig(fsFd, FSCONFIG.SET_STRING, 'context', settings.mountLabel);
    fsconfig(fsFd, FSCONFIG.CMD_CREATE, null, null);
    mountFd = fsmount(fsFd);
    moveMount(mountFd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
  } finally {
    if (mountFd >= 0) closeFd(mountFd);
    closeFd(fsFd);
  }
}
