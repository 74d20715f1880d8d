/**
 * The two zstd decoders (src/archive/zstd-program.ts): the zstd program and fzstd give the same
 * bytes, refuse the same damaged streams, let an error of the input through as it is; and the
 * program's child process never outlives its stream (ended, failed or abandoned: killed, reaped,
 * its input closed).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { decompressedStream, openLayerInput } from '../../src/archive/decompress.js';
import { UnionctlError } from '../../src/errors.js';
import { toolsMissing } from '../helpers/requires.js';
import { eventually } from '../helpers/wait.js';
import { chunked, trackedChunks } from '../helpers/tarbuild.js';
import { describeEachZstdDecoder, processExists, ZSTD_DECODERS, zstdChildren } from '../helpers/zstd-decoders.js';

const zstd = (data: Buffer, ...args: string[]): Buffer => execFileSync('zstd', ['-q', '-c', ...args], { input: data, maxBuffer: 1 << 28 });

const skippable = (content: string) => {
  const size = Buffer.alloc(4);
  size.writeUInt32LE(content.length);
  return Buffer.concat([Buffer.from([0x53, 0x2a, 0x4d, 0x18]), size, Buffer.from(content)]);
};

/** Some MiB that compress a little (text-like), so a stream has many blocks and output chunks. */
function mixedBytes(mib: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < mib * 16; i++) parts.push(randomBytes(32 * 1024), Buffer.from(`line ${i}\n`.repeat(3277)).subarray(0, 32 * 1024));
  return Buffer.concat(parts);
}

async function decodeWith(decoder: string, data: Buffer, chunk: number | number[] = 65536): Promise<Buffer> {
  const saved = process.env.UNIONCTL_ZSTD;
  process.env.UNIONCTL_ZSTD = decoder;
  try {
    const { stream } = await decompressedStream(chunked(data, chunk));
    const parts: Buffer[] = [];
    for await (const piece of stream) parts.push(Buffer.from(piece));
    return Buffer.concat(parts);
  } finally {
    if (saved === undefined) delete process.env.UNIONCTL_ZSTD;
    else process.env.UNIONCTL_ZSTD = saved;
  }
}

describe('zstd decoders', { skip: toolsMissing(['zstd']) }, () => {
  it('give the same bytes on a multi-frame stream with skippable frames, levels and a long window', async () => {
    const parts = [mixedBytes(2), randomBytes(70_000), Buffer.alloc(3_000_000), Buffer.from('tail')];
    const stream = Buffer.concat([
      skippable('in front'),
      zstd(parts[0]!, '-19', '--check'),
      skippable(''),
      zstd(parts[1]!, '--no-check'),
      zstd(parts[2]!, '--long=28'), // a 256 MiB window: more than zstd decodes without --memory
      skippable('between'),
      zstd(parts[3]!, '--check'),
      skippable('at the end'),
    ]);
    const expected = Buffer.concat(parts);
    for (const decoder of ZSTD_DECODERS) {
      for (const chunk of [65536, [1, 7, 4096, 300_000]]) {
        assert.ok((await decodeWith(decoder, stream, chunk)).equals(expected), `${decoder}, chunks of ${String(chunk)}`);
      }
    }
    assert.deepEqual(zstdChildren(), [], 'no zstd process left');
  });
});

/** 4 MiB of mixedBytes, compressed with checksums (made once, when first asked for). */
let compressedOnce: Buffer | undefined;
const sample = (): Buffer => (compressedOnce ??= zstd(mixedBytes(4), '--check'));

describeEachZstdDecoder('a zstd stream that fails', (decoder) => {
  it('is BAD_TAR when its checksum does not match or it is cut short, and leaves no process', async () => {
    const compressed = sample();
    const damaged = Buffer.from(compressed);
    damaged[damaged.length - 2] = damaged[damaged.length - 2]! ^ 0x10; // in the content checksum
    for (const [what, stream] of [
      ['checksum', damaged],
      ['truncated', compressed.subarray(0, compressed.length >> 1)],
    ] as const) {
      await assert.rejects(decodeWith(decoder, stream), (e: unknown) => {
        assert.ok(e instanceof UnionctlError, `${what}: ${String(e)}`);
        assert.equal(e.code, 'BAD_TAR');
        assert.match(e.message, /^corrupt zstd stream: \S/);
        assert.match(e.hint ?? '', /zstd -t/);
        return true;
      });
      assert.deepEqual(zstdChildren(), [], `${what}: no zstd process left`);
    }
  });

  it('passes an error of its input through as itself, and closes the input', async () => {
    const compressed = sample();
    const dropped = new Error('the connection was reset');
    const input = { closed: false };
    const { stream } = await decompressedStream(trackedChunks(compressed, input, { offset: compressed.length >> 1, error: dropped }));
    await assert.rejects(
      (async () => {
        for await (const _ of stream);
      })(),
      (e: unknown) => e === dropped,
    );
    assert.ok(input.closed);
    assert.deepEqual(zstdChildren(), [], 'no zstd process left');
  });

  it('stopped early (return()): the input is closed, the decoder process killed and reaped', async () => {
    const input = { closed: false };
    const { stream } = await decompressedStream(trackedChunks(sample(), input));
    const chunks = stream[Symbol.asyncIterator]();
    const first = await chunks.next();
    assert.equal(first.done, false);
    const children = zstdChildren();
    assert.equal(children.length, decoder === 'native' ? 1 : 0, `zstd processes while decoding: ${children.join(' ')}`);
    await chunks.return?.();
    assert.ok(input.closed, 'the input is closed');
    for (const pid of children) assert.equal(processExists(pid), false, `zstd ${pid} is gone (not even a zombie)`);
    assert.deepEqual(zstdChildren(), []);
  });

  it('stopped early on a file: no descriptor of the file is left open', async (t) => {
    const dir = mkdtempSync('/tmp/unionctl-test-zstd-native-');
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, `layer-${decoder}.tar.zst`);
    writeFileSync(file, sample());
    const { stream } = await openLayerInput(file);
    const chunks = stream[Symbol.asyncIterator]();
    assert.equal((await chunks.next()).done, false);
    await chunks.return?.();
    // A file stream closes its fd once destroyed, a moment after return() has resolved.
    await eventually('no fd of the layer file is open', () => openFdsOf(file).length === 0, { intervalMs: 10 });
    assert.deepEqual(zstdChildren(), []);
  });
});

/** This process's file descriptors open on `path`. */
function openFdsOf(path: string): string[] {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      return false;
    }
  });
}
