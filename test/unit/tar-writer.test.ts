/**
 * The tar writer, checked by independent readers: GNU tar (listing and extraction with xattrs),
 * node-tar, and our own readTar when it is built. Covers ustar prefix names, PAX long names and
 * link targets, UTF-8 names, binary xattrs with NUL bytes, big uids, whole-second mtimes,
 * checksums, body length checks and backpressure.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as nodeTar from 'tar';
import { TarWriter, encodeHeader } from '../../src/archive/tar-writer.js';
import type { TarEntryType, TarHeader } from '../../src/archive/types.js';
import { lgetxattr } from '../../src/sys/index.js';
import { scratchMissing, withScratchFs } from '../helpers/scratch.js';

function header(path: string, type: TarEntryType, fields: Partial<TarHeader> = {}): TarHeader {
  return {
    path,
    type,
    mode: type === 'dir' ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    size: 0,
    mtime: { sec: 1_700_000_000, nsec: 0 },
    linkname: '',
    devmajor: 0,
    devminor: 0,
    xattrs: new Map(),
    ...fields,
  };
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Writes the entries (with their bodies) into a tar and returns its bytes. */
async function writeTar(entries: Array<[TarHeader, Buffer?]>): Promise<Buffer> {
  const writer = new TarWriter();
  const bytes = collect(writer.stream);
  for (const [h, body] of entries) await writer.addEntry(h, body);
  await writer.finish();
  return bytes;
}

function gnuList(tarFile: string): string[] {
  const out = execFileSync('tar', ['--numeric-owner', '--utc', '-tvf', tarFile], {
    encoding: 'utf8',
    env: { ...process.env, LC_ALL: 'C.UTF-8' },
  });
  return out.trimEnd().split('\n');
}

async function nodeTarEntries(
  tarFile: string,
): Promise<Array<{ path: string; type: string; uid?: number; linkpath?: string; size?: number; mtime?: Date }>> {
  const entries: Array<{ path: string; type: string; uid?: number; linkpath?: string; size?: number; mtime?: Date }> = [];
  await nodeTar.t({
    file: tarFile,
    onReadEntry: (e) => entries.push({ path: e.path, type: e.type, uid: e.uid, linkpath: e.linkpath, size: e.size, mtime: e.mtime }),
  });
  return entries;
}

/** Our reader, when src/archive/tar-reader.ts has been written and built. */
async function ourReader(): Promise<((input: Readable) => AsyncIterable<{ header: TarHeader; body?: unknown }>) | undefined> {
  const file = fileURLToPath(new URL('../../src/archive/tar-reader.js', import.meta.url));
  if (!existsSync(file)) return undefined;
  const mod = (await import(file)) as { readTar?: (input: Readable) => AsyncIterable<{ header: TarHeader; body?: unknown }> };
  return mod.readTar;
}

const LONG_DIR = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(30)}`; // 152 bytes: fits the ustar prefix
const PREFIX_NAME = `${LONG_DIR}/${'n'.repeat(90)}`; // 243 bytes, splittable
const PAX_NAME = `${'p'.repeat(200)}/${'q'.repeat(120)}`; // no split fits: PAX path
const UTF8_NAME = 'dir/fïlé-名前-🙂.txt';
const LONG_TARGET = `../${'t'.repeat(150)}/target`;
const BINARY_XATTR = Buffer.from([0x00, 0x01, 0xff, 0x00, 0x41, 0x0a, 0x3d]);

function sampleEntries(): Array<[TarHeader, Buffer?]> {
  const hello = Buffer.from('hello, tar\n');
  const big = Buffer.alloc(70_000, 0x61); // bigger than one batch
  return [
    [header('dir', 'dir', { mode: 0o1777 })],
    [
      header('dir/hello.txt', 'file', {
        size: hello.length,
        mode: 0o4755,
        uid: 1000,
        gid: 1001,
        mtime: { sec: 1_600_000_000, nsec: 999_999_999 },
      }),
      hello,
    ],
    [header('dir/big.bin', 'file', { size: big.length }), big],
    [header('dir/link', 'symlink', { linkname: 'hello.txt', mode: 0o777 })],
    [header('dir/hard', 'hardlink', { linkname: 'dir/hello.txt' })],
    [header('dir/null', 'char', { devmajor: 1, devminor: 3, mode: 0o666 })],
    [header('dir/loop', 'block', { devmajor: 7, devminor: 200, mode: 0o660 })],
    [header('dir/fifo', 'fifo', { mode: 0o600 })],
    [header(`${LONG_DIR}`, 'dir')],
    [header(PREFIX_NAME, 'file', { size: 3 }), Buffer.from('pre')],
    [header(PAX_NAME.split('/')[0], 'dir')],
    [header(PAX_NAME, 'file', { size: 3 }), Buffer.from('pax')],
    [header(UTF8_NAME, 'file', { size: 4 }), Buffer.from('utf8')],
    [header('dir/longlink', 'symlink', { linkname: LONG_TARGET, mode: 0o777 })],
    [header('dir/bigids', 'file', { uid: 3_000_000, gid: 4_000_000 })],
    [
      header('dir/xattrs', 'file', {
        xattrs: new Map([
          ['user.bin', BINARY_XATTR],
          ['trusted.t', Buffer.from('T')],
          ['security.capability', Buffer.from([1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
        ]),
      }),
    ],
  ];
}

describe('encodeHeader', () => {
  it('writes a ustar header with a valid checksum and no PAX record for a plain entry', () => {
    const block = encodeHeader(header('a/b.txt', 'file', { size: 5, mode: 0o640, uid: 7, gid: 8, mtime: { sec: 1234, nsec: 5 } }));
    assert.equal(block.length, 512);
    assert.equal(block.toString('latin1', 257, 263), 'ustar\0');
    assert.equal(block.toString('latin1', 263, 265), '00');
    assert.equal(block.toString('latin1', 0, 7), 'a/b.txt');
    assert.equal(block.toString('latin1', 100, 108), '0000640\0');
    assert.equal(block.toString('latin1', 124, 136), '00000000005\0');
    assert.equal(parseInt(block.toString('latin1', 136, 147), 8), 1234);
    assert.equal(block[156], 0x30);
    const stored = parseInt(block.toString('latin1', 148, 154), 8);
    const copy = Buffer.from(block);
    copy.fill(0x20, 148, 156);
    assert.equal(
      stored,
      copy.reduce((sum, b) => sum + b, 0),
    );
  });

  it('names directories with a trailing slash', () => {
    assert.equal(encodeHeader(header('etc', 'dir')).toString('latin1', 0, 5), 'etc/\0');
    assert.equal(encodeHeader(header('etc/', 'dir')).toString('latin1', 0, 5), 'etc/\0');
  });

  it('splits a long ASCII name into prefix and name instead of writing PAX', () => {
    const block = encodeHeader(header(PREFIX_NAME, 'file'));
    assert.equal(block.length, 512);
    assert.equal(block.toString('latin1', 345, 345 + LONG_DIR.length), LONG_DIR);
    assert.equal(block.toString('latin1', 0, 90), 'n'.repeat(90));
  });

  it('puts a size over 8 GiB and a negative mtime in PAX records', () => {
    const blocks = encodeHeader(header('huge', 'file', { size: 10 * 1024 ** 3, mtime: { sec: -100, nsec: 0 } }));
    assert.equal(blocks[156], 'x'.charCodeAt(0));
    const recordLength = parseInt(blocks.toString('latin1', 124, 135), 8);
    const records = blocks.toString('latin1', 512, 512 + recordLength);
    assert.match(records, /^\d+ mtime=-100\n\d+ size=10737418240\n$/);
    for (const line of records.trimEnd().split('\n')) assert.equal(Number(line.split(' ')[0]), line.length + 1);
    assert.equal(blocks.length % 512, 0);
    const main = blocks.subarray(blocks.length - 512);
    assert.equal(main.toString('latin1', 124, 136), '00000000000\0');
  });

  it('refuses what no tar can hold', () => {
    assert.throws(() => encodeHeader(header('a\0b', 'file')), /NUL/);
    assert.throws(() => encodeHeader(header('d', 'dir', { size: 3 })), /cannot carry/);
    assert.throws(() => encodeHeader(header('m', 'file', { mode: 0o170644 })), /mode/);
  });
});

describe('TarWriter', () => {
  it('writes an archive GNU tar lists as written', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t, { size: '64m' });
    const file = join(dir, 'out.tar');
    writeFileSync(file, await writeTar(sampleEntries()));
    const lines = gnuList(file);
    const byName = new Map(lines.map((l) => [l.split(/\s+/).slice(5).join(' '), l]));
    assert.match(byName.get('dir/')!, /^drwxrwxrwt 0\/0 +0 2023-11-14 22:13 /);
    assert.match(byName.get('dir/hello.txt')!, /^-rwsr-xr-x 1000\/1001 +11 2020-09-13 12:26 /); // 1600000000.999999999 → 12:26:40
    assert.match(byName.get('dir/big.bin')!, /^-rw-r--r-- 0\/0 +70000 /);
    assert.ok(byName.has('dir/link -> hello.txt'));
    assert.ok(byName.has('dir/hard link to dir/hello.txt'));
    assert.match(byName.get('dir/null')!, /^crw-rw-rw- 0\/0 +1,3 /);
    assert.match(byName.get('dir/loop')!, /^brw-rw---- 0\/0 +7,200 /);
    assert.match(byName.get('dir/fifo')!, /^prw------- /);
    assert.ok(byName.has(PREFIX_NAME), 'prefix-split name');
    assert.ok(byName.has(PAX_NAME), 'PAX name');
    assert.ok(byName.has(UTF8_NAME), 'UTF-8 name');
    assert.ok(byName.has(`dir/longlink -> ${LONG_TARGET}`), 'PAX link target');
    assert.match(byName.get('dir/bigids')!, /^-rw-r--r-- 3000000\/4000000 /);
    assert.equal(lines.length, sampleEntries().length);
  });

  it('extracts with GNU tar to the same contents, modes, owners, times and binary xattrs', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t, { size: '64m' });
    const file = join(dir, 'out.tar');
    writeFileSync(file, await writeTar(sampleEntries()));
    const into = join(dir, 'x');
    mkdirSync(into);
    execFileSync('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', file, '-C', into]);
    assert.equal(readFileSync(join(into, 'dir/hello.txt'), 'utf8'), 'hello, tar\n');
    assert.equal(readFileSync(join(into, 'dir/big.bin')).length, 70_000);
    assert.equal(readFileSync(join(into, PAX_NAME), 'utf8'), 'pax');
    assert.equal(readFileSync(join(into, PREFIX_NAME), 'utf8'), 'pre');
    assert.equal(readFileSync(join(into, UTF8_NAME), 'utf8'), 'utf8');
    assert.equal(readlinkSync(join(into, 'dir/longlink')), LONG_TARGET);
    const hello = lstatSync(join(into, 'dir/hello.txt'));
    assert.equal(hello.mode & 0o7777, 0o4755);
    assert.equal(hello.uid, 1000);
    assert.equal(hello.gid, 1001);
    assert.equal(hello.mtimeMs, 1_600_000_000_000, 'mtime is whole seconds');
    assert.equal(hello.nlink, 2, 'the hardlink entry links to it');
    assert.equal(lstatSync(join(into, 'dir/bigids')).uid, 3_000_000);
    assert.equal(lstatSync(join(into, 'dir')).mode & 0o7777, 0o1777);
    assert.deepEqual(lgetxattr(join(into, 'dir/xattrs'), 'user.bin'), BINARY_XATTR);
    assert.deepEqual(lgetxattr(join(into, 'dir/xattrs'), 'trusted.t'), Buffer.from('T'));
  });

  it('is read back by node-tar', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t, { size: '64m' });
    const file = join(dir, 'out.tar');
    writeFileSync(file, await writeTar(sampleEntries()));
    const entries = await nodeTarEntries(file);
    const byPath = new Map(entries.map((e) => [e.path, e]));
    assert.equal(entries.length, sampleEntries().length);
    assert.equal(byPath.get(PAX_NAME)?.size, 3);
    assert.equal(byPath.get(PREFIX_NAME)?.size, 3);
    assert.ok(byPath.has(UTF8_NAME));
    assert.equal(byPath.get('dir/longlink')?.linkpath, LONG_TARGET);
    assert.equal(byPath.get('dir/hard')?.type, 'Link');
    assert.equal(byPath.get('dir/bigids')?.uid, 3_000_000);
    assert.equal(byPath.get('dir/hello.txt')?.mtime?.getTime(), 1_600_000_000_000);
  });

  it('is read back by our readTar with binary xattrs intact', async (t) => {
    const readTar = await ourReader();
    if (readTar === undefined) {
      t.skip('src/archive/tar-reader.ts is not built yet');
      return;
    }
    const written = sampleEntries();
    const seen: TarHeader[] = [];
    for await (const entry of readTar(Readable.from([await writeTar(written)]))) {
      seen.push(entry.header);
      const body = entry.body as (AsyncIterable<Buffer> & { resume?: () => void }) | undefined;
      if (body && typeof body[Symbol.asyncIterator] === 'function') for await (const _ of body) void _;
    }
    assert.deepEqual(
      seen.map((h) => h.path.replace(/\/$/, '')),
      written.map(([h]) => h.path),
    );
    const xattrs = seen.find((h) => h.path === 'dir/xattrs')!.xattrs;
    assert.deepEqual(xattrs.get('user.bin'), BINARY_XATTR);
    assert.equal(seen.find((h) => h.path === 'dir/bigids')!.uid, 3_000_000);
    assert.equal(seen.find((h) => h.path === 'dir/longlink')!.linkname, LONG_TARGET);
  });

  it('streams a file from disk with addFile and pads it to whole blocks', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t, { size: '64m' });
    const content = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < content.length; i++) content[i] = (i * 7) & 0xff;
    writeFileSync(join(dir, 'src.bin'), content);
    writeFileSync(join(dir, 'small'), 'small');
    const writer = new TarWriter();
    const bytes = collect(writer.stream);
    await writer.addFile(header('src.bin', 'file', { size: content.length }), join(dir, 'src.bin'));
    await writer.addFile(header('small', 'file', { size: 5 }), join(dir, 'small'));
    await writer.finish();
    const tar = await bytes;
    assert.equal(tar.length % 512, 0);
    assert.ok(
      tar.subarray(tar.length - 1024).every((b) => b === 0),
      'ends with two zero blocks',
    );
    writeFileSync(join(dir, 'out.tar'), tar);
    mkdirSync(join(dir, 'x'));
    execFileSync('tar', ['-xf', join(dir, 'out.tar'), '-C', join(dir, 'x')]);
    assert.ok(readFileSync(join(dir, 'x', 'src.bin')).equals(content));
    assert.equal(readFileSync(join(dir, 'x', 'small'), 'utf8'), 'small');
  });

  it('refuses a body of the wrong length up front, and breaks the stream on one found too late', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    const writer = new TarWriter();
    const bytes = collect(writer.stream);
    await assert.rejects(writer.addEntry(header('f', 'file', { size: 4 }), Buffer.from('abc')), /4 bytes but the body has 3/);
    await writer.addEntry(header('ok', 'file', { size: 2 }), Buffer.from('ok')); // still usable
    async function* chunks() {
      yield Buffer.from('ab');
      yield Buffer.from('cdef');
    }
    await assert.rejects(writer.addEntry(header('g', 'file', { size: 4 }), chunks()), /body has 6/);
    await assert.rejects(bytes, /body has 6/, 'the reader sees the error instead of a broken archive');
    await assert.rejects(writer.addEntry(header('h', 'dir')), /closed before/);

    writeFileSync(join(dir, 'short'), 'xy');
    const second = new TarWriter();
    const secondBytes = collect(second.stream);
    await assert.rejects(second.addFile(header('short', 'file', { size: 10 }), join(dir, 'short')), /shrank/);
    await assert.rejects(secondBytes, /shrank/);
  });

  it('waits for the consumer before taking more (backpressure)', async () => {
    const writer = new TarWriter();
    const big = Buffer.alloc(8 * 1024 * 1024);
    let done = false;
    const adding = writer.addEntry(header('big', 'file', { size: big.length }), big).then(() => {
      done = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(done, false, 'addEntry resolved although nobody read the stream');
    const bytes = collect(writer.stream);
    await adding;
    await writer.finish();
    assert.equal((await bytes).length, 512 + big.length + 1024);
  });

  it('rejects further writes once the reader destroyed the stream', async () => {
    const writer = new TarWriter();
    const pending = writer.addEntry(header('big', 'file', { size: 4 * 1024 * 1024 }), Buffer.alloc(4 * 1024 * 1024));
    writer.stream.destroy();
    await assert.rejects(pending, /closed before the archive was complete/);
    await assert.rejects(writer.addEntry(header('x', 'dir')), /closed before/);
  });
});
