/**
 * tar-split: the reader's tap records every non-content byte, and the stream rebuilt from that
 * record plus the files is the original, byte for byte — whatever the dialect (ustar prefix, pax,
 * global pax, GNU long names, volume labels), junk in padding, blocks after the end marker, a
 * missing end marker, and chunk boundaries anywhere. Then through the store: an imported layer,
 * on vfs and overlay2, rebuilds to its diff ID.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { applyLayer } from '../../src/archive/apply.js';
import { readTar, type TarTap } from '../../src/archive/tar-reader.js';
import {
  parseTarSplit,
  readTarSplit,
  rebuildTarStream,
  serializeTarSplit,
  TarSplitRecorder,
  writeTarSplit,
  type TarSplitRecord,
} from '../../src/archive/tar-split.js';
import { UnionctlError } from '../../src/errors.js';
import { openStore } from '../../src/index.js';
import { scratchMissing, withScratchFs } from '../helpers/scratch.js';
import { buildTar, chunked, END_OF_ARCHIVE, gnuLongRecord, paxHeader, tarEntry, tarHeader } from '../helpers/tarbuild.js';

const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Reads `tar` with a recorder on, writing each entry's content where an apply would put it under `dir`. */
async function recordAndExtract(tar: Buffer, dir: string, chunk: number | number[]): Promise<{ record: TarSplitRecord; diffId: string }> {
  const recorder = new TarSplitRecorder();
  const reader = readTar(chunked(tar, chunk), { tap: recorder });
  for await (const { header, body } of reader) {
    const parts: Buffer[] = [];
    for await (const piece of body) parts.push(Buffer.from(piece));
    if (header.type !== 'file') continue;
    const path = join(dir, header.path);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, Buffer.concat(parts));
  }
  return { record: recorder.finish(), diffId: reader.digest.diffId() };
}

async function rebuild(record: TarSplitRecord, dir: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const piece of rebuildTarStream(record, dir)) parts.push(Buffer.from(piece));
  return Buffer.concat(parts);
}

function tmpDir(): string {
  return mkdtempSync('/tmp/unionctl-tarsplit-');
}

const longName = `${'deep/'.repeat(30)}file-with-a-long-name.txt`;

/** Archives the reader accepts, each with something a plain re-export would not reproduce. */
const ARCHIVES: Record<string, () => Buffer> = {
  'GNU tar ustar output with a prefix field': () => {
    const dir = tmpDir();
    try {
      const deep = join(dir, 'p'.repeat(60), 'q'.repeat(60));
      mkdirSync(deep, { recursive: true });
      writeFileSync(join(deep, 'name.txt'), 'prefixed\n');
      return execFileSync('tar', ['--format=ustar', '-cf', '-', '-C', dir, '.']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  'pax records with binary xattrs and a GNU long name': () =>
    buildTar([
      { name: 'bin/ping', content: Buffer.alloc(3000, 1), pax: { 'SCHILY.xattr.user.binary': Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0]) } },
      Buffer.concat([gnuLongRecord(longName), tarEntry({ name: longName.slice(0, 99), content: 'long\n', format: 'gnu' })]),
    ]),
  'a global pax header and a volume label': () =>
    buildTar([tarHeader({ name: 'VOLUME', typeflag: 'V' }), paxHeader({ comment: 'made by hand' }, 'g'), { name: 'a.txt', content: 'a' }]),
  'junk in the padding and 10 KiB of blocks after the end marker': () => {
    const entry = tarEntry({ name: 'padded.bin', content: Buffer.alloc(700, 9) });
    entry.fill(0x5a, 512 + 700); // padding after the content: readers must ignore it, we must keep it
    return Buffer.concat([entry, END_OF_ARCHIVE, Buffer.alloc(10240 - ((entry.length + END_OF_ARCHIVE.length) % 10240))]);
  },
  'no end-of-archive marker': () => buildTar([{ name: 'x', content: 'no end' }], { end: false }),
  'hardlinks, symlinks, dirs and empty files': () =>
    buildTar([
      { name: 'd/', typeflag: '5' },
      { name: 'd/f', content: 'content' },
      { name: 'd/h', typeflag: '1', linkname: 'd/f' },
      { name: 'd/s', typeflag: '2', linkname: 'f' },
      { name: 'd/empty', content: '' },
    ]),
};

describe('tar-split: record and rebuild', () => {
  for (const [name, make] of Object.entries(ARCHIVES)) {
    for (const chunk of [1 << 20, [1, 511, 7, 4096, 333]]) {
      it(`${name} (chunks ${Array.isArray(chunk) ? 'ragged' : 'large'})`, async () => {
        const tar = make();
        const dir = tmpDir();
        try {
          const { record, diffId } = await recordAndExtract(tar, dir, chunk);
          assert.equal(diffId, sha256(tar), 'the tap does not change the digest');
          assert.equal(record.totalBytes, tar.length);
          const rebuilt = await rebuild(record, dir);
          assert.equal(sha256(rebuilt), sha256(tar));
          // Through the on-disk format too.
          const again = parseTarSplit(serializeTarSplit(record), 'test');
          assert.ok((await rebuild(again, dir)).equals(tar));
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });
    }
  }

  it('the record file round-trips (gzip, JSON lines in tar-split shape)', async () => {
    const dir = tmpDir();
    try {
      const tar = ARCHIVES['pax records with binary xattrs and a GNU long name']();
      const { record } = await recordAndExtract(tar, dir, 4096);
      await writeTarSplit(join(dir, 'rec.tar-split.gz'), record);
      const read = readTarSplit(join(dir, 'rec.tar-split.gz'));
      assert.ok(read !== undefined);
      assert.deepEqual(
        read.items.map((i) => i.kind),
        record.items.map((i) => i.kind),
      );
      assert.ok((await rebuild(read, dir)).equals(tar));
      assert.equal(readTarSplit(join(dir, 'none.tar-split.gz')), undefined);
      writeFileSync(join(dir, 'bad.tar-split.gz'), 'not gzip');
      assert.throws(
        () => readTarSplit(join(dir, 'bad.tar-split.gz')),
        (e: unknown) => e instanceof UnionctlError && e.code === 'CORRUPT',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a file that changed size or vanished makes the rebuild fail naming the entry', async () => {
    const dir = tmpDir();
    try {
      const tar = buildTar([
        { name: 'a/one', content: 'one' },
        { name: 'a/two', content: 'two' },
      ]);
      const { record } = await recordAndExtract(tar, dir, 4096);
      writeFileSync(join(dir, 'a/two'), 'two and more');
      await assert.rejects(rebuild(record, dir), /entry "a\/two".*larger than the 3 bytes/);
      rmSync(join(dir, 'a/one'));
      await assert.rejects(rebuild(record, dir), /entry "a\/one".*cannot be opened \(ENOENT\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('tar reader tap', { skip: scratchMissing }, () => {
  it('applyLayer hands its tap to its own reader only; digest: false skips hashing', async (t) => {
    const tar = buildTar([{ name: 'f', content: 'x' }]);
    const seen: string[] = [];
    const tap: TarTap = { raw: () => {}, content: (h) => seen.push(h.path) };
    const dir = await withScratchFs(t);
    mkdirSync(join(dir, 'layer'));
    await applyLayer(chunked(tar), join(dir, 'layer'), { whiteoutFormat: 'overlay', tap });
    for await (const e of readTar(chunked(tar))) for await (const _p of e.body);
    assert.deepEqual(seen, ['f']);
    const unhashed = readTar(chunked(tar), { digest: false });
    for await (const e of unhashed) for await (const _p of e.body);
    assert.throws(() => unhashed.digest.diffId());
  });
});

for (const driver of ['vfs', 'overlay2']) {
  describe(`tar-split through the store (${driver})`, { skip: scratchMissing }, () => {
    it('an imported layer keeps a record and rebuilds to its diff ID; removal deletes the record', async (t) => {
      const root = join(await withScratchFs(t), 'root');
      const store = await openStore({ root, driver });
      t.after(() => store.close());
      const base = buildTar([
        { name: 'etc/', typeflag: '5' },
        { name: 'etc/passwd', content: 'root:x:0:0::/root:/bin/sh\n' },
      ]);
      const upper = ARCHIVES['pax records with binary xattrs and a GNU long name']();
      const upperWithJunk = Buffer.concat([upper.subarray(0, upper.length), Buffer.alloc(8192)]);
      const l1 = await store.importLayer(Readable.from([base]));
      const l2 = await store.importLayer(Readable.from(chunked(upperWithJunk, [1000, 3])), { parent: l1.id });
      for (const [layer, tar] of [
        [l1, base],
        [l2, upperWithJunk],
      ] as const) {
        assert.equal(layer.diffId, sha256(tar));
        const record = await store.tarSplit(layer.id);
        assert.ok(record !== undefined, 'a tar-split record was written');
        const rebuilt = await store.withLayerFiles(layer.id, (dir) => rebuild(record, dir));
        assert.equal(sha256(rebuilt), layer.diffId);
      }
      await store.remove(l2.id);
      await assert.rejects(store.tarSplit(l2.id), /does not exist/);
      assert.equal(readTarSplit(store.tarSplitPath(l2.id)), undefined);
    });
  });
}
