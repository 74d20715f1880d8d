/**
 * zstd frame content checksums (RFC 8878 §3.1.1): XXH64 itself, against the specification's
 * known values and against what the zstd CLI writes at the end of its frames, and the
 * decompressor refusing a frame whose content no longer hashes to its checksum — with either
 * decoder (the zstd program, which checks the checksums itself, and fzstd, where we do).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { applyLayer } from '../../src/archive/apply.js';
import { decompressedStream, openLayerStream } from '../../src/archive/decompress.js';
import { Xxh64 } from '../../src/archive/xxhash64.js';
import { UnionctlError } from '../../src/errors.js';
import { buildTar, chunked } from '../helpers/tarbuild.js';
import { describeEachZstdDecoder } from '../helpers/zstd-decoders.js';

const work = mkdtempSync('/tmp/unionctl-test-zstd-');
after(() => rmSync(work, { recursive: true, force: true }));

const zstd = (data: Buffer, ...args: string[]): Buffer => execFileSync('zstd', ['-q', '-c', ...args], { input: data, maxBuffer: 1 << 28 });

/** The content checksum at the end of a single-frame zstd stream written with --check. */
const frameChecksum = (frame: Buffer): number => frame.readUInt32LE(frame.length - 4);

async function decompress(data: Buffer, chunk: number | number[] = 65536): Promise<Buffer> {
  const { stream } = await decompressedStream(chunked(data, chunk));
  const parts: Buffer[] = [];
  for await (const piece of stream) parts.push(Buffer.from(piece));
  return Buffer.concat(parts);
}

/** A copy of a zstd frame of incompressible data with one content byte changed: the frame stays decodable (raw blocks), its content no longer matches. */
function flipContentByte(frame: Buffer, at: number): Buffer {
  const copy = Buffer.from(frame);
  copy[at] = copy[at]! ^ 0x01;
  return copy;
}

describe('XXH64', () => {
  it('gives the known values of the specification (seed 0)', () => {
    const known: Array<[string | Buffer, bigint]> = [
      ['', 0xef46db3751d8e999n],
      ['a', 0xd24ec4f1a98c6e5bn],
      ['abc', 0x44bc2cf5ad770999n],
      ['Nobody inspects the spammish repetition', 0xfbcea83c8a378bf1n],
      ['The quick brown fox jumps over the lazy dog', 0x0b242d361fda71bcn],
      [Buffer.alloc(1000), 0x0e2b1ef27944075an],
    ];
    for (const [input, value] of known) {
      assert.equal(new Xxh64().update(Buffer.from(input)).digest(), value, JSON.stringify(input.toString().slice(0, 20)));
    }
  });

  it('gives the same hash however the input is cut', () => {
    const data = randomBytes(10_000);
    const whole = new Xxh64().update(data).digest();
    for (const size of [1, 3, 7, 31, 32, 33, 64, 1000, 4096]) {
      const h = new Xxh64();
      for (let at = 0; at < data.length; at += size) h.update(data.subarray(at, at + size));
      assert.equal(h.digest(), whole, `pieces of ${size}`);
    }
    // More than the WebAssembly memory holds at once, and two hashes open at the same time.
    const big = randomBytes(1 << 20);
    const a = new Xxh64();
    const b = new Xxh64();
    for (let at = 0; at < big.length; at += 300_000) {
      a.update(big.subarray(at, at + 300_000));
      b.update(big.subarray(at, at + 300_000));
    }
    assert.equal(a.digest(), b.digest());
    assert.equal(a.digest(), new Xxh64().update(big).digest());
  });

  it('matches the content checksums the zstd CLI writes, for sizes across every tail length', () => {
    const sizes = [0, 1, 4, 5, 8, 9, 31, 32, 33, 63, 64, 100, 1023, 4096, 131071, 131072, 131073, 300_001];
    for (const size of sizes) {
      const data = randomBytes(size);
      const frame = zstd(data, '--check');
      assert.equal(new Xxh64().update(data).digestLow32(), frameChecksum(frame), `${size} bytes`);
    }
  });
});

/**
 * The message of a frame (the `index`th, 1-based) whose content does not match its checksum: fzstd's
 * path names the frame and both values; the zstd program says only that they differ.
 */
function checksumMismatch(decoder: string, index: number, where = ''): RegExp {
  if (decoder === 'native')
    return new RegExp(`corrupt zstd stream${where}: Decoding error \\(\\d+\\) : Restored data doesn't match checksum`);
  return new RegExp(
    `corrupt zstd stream${where}: frame ${index}: content checksum mismatch \\(the frame says 0x[0-9a-f]{8}, its content hashes to 0x[0-9a-f]{8}\\)`,
  );
}

describeEachZstdDecoder('zstd content checksums', (decoder) => {
  it('decompresses frames with and without checksums, concatenated and with skippable frames, in any chunking', async () => {
    const skippable = Buffer.concat([Buffer.from([0x5a, 0x2a, 0x4d, 0x18]), Buffer.from([3, 0, 0, 0]), Buffer.from('abc')]);
    // Tiny chunks on a small stream (every header split everywhere), large ones past the 128 KiB block size.
    for (const [size, chunks] of [
      [5000, [1, 3, 13]],
      [140_000, [4096, [1, 2, 3, 1000, 65536]]],
    ] as const) {
      const parts = [randomBytes(size), Buffer.from('x'.repeat(size / 3)), randomBytes(10), Buffer.alloc(0)];
      const stream = Buffer.concat([
        zstd(parts[0]!, '--check'),
        skippable,
        zstd(parts[1]!, '--no-check'),
        zstd(parts[2]!, '--check'),
        zstd(parts[3]!, '--check'),
      ]);
      const expected = Buffer.concat(parts);
      for (const chunk of chunks) {
        assert.ok((await decompress(stream, chunk as number | number[])).equals(expected), `chunks of ${String(chunk)}`);
      }
    }
  });

  it('refuses a frame whose content no longer matches its checksum (BAD_TAR, naming the frame)', async () => {
    const data = randomBytes(300_000); // incompressible: raw blocks, so a changed byte still decodes
    const frame = zstd(data, '--check');
    const bad = flipContentByte(frame, 200_000);
    const second = Buffer.concat([zstd(randomBytes(100), '--check'), bad]);
    for (const [stream, index] of [
      [bad, 1],
      [second, 2],
    ] as const) {
      await assert.rejects(decompress(stream, 7000), (e: unknown) => {
        assert.ok(e instanceof UnionctlError, String(e));
        assert.equal(e.code, 'BAD_TAR');
        assert.match(e.message, checksumMismatch(decoder, index));
        return true;
      });
    }
    // The checksum itself damaged
    const badChecksum = Buffer.from(frame);
    badChecksum[badChecksum.length - 1] = badChecksum[badChecksum.length - 1]! ^ 0x80;
    await assert.rejects(decompress(badChecksum), checksumMismatch(decoder, 1));
  });

  it('refuses a stream that ends inside a frame', async () => {
    const frame = zstd(randomBytes(1000), '--check');
    for (const cut of [4, 5, 6, 10, frame.length - 4, frame.length - 1]) {
      await assert.rejects(
        decompress(frame.subarray(0, cut)),
        (e: unknown) => e instanceof UnionctlError && e.code === 'BAD_TAR',
        `cut at ${cut}`,
      );
    }
  });

  it('refuses a corrupted .tar.zst on apply, naming the layer file', async () => {
    const content = randomBytes(400_000);
    const tar = buildTar([{ name: 'blob', content }]);
    const frame = zstd(tar, '--check');
    const file = join(work, `layer-${decoder}.tar.zst`);
    writeFileSync(file, flipContentByte(frame, 300_000));
    await assert.rejects(
      openLayerStream(file).then(async (layer) => {
        for await (const _chunk of layer.chunks);
      }),
      checksumMismatch(decoder, 1, ` in ${file}`),
    );
    const dest = join(work, `dest-${decoder}`);
    mkdirSync(dest);
    await assert.rejects(applyLayer(file, dest, { whiteoutFormat: 'plain' }), (e: unknown) => {
      assert.ok(e instanceof UnionctlError && e.code === 'BAD_TAR', String(e));
      assert.match(e.message, checksumMismatch(decoder, 1, ` in ${file}`));
      return true;
    });
    // The intact frame applies.
    writeFileSync(file, frame);
    const clean = join(work, `clean-${decoder}`);
    mkdirSync(clean);
    await applyLayer(file, clean, { whiteoutFormat: 'plain' });
    assert.deepEqual(readdirSync(clean), ['blob']);
  });
});
