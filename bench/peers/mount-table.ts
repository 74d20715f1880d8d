/**
 * The mount table as the tests and the peer launchers see it. Deliberately independent of src/sys
 * (the code under test): a check that "nothing is left mounted" must not trust the parser it checks.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface MountEntry {
  mountId: number;
  mountPoint: string;
  fsType: string;
  source: string;
  /** Per-mount options (field 6: rw/ro, relatime, …). */
  mountOptions: string;
  /** Filesystem options (after the " - " separator: lowerdir=…, upperdir=… for overlay). */
  superOptions: string;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Every mount of this process's mount namespace, in mount order. */
export function listMounts(): MountEntry[] {
  const mounts: MountEntry[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line === '') continue;
    const sep = line.indexOf(' - ');
    const pre = line.slice(0, sep).split(' ');
    const post = line.slice(sep + 3).split(' ');
    mounts.push({
      mountId: Number(pre[0]),
      mountPoint: unescapeOctal(pre[4]),
      mountOptions: pre[5],
      fsType: post[0],
      source: unescapeOctal(post[1]),
      superOptions: unescapeOctal(post.slice(2).join(' ')),
    });
  }
  return mounts;
}

function isUnder(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/** Mounts whose mount point is `dir` or below it, deepest last. */
export function mountsUnder(dir: string): MountEntry[] {
  return listMounts().filter((m) => isUnder(m.mountPoint, dir));
}

/** Mounts strictly below `dir` (not `dir` itself). */
export function mountsBelow(dir: string): MountEntry[] {
  return mountsUnder(dir).filter((m) => m.mountPoint !== dir);
}

/** The mount whose mount point is exactly `path` (the topmost one if stacked), if any. */
export function mountAt(path: string): MountEntry | undefined {
  const found = listMounts().filter((m) => m.mountPoint === path);
  return found[found.length - 1];
}

export function isMountedAt(path: string, fsType?: string): boolean {
  const m = mountAt(path);
  return m !== undefined && (fsType === undefined || m.fsType === fsType);
}

/** Overlay mounts anywhere whose options mention `dir` (lowerdir/upperdir paths under it). */
export function overlayMountsMentioning(dir: string): MountEntry[] {
  return listMounts().filter((m) => m.fsType === 'overlay' && (m.superOptions.includes(dir) || isUnder(m.mountPoint, dir)));
}

/**
 * Unmounts everything mounted below `dir` (and `dir` itself with andDir), deepest first, lazily
 * (MNT_DETACH) so a busy mount cannot keep a test run from finishing. Returns the mount points it
 * had to remove: a test's cleanup reports them as leaks.
 */
export function unmountAllBelow(dir: string, opts: { andDir?: boolean } = {}): string[] {
  const leftovers = (opts.andDir ? mountsUnder(dir) : mountsBelow(dir)).map((m) => m.mountPoint).sort((a, b) => b.length - a.length);
  for (const mp of leftovers) {
    try {
      execFileSync('umount', ['-l', mp], { stdio: 'ignore' });
    } catch {
      /* already gone (a parent's lazy unmount took it along) */
    }
  }
  return leftovers;
}
