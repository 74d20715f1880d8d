/**
 * The image archive reader without a store: member indexing by seeking (ustar, pax and GNU long
 * names, "./" prefixes, truncation), what manifest.json / index.json yield (names, nested indexes
 * and platform choice, media types), and name normalisation.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { UnionctlError } from '../../src/errors.js';
import { openArchive } from '../../src/image/archive.js';
import { readImages, sha256Digest } from '../../src/image/manifest.js';
import { normalizeName } from '../../src/image/records.js';

const dir = mkdtempSync('/tmp/unionctl-image-archive-');
after(() => rmSync(dir, { recursive: true, force: true }));

async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of chunks) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

describe('archive members', () => {
  for (const format of ['ustar', 'posix', 'gnu']) {
    it(`indexes a ${format} tar by seeking, long names included`, async () => {
      const src = join(dir, `src-${format}`);
      const long = `${'x'.repeat(90)}/${'y'.repeat(50)}/member.bin`;
      mkdirSync(join(src, long, '..'), { recursive: true });
      writeFileSync(join(src, long), Buffer.alloc(5000, 3));
      writeFileSync(join(src, 'small.json'), '{"a":1}');
      const tar = join(dir, `a-${format}.tar`);
      // 154 bytes: too long for a ustar name field, so ustar splits it into prefix + name, pax/GNU use records.
      execFileSync('tar', [`--format=${format}`, '-cf', tar, '-C', src, '.']);
      const archive = await openArchive(tar, join(dir, 'tmp'));
      try {
        assert.ok(archive.has('small.json') && archive.has('./small.json'));
        assert.equal(archive.read('small.json').toString(), '{"a":1}');
        assert.equal(archive.size(long), 5000);
        assert.ok((await collect(archive.chunks(long))).equals(Buffer.alloc(5000, 3)));
        assert.equal(archive.has('missing'), false);
      } finally {
        archive.close();
      }
    });
  }

  it('a truncated archive is refused when it is opened, naming the member', async () => {
    const src = join(dir, 'src-trunc');
    mkdirSync(src);
    writeFileSync(join(src, 'big.bin'), Buffer.alloc(100_000, 1));
    const tar = join(dir, 'trunc.tar');
    execFileSync('tar', ['-cf', tar, '-C', src, 'big.bin']);
    writeFileSync(tar, readFileSync(tar).subarray(0, 50_000));
    await assert.rejects(openArchive(tar, join(dir, 'tmp')), /trunc\.tar: .*big\.bin.*truncated archive/);
  });
});

/** An OCI layout dir whose index.json holds one nested index with two platforms. */
function nestedIndexLayout(): string {
  const root = join(dir, 'nested');
  mkdirSync(join(root, 'blobs', 'sha256'), { recursive: true });
  const blob = (data: string) => {
    const digest = sha256Digest(data);
    writeFileSync(join(root, 'blobs', 'sha256', digest.slice(7)), data);
    return { digest, size: Buffer.byteLength(data) };
  };
  const manifestFor = (arch: string) => {
    const config = blob(JSON.stringify({ architecture: arch, os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
    return blob(
      JSON.stringify({ schemaVersion: 2, config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers: [] }),
    );
  };
  const here = process.arch === 'x64' ? 'amd64' : process.arch;
  const other = here === 'amd64' ? 'arm64' : 'amd64';
  const index = blob(
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifestFor(other), platform: { os: 'linux', architecture: other } },
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifestFor(here), platform: { os: 'linux', architecture: here } },
      ],
    }),
  );
  writeFileSync(join(root, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    join(root, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.index.v1+json',
          ...index,
          annotations: { 'io.containerd.image.name': 'example.com/multi' },
        },
      ],
    }),
  );
  return root;
}

describe('manifests', () => {
  it('a nested index yields the manifest for this machine, named from the outer annotations', async () => {
    const archive = await openArchive(nestedIndexLayout(), join(dir, 'tmp'));
    const images = readImages(archive);
    assert.equal(images.length, 1);
    assert.deepEqual(images[0].names, ['example.com/multi:latest']);
    const config = JSON.parse(images[0].config) as { architecture: string };
    assert.equal(config.architecture, process.arch === 'x64' ? 'amd64' : process.arch);
  });

  it('a directory that is no image layout is refused with a pointer to import', async () => {
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    const archive = await openArchive(empty, join(dir, 'tmp'));
    assert.throws(
      () => readImages(archive),
      (e: unknown) => e instanceof UnionctlError && /neither manifest\.json/.test(e.message) && /unionctl import/.test(e.hint ?? ''),
    );
  });

  it('names: a missing tag is :latest; tags and digests stay; registries with ports are not tags', () => {
    assert.equal(normalizeName('app'), 'app:latest');
    assert.equal(normalizeName('app:1'), 'app:1');
    assert.equal(normalizeName('localhost:5000/app'), 'localhost:5000/app:latest');
    assert.equal(normalizeName('localhost:5000/app:2'), 'localhost:5000/app:2');
    assert.equal(normalizeName('app@sha256:abc'), 'app@sha256:abc');
  });
});
