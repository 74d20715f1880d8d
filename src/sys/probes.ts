/**
 * Kernel and filesystem feature probes, memoised: a probe runs once per process (once per
 * directory for the per-directory ones; clearProbeCache() forgets everything). Drivers ask these
 * before they pick a mount strategy, and `unionctl info` reports them.
 */
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { removeEntriesOfDeadProcesses } from './process.js';
import {
  DT,
  FSCONFIG,
  SC_PAGESIZE,
  closeFd,
  ficlone,
  fsconfig,
  fsmount,
  fsopen,
  lgetxattr,
  lsetxattr,
  readdirTypes,
  statfs,
  sysconf,
} from './syscalls.js';
import { readMountInfo } from './mountinfo.js';
import type { MountInfo } from './mountinfo.js';

const cache = new Map<string, unknown>();

function memo<T>(key: string, probe: () => T): T {
  if (!cache.has(key)) cache.set(key, probe());
  return cache.get(key) as T;
}

export function clearProbeCache(): void {
  cache.clear();
}

/** A filesystem type the kernel knows now (/proc/filesystems: overlay, fuse, xfs, …). */
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
  /** Y/N on current kernels; older ones had on/off/follow/nofollow strings */
  redirectDir?: boolean | string;
  metacopy?: boolean;
  /** the xino_auto parameter (Y/N) */
  xino?: string;
  /** The module has an `index` parameter at all (Docker then mounts with index=off). */
  hasIndexParam: boolean;
}

function readOverlayParam(name: string): string | undefined {
  const p = `/sys/module/overlay/parameters/${name}`;
  return existsSync(p) ? readFileSync(p, 'utf8').trim() : undefined;
}

function yesNo(v: string | undefined): boolean | undefined {
  return v === undefined ? undefined : v === 'Y' || v === 'y' || v === 'on';
}

/** The overlay module's parameters (/sys/module/overlay/parameters); all undefined if not loaded. */
export function overlayModuleParams(): OverlayParams {
  return memo('overlay-params', () => {
    const index = readOverlayParam('index');
    const redirect = readOverlayParam('redirect_dir');
    return {
      index: yesNo(index),
      redirectDir: redirect === 'Y' || redirect === 'N' ? redirect === 'Y' : redirect,
      metacopy: yesNo(readOverlayParam('metacopy')),
      xino: readOverlayParam('xino_auto'),
      hasIndexParam: index !== undefined,
    };
  });
}

/**
 * A temp dir inside `dir` for a probe (`<prefix><pid>-XXXXXX`), removed afterwards whatever
 * happens. One left by a process killed mid-probe is removed by the next probe of the same kind
 * in that dir (every command of a driver probes its home when it opens the store), before it makes its own.
 */
export function withProbeDir<T>(dir: string, prefix: string, probe: (tmp: string) => T): T {
  removeEntriesOfDeadProcesses(dir, new RegExp(`^${prefix.replace(/[.]/g, '\\.')}(\\d+)-`));
  const tmp = mkdtempSync(join(dir, `${prefix}${process.pid}-`));
  try {
    return probe(tmp);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Does readdir on `dir`'s filesystem fill in d_type (overlayfs needs it; xfs made with ftype=0
 * does not)? Checked on raw readdir(3): node's readdir({withFileTypes}) cannot answer this,
 * because for DT_UNKNOWN it lstat()s the entry and returns a Dirent with the real type.
 */
export function supportsDType(dir: string): boolean {
  return memo(`dtype:${resolve(dir)}`, () =>
    withProbeDir(dir, '.dtype-probe-', (tmp) => {
      writeFileSync(join(tmp, 'f'), '');
      return readdirTypes(tmp).every((entry) => entry.type !== DT.UNKNOWN);
    }),
  );
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
 * more layers than fit one page of mount data. Probed with a real, detached mount of two empty
 * dirs made in `dir` (a driver gives its home: nothing is written outside the store); it is never
 * attached anywhere and goes away with its fd.
 */
export function overlayLowerdirPlusSupported(dir = tmpdir()): boolean {
  return memo('lowerdir+', () => {
    if (!newMountApiSupported()) return false;
    return withProbeDir(dir, '.lowerdir-probe-', (tmp) => {
      for (const d of ['a', 'b']) mkdirSync(join(tmp, d));
      const fd = fsopen('overlay');
      try {
        fsconfig(fd, FSCONFIG.SET_STRING, 'lowerdir+', join(tmp, 'a'));
        fsconfig(fd, FSCONFIG.SET_STRING, 'lowerdir+', join(tmp, 'b'));
        fsconfig(fd, FSCONFIG.CMD_CREATE, null, null);
        closeFd(fsmount(fd));
        return true;
      } catch {
        return false;
      } finally {
        closeFd(fd);
      }
    });
  });
}

/**
 * OVL_MAX_STACK in fs/overlayfs/params.h: the kernel refuses a 501st lower layer with EINVAL
 * (checked on 6.18). A constant rather than a probe: finding it out takes 501 directories.
 */
export function overlayMaxLowerLayers(): number {
  return 500;
}

/** The page size, which caps the mount(2) data string (overlay2's lowerdir list). */
export function pageSize(): number {
  return memo('pagesize', () => sysconf(SC_PAGESIZE));
}

/** The backing filesystem's name as Docker prints it ("extfs", "xfs", "tmpfs", …). */
export function backingFs(dir: string): string {
  return statfs(dir).typeName;
}

/** FICLONE works between two files in `dir` (btrfs, xfs with reflink=1). */
export function reflinkSupported(dir: string): boolean {
  return memo(`reflink:${resolve(dir)}`, () =>
    withProbeDir(dir, '.reflink-probe-', (tmp) => {
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
    }),
  );
}

/** The mount holding `path`: the deepest mount point that is `path` or one of its parents. */
export function mountOf(path: string, mounts: MountInfo[] = readMountInfo()): MountInfo | undefined {
  const want = resolve(path);
  let best: MountInfo | undefined;
  for (const m of mounts) {
    const prefix = m.mountPoint === '/' ? '/' : m.mountPoint + '/';
    const holds = want === m.mountPoint || want.startsWith(prefix);
    // >= : of two mounts on the same point, the later line is the one on top
    if (holds && (!best || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

/** xfs mounted with project quota enforcement (prjquota / pquota), which overlay2.size needs. */
export function projectQuotaSupported(dir: string): boolean {
  return memo(`prjquota:${resolve(dir)}`, () => {
    const m = mountOf(dir);
    if (!m || m.fsType !== 'xfs') return false;
    // the kernel shows "prjquota"; "pquota"/"prjquota" are also accepted at mount time
    return m.superOptions.some((o) => o === 'prjquota' || o === 'pquota');
  });
}

/** Running inside a user namespace (overlay then needs `userxattr`): uid_map is not the full identity map. */
export function inUserNamespace(): boolean {
  return memo('userns', () => {
    try {
      const map = readFileSync('/proc/self/uid_map', 'utf8').trim().split(/\s+/);
      return !(map.length === 3 && map[0] === '0' && map[1] === '0' && map[2] === '4294967295');
    } catch {
      return false;
    }
  });
}

/**
 * The process umask, read without changing it (process.umask() with no argument is deprecated: it
 * writes it twice). Read once: unionctl never changes it.
 */
export function processUmask(): number {
  return memo('umask', () => {
    try {
      const m = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
      if (m !== null) return parseInt(m[1]!, 8);
    } catch {
      /* fall through */
    }
    return 0o777; // unknown: assume everything may be masked, so modes are always set explicitly
  });
}

/** The home if it exists, else its nearest existing ancestor (where the home will be created). */
export function existingDirFor(path: string): string {
  let dir = path;
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

/** A probe's answer that can fail for a reason worth showing (the kernel's errno message). */
export interface ProbeResult {
  ok: boolean;
  error?: string;
}

/**
 * Setting and reading back a `<namespace>.unionctl-probe` xattr on a file in `dir` works (trusted.*
 * needs CAP_SYS_ADMIN in the initial user namespace; user.* needs the filesystem's support). Not
 * memoised: `unionctl doctor` asks once.
 */
export function xattrSupported(dir: string, namespace: 'trusted' | 'user'): ProbeResult {
  return withProbeDir(dir, '.xattr-probe-', (tmp) => {
    const file = join(tmp, 'f');
    writeFileSync(file, '');
    const name = `${namespace}.unionctl-probe`;
    try {
      lsetxattr(file, name, Buffer.from('1'));
      const back = lgetxattr(file, name)?.toString();
      return back === '1' ? { ok: true } : { ok: false, error: `read back ${JSON.stringify(back)}` };
    } catch (e) {
      return { ok: false, error: (e as Error).message };
    }
  });
}

/**
 * Does overlay accept `options` (fsconfig [key, value] pairs, value null for a flag) for a writable
 * union of empty dirs made in `dir` (lower, upper, work)? The test mount is made with the new mount
 * API and never attached anywhere: it goes away with its fd, so nothing is left mounted even if the
 * process dies mid-probe. Undefined (nothing probed) without the new mount API.
 */
export function overlayAccepts(dir: string, options: Array<[string, string | null]>): ProbeResult | undefined {
  if (!newMountApiSupported()) return undefined;
  return withProbeDir(dir, '.overlay-probe-', (tmp) => {
    for (const d of ['lower', 'upper', 'work']) mkdirSync(join(tmp, d));
    const fd = fsopen('overlay');
    try {
      fsconfig(fd, FSCONFIG.SET_STRING, 'lowerdir', join(tmp, 'lower'));
      fsconfig(fd, FSCONFIG.SET_STRING, 'upperdir', join(tmp, 'upper'));
      fsconfig(fd, FSCONFIG.SET_STRING, 'workdir', join(tmp, 'work'));
      for (const [key, value] of options) fsconfig(fd, value === null ? FSCONFIG.SET_FLAG : FSCONFIG.SET_STRING, key, value);
      fsconfig(fd, FSCONFIG.CMD_CREATE, null, null);
      closeFd(fsmount(fd));
      return { ok: true };
    } catch (e) {
      return { ok: false, error: (e as Error).message };
    } finally {
      closeFd(fd);
    }
  });
}
