/**
 * /proc/<pid>/mountinfo: what the kernel says is mounted where, with which options. Used to adopt
 * mounts left by an earlier process, to report a union's branches as the kernel sees them, and by
 * the tests to prove nothing was left mounted.
 */
import { lstatSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { UnionctlError } from '../errors.js';

export interface MountInfo {
  id: number;
  parentId: number;
  major: number;
  minor: number;
  /** root of the mount within its filesystem */
  root: string;
  mountPoint: string;
  mountOptions: string[];
  /** shared:N, master:N, … */
  optionalFields: string[];
  fsType: string;
  source: string;
  superOptions: string[];
}

/**
 * Undoes the kernel's octal escapes (\ooo): space \040, tab \011, newline \012, backslash \134
 * in paths; overlay also escapes ',' (\054) inside its option values.
 */
export function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

const MOUNT_ID = /^\d+$/;
const MAJOR_MINOR = /^(\d+):(\d+)$/;

/**
 * Lines of /proc/<pid>/mountinfo: "<id> <parent> <major>:<minor> <root> <mount point> <options>
 * [optional fields…] - <fs type> <source> <super options>". A line that is not one is refused
 * (CORRUPT) rather than skipped: a mount left out of the table could be taken for unmounted.
 */
export function parseMountInfo(text: string): MountInfo[] {
  const mounts: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const mount = parseMountLine(line);
    if (mount === undefined) {
      throw new UnionctlError('CORRUPT', `mountinfo line ${JSON.stringify(line)} is not in the kernel's format`, {
        hint: 'give the text of /proc/<pid>/mountinfo as the kernel prints it',
      });
    }
    mounts.push(mount);
  }
  return mounts;
}

function parseMountLine(line: string): MountInfo | undefined {
  const sep = line.indexOf(' - ');
  if (sep < 0) return undefined;
  const pre = line.slice(0, sep).split(' ');
  const post = line.slice(sep + 3).split(' ');
  const device = MAJOR_MINOR.exec(pre[2] ?? '');
  if (pre.length < 6 || device === null || !MOUNT_ID.test(pre[0]!) || !MOUNT_ID.test(pre[1]!) || !post[0]) return undefined;
  return {
    id: Number(pre[0]),
    parentId: Number(pre[1]),
    major: Number(device[1]),
    minor: Number(device[2]),
    root: unescapeOctal(pre[3]!),
    mountPoint: unescapeOctal(pre[4]!),
    mountOptions: pre[5]!.split(','),
    optionalFields: pre.slice(6),
    fsType: post[0],
    source: unescapeOctal(post[1] ?? ''),
    superOptions: splitSuperOptions(post.slice(2).join(' ')),
  };
}

/** Super options are comma-separated; a ',' inside a value is shown octal-escaped (\054). */
function splitSuperOptions(s: string): string[] {
  return s === '' ? [] : s.split(',');
}

export function readMountInfo(pid: number | 'self' = 'self'): MountInfo[] {
  return parseMountInfo(readFileSync(`/proc/${pid}/mountinfo`, 'utf8'));
}

/** The topmost mount at exactly `mountPoint`, if any. */
export function findMount(mountPoint: string, mounts: MountInfo[] = readMountInfo()): MountInfo | undefined {
  const want = resolve(mountPoint);
  let found: MountInfo | undefined;
  for (const m of mounts) if (m.mountPoint === want) found = m; // later lines are mounted on top
  return found;
}

/** Something is mounted exactly at `path` (the kernel lists real paths: pass one without symlinks). */
export function isMountPoint(path: string): boolean {
  return findMount(path) !== undefined;
}

/**
 * Is something mounted on `dir`, by the cheap test (isMountPoint reads the mount table)? A mount point's device differs from its parent directory's (the
 * unions here are overlayfs, FUSE and device filesystems, never a bind mount of the same device).
 * A FUSE mount whose server died answers ENOTCONN: still mounted. Two lstat calls: cheap enough
 * for every get and put, unlike reading /proc/self/mountinfo, which grows with every mount.
 */
export function hasMountAt(dir: string): boolean {
  let here;
  try {
    here = lstatSync(dir, { throwIfNoEntry: false });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTCONN') return true;
    throw e;
  }
  if (here === undefined || !here.isDirectory()) return false;
  const parent = lstatSync(dirname(dir), { throwIfNoEntry: false });
  return parent !== undefined && parent.dev !== here.dev;
}

/** Mounts at or below `dir`. */
export function mountsUnder(dir: string, mounts: MountInfo[] = readMountInfo()): MountInfo[] {
  const base = resolve(dir);
  const prefix = base === '/' ? '/' : base + '/';
  return mounts.filter((m) => m.mountPoint === base || m.mountPoint.startsWith(prefix));
}

export interface OverlayOptions {
  /** lower dirs, topmost first, as the kernel shows them (absolute, or relative to the mounter's cwd) */
  lowerdirs: string[];
  /** data-only lower layers (`lowerdir=a::d` or `datadir+=d`, kernel ≥ 6.5), reached only by metacopy redirects */
  datadirs: string[];
  upperdir?: string;
  workdir?: string;
  /** every other option: `index=off` → { index: 'off' }, `userxattr` → { userxattr: true } */
  other: Record<string, string | true>;
}

/**
 * Overlay super options → the branch dirs. What the kernel prints (checked on 6.18):
 * - `lowerdir=/a:/b\134:c` — layers joined by ':'; a ':' inside a path is escaped as `\:` and the
 *   backslash then octal-escaped like every space, tab, newline, backslash and ',' (`\054`);
 * - `lowerdir=/a:/b::/d1::/d2` — data-only layers (kernel ≥ 6.5) follow, each after '::';
 * - a mount made with the new API's `lowerdir+` / `datadir+` (kernel ≥ 6.8) shows one
 *   `lowerdir+=<path>` / `datadir+=<path>` option per layer, with ':' left as is.
 */
export function parseOverlayOptions(superOptions: string[]): OverlayOptions {
  const out: OverlayOptions = { lowerdirs: [], datadirs: [], other: {} };
  for (const opt of superOptions) {
    const eq = opt.indexOf('=');
    const key = eq < 0 ? opt : opt.slice(0, eq);
    const value = eq < 0 ? '' : unescapeOctal(opt.slice(eq + 1));
    if (key === 'lowerdir') addLowerdirList(out, value);
    else if (key === 'lowerdir+') out.lowerdirs.push(value);
    else if (key === 'datadir+') out.datadirs.push(value);
    else if (key === 'upperdir') out.upperdir = value;
    else if (key === 'workdir') out.workdir = value;
    else out.other[key] = eq < 0 ? true : value;
  }
  return out;
}

/** `a:b\\:c::d1::d2` → lowerdirs a and b:c, datadirs d1 and d2 (data layers are separated by '::'). */
function addLowerdirList(out: OverlayOptions, list: string): void {
  const unescapeColons = (p: string) => p.replace(/\\:/g, ':');
  const [layers = '', ...data] = list.split(/(?<!\\)::/);
  if (layers !== '') out.lowerdirs.push(...layers.split(/(?<!\\):/).map(unescapeColons));
  out.datadirs.push(...data.map(unescapeColons));
}
