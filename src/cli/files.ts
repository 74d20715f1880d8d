/**
 * The CLI's checks of an input file before the store is touched. Output files (-o) are written by
 * writeOutputFile (src/sys/user-file.ts), which save uses too.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { sniffCompression } from '../archive/decompress.js';
import { UnionctlError } from '../errors.js';
import { fileError } from '../sys/user-file.js';

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

/**
 * Whether stdin ends before its first byte. What was read is put back (unshift), so the import
 * reads the whole input as if nobody had looked.
 */
export function stdinIsEmpty(): Promise<boolean> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    const done = (empty: boolean, chunk?: Buffer) => {
      stdin.off('readable', onReadable);
      stdin.off('end', onEnd);
      stdin.off('error', onError);
      if (chunk !== undefined) stdin.unshift(chunk);
      resolve(empty);
    };
    const onReadable = () => {
      const chunk = stdin.read() as Buffer | null;
      if (chunk !== null) done(false, chunk);
    };
    const onEnd = () => done(true);
    const onError = (e: Error) => {
      stdin.off('readable', onReadable);
      stdin.off('end', onEnd);
      reject(e);
    };
    stdin.on('readable', onReadable);
    stdin.once('end', onEnd);
    stdin.once('error', onError);
  });
}
