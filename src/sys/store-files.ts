/**
 * Paths inside a store, opened and checked without following symlinks where the store's own
 * layout has none. A damaged or hostile store (a layer's work/ replaced by a symlink to a
 * directory elsewhere, a record file that is a symlink, a bind mount inside a layer dir) must never
 * make unionctl mount over, write into, delete or read anything outside the store: the paths it
 * hands to the kernel (mount data, mount points, the dirs a tar is applied into, trees it deletes)
 * are checked here first, and what does not match the layout is a CORRUPT error naming the path.
 *
 * The one symlink a layout has on purpose is overlay2's `l/<LID>` → `../<id>/diff`: paths through
 * it are checked with the 'beneath' rule (symlinks may be followed while they stay inside).
 *
 * What is not covered: a race with someone changing the store while it is being checked. Only
 * root can write a store, and root needs no unionctl to write outside it.
 */
import {
  closeSync,
  constants as fs,
  fstatSync,
  lstatSync,
  openSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  unlinkSync,
} from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { corruptError, UnionctlError } from '../errors.js';
import { mkdirWithMode } from './atomic-file.js';
import { mountsUnder, readMountInfo } from './mountinfo.js';
import { openat2DirCheck, RESOLVE } from './syscalls.js';

/**
 * 'no-symlinks': no component below the base may be a symlink (work/, diff/, merged/, a layer dir).
 * 'beneath': symlinks may be followed as long as the path never leaves the base (overlay2's l/ links).
 */
export type PathRule = 'no-symlinks' | 'beneath';

/** Larger than any file a store keeps (records, journals, image records with their config). */
const MAX_STORE_FILE = 64 << 20;

let openat2Works = true;

/**
 * Throws CORRUPT (naming the path and what is wrong) unless every one of `rels` resolves from
 * `base` to a directory under `rule`. `what` says what the path is in the message ("overlay work
 * dir"), or tells it from the path. `base` itself is trusted: the caller checked it (a driver home, the store root).
 */
export function assertDirsInside(base: string, rels: readonly string[], rule: PathRule, what: string | ((rel: string) => string)): void {
  if (rels.length === 0) return;
  withBase(base, (fd) => {
    for (const rel of rels) {
      const errno = problemOf(fd, base, rel, rule);
      if (errno !== undefined) throw describe(base, rel, errno, typeof what === 'string' ? what : what(rel));
    }
  });
}

/**
 * What is wrong with `rel` under `rule`, as an errno name (ELOOP: a symlink on the way where none
 * may be; EXDEV: it leads out of `base`; ENOENT, ENOTDIR), or undefined when it is fine. With
 * `openat2: false`, the lstat/realpath way used where openat2 cannot answer (the tests compare the two).
 */
export function pathProblem(base: string, rel: string, rule: PathRule, opts: { openat2?: boolean } = {}): string | undefined {
  if (opts.openat2 === false) return checkWithoutOpenat2(base, rel, rule);
  return withBase(base, (fd) => problemOf(fd, base, rel, rule));
}

/** Runs fn with `base` open as a directory fd for openat2 (-1 when this kernel has no openat2). */
function withBase<T>(base: string, fn: (fd: number) => T): T {
  const fd = openat2Works ? openSync(base, fs.O_RDONLY | fs.O_DIRECTORY) : -1;
  try {
    return fn(fd);
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** What is wrong with `rel` under `rule` (an errno name), or undefined. `fd`: base opened, or -1. */
function problemOf(fd: number, base: string, rel: string, rule: PathRule): string | undefined {
  if (fd >= 0) {
    const errno = checkAt(fd, rel, rule);
    if (errno !== 'ENOSYS') return errno;
  }
  return checkWithoutOpenat2(base, rel, rule);
}

/** openat2 tries before a path whose '..' it keeps answering EAGAIN for is checked the slow way. */
const EAGAIN_TRIES = 8;

function checkAt(fd: number, rel: string, rule: PathRule): string | undefined {
  const resolve = rule === 'no-symlinks' ? RESOLVE.NO_SYMLINKS | RESOLVE.BENEATH : RESOLVE.BENEATH | RESOLVE.NO_MAGICLINKS;
  // With BENEATH, a '..' (overlay2's l/ links are ../<id>/diff) is answered EAGAIN while any rename
  // or mount happens anywhere on the machine: the kernel cannot tell then that it stays inside.
  for (let i = 0; i < EAGAIN_TRIES; i++) {
    const errno = openat2DirCheck(fd, rel, resolve);
    if (errno === 'ENOSYS') openat2Works = false;
    if (errno !== 'EAGAIN') return errno;
  }
  return 'ENOSYS'; // the caller falls back to lstat and realpath
}

/** The same rules with lstat and realpath, for kernels without openat2 (< 5.6) and for a path openat2 keeps answering EAGAIN for. */
function checkWithoutOpenat2(base: string, rel: string, rule: PathRule): string | undefined {
  const path = join(base, rel);
  if (rule === 'no-symlinks') {
    for (const component of componentsBelow(base, rel)) {
      const st = lstatSync(component, { throwIfNoEntry: false });
      if (st === undefined) return 'ENOENT';
      if (st.isSymbolicLink()) return 'ELOOP';
      if (!st.isDirectory()) return 'ENOTDIR';
    }
    return undefined;
  }
  // As openat2's BENEATH: an absolute symlink on the way is refused even when it points inside.
  for (const component of componentsBelow(base, rel)) {
    if (lstatSync(component, { throwIfNoEntry: false })?.isSymbolicLink() && readlinkOrQuestion(component).startsWith('/')) return 'EXDEV';
  }
  let real: string;
  try {
    real = realpathSync(path);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? 'EIO';
  }
  if (!isInside(realpathSync(base), real)) return 'EXDEV';
  return lstatSync(real).isDirectory() ? undefined : 'ENOTDIR';
}

/** base/a, base/a/b, … base/rel. */
function componentsBelow(base: string, rel: string): string[] {
  const out: string[] = [];
  let path = base;
  for (const part of rel.split('/')) {
    if (part === '' || part === '.') continue;
    path = join(path, part);
    out.push(path);
  }
  return out;
}

function isInside(base: string, path: string): boolean {
  const r = relative(base, path);
  return r !== '' && r !== '..' && !r.startsWith(`..${sep}`) && !r.startsWith(sep);
}

/** The CORRUPT error for a path that failed a check, naming the symlink that is in the way. */
function describe(base: string, rel: string, errno: string, what: string): UnionctlError {
  const path = join(base, rel);
  if (errno === 'ELOOP') {
    const link = componentsBelow(base, rel).find((c) => lstatSync(c, { throwIfNoEntry: false })?.isSymbolicLink());
    const target = link === undefined ? '' : ` (to ${JSON.stringify(readlinkOrQuestion(link))})`;
    const where = link === undefined || link === path ? `is a symbolic link${target}` : `passes through the symbolic link ${link}${target}`;
    return corruptError(`${what} ${path} ${where}, which the store's layout never has there`, {
      repair: 'nothing outside the store was touched; remove the link itself (rm, not rm -r) and recreate the layer',
    });
  }
  if (errno === 'EXDEV') {
    let real = '?';
    try {
      real = realpathSync(path);
    } catch {
      /* dangling */
    }
    return corruptError(`${what} ${path} leads outside ${base} (to ${real})`, {
      repair: 'nothing outside the store was touched; a layer may only name directories of its own store',
    });
  }
  if (errno === 'ENOENT') return corruptError(`${what} ${path} is missing`);
  if (errno === 'ENOTDIR') return corruptError(`${what} ${path} is not a directory`);
  return corruptError(`${what} ${path} cannot be checked (${errno})`);
}

function readlinkOrQuestion(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return '?';
  }
}

/**
 * A store file's text as a JSON object; anything else (not JSON, an array, null, a number) is
 * `corrupt(why)` thrown — the caller's CORRUPT error naming its file.
 */
export function parseStoreJsonObject(text: string, corrupt: (why: string) => Error): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw corrupt('is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw corrupt('is not a JSON object');
  return value as Record<string, unknown>;
}

/**
 * A small file of the store (a record, a journal, a layout file such as overlay2's lower), read
 * without following a symlink at its path and only when it is a regular file (a FIFO would block,
 * a directory or a device is damage). undefined when it does not exist.
 */
export function readStoreFile(path: string, what: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, fs.O_RDONLY | fs.O_NOFOLLOW | fs.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') {
      throw corruptError(`${what} ${path} is a symbolic link (to ${JSON.stringify(readlinkOrQuestion(path))}), not a file`, {
        repair: 'the store never makes one there',
      });
    }
    throw e;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw corruptError(`${what} ${path} is ${st.isDirectory() ? 'a directory' : 'not a regular file'}`);
    if (st.size > MAX_STORE_FILE) throw corruptError(`${what} ${path} is ${st.size} bytes, more than any file of a store`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/**
 * Makes `path` a directory of the store with `mode` when it is missing (its parent must exist);
 * CORRUPT when something else is there (a symlink, a file). Returns true when it made it.
 */
export function ensureStoreDir(path: string, mode: number, what: string): boolean {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st === undefined) {
    try {
      mkdirWithMode(path, mode);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      return ensureStoreDir(path, mode, what); // made by another process meanwhile
    }
  }
  assertStoreDirStat(path, st, what);
  return false;
}

/** CORRUPT unless the entry at `path` is a real directory (not a symlink to one); true when it exists. */
export function storeDirExists(path: string, what: string): boolean {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st === undefined) return false;
  assertStoreDirStat(path, st, what);
  return true;
}

function assertStoreDirStat(path: string, st: ReturnType<typeof lstatSync> & object, what: string): void {
  if (st.isSymbolicLink()) {
    throw corruptError(
      `${what} ${path} is a symbolic link (to ${JSON.stringify(readlinkOrQuestion(path))}), which the store's layout never has there`,
      {
        repair: 'nothing outside the store was touched; replace the link with the directory it should be',
      },
    );
  }
  if (!st.isDirectory()) throw corruptError(`${what} ${path} is not a directory`);
}

/**
 * Deletes what is at `base/rel` without ever deleting anything outside: a symlink (or any
 * non-directory) there is unlinked, never followed; a directory is deleted with its contents only
 * when nothing is mounted at or below it (rm -rf would cross into a mount); the directories above
 * it, up to `base`, must not be symlinks. Nothing there: nothing to do. IN_USE when a mount is in
 * the way, CORRUPT when a directory above it is a symlink.
 */
export function removeStoreTree(base: string, rel: string, what: string): void {
  const parent = dirname(rel);
  if (parent !== '.') {
    const errno = withBase(base, (fd) => problemOf(fd, base, parent, 'no-symlinks'));
    if (errno === 'ENOENT') return; // its directory is gone: so is it
    if (errno !== undefined) throw describe(base, parent, errno, `the directory holding the ${what}`);
  }
  const path = join(base, rel);
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st === undefined) return;
  if (!st.isDirectory()) {
    unlinkSync(path);
    return;
  }
  assertNoMountsInside(path, what);
  rmSync(path, { recursive: true, force: true });
}

/** IN_USE when anything is mounted at or below the directory `path` (deleting it would cross into the mount). */
export function assertNoMountsInside(path: string, what: string): void {
  const mounted = mountsUnder(realpathSync(path), readMountInfo());
  if (mounted.length === 0) return;
  const at = mounted.map((m) => m.mountPoint).sort();
  throw new UnionctlError(
    'IN_USE',
    `cannot remove the ${what} ${path}: ${at.join(', ')} ${at.length === 1 ? 'is' : 'are'} mounted inside it`,
    {
      hint: `unmount ${at.length === 1 ? 'it' : 'them'} first (umount ${at[0]}), then retry; nothing was deleted`,
    },
  );
}
