/**
 * The CLI's own file handling: checking an input file before the store is touched, and writing an
 * output file so that it either appears complete or not at all.
 */
import { closeSync, createWriteStream, fsyncSync, openSync, readSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { sniffCompression } from '../archive/decompress.js';
import { UnionctlError } from '../errors.js';

/** Turns a Node fs error about `path` into a typed error that names the file. */
function fileError(e: unknown, what: string, path: string): UnionctlError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') {
    return new UnionctlError('NOT_FOUND', `${what} ${JSON.stringify(path)} does not exist`, {
      hint: 'check the path',
      cause: e,
    });
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new UnionctlError('SYSCALL', `${what} ${JSON.stringify(path)}: permission denied (${code})`, { cause: e });
  }
  const detail = e instanceof Error ? e.message : String(e);
  return new UnionctlError('SYSCALL', `${what} ${JSON.stringify(path)}: ${detail}`, { cause: e });
}

/**
 * Checks that a layer tarball given on the command line is a readable regular file (or a FIFO /
 * device such as /dev/stdin) and returns its size when it has one, for the progress bar.
 */
export function inputFileSize(path: string): number | undefined {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw fileError(e, 'input file', path);
  }
  if (st.isDirectory()) {
    throw new UnionctlError('USAGE', `input file ${JSON.stringify(path)} is a directory`, {
      hint: 'give a layer tarball (tar, tar.gz or tar.zst), or - to read from stdin',
    });
  }
  return st.isFile() ? st.size : undefined;
}

/**
 * Streams `data` into `dest` through a temporary file in the same directory, then renames it into
 * place: a reader never sees half a tarball, and a failed write leaves no file behind.
 */
export async function writeFileAtomically(data: Readable, dest: string): Promise<void> {
  const dir = dirname(dest);
  const tmp = join(dir, `.${basename(dest)}.${process.pid}.${Date.now().toString(36)}.tmp`);
  try {
    // 'wx': never follow or clobber something that happens to sit at the temp name.
    const file = createWriteStream(tmp, { flags: 'wx', mode: 0o644 });
    let fileFailed = false;
    file.once('error', () => (fileFailed = true));
    try {
      await pipeline(data, file);
    } catch (e) {
      if (!fileFailed) throw e; // the layer's tar stream failed: report the library's error as is
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw fileError(e, 'output directory', dir);
      throw fileError(e, 'output file', dest);
    }
    const fd = openSync(tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      renameSync(tmp, dest);
    } catch (e) {
      throw fileError(e, 'output file', dest);
    }
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** The file does not start with a gzip/zstd/xz/bzip2 magic number. */
export function isPlainTar(path: string): boolean {
  const head = Buffer.alloc(6);
  const fd = openSync(path, 'r');
  try {
    return sniffCompression(head.subarray(0, readSync(fd, head, 0, head.length, 0))) === 'none';
  } finally {
    closeSync(fd);
  }
}
