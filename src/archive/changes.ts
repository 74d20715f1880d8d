/**
 * Naive change detection: compare two complete trees (a layer's merged view and its parent's) the
 * way Docker's pkg/archive ChangesDirs does, so every driver reports the same change list.
 *
 * Docker's rules, kept here:
 * - only in new → A (and everything below it A); only in old → D, for the topmost path only;
 * - in both → C when st_mode (type and permission bits), uid, gid or rdev differ, or, for
 *   non-directories, size or mtime differ, or the security.capability xattrs differ;
 *   mtimes are equal when the seconds match and the nanoseconds match or either side has none
 *   (a tar extraction loses nanoseconds; that alone is no change);
 * - a directory's own size and mtime are never a change (moby#9874: they move with every
 *   create/delete inside and say nothing the child entries do not);
 * - a directory that has a change anywhere below it is listed as C even when its own stat did
 *   not change, so an export carries the directory's header (owner, mode) with its children;
 * - the root itself is never listed.
 * Beyond Docker: two symlinks whose stat is equal but whose targets differ are a C.
 */
import { type BigIntStats, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { UnionctlError } from '../errors.js';
import { getXattrIfSupported } from './metadata.js';
import type { Change } from './types.js';
import { isMetaName } from './whiteout.js';

const S_IFMT = 0o170000n;
const S_IFDIR = 0o040000n;
const S_IFLNK = 0o120000n;
const NS_PER_SEC = 1_000_000_000n;

/**
 * Orders strings by their UTF-8 bytes (what Docker's Go string comparison and `sort` in the C
 * locale do). JavaScript's `<` compares UTF-16 code units, which disagrees for characters above
 * U+FFFF against U+E000–U+FFFF; mapping surrogates above that range restores code point order,
 * and code point order is UTF-8 byte order.
 */
export function compareBytes(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

function codePointRank(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000; // surrogates: code points above U+FFFF
  if (unit >= 0xe000) return unit - 0x800;
  return unit;
}

export function sortChanges(changes: Change[]): Change[] {
  return changes.sort((x, y) => compareBytes(x.path, y.path));
}

export function isDirStat(st: BigIntStats): boolean {
  return (st.mode & S_IFMT) === S_IFDIR;
}

export function isSymlinkStat(st: BigIntStats): boolean {
  return (st.mode & S_IFMT) === S_IFLNK;
}

/** lstat that answers undefined for a path that does not exist (or vanished while we walked). */
export function lstatIfExists(path: string): BigIntStats | undefined {
  try {
    return lstatSync(path, { bigint: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw e;
  }
}

/** The names in a directory, aufs bookkeeping names (and an opaque marker) left out; [] when it vanished. */
function listNames(dir: string): string[] {
  try {
    return readdirSync(dir).filter((name) => !isMetaName(name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** `/a` + `b` → `/a/b`; the root is `/`. */
export function childPath(parent: string, name: string): string {
  return parent === '/' ? `/${name}` : `${parent}/${name}`;
}

function sameMtime(a: BigIntStats, b: BigIntStats): boolean {
  const aSec = a.mtimeNs / NS_PER_SEC;
  const bSec = b.mtimeNs / NS_PER_SEC;
  const aNsec = a.mtimeNs % NS_PER_SEC;
  const bNsec = b.mtimeNs % NS_PER_SEC;
  return aSec === bSec && (aNsec === bNsec || aNsec === 0n || bNsec === 0n);
}

/** Docker's statDifferent: the stat fields that make an entry present in both trees a change. */
export function statDifferent(oldSt: BigIntStats, newSt: BigIntStats): boolean {
  if (oldSt.mode !== newSt.mode || oldSt.uid !== newSt.uid || oldSt.gid !== newSt.gid || oldSt.rdev !== newSt.rdev) return true;
  if (isDirStat(newSt)) return false;
  return oldSt.size !== newSt.size || !sameMtime(oldSt, newSt);
}

function sameBuffer(a: Buffer | undefined, b: Buffer | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.equals(b);
}

/** Whether an entry present in both trees changed (stat, file capabilities, symlink target). */
function entryChanged(oldPath: string, oldSt: BigIntStats, newPath: string, newSt: BigIntStats): boolean {
  if (statDifferent(oldSt, newSt)) return true;
  const capability = 'security.capability';
  if (!sameBuffer(getXattrIfSupported(oldPath, capability), getXattrIfSupported(newPath, capability))) return true;
  return isSymlinkStat(newSt) && readlinkSync(oldPath) !== readlinkSync(newPath);
}

/** Every entry below `rel` in `root` as an A. */
function addAllBelow(root: string, rel: string, out: Change[]): void {
  for (const name of listNames(root + rel)) {
    const path = childPath(rel, name);
    const st = lstatIfExists(root + path);
    if (st === undefined) continue;
    out.push({ path, kind: 'A' });
    if (isDirStat(st)) addAllBelow(root, path, out);
  }
}

/** Compares the directory `rel` of both trees (it is a directory in both), appending to `out`. */
function compareDir(newRoot: string, oldRoot: string, rel: string, out: Change[]): void {
  const oldNames = new Set(listNames(oldRoot + rel));
  for (const name of listNames(newRoot + rel)) {
    const path = childPath(rel, name);
    const newSt = lstatIfExists(newRoot + path);
    if (newSt === undefined) continue;
    const oldSt = oldNames.delete(name) ? lstatIfExists(oldRoot + path) : undefined;
    if (oldSt === undefined) {
      out.push({ path, kind: 'A' });
      if (isDirStat(newSt)) addAllBelow(newRoot, path, out);
      continue;
    }
    const changed = entryChanged(oldRoot + path, oldSt, newRoot + path, newSt);
    if (changed) out.push({ path, kind: 'C' });
    if (!isDirStat(newSt)) continue; // a non-directory replacing a directory: only the C, no D below
    const before = out.length;
    // A directory replacing a non-directory: everything in it is new.
    if (isDirStat(oldSt)) compareDir(newRoot, oldRoot, path, out);
    else addAllBelow(newRoot, path, out);
    if (!changed && out.length > before) out.push({ path, kind: 'C' });
  }
  for (const name of oldNames) out.push({ path: childPath(rel, name), kind: 'D' });
}

/**
 * The changes that turn the tree `oldRoot` into the tree `newRoot` (Docker's ChangesDirs), sorted
 * by path bytes. Without `oldRoot` everything in `newRoot` is an A.
 */
export async function changesBetween(newRoot: string, oldRoot?: string): Promise<Change[]> {
  assertDirectory(newRoot);
  if (oldRoot !== undefined) assertDirectory(oldRoot);
  const out: Change[] = [];
  if (oldRoot === undefined) addAllBelow(newRoot, '/', out);
  else compareDir(newRoot, oldRoot, '/', out);
  return sortChanges(out);
}

/** Throws NOT_FOUND unless `path` is a directory (a tree to compare or export). */
export function assertDirectory(path: string): void {
  const st = lstatIfExists(path);
  if (st === undefined || !isDirStat(st)) {
    throw new UnionctlError('NOT_FOUND', `${path} is not a directory`, {
      hint: 'pass the root directory of a layer or of its mounted view',
    });
  }
}
