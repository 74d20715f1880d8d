/**
 * gzip inflated on a thread of its own (src/archive/inflate-thread.ts): the same bytes as zlib on
 * this thread, the blob digest of the compressed bytes, BAD_TAR for a damaged stream, the input's
 * own error as it is, and nothing left behind when the stream is left early or given up.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { inflateOnThread, inflateThreadFree } from '../../src/archive/inflate-thread.js';
import { UnionctlError } from '../../src/errors.js';
import { seededGzip, type SeededGzip } from '../helpers/inflate-source.js';
import { chunked, trackedChunks } from '../helpers/tarbuild.js';

/** Some MiB that compress a little, so the output runs through the 8 MiB ring several times. */
function mixedBytes(mib: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < mib * 16; i++) parts.push(randomBytes(32 * 1024), Buffer.from(`line ${i}\n`.repeat(3277)).subarray(0, 32 * 1024));
  return Buffer.concat(parts);
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function readAll(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of chunks) parts.push(Buffer.from(chunk)); // lent: copied before the next
  return Buffer.concat(parts);
}

describe('inflateOnThread', () => {
  const content = mixedBytes(24);
  const compressed = Buffer.concat([gzipSync(content.subarray(0, 5_000_000), { level: 1 }), gzipSync(content.subarray(5_000_000))]);

  it('gives the bytes zlib gives, in any chunking, and the sha256 of the compressed stream', async () => {
    for (const pieces of [65536, [1, 7, 4096, 3_000_001]]) {
      const inflated = inflateOnThread(chunked(compressed, pieces));
      assert.ok((await readAll(inflated.chunks)).equals(content), `chunks of ${String(pieces)}`);
      assert.equal(await inflated.digest, sha256(compressed));
    }
    assert.equal(inflateThreadFree(), true, 'the thread is free again');
  });

  it('reports a damaged or truncated stream as BAD_TAR', async () => {
    const damaged = Buffer.from(compressed);
    damaged[damaged.length - 6] = damaged[damaged.length - 6]! ^ 0x10; // in the last member's CRC-32
    for (const [what, stream] of [
      ['crc', damaged],
      ['truncated', compressed.subarray(0, compressed.length >> 1)],
      ['not gzip', Buffer.concat([compressed, Buffer.from('trailing garbage')])],
    ] as const) {
      await assert.rejects(readAll(inflateOnThread(chunked(stream)).chunks), (e: unknown) => {
        assert.ok(e instanceof UnionctlError, `${what}: ${String(e)}`);
        assert.equal(e.code, 'BAD_TAR');
        assert.match(e.message, /^corrupt gzip stream: \S/);
        return true;
      });
    }
  });

  it('passes an error of its input through as itself, and closes the input', async () => {
    const dropped = new Error('the connection was reset');
    const input = { closed: false };
    const inflated = inflateOnThread(trackedChunks(compressed, input, { offset: compressed.length >> 1, error: dropped }));
    await assert.rejects(readAll(inflated.chunks), (e: unknown) => e === dropped);
    assert.ok(input.closed);
  });

  // The end (and a failure) used to be marked without moving the counter the reader slept on: a
  // reader that looked just before the mark slept forever (1 hang in ~50 runs of this file).
  it('sees the end of every stream, however the threads interleave', { timeout: 120_000 }, async () => {
    const small = gzipSync(content.subarray(0, 3000));
    for (let i = 0; i < 60; i++) {
      const inflated = inflateOnThread(chunked(small, i % 2 === 0 ? 65536 : [1, 100]));
      assert.ok((await readAll(inflated.chunks)).equals(content.subarray(0, 3000)), `stream ${i}`);
    }
  });

  it('left early or given up: the input is closed and the thread is free again', async () => {
    const input = { closed: false };
    const inflated = inflateOnThread(trackedChunks(compressed, input));
    for await (const _ of inflated.chunks) break;
    assert.ok(input.closed, 'the input is closed');
    assert.equal(inflateThreadFree(), true);
    // Given up before a byte was read: nothing was started, the thread is free.
    const unread = { closed: false };
    const never = inflateOnThread(trackedChunks(compressed, unread));
    await never.abort();
    assert.equal(inflateThreadFree(), true);
    assert.equal(unread.closed, false, 'the input was never opened');
  });
});

describe('inflateOnThread from a source the worker reads by itself', () => {
  const module = new URL('../helpers/inflate-source.js', import.meta.url).href;
  const arg: SeededGzip = { mib: 12, seed: 'inflate-source', chunk: 65536 };
  const { content, compressed } = seededGzip(arg);
  const source = (a: SeededGzip, signal?: AbortSignal) => ({ module, export: 'seededGzipChunks', arg: a, signal });

  it('gives the bytes and the sha256 of the compressed stream, however slowly it is read', async () => {
    const inflated = inflateOnThread(source(arg));
    const parts: Buffer[] = [];
    for await (const chunk of inflated.chunks) {
      parts.push(Buffer.from(chunk));
      // The source ends long before the ring is read: the thread must wait to be let go.
      if (parts.length === 2) await new Promise((resolve) => setTimeout(resolve, 300));
    }
    assert.ok(Buffer.concat(parts).equals(content));
    assert.equal(await inflated.digest, sha256(compressed));
    assert.equal(inflateThreadFree(), true);
  });

  it("remakes the source's UnionctlError here, with its code and hint", async () => {
    const failAfter = {
      bytes: compressed.length >> 1,
      code: 'NOT_FOUND' as const,
      message: 'registry r: blob b not found (404)',
      hint: 'check it',
    };
    await assert.rejects(readAll(inflateOnThread(source({ ...arg, failAfter })).chunks), (e: unknown) => {
      assert.ok(e instanceof UnionctlError, String(e));
      assert.equal(e.code, 'NOT_FOUND');
      assert.equal(e.message, failAfter.message);
      assert.equal(e.hint, 'check it');
      return true;
    });
    assert.equal(inflateThreadFree(), true);
  });

  it('a source module that cannot be loaded fails the stream', async () => {
    const badModule = new URL('../helpers/inflate-source.js', import.meta.url).href.replace('inflate-source.js', 'no-such-module.js');
    await assert.rejects(readAll(inflateOnThread({ module: badModule, export: 'x', arg: {} }).chunks), /no-such-module|Cannot find module/);
    assert.equal(inflateThreadFree(), true);
  });

  it('stops when its signal aborts, with the reason, though output is left to read', async () => {
    const controller = new AbortController();
    const reason = new Error('the pull was cancelled');
    const inflated = inflateOnThread(source(arg, controller.signal));
    let readAfterAbort = 0;
    await assert.rejects(
      (async () => {
        for await (const _ of inflated.chunks) {
          if (controller.signal.aborted) readAfterAbort++;
          controller.abort(reason);
        }
      })(),
      (e: unknown) => e === reason,
    );
    assert.equal(readAfterAbort, 0, 'no chunk is given out after the abort');
    assert.equal(inflateThreadFree(), true);
  });
});
