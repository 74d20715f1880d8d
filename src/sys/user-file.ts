/**
 * Files the user names on the command line (`diff -o PATH`, `save -o PATH`), which unionctl does
 * not own: errors about them are typed and name the file, and an output file appears complete or
 * not at all, without ever writing into or replacing something that is not a regular file.
 *
 * How an output file is written (the one way every command that writes one does it):
 * - PATH is looked at first (lstat, never following it). Missing: it will be created. A regular
 *   file: it will be replaced. Anything else is refused with a USAGE error naming it: a directory,
 *   a device node (/dev/null, /dev/full), a FIFO, a socket — `-o` writes a file, as `docker save -o`
 *   does; a stream goes to stdout instead — and a symbolic link, which is neither followed (its
 *   target is not replaced) nor replaced itself (the user may well have meant the target).
 * - PATH's directory must exist (it is never created): the bytes go to a new temp file in it,
 *   `.<name>.<pid>-<random>.tmp`, made with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0644 minus the umask.
 * - Once everything is written: fsync, PATH checked again (still missing or a regular file), rename
 *   over PATH, fsync of the directory. A failure before that removes the temp file and leaves PATH
 *   as it was; so do SIGINT, SIGTERM and SIGHUP (the temp file is removed, then the signal takes
 *   its course) and any process.exit. Only SIGKILL or a power cut can leave a temp file behind.
 *
 * The rename replaces a regular file's name; the new file has its own inode and mode (hard links
 * of the old file keep the old content).
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  fsyncSync,
  lstatSync,
  openSync,
  readlinkSync,
  renameSync,
  rmSync,
  type Stats,
  write as fsWrite,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { UnionctlError } from '../errors.js';
import { fsyncDir } from './atomic-file.js';
import { beforeStopSignal } from './stop-signals.js';

function errnoOf(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** A system error from Node (its code an errno name: ENOSPC, EIO), not one of ours nor one of Node's ERR_* errors. */
export function isErrnoError(e: unknown): e is NodeJS.ErrnoException {
  return !(e instanceof UnionctlError) && /^E[A-Z0-9]+$/.test(errnoOf(e) ?? '');
}

/**
 * A Node fs error about `path` as a typed error that names the file: "<what> "<path>": …".
 * `spaceHint` replaces the hint for a full disk or quota (ENOSPC, EDQUOT).
 */
export function fileError(e: unknown, what: string, path: string, opts: { spaceHint?: string } = {}): UnionctlError {
  if (e instanceof UnionctlError) return e; // already typed (e.g. a damaged store directory)
  const code = errnoOf(e);
  const named = `${what} ${JSON.stringify(path)}`;
  switch (code) {
    case 'ENOENT':
      return new UnionctlError('NOT_FOUND', `${named} does not exist`, { hint: 'check the path', cause: e });
    case 'ENOTDIR':
      return new UnionctlError('NOT_FOUND', `${named}: a part of the path is not a directory (ENOTDIR)`, {
        hint: 'check the path',
        cause: e,
      });
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new UnionctlError('SYSCALL', `${named}: permission denied (${code})`, { cause: e });
    case 'ENOSPC':
    case 'EDQUOT':
      return new UnionctlError('SYSCALL', `${named}: no space left on the filesystem (${code})`, {
        hint: opts.spaceHint ?? 'free space on that filesystem, then try again',
        cause: e,
      });
  }
  const detail = e instanceof Error ? e.message : String(e);
  return new UnionctlError('SYSCALL', `${named}: ${detail}`, { cause: e });
}

// ---- removing temp files when the process is stopped ------------------------------------------

const pendingRemoval = new Set<string>();
let stopWatch: (() => void) | undefined;

function removePending(): void {
  for (const path of pendingRemoval) rmSync(path, { recursive: true, force: true });
  pendingRemoval.clear();
}

function watch(): void {
  process.on('exit', removePending);
  stopWatch = beforeStopSignal(removePending);
}

function unwatch(): void {
  process.off('exit', removePending);
  stopWatch?.();
  stopWatch = undefined;
}

/**
 * Removes `path` (a file or a directory tree) should the process exit or be stopped by SIGINT,
 * SIGTERM or SIGHUP before the returned function is called. For temp files the user never asked for.
 */
export function removeIfInterrupted(path: string): () => void {
  if (pendingRemoval.size === 0) watch();
  pendingRemoval.add(path);
  return () => {
    if (!pendingRemoval.delete(path)) return;
    if (pendingRemoval.size === 0) unwatch();
  };
}

// ---- output files -----------------------------------------------------------------------------

export interface OutputFileOptions {
  /** How messages call it (default "output file"). */
  what?: string;
  /** The hint when PATH is a device, FIFO or socket (default: -o writes only regular files). */
  notAFileHint?: string;
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** Refuses unless PATH is missing or a regular file; never follows a symlink at PATH. */
function checkOutputPath(path: string, what: string, opts: OutputFileOptions): void {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return; // created, if its directory exists (the temp file's open says)
    throw fileError(e, what, path);
  }
  if (st.isFile()) return;
  if (st.isSymbolicLink()) {
    let target = '';
    try {
      target = readlinkSync(path);
    } catch {
      // gone meanwhile: still refused, without naming a target
    }
    throw new UnionctlError(
      'USAGE',
      `${what} ${JSON.stringify(path)} is a symbolic link${target ? ` (to ${JSON.stringify(target)})` : ''}`,
      {
        hint: 'unionctl neither writes through a symbolic link nor replaces one: give the path of the file itself, or remove the link',
      },
    );
  }
  if (st.isDirectory()) {
    throw new UnionctlError('USAGE', `${what} ${JSON.stringify(path)} is a directory`, { hint: 'give the path of a file to write' });
  }
  throw new UnionctlError('USAGE', `${what} ${JSON.stringify(path)} is ${kindOf(st)}, not a regular file`, {
    hint: opts.notAFileHint ?? 'it is left alone: -o writes a regular file (made beside it, then renamed into place); give a file path',
  });
}

/** `.<name>.<pid>-<random>.tmp`, with a name short enough for NAME_MAX (255 bytes). */
function tempNameFor(path: string): string {
  const name = [...basename(path)].slice(0, 40).join('');
  return join(dirname(path), `.${name}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
}

const TEMP_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * A Writable on an fd it never closes (fs.WriteStream closes its fd when destroyed, and a pipeline
 * destroys it as soon as it is done, before the fsync the commit needs).
 */
class FdWriter extends Writable {
  constructor(private readonly fd: number) {
    super({ highWaterMark: 1024 * 1024 });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const writeFrom = (offset: number): void => {
      fsWrite(this.fd, chunk, offset, chunk.length - offset, null, (e, n) => {
        if (e) return callback(e);
        if (offset + n < chunk.length) return writeFrom(offset + n);
        callback();
      });
    };
    writeFrom(0);
  }
}

/** An output file being written: bytes go to `stream` (a temp file) until commit() renames it over PATH. */
export interface OutputFile {
  readonly path: string;
  readonly tempPath: string;
  readonly stream: Writable;
  /** After `stream` has finished: makes the file durable and renames it over PATH. */
  commit(): void;
  /** Closes and removes the temp file; PATH stays as it was. Idempotent. */
  abort(): void;
}

/** Checks PATH and creates the temp file beside it (see the file comment). */
export function createOutputFile(path: string, opts: OutputFileOptions = {}): OutputFile {
  const what = opts.what ?? 'output file';
  checkOutputPath(path, what, opts);
  let tempPath = tempNameFor(path);
  let fd: number | undefined;
  for (let attempt = 0; fd === undefined; attempt++) {
    try {
      fd = openSync(tempPath, TEMP_FLAGS, 0o644);
    } catch (e) {
      if (errnoOf(e) === 'EEXIST' && attempt < 8) {
        tempPath = tempNameFor(path);
        continue;
      }
      if (errnoOf(e) === 'ENOENT' || errnoOf(e) === 'ENOTDIR') throw fileError(e, 'output directory', dirname(path));
      throw fileError(e, what, path);
    }
  }
  const forget = removeIfInterrupted(tempPath);
  const stream = new FdWriter(fd);
  let open = true;
  const close = () => {
    if (!open) return;
    open = false;
    stream.destroy();
    closeSync(fd);
  };
  let done = false;
  const abort = () => {
    if (done) return;
    done = true;
    close();
    rmSync(tempPath, { force: true });
    forget();
  };
  const commit = () => {
    if (done) throw new Error('output file committed or aborted already');
    try {
      try {
        fsyncSync(fd);
      } catch (e) {
        throw fileError(e, what, path);
      }
      close();
      // What is at PATH may have changed while the file was written: the same rules again.
      checkOutputPath(path, what, opts);
      try {
        renameSync(tempPath, path);
      } catch (e) {
        throw fileError(e, what, path);
      }
    } catch (e) {
      abort();
      throw e;
    }
    done = true;
    forget();
    try {
      fsyncDir(dirname(path));
    } catch {
      // The file is in place; a directory that cannot be opened for fsync (no read permission) only loses durability.
    }
  };
  return { path, tempPath, stream, commit, abort };
}

/**
 * Writes an output file: `write` gets the stream of the temp file (a pipeline into it ends it;
 * otherwise it is ended when `write` returns). Its result is returned once the file is renamed over PATH. When `write` or the
 * file fails, the temp file goes and PATH is left as it was; an error of the file itself (ENOSPC,
 * EIO) becomes a typed error naming PATH, any other is passed on as it is.
 */
export async function writeOutputFile<T>(path: string, write: (stream: Writable) => Promise<T>, opts: OutputFileOptions = {}): Promise<T> {
  const file = createOutputFile(path, opts);
  let streamFailure: unknown;
  file.stream.once('error', (e) => (streamFailure ??= e));
  try {
    const result = await write(file.stream);
    if (!file.stream.writableFinished) {
      const finished = new Promise<void>((resolve, reject) => {
        file.stream.once('finish', resolve);
        file.stream.once('error', reject);
      });
      if (!file.stream.writableEnded) file.stream.end();
      await finished;
    }
    file.commit();
    return result;
  } catch (e) {
    file.abort();
    if (streamFailure !== undefined) throw fileError(streamFailure, opts.what ?? 'output file', path);
    throw e;
  }
}
