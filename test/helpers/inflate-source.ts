/**
 * A source for an inflate thread that reads by itself (archive/inflate-thread.ts WorkerSource),
 * for its tests: a gzip stream made from a seed, so the test and the worker make the same bytes,
 * given in `chunk`-byte pieces, optionally failing part-way with a UnionctlError.
 */
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { UnionctlError, type ErrorCode } from '../../src/errors.js';

export interface SeededGzip {
  /** Size of the content in MiB: half random, half text, so it compresses a little. */
  mib: number;
  seed: string;
  chunk: number;
  /** Fail after this many compressed bytes, with this error. */
  failAfter?: { bytes: number; code: ErrorCode; message: string; hint: string };
}

/** The content and its gzip stream. */
export function seededGzip(arg: SeededGzip): { content: Buffer; compressed: Buffer } {
  const parts: Buffer[] = [];
  let block = createHash('sha256').update(arg.seed).digest();
  for (let i = 0; i < arg.mib * 32; i++) {
    const random: Buffer[] = [];
    for (let j = 0; j < 512; j++) random.push((block = createHash('sha256').update(block).digest()));
    parts.push(Buffer.concat(random), Buffer.from(`line ${i}\n`.repeat(1639)).subarray(0, 16 * 1024));
  }
  const content = Buffer.concat(parts);
  return { content, compressed: gzipSync(content, { level: 1 }) };
}

/** The source's export, run on the worker. */
export async function* seededGzipChunks(arg: SeededGzip): AsyncGenerator<Buffer, void, undefined> {
  const { compressed } = seededGzip(arg);
  for (let off = 0; off < compressed.length; off += arg.chunk) {
    const end = Math.min(off + arg.chunk, compressed.length);
    if (arg.failAfter !== undefined && end > arg.failAfter.bytes) {
      const f = arg.failAfter;
      throw new UnionctlError(f.code, f.message, { hint: f.hint });
    }
    await Promise.resolve();
    yield compressed.subarray(off, end);
  }
}
