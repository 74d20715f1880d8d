/**
 * Bad image archives: each one fails with one clear error line naming the image / layer / entry,
 * exit code 1, and leaves the store exactly as it was (same files under the root, no image record,
 * no mount) — also when earlier layers of the same archive had already been applied.
 *
 * The store is not empty beforehand (one small image is loaded first), and the bad layer is not the
 * first one, so every case also checks that the layers applied before the failure are rolled back.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mountsBelow } from '../helpers/mounts.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import {
  assertCleanFailure,
  listing,
  makeLayerTar,
  ok,
  SAMPLE_DOCKER,
  sampleLayers,
  sha256,
  tarDir,
  unionctl,
  untar,
  writeOciLayout,
  type OciImageSpec,
} from './images-helpers.js';

let scratchFs: Scratch;
let scratch = '';
let layers: Buffer[] = [];

before(() => {
  scratchFs = makeScratch();
  scratch = scratchFs.dir;
  layers = sampleLayers(scratch);
});

after(() => {
  for (const driver of ['vfs', 'overlay2']) unionctl(['--root', join(scratch, `root-${driver}`), 'cleanup']);
  scratchFs.dispose();
});

/** A tar with the checksum of its second header broken (the name field changed after checksumming). */
function withBadChecksum(tar: Buffer): Buffer {
  const copy = Buffer.from(tar);
  const firstSize = parseInt(copy.toString('latin1', 124, 136).replace(/\0.*$/, '').trim() || '0', 8);
  const second = 512 + Math.ceil(firstSize / 512) * 512;
  copy[second] ^= 0x20; // flips the case of the first letter of the second entry's name
  return copy;
}

/** The same tar with one content byte changed (same size, still a valid tar). */
function withChangedContent(tar: Buffer): Buffer {
  const copy = Buffer.from(tar);
  // The first entry of layer 2 with content: find a header with a non-zero size.
  for (let off = 0; off + 512 <= copy.length;) {
    const size = parseInt(
      copy
        .toString('latin1', off + 124, off + 136)
        .replace(/\0.*$/, '')
        .trim() || '0',
      8,
    );
    if (copy[off] === 0) break;
    if (size > 0 && copy[off + 156] === 0x30) {
      copy[off + 512] ^= 0x01;
      return copy;
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error('no file with content in the layer');
}

/** The zstd frame with its first block header made reserved (type 3): RFC 8878 says reject it. */
function withBadZstdBlock(blob: Buffer): Buffer {
  const copy = Buffer.from(blob);
  const fhd = copy[4];
  const singleSegment = (fhd >> 5) & 1;
  const headerBytes = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][fhd & 3] + [singleSegment, 2, 4, 8][fhd >> 6];
  copy.fill(0xff, headerBytes, headerBytes + 3);
  return copy;
}

function oci(name: string, spec: Partial<OciImageSpec> & Pick<OciImageSpec, 'layers'>): string {
  return writeOciLayout(join(scratch, name), { name: `bad:${name}`, ...spec });
}

/** A docker save archive of the sample with `edit` applied to its unpacked files. */
function dockerVariant(name: string, edit: (dir: string) => void): string {
  const dir = untar(SAMPLE_DOCKER, join(scratch, `docker-${name}`));
  edit(dir);
  return tarDir(dir, join(scratch, `docker-${name}.tar`));
}

function configMember(dir: string): string {
  return (JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Array<{ Config: string }>)[0].Config;
}

interface BadCase {
  name: string;
  archive: () => string;
  /** What the error line must say. */
  mention: RegExp;
}

const CASES: BadCase[] = [
  {
    name: 'truncated archive',
    archive: () => {
      const path = join(scratch, 'truncated.tar');
      const data = readFileSync(SAMPLE_DOCKER);
      writeFileSync(path, data.subarray(0, Math.floor(data.length * 0.6)));
      return path;
    },
    mention: /truncated\.tar.*truncated archive/,
  },
  {
    name: 'corrupt gzip stream',
    archive: () =>
      oci('gzip', {
        layers: [
          { tar: layers[0], compression: 'gzip' },
          {
            tar: layers[1],
            compression: 'gzip',
            tamperedBlob: (b) => {
              const t = Buffer.from(b);
              t[2] = 7; // compression method 7: not deflate
              return t;
            },
          },
        ],
      }),
    mention: /layer 2 of image bad:gzip.*corrupt gzip stream/,
  },
  {
    name: 'corrupt zstd stream',
    archive: () =>
      oci('zstd', {
        layers: [
          { tar: layers[0], compression: 'zstd' },
          { tar: layers[1], compression: 'zstd', tamperedBlob: withBadZstdBlock },
        ],
      }),
    mention: /layer 2 of image bad:zstd.*corrupt zstd stream/,
  },
  {
    name: 'layer blob digest mismatch',
    archive: () => oci('digest', { layers: [{ tar: layers[0] }, { tar: layers[1], tamperedBlob: withChangedContent }] }),
    mention: /layer 2 of image bad:digest.*blob digest mismatch/,
  },
  {
    name: 'diff ID mismatch',
    archive: () =>
      oci('diffid', {
        layers: [
          { tar: layers[0], compression: 'gzip' },
          { tar: layers[1], compression: 'gzip' },
        ],
        configText: JSON.stringify({ os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(layers[0]), sha256('not this layer')] } }),
      }),
    mention: /layer 2 of image bad:diffid.*diff ID mismatch/,
  },
  {
    name: 'diff ID mismatch in a docker save archive',
    archive: () =>
      dockerVariant('diffid', (dir) => {
        // Swap the content of layer 3 for layer 2's tar: a valid tar, but not the one the config names.
        const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
        writeFileSync(join(dir, manifest[0].Layers[2]), layers[1]);
      }),
    mention: /layer 3 of image sample-app:1.*diff ID mismatch/,
  },
  {
    name: 'manifest naming a missing blob',
    archive: () => oci('missing', { layers: [{ tar: layers[0] }, { tar: layers[1] }, { tar: layers[2], omitBlob: true }] }),
    mention: /layer 3 of image bad:missing.*names blob sha256:[0-9a-f]{64}, which is not in the archive/,
  },
  {
    name: 'unknown media type',
    archive: () =>
      oci('media', { layers: [{ tar: layers[0] }, { tar: layers[1], mediaType: 'application/vnd.example.layer.v1.tar+lz4' }] }),
    mention: /layer 2 of image bad:media.*unknown media type "application\/vnd\.example\.layer\.v1\.tar\+lz4"/,
  },
  {
    name: 'config that is not JSON (OCI)',
    archive: () => oci('config', { layers: [{ tar: layers[0] }], configText: 'FROM scratch\n' }),
    mention: /config of image bad:config .*is not valid JSON/,
  },
  {
    name: 'config that is not JSON (docker save)',
    archive: () => dockerVariant('config', (dir) => writeFileSync(join(dir, configMember(dir)), '{"rootfs": ')),
    mention: /config of image sample-app:1 .*is not valid JSON/,
  },
  {
    name: 'tar header checksum error',
    archive: () => oci('checksum', { layers: [{ tar: layers[0] }, { tar: withBadChecksum(layers[1]) }] }),
    mention: /layer 2 of image bad:checksum.*header checksum mismatch/,
  },
];

for (const driver of ['vfs', 'overlay2']) {
  describe(`bad archives on ${driver}`, () => {
    const root = () => join(scratch, `root-${driver}`);
    const g = () => ['--root', root(), '--driver', driver];

    before(() => {
      // Something in the store already: the failed loads must leave it exactly as it is.
      const dir = writeOciLayout(join(scratch, `good-${driver}`), {
        name: 'good:1',
        layers: [{ tar: makeLayerTar(scratch, `good-${driver}`, { 'etc/motd': 'hello\n', 'bin/tool': Buffer.alloc(5000, 7) }) }],
      });
      ok(unionctl([...g(), 'load', dir]));
    });

    for (const c of CASES) {
      it(c.name, () => {
        const archive = c.archive();
        const before = listing(root());
        const r = unionctl([...g(), 'load', archive]);
        assertCleanFailure(r, c.mention);
        assert.deepEqual(listing(root()), before, 'the store root is unchanged');
        assert.deepEqual(mountsBelow(scratch), [], 'nothing mounted');
        const images = JSON.parse(ok(unionctl([...g(), '--json', 'images']))) as Array<{ names: string[] }>;
        assert.deepEqual(
          images.map((i) => i.names),
          [['good:1']],
        );
      });
    }
  });
}
