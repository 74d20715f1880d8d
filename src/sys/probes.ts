/**
 * Kernel and filesystem feature probes, memoised: a probe runs once per process (per directory
 * for the per-directory ones). Drivers ask these before they pick a mount strategy, and
 * `unionctl info` reports them.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FSCONFIG, closeFd, ficlone, fsconfig, fsmount, fsopen, statfs } from './syscalls.js';
import { mountsUnder, readMountInfo } from './mountinfo.js';
import type { MountInfo } from './mountinfo.js';

const cache = new Map<string, unknown>();

function memo<T>(key: string, probe: () => T): T {
  if (!cache.has(key)) cache.set(key, probe());
  return cache.get(key) as T;
}

export function clearProbeCache(): void {
  cache.clear();
}

/** Filesystem types the kernel knows now (/proc/filesystems). */
export function hasFilesystem(name: string): boolean {
  return memo(`fs:${name}`, () =>
    readFileSync('/proc/filesystems', 'utf8')
      .split('\n')
      .some((line) => line.split('\t').pop() === name),
  );
}

export function overlaySupported(): boolean {
  return hasFilesystem('overlay');
}

export interface OverlayParams {
  index?: boolean;
  redirectDir?: boolean | string;
  metacopy?: boolean;
  xino?: string;
  /** The module has an `index` parameter at all (Docker then mounts with index=off). */
  hasIndexParam: boolean;
}

function readParam(name: string): string | undefined {
  const p = `/sys/module/overlay/parameters/${name}`;
  return existsSync(p) ? readFileSync(p, 'utf8').trim() : undefined;
}

const yesNo = (v: string | undefined) => (v === undefined ? undefined : v === 'Y' || v === 'y' || v === 'on');

/** The overlay module's parameters (/sys/module/overlay/parameters). */
export function overlayModuleParams(): OverlayParams {
  return memo('overlay-params', () => {
    const redirect = readParam('redirect_dir');
    return {
      index: yesNo(readParam('index')),
      redirectDir: redirect === undefined ? undefined : redirect === 'Y' || redirect === 'N' ? redirect === 'Y' : redirect,
      metacopy: yesNo(readParam('metacopy')),
      xino: readParam('xino_auto'),
      hasIndexParam: readParam('index') !== undefined,
    };
  });
}

/**
 * Does readdir on `dir`'s filesystem report file types (d_type)? overlayfs needs it. node's
 * Dirent is built from d_type: an entry whose type is DT_UNKNOWN has every is*() false.
 */
export function supportsDType(dir: string): boolean {
  return memo(`dtype:${statfs(dir).type}:${dir}`, () => {
    const tmp = mkdtempSync(join(dir, '.dtype-probe-'));
    try {
      writeFileSync(join(tmp, 'f'), '');
      const [entry] = readdirSync(tmp, { withFileTypes: true });
      return entry.isFile();
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}

/** The new mount API (fsopen & co., Linux ≥ 5.2) works for overlay. */
export function newMountApiSupported(): boolean {
  return memo('new-mount-api', () => {
    if (!overlaySupported()) return false;
    try {
      closeFd(fsopen('overlay'));
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * Overlay accepts `lowerdir+` (one lower layer per fsconfig call, Linux ≥ 6.8): the way to mount
 * more layers than fit one page of mount data. Probed with a real mount of two empty dirs.
 */
export function overlayLowerdirPlusSupported(): boolean {
  return memo('lowerdir+', () => {
    if (!newMountApiSupported()) return false;
    const tmp = mkdtempSync('/tmp/unionctl-probe-');
    let fd = -1;
    try {
      for (const d of ['a', 'b']) mkdirSync(join(tmp, d));
      fd = fsopen('overlay');
      fsconfig(fd, FSCONFIG.SET_STRING, 'lowerdir+', join(tmp, 'a'));
      fsconfig(fd, FSCONFIG.SET_STRING, 'lowerdir+', join(tmp, 'b'));
      fsconfig(fd, FSCONFIG.CMD_CREATE, null, null);
      closeFd(fsmount(fd)); // detached mount: closing the fd unmounts it
      return true;
    } catch {
      return false;
    } finally {
      if (fd >= 0) closeFd(fd);
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}

/** OVL_MAX_STACK in fs/overlayfs: the kernel refuses a 501st lower layer with EINVAL. */
export function overlayMaxLowerLayers(): number {
  return 500;
}

export function pageSize(): number {
  return memo('pagesize', () => Number(execFileSync('getconf', ['PAGESIZE']).toString().trim()) || 4096);
}

/** The backing filesystem's name as Docker prints it ("extfs", "xfs", "tmpfs", …). */
export function backingFs(dir: string): string {
  return statfs(dir).typeName;
}

/** FICLONE works between two files in `dir` (btrfs, xfs with reflink=1). */
export function reflinkSupported(dir: string): boolean {
  return memo(`reflink:${dir}`, () => {
    const tmp = mkdtempSync(join(dir, '.reflink-probe-'));
    try {
      writeFileSync(join(tmp, 'a'), 'x');
      const src = openSync(join(tmp, 'a'), 'r');
      const dst = openSync(join(tmp, 'b'), 'w');
      try {
        ficlone(dst, src);
        return true;
      } catch {
        return false;
      } finally {
        closeSync(src);
        closeSync(dst);
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}

/** The mount holding `path` (the deepest mount point that is a prefix of it). */
export function mountOf(path: string, mounts: MountInfo[] = readMountInfo()): MountInfo | undefined {
  let best: MountInfo | undefined;
  for (const m of mounts) {
    const prefix = m.mountPoint === '/' ? '/' : m.mountPoint + '/';
    if ((path === m.mountPoint || path.startsWith(prefix)) && (!best || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

/** xfs mounted with project quota enforcement (prjquota / pquota), which overlay2.size needs. */
export function projectQuotaSupported(dir: string): boolean {
  const m = mountOf(dir);
  if (!m || m.fsType !== 'xfs') return false;
  return m.superOptions.some((o) => o === 'prjquota' || o === 'pquota');
}

/** Running inside a user namespace (overlay then needs `userxattr`). */
export function inUserNamespace(): boolean {
  return memo('userns', () => {
    try {
      const map = readFileSync('/proc/self/uid_map', 'utf8').trim().split(/\s+/);
      return !(map[0] === '0' && map[1] === '0' && map[2] === '4294967295');
    } catch {
      return false;
    }
  });
}

export { mountsUnder };
