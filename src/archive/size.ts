/**
 * Sizes of layers the way Docker reports them: ChangesSize (bytes a change list adds) and
 * directory.Size (bytes a layer directory holds). Both count a hardlinked inode once.
 */
import { type BigIntStats, lstatSync, readdirSync } from 'node:fs';
import type { Change } from './types.js';
import { assertDirectory, isDirStat, lstatIfExists } from './changes.js';

/** Remembers inodes already counted; only inodes with more than one link can be met twice. */
class InodeSet {
  private readonly seen = new Set<string>();

  /** True the first time an inode is offered. */
  firstTime(st: BigIntStats): boolean {
    if (st.nlink <= 1n) return true;
    const key = `${st.dev}:${st.ino}`;
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    return true;
  }
}

/**
 * Docker's ChangesSize: the st_size sum of the A and C entries that are not directories, read
 * from the tree `root` (symlinks count their target's length, as lstat says). An entry that has
 * vanished from `root` since the changes were computed counts nothing.
 */
export async function changesSize(root: string, changes: Change[]): Promise<number> {
  const inodes = new InodeSet();
  let size = 0;
  for (const change of changes) {
    if (change.kind === 'D') continue;
    const st = lstatIfExists(root + change.path);
    if (st === undefined || isDirStat(st)) continue;
    if (inodes.firstTime(st)) size += Number(st.size);
  }
  return size;
}

/**
 * containerd's fs.DiskUsage: the blocks (st_blocks × 512) and the inodes of everything below and
 * including `dir`, each inode once, without descending into other filesystems mounted below it.
 */
export async function diskUsage(dir: string): Promise<{ size: number; inodes: number }> {
  assertDirectory(dir);
  const top = lstatSync(dir, { bigint: true });
  const inodes = new InodeSet();
  let size = Number(top.blocks) * 512;
  let count = 1;
  for (const st of statsBelow(dir)) {
    if (!inodes.firstTime(st)) continue;
    size += Number(st.blocks) * 512;
    count += 1;
  }
  return { size, inodes: count };
}

/**
 * Docker's directory.Size: the sum of the sizes of everything below `dir` but directories, each
 * inode once, without descending into other filesystems mounted below it.
 */
export async function directorySize(dir: string): Promise<number> {
  const inodes = new InodeSet();
  let size = 0;
  for (const st of statsBelow(dir)) if (!isDirStat(st) && inodes.firstTime(st)) size += Number(st.size);
  return size;
}

/** lstat of every entry below directory `dir` (not `dir` itself), on dir's filesystem only; entries that vanish meanwhile are left out. */
function* statsBelow(dir: string): Generator<BigIntStats> {
  assertDirectory(dir);
  const rootDev = lstatSync(dir, { bigint: true }).dev;
  const pending = [dir];
  for (let current = pending.pop(); current !== undefined; current = pending.pop()) {
    for (const name of readdirOrEmpty(current)) {
      const path = `${current}/${name}`;
      const st = lstatIfExists(path);
      if (st === undefined || st.dev !== rootDev) continue; // vanished, or a mount point
      if (isDirStat(st)) pending.push(path);
      yield st;
    }
  }
}

/** A directory that vanished while we walked holds nothing. */
function readdirOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}
