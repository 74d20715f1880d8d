/**
 * /proc/<pid>/mountinfo: what the kernel says is mounted where, with which options. Used to adopt
 * mounts left by an earlier process, to report a union's branches as the kernel sees them, and by
 * the tests to prove nothing was left mounted.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

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

/** The kernel escapes space, tab, newline and backslash (and ':' in overlay paths) as \ooo. */
export function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountInfo(text: string): MountInfo[] {
  const mounts: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(' ');
    const post = line.slice(sep + 3).split(' ');
    const [major, minor] = pre[2].split(':').map(Number);
    mounts.push({
      id: Number(pre[0]),
      parentId: Number(pre[1]),
      major,
      minor,
      root: unescapeOctal(pre[3]),
      mountPoint: unescapeOctal(pre[4]),
      mountOptions: pre[5].split(','),
      optionalFields: pre.slice(6),
      fsType: post[0],
      source: unescapeOctal(post[1] ?? ''),
      superOptions: splitSuperOptions(post.slice(2).join(' ')),
    });
  }
  return mounts;
}

/** Super options are comma-separated; an escaped comma inside a path stays part of it. */
function splitSuperOptions(s: string): string[] {
  return s === '' ? [] : s.split(/(?<!\\),/);
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

export function isMountPoint(path: string): boolean {
  return findMount(path) !== undefined;
}

/** Mounts at or below `dir`. */
export function mountsUnder(dir: string, mounts: MountInfo[] = readMountInfo()): MountInfo[] {
  const base = resolve(dir);
  return mounts.filter((m) => m.mountPoint === base || m.mountPoint.startsWith(base + '/'));
}

export interface OverlayOptions {
  /** lower dirs, topmost first, as the kernel shows them (absolute or relative to the mounter's cwd) */
  lowerdirs: string[];
  upperdir?: string;
  workdir?: string;
  other: Record<string, string | true>;
}

/**
 * Overlay super options → the branch dirs. The kernel shows `lowerdir=a:b:c` with a literal ':'
 * inside a path escaped as `\:`; a mount made with the new API's `lowerdir+` shows one
 * `lowerdir+=` option per layer instead (kernel ≥ 6.8), and `datadir+=` for data-only layers.
 */
export function parseOverlayOptions(superOptions: string[]): OverlayOptions {
  const out: OverlayOptions = { lowerdirs: [], other: {} };
  for (const opt of superOptions) {
    const eq = opt.indexOf('=');
    const key = eq < 0 ? opt : opt.slice(0, eq);
    const value = eq < 0 ? '' : unescapeOctal(opt.slice(eq + 1));
    if (key === 'lowerdir') out.lowerdirs.push(...value.split(/(?<!\\):/).map((p) => p.replace(/\\:/g, ':')));
    else if (key === 'lowerdir+') out.lowerdirs.push(value);
    else if (key === 'upperdir') out.upperdir = value;
    else if (key === 'workdir') out.workdir = value;
    else out.other[key] = eq < 0 ? true : value;
  }
  return out;
}
