/**
 * The fast digest path (the shared ring, the hashing thread, the main-thread head, reserve/commit,
 * the layer file reader that reads into the ring) checked against the plain reference: node:crypto's createHash over the same bytes, for sizes at
 * every boundary the fast path has (a block, the wake-up step, the worker start, the ring size)
 * and for every algorithm node offers among sha256, sha512, sha1 and md5.
 */
import assert from 'node:assert/strict';
import { createHash, getHashes, randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openLayerStream } from '../../src/archive/decompress.js';
import { RING_BYTES, START_THRESHOLD, StreamDigest, WAKE_EVERY_BYTES, type StreamDigestOptions } from '../../src/archive/stream-digest.js';

const MiB = 1024 * 1024;
const SIZES = [
  0,
  1,
  511,
  512,
  513,
  64 * 1024 - 1,
  MiB + 1,
  WAKE_EVERY_BYTES,
  START_THRESHOLD - 1,
  START_THRESHOLD,
  START_THRESHOLD + 1,
  RING_BYTES - 1,
  RING_BYTES,
  RING_BYTES + 1,
  3 * RING_BYTES + 12_345,
];
const DATA = randomFillSync(Buffer.allocUnsafe(Math.max(...SIZES)));
DATA[0] = 0x61; // no compression magic: the layer file reader takes it as a plain tar
const ALGORITHMS = ['sha256', 'sha512', 'sha1', 'md5'].filter((a) => getHashes().includes(a));

/** A small deterministic PRNG (xorshift32), so a failing chunking can be replayed. */
function prng(seed: number): (max: number) => number {
  let x = seed || 1;
  return (max) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return ((x >>> 0) % max) + 1;
  };
}

/** Piece sizes for `size` bytes: tiny, block-sized and large pieces mixed, never empty. */
function pieces(size: number, seed: number): number[] {
  const next = prng(seed);
  const out: number[] = [];
  for (let left = size; left > 0;) {
    const kind = next(4);
    const n = Math.min(left, kind === 1 ? next(7) : kind === 2 ? next(1024) : next(3 * MiB));
    out.push(n);
    left -= n;
  }
  return out;
}

const reference = (algorithm: string, bytes: Buffer) => createHash(algorithm).update(bytes).digest('hex');

/** Feeds `bytes` by update(), awaiting the ring when it is full, as the tar reader does. */
async function byUpdate(opts: StreamDigestOptions, bytes: Buffer, seed: number): Promise<string> {
  const digest = new StreamDigest(opts);
  let at = 0;
  for (const n of pieces(bytes.length, seed)) {
    const full = digest.update(bytes.subarray(at, at + n));
    if (full !== undefined) await full;
    at += n;
  }
  return digest.finish();
}

/** Reads `bytes` straight into the ring through reserve()/commit(), as the layer file reader does. */
async function byReserve(opts: StreamDigestOptions, bytes: Buffer, seed: number): Promise<string> {
  const digest = new StreamDigest(opts);
  const next = prng(seed);
  for (let at = 0; at < bytes.length;) {
    const reserved = digest.reserve(next(2 * MiB));
    const view = reserved instanceof Promise ? await reserved : reserved;
    const n = Math.min(view.length, bytes.length - at, next(view.length)); // a short read now and then
    view.set(bytes.subarray(at, at + n));
    digest.commit(n);
    at += n;
  }
  return digest.finish();
}

const MODES: Array<{ name: string; opts: StreamDigestOptions; feed: typeof byUpdate }> = [
  { name: 'main thread, update', opts: { useWorker: false }, feed: byUpdate },
  { name: 'main thread, reserve/commit', opts: { useWorker: false }, feed: byReserve },
  { name: 'worker after a main-thread head, update', opts: { useWorker: true }, feed: byUpdate },
  { name: 'worker after a main-thread head, reserve/commit', opts: { useWorker: true }, feed: byReserve },
  // Announced as large, the stream goes to the worker from byte 0 whatever its real size.
  { name: 'worker from the first byte, update', opts: { useWorker: true, expectedBytes: RING_BYTES }, feed: byUpdate },
  { name: 'worker from the first byte, reserve/commit', opts: { useWorker: true, expectedBytes: RING_BYTES }, feed: byReserve },
];

describe('StreamDigest against createHash', () => {
  for (const algorithm of ALGORITHMS) {
    // Every size for sha256 (the diff_id); the other algorithms across the worker start and a ring wrap.
    const sizes = algorithm === 'sha256' ? SIZES : [0, 1, 511, START_THRESHOLD + 1, RING_BYTES + 1];
    for (const mode of MODES) {
      it(`${algorithm}, ${mode.name}`, async () => {
        for (const [i, size] of sizes.entries()) {
          const bytes = DATA.subarray(0, size);
          const got = await mode.feed({ ...mode.opts, algorithm }, bytes, 0x9e3779b9 + i);
          assert.equal(got, reference(algorithm, bytes), `${size} bytes`);
        }
      });
    }
  }

  it('hashes random sizes in random pieces the same way on every path', async () => {
    const next = prng(20240601);
    for (let round = 0; round < 4; round++) {
      const size = next(2 * RING_BYTES);
      const bytes = DATA.subarray(0, size);
      const want = reference('sha256', bytes);
      for (const mode of MODES) assert.equal(await mode.feed(mode.opts, bytes, round + 1), want, `${size} bytes, ${mode.name}`);
    }
  });

  it('matches for the layer file reader, which reads straight into the ring (with and without the hashing thread)', async () => {
    const dir = mkdtempSync('/tmp/unionctl-test-digest-');
    try {
      for (const thread of ['1', '0']) {
        process.env.UNIONCTL_DIGEST_THREAD = thread;
        try {
          for (const size of [0, 1, 511, 512, START_THRESHOLD + 1, RING_BYTES - 1, RING_BYTES + 1, 3 * RING_BYTES + 12_345]) {
            const bytes = DATA.subarray(0, size);
            const path = join(dir, `${size}.bin`);
            writeFileSync(path, bytes);
            const { chunks, digest } = await openLayerStream(path);
            let read = 0;
            for await (const chunk of chunks) read += chunk.length;
            assert.equal(read, size);
            assert.equal(await digest!.finish(), reference('sha256', bytes), `${size} bytes, digest thread ${thread}`);
            rmSync(path);
          }
        } finally {
          delete process.env.UNIONCTL_DIGEST_THREAD;
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses an algorithm node does not have, before any byte', () => {
    assert.throws(() => new StreamDigest({ algorithm: 'no-such-hash' }), /Digest method not supported|Invalid digest/);
  });
});
