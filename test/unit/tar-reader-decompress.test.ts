import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { decompressedStream, openLayerInput, openLayerStream, sniffCompression, ZSTD_OUTPUT_CHUNK } from '../../src/archive/decompress.js';
import { RING_BYTES } from '../../src/archive/stream-digest.js';
import { readTar, type TarReader } from '../../src/archive/tar-reader.js';
import type { LeasedChunk } from '../../src/archive/types.js';
import { UnionctlError } from '../../src/errors.js';
import { buildTar, chunked } from '../helpers/tarbuild.js';
import { toolsMissing } from '../helpers/requires.js';
import { describeEachZstdDecoder } from '../helpers/zstd-decoders.js';

const repo = process.env.UNIONCTL_REPO ?? process.cwd();
const fixture = (name: string) => join(repo, 'fixtures', name);

/** diff_ids of the sample image's layers (fixtures/SAMPLE-README.md). */
const DIFF_IDS = [
  '9e721e9db1f84b04216fcb0f3fe271f3e9d48a5fe020252e82180d636f2a27b1',
  '7058b3d776058fe84d8142c37271aa8d2890654562594c4b4a8cfcbe179d08c0',
  '2d03330843ef3bb247481366ee85ad8628c69efc9af29ec53430071860189fea',
  'd52c36bcc68cf387ca56ba2a2736674cdac472ea3ef6ef70393743c36580deca',
];
const GZIP_BLOBS = [
  'ce498f9e4fd48dc044ecce34ce8cdc5c3becb122dff701a2b3e430de79b64e89',
  '94c8aee5bab9285f99c4d12edda1f4b251adf5c71ab408f9b575b74c79154b39',
  'b56a67267587e4e758311febee16cfab53fd02b164eedcc3d9da5767865a3e66',
  '6d2a31ae5420000b6f046b023178a915c7b9541edc62501070888d56763f28cc',
];
const ZSTD_BLOBS = [
  'abfd16bda2f54e87750aaf6dc4d2cd8f1e0b70bbe7e71849dd7347bf7b58f8cb',
  '01e3dae2e12a089b06a1e36da6d312e8aac67c8bdd64dccc05eaf73fed8b0bcd',
  '186479d047bcd34c7d0e539b6eed6e485a29b662599374bd462fd95600ac1cea',
  'c5dccb99a5773247d3f67e246e5102b92450f12a790cb79cbcdd7506b58fb84f',
];

/** The blobs of an OCI archive, read with our own tar reader. */
async function ociBlobs(archive: string): Promise<Map<string, Buffer>> {
  const blobs = new Map<string, Buffer>();
  for await (const { header, body } of readTar(chunked(readFileSync(fixture(archive))))) {
    const m = /^(?:\.\/)?blobs\/sha256\/([0-9a-f]{64})$/.exec(header.path);
    if (m === null) continue;
    const parts: Buffer[] = [];
    for await (const piece of body) parts.push(Buffer.from(piece));
    blobs.set(m[1], Buffer.concat(parts));
  }
  return blobs;
}

/** Decompresses, parses and returns the diffId, the compression and the number of entries. */
async function layerDigest(input: AsyncIterable<Buffer> | Readable): Promise<{ compression: string; diffId: string; entries: number }> {
  const { compression, stream } = await decompressedStream(input);
  const tar = readTar(stream);
  let entries = 0;
  for await (const _ of tar) entries++;
  return { compression, diffId: tar.digest.diffId(), entries };
}

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const piece of stream) parts.push(piece);
  return Buffer.concat(parts);
}

/** Decompressing and parsing `data` fails with BAD_TAR, naming the `format` stream as corrupt. */
async function rejectsAsCorrupt(data: Buffer, format: 'gzip' | 'zstd'): Promise<void> {
  await assert.rejects(layerDigest(chunked(data, 500)), (e: unknown) => {
    assert.ok(e instanceof UnionctlError, String(e));
    assert.equal(e.code, 'BAD_TAR');
    assert.match(e.message, new RegExp(`corrupt ${format} stream`));
    return true;
  });
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('sniffCompression', () => {
  it('recognises the magic numbers', () => {
    assert.equal(sniffCompression(Buffer.from([0x1f, 0x8b, 8, 0])), 'gzip');
    assert.equal(sniffCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0])), 'zstd');
    assert.equal(sniffCompression(Buffer.from([0x50, 0x2a, 0x4d, 0x18])), 'zstd'); // skippable frame
    assert.equal(sniffCompression(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])), 'xz');
    assert.equal(sniffCompression(Buffer.from('BZh91AY')), 'bzip2');
    assert.equal(sniffCompression(buildTar([{ name: 'a' }])), 'none');
    assert.equal(sniffCompression(Buffer.alloc(0)), 'none');
  });
});

/** Every layer blob of the sample OCI `archive` decompresses (as `compression`) to its diff_id. */
async function checkSampleBlobs(archive: string, blobs: string[], compression: string): Promise<void> {
  const all = await ociBlobs(archive);
  for (const [i, blob] of blobs.entries()) {
    const data = all.get(blob);
    assert.ok(data !== undefined, `blob ${blob} is in ${archive}`);
    assert.equal(sha256(data), blob, 'the archive reader returned the blob intact');
    // Small input chunks, so the sniffed head spans several of them.
    const result = await layerDigest(chunked(data, [3, 1, 4096, 65536]));
    assert.equal(result.compression, compression);
    assert.equal(result.diffId, `sha256:${DIFF_IDS[i]}`, `layer ${i + 1}`);
  }
}

describe('decompressedStream: the sample image', () => {
  it('sample-oci-gzip.tar: every layer blob decompresses to its diff_id', () =>
    checkSampleBlobs('sample-oci-gzip.tar', GZIP_BLOBS, 'gzip'));

  it('sample-docker.tar: uncompressed layer.tar entries pass through as they are', async () => {
    const layers: Buffer[] = [];
    for await (const { header, body } of readTar(chunked(readFileSync(fixture('sample-docker.tar'))))) {
      if (!header.path.endsWith('/layer.tar')) continue;
      layers.push(await collect(body as AsyncIterable<Buffer>));
    }
    const digests = await Promise.all(layers.map(async (l) => (await layerDigest(chunked(l))).diffId));
    assert.deepEqual(digests.sort(), DIFF_IDS.map((d) => `sha256:${d}`).sort());
  });

  it('openLayerInput and openLayerStream read files of every compression', async () => {
    const files = ['1-base.tar', '2-app.tar.gz', '3-extras.tar.zst', '4-changes.tar'];
    for (const [i, file] of files.entries()) {
      const { compression, stream } = await openLayerInput(fixture(`layers/${file}`));
      assert.equal(compression, ['none', 'gzip', 'zstd', 'none'][i]);
      const tar = readTar(stream);
      for await (const _ of tar) {
        /* skip */
      }
      assert.equal(tar.digest.diffId(), `sha256:${DIFF_IDS[i]}`);
      const layer = await openLayerStream(fixture(`layers/${file}`));
      assert.equal(layer.compression, compression);
      assert.equal(layer.digest !== undefined, compression === 'none', 'only an uncompressed file hashes itself');
      const lent = readTar(layer.chunks, { digest: layer.digest });
      for await (const _ of lent) {
        /* skip */
      }
      assert.equal(lent.digest.diffId(), `sha256:${DIFF_IDS[i]}`);
    }
    for (const open of [openLayerInput, openLayerStream]) {
      await assert.rejects(open(fixture('layers/no-such-file.tar')), (e: unknown) => e instanceof UnionctlError && e.code === 'NOT_FOUND');
    }
  });
});

describe('openLayerInput: chunks the caller keeps', () => {
  it('hands out chunks that stay intact after the whole file has been read', async () => {
    const dir = mkdtempSync('/tmp/unionctl-test-owned-');
    try {
      // More than the digest ring holds, with position-dependent bytes: a rewritten chunk shows.
      const data = Buffer.alloc(3 * RING_BYTES + 4096);
      for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
      const path = join(dir, 'blob.tar');
      writeFileSync(path, data);
      const { compression, stream } = await openLayerInput(path);
      assert.equal(compression, 'none');
      const kept: Buffer[] = [];
      for await (const chunk of stream) kept.push(chunk);
      assert.ok(Buffer.concat(kept).equals(data), 'every chunk kept its bytes');
      // Entry bodies over it are views of those chunks: kept whole too.
      writeFileSync(path, buildTar([{ name: 'big', content: data }]));
      const pieces: Buffer[] = [];
      for await (const { body } of readTar((await openLayerInput(path)).stream)) for await (const piece of body) pieces.push(piece);
      assert.ok(Buffer.concat(pieces).equals(data), 'every body piece kept its bytes');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('openLayerStream: large uncompressed files (read into the digest ring)', () => {
  it('hashes and hands out every byte intact across ring wrap-arounds, with and without the hashing thread', async () => {
    const dir = mkdtempSync('/tmp/unionctl-test-bigtar-');
    try {
      // 3 files of 30 MB with position-dependent content: any stale or overwritten ring slot shows.
      const contents = [0, 1, 2].map((n) => {
        const data = Buffer.alloc(30 * 1024 * 1024 + n * 1000);
        for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761 + n) >>> 0, i);
        return data;
      });
      const tarPath = join(dir, 'big.tar');
      writeFileSync(tarPath, buildTar(contents.map((content, n) => ({ name: `f${n}`, content }))));
      const fileDigest = `sha256:${sha256(readFileSync(tarPath))}`;
      for (const thread of ['1', '0']) {
        process.env.UNIONCTL_DIGEST_THREAD = thread;
        try {
          const { compression, chunks, digest } = await openLayerStream(tarPath);
          assert.equal(compression, 'none');
          assert.ok(digest !== undefined, 'the file reader hashes what it reads');
          const tar: TarReader<LeasedChunk> = readTar(chunks, { digest }); // the lease shows in the body's type
          const bodies: string[] = [];
          for await (const { body } of tar) {
            const hash = createHash('sha256');
            for await (const piece of body) hash.update(piece);
            bodies.push(hash.digest('hex'));
          }
          assert.deepEqual(bodies, contents.map(sha256), `contents, digest thread ${thread}`);
          assert.equal(tar.digest.diffId(), fileDigest, `diffId, digest thread ${thread}`);
          // A reader abandoned half-way closes the file (and stops the hashing thread).
          const fds = readdirSync('/proc/self/fd').length;
          const layer = await openLayerStream(tarPath);
          const early = readTar(layer.chunks, { digest: layer.digest });
          for await (const { body } of early) {
            for await (const _ of body) break;
            break;
          }
          assert.equal(readdirSync('/proc/self/fd').length, fds, 'no file left open');
          assert.throws(() => early.digest.diffId(), /before the stream was read/);
        } finally {
          delete process.env.UNIONCTL_DIGEST_THREAD;
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** A small tar for the edge cases: one compressible file past the 64 KiB chunk size, one tiny file. */
const tar = buildTar([
  { name: 'a', content: 'x'.repeat(100_000) },
  { name: 'b', content: 'y' },
]);

describe('decompressedStream: edge cases', () => {
  it('reads multi-member gzip (pigz, concatenated files)', async () => {
    const half = Math.floor(tar.length / 2);
    const data = Buffer.concat([gzipSync(tar.subarray(0, half)), gzipSync(tar.subarray(half))]);
    const { stream } = await decompressedStream(chunked(data, 1000));
    assert.deepEqual(await collect(stream), tar);
  });

  it('refuses xz and bzip2, naming the format', { skip: toolsMissing(['xz', 'bzip2']) }, async () => {
    for (const [tool, name] of [
      ['xz', 'xz'],
      ['bzip2', 'bzip2'],
    ]) {
      const data = execFileSync(tool, ['-c'], { input: tar });
      await assert.rejects(decompressedStream(chunked(data)), (e: unknown) => {
        assert.ok(e instanceof UnionctlError);
        assert.equal(e.code, 'UNSUPPORTED');
        assert.match(e.message, new RegExp(`${name}-compressed`));
        return true;
      });
    }
  });

  it('reports corrupt or truncated gzip as BAD_TAR', async () => {
    const gz = gzipSync(tar);
    const corrupt = Buffer.from(gz);
    for (let i = 20; i < 60; i++) corrupt[i] ^= 0x55;
    for (const data of [corrupt, gz.subarray(0, gz.length - 100)]) await rejectsAsCorrupt(data, 'gzip');
  });

  it('passes errors of the input stream through unchanged', async () => {
    const failing = new Readable({
      read() {
        this.push(gzipSync(tar).subarray(0, 100));
        this.destroy(new Error('disk on fire'));
      },
    });
    await assert.rejects(layerDigest(failing), /disk on fire/);
  });
});

// The zstd tests need the zstd program to make their input (the native decoder is that program too).
describe('decompressedStream: zstd', { skip: toolsMissing(['zstd']) }, () => {
  describeEachZstdDecoder('decoding', (decoder) => {
    it('sample-oci-zstd.tar: every layer blob decompresses to its diff_id', () =>
      checkSampleBlobs('sample-oci-zstd.tar', ZSTD_BLOBS, 'zstd'));

    it('reads multi-frame zstd with a skippable frame in front', async () => {
      const frame = (data: Buffer) => execFileSync('zstd', ['-q', '-c', '-19'], { input: data });
      const skippable = Buffer.concat([Buffer.from([0x5a, 0x2a, 0x4d, 0x18, 4, 0, 0, 0]), Buffer.from('skip')]);
      const data = Buffer.concat([skippable, frame(tar.subarray(0, 5000)), frame(tar.subarray(5000))]);
      const { compression, stream } = await decompressedStream(chunked(data, [1, 2, 3, 500]));
      assert.equal(compression, 'zstd');
      assert.deepEqual(await collect(stream), tar);
    });

    it('decodes highly compressed zstd in bounded pieces', async () => {
      const zeros = Buffer.alloc(64 * 1024 * 1024);
      const data = execFileSync('zstd', ['-q', '-c', '-3'], { input: zeros, maxBuffer: 1 << 30 });
      assert.ok(data.length < 100_000, 'the zeros compress to almost nothing');
      const { stream } = await decompressedStream(chunked(data, 64 * 1024)); // the whole stream in one or two chunks
      let total = 0;
      let largest = 0;
      for await (const piece of stream) {
        total += piece.length;
        largest = Math.max(largest, piece.length);
      }
      assert.equal(total, zeros.length);
      // fzstd's path yields a block (128 KiB) at a time; the program's output is gathered into pieces of ZSTD_OUTPUT_CHUNK.
      const bound = decoder === 'js' ? 128 * 1024 : ZSTD_OUTPUT_CHUNK;
      assert.ok(largest <= bound, `largest piece ${largest} bytes`);
    });

    it('reports corrupt or truncated zstd as BAD_TAR', async () => {
      const zst = execFileSync('zstd', ['-q', '-c'], { input: tar });
      const corrupt = Buffer.from(zst);
      corrupt[4] = 0xff; // reserved bits in the frame header descriptor
      for (const data of [corrupt, zst.subarray(0, zst.length - 10)]) await rejectsAsCorrupt(data, 'zstd');
    });
  });
});
