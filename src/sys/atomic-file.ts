/**
 * Small files replaced atomically: a temp file in the same directory, renamed over the target, so
 * a reader (or a crash) sees the old content or the new, never half of it. This is how Docker
 * writes its metadata files (atomicwriter), and every driver and the store keep theirs this way.
 * Also: directories made with an exact mode, whatever the umask (Docker's on-disk modes).
 */
import { chmodSync, closeSync, constants, fstatSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { processUmask } from './probes.js';
import { removeEntriesOfDeadProcesses } from './process.js';

export interface AtomicWriteOptions {
  /** File mode (default 0600). */
  mode?: number;
  /**
   * fsync the file before the rename and the directory after it, so the new content survives a
   * power cut once this returns (default false: survives a crash of the process only).
   */
  durable?: boolean;
  /** Create the file's directory (0700, with its parents) when it is missing. */
  makeDir?: boolean;
}

export function writeFileAtomic(path: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): void {
  // A dot name, so listings that skip dot files never see a half-written one; the pid keeps two
  // processes apart, and a crash's leftover is `.<name>.<pid>.tmp` (atomicTempPrefix finds it).
  const tmp = join(dirname(path), `${atomicTempPrefix(path)}${process.pid}.tmp`);
  if (opts.makeDir) mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const fd = openTemp(tmp, opts.mode ?? 0o600);
  try {
    try {
      writeAll(fd, typeof data === 'string' ? Buffer.from(data) : data);
      if (opts.durable) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  if (opts.durable) fsyncDir(dirname(path));
}

/**
 * An empty marker file at `path` (overlay2's `committed`, the writable marks): created in place,
 * without a temp file — an empty file cannot be seen half-written, and a temp file a kill left
 * would sit beside the mark where nothing looks for it. Never written through: a symlink or other
 * non-regular entry at `path` is unlinked and the mark made anew; an existing mark is kept.
 */
export function writeEmptyMark(path: string, mode = 0o600): void {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK;
  for (let attempt = 0; ; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, flags, mode);
    } catch (e) {
      // ELOOP: a symlink; ENXIO: a FIFO without a reader. A directory (EISDIR) is left to throw.
      const code = (e as NodeJS.ErrnoException).code;
      if (attempt > 0 || (code !== 'ELOOP' && code !== 'ENXIO')) throw e;
      rmSync(path, { force: true });
      continue;
    }
    const regular = fstatSync(fd).isFile();
    closeSync(fd);
    if (regular || attempt > 0) return;
    rmSync(path, { force: true }); // a FIFO that had a reader, a device: not a mark
  }
}

/**
 * A new temp file, never an existing one: a leftover of a crashed writer with the same pid is
 * unlinked first, and a symlink planted at the name is unlinked, not written through.
 */
function openTemp(tmp: string, mode: number): number {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  try {
    return openSync(tmp, flags, mode);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    rmSync(tmp, { force: true });
    return openSync(tmp, flags, mode);
  }
}

/** The name every temp file of writeFileAtomic(path) starts with, for cleaning up after a crash. */
export function atomicTempPrefix(path: string): string {
  return `.${basename(path)}.`;
}

/**
 * Deletes the temp files writeFileAtomic left in `dir` when its process was killed between
 * writing and renaming (`.<name>.<pid>.tmp` of a pid that is not running). Returns their names.
 * Safe without any lock: only the dead process could still have renamed them.
 */
export function removeDeadTempFiles(dir: string): string[] {
  return removeEntriesOfDeadProcesses(dir, /^\..+\.(\d+)\.tmp$/);
}

/** mkdir with exactly `mode`: chmod again only when the umask took bits away. */
export function mkdirWithMode(path: string, mode: number): void {
  mkdirSync(path, { mode });
  if ((mode & processUmask()) !== 0) chmodSync(path, mode);
}

/** Makes the directory's entries (a rename, a new or removed name) durable. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) done += writeSync(fd, bytes, done, bytes.length - done);
}
