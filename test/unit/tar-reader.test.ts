import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { TarFormatError, UnionctlError } from '../../src/errors.js';
import { MAX_TRAILING_BYTES, readTar, type TarEntry } from '../../src/archive/tar-reader.js';
import type { TarHeader } from '../../src/archive/types.js';
import {
  buildTar,
  chunked,
  END_OF_ARCHIVE,
  gnuLongRecord,
  padToBlock as padTo512,
  paxHeader,
  paxRecord,
  tarEntry,
  tarHeader,
  type TarSpec,
} from '../helpers/tarbuild.js';

interface ReadEntry {
  header: TarHeader;
  content: Buffer;
}

async function readAll(
  data: Buffer,
  chunk: number | number[] = 64 * 1024,
): Promise<{ entries: ReadEntry[]; diffId: string; bytes: number }> {
  const tar = readTar(chunked(data, chunk));
  const entries: ReadEntry[] = [];
  for await (const { header, body } of tar) {
    const parts: Buffer[] = [];
    for await (const piece of body) parts.push(Buffer.from(piece));
    entries.push({ header, content: Buffer.concat(parts) });
  }
  return { entries, diffId: tar.digest.diffId(), bytes: tar.digest.bytes() };
}

const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function expectTarError(data: Buffer, pattern: RegExp, cls: new (...args: never[]) => UnionctlError = TarFormatError): Promise<void> {
  await assert.rejects(readAll(data), (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    assert.match((e as Error).message, pattern);
    return true;
  });
}

describe('readTar: ustar', () => {
  it('reads every entry kind with its fields', async () => {
    const data = buildTar([
      { name: 'dir/', type: 'dir', mode: 0o1777, uid: 12, gid: 34, mtime: 1600000000, uname: 'alice', gname: 'staff' },
      { name: 'dir/file', content: 'hello', mode: 0o4755, uid: 1000, gid: 1001 },
      { name: 'dir/link', type: 'symlink', linkname: '../target', mode: 0o777 },
      { name: 'dir/hard', type: 'hardlink', linkname: 'dir/file' },
      { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/sda', type: 'block', devmajor: 8, devminor: 0, mode: 0o660 },
      { name: 'fifo', type: 'fifo', mode: 0o600 },
      { name: 'contiguous', typeflag: '7', content: 'c' },
    ]);
    const { entries } = await readAll(data);
    assert.deepEqual(
      entries.map((e) => [e.header.path, e.header.type]),
      [
        ['dir/', 'dir'],
        ['dir/file', 'file'],
        ['dir/link', 'symlink'],
        ['dir/hard', 'hardlink'],
        ['dev/null', 'char'],
        ['dev/sda', 'block'],
        ['fifo', 'fifo'],
        ['contiguous', 'file'],
      ],
    );
    const [dir, file, link, hard, nul, sda] = entries.map((e) => e.header);
    assert.equal(dir.mode, 0o1777);
    assert.deepEqual([dir.uid, dir.gid, dir.uname, dir.gname], [12, 34, 'alice', 'staff']);
    assert.deepEqual(dir.mtime, { sec: 1600000000, nsec: 0 });
    assert.equal(file.mode, 0o4755);
    assert.equal(file.size, 5);
    assert.equal(entries[1].content.toString(), 'hello');
    assert.equal(link.linkname, '../target');
    assert.equal(hard.linkname, 'dir/file');
    assert.deepEqual([nul.devmajor, nul.devminor, sda.devmajor, sda.devminor], [1, 3, 8, 0]);
    assert.equal(entries[7].content.toString(), 'c');
  });

  it('joins the ustar prefix and name', async () => {
    const prefix = 'p'.repeat(150);
    const { entries } = await readAll(buildTar([{ name: 'n'.repeat(99), prefix, content: 'x' }]));
    assert.equal(entries[0].header.path, `${prefix}/${'n'.repeat(99)}`);
  });

  it('reads UTF-8 names', async () => {
    const { entries } = await readAll(buildTar([{ name: 'données/ファイル.txt', content: 'x' }]));
    assert.equal(entries[0].header.path, 'données/ファイル.txt');
  });

  it('refuses names that are not UTF-8, naming the offset', async () => {
    const block = tarHeader({ name: 'latin1-\xe9'.replace('\xe9', '_'), content: '' });
    block[7] = 0xe9; // "latin1-é" in latin-1: not UTF-8
    fixChecksum(block);
    await expectTarError(Buffer.concat([block, END_OF_ARCHIVE]), /not valid UTF-8/, UnionctlError);
  });

  it('hands out bodies as subarrays of the input chunks (no copies)', async () => {
    const content = Buffer.alloc(200_000, 7);
    const data = buildTar([{ name: 'big', content }]);
    const input = Buffer.from(data); // one chunk
    const seen: ArrayBufferLike[] = [];
    for await (const { body } of readTar(
      (async function* () {
        yield input;
      })(),
    )) {
      for await (const piece of body) seen.push(piece.buffer);
    }
    assert.ok(seen.length > 0 && seen.every((b) => b === input.buffer));
  });

  it('gives the same result whatever the chunk boundaries', async () => {
    const data = buildTar([
      { name: 'a', content: 'x'.repeat(1000) },
      {
        name: 'long-name-in-pax',
        pax: { path: 'long/'.repeat(30) + 'f', 'SCHILY.xattr.user.k': Buffer.from([0, 1, 2, 0]) },
        content: 'yy',
      },
      { name: 'b', content: Buffer.alloc(3000, 1) },
    ]);
    const whole = await readAll(data);
    for (const sizes of [1, 7, 511, 512, 513, [3, 1000, 17]]) {
      const split = await readAll(data, sizes);
      assert.deepEqual(split, whole, `chunks of ${JSON.stringify(sizes)}`);
    }
  });

  it('skips a body the consumer does not read', async () => {
    const data = buildTar([
      { name: 'skipped', content: Buffer.alloc(5000, 1) },
      { name: 'half', content: Buffer.alloc(5000, 2) },
      { name: 'after', content: 'ok' },
    ]);
    const names: string[] = [];
    let after = '';
    for await (const { header, body } of readTar(chunked(data, 1024))) {
      names.push(header.path);
      if (header.path === 'half') {
        for await (const piece of body) {
          assert.ok(piece.length > 0);
          break; // leave the rest
        }
      }
      if (header.path === 'after') for await (const piece of body) after += piece.toString();
    }
    assert.deepEqual(names, ['skipped', 'half', 'after']);
    assert.equal(after, 'ok');
  });

  it('refuses to read a body after the next entry was requested', async () => {
    const tar = readTar(chunked(buildTar([{ name: 'a', content: 'abc' }, { name: 'b' }])));
    const first = (await tar.next()).value as TarEntry;
    await tar.next();
    await assert.rejects(first.body[Symbol.asyncIterator]().next(), /read after the next entry/);
    await tar.return();
  });
});

describe('readTar: pax', () => {
  it('takes path, linkpath, size, uid, gid, uname, gname from pax records', async () => {
    const long = `${'d'.repeat(120)}/${'e'.repeat(140)}/file-${'x'.repeat(20)}`; // > 255 bytes
    assert.ok(Buffer.byteLength(long) > 255);
    const data = buildTar([
      {
        name: 'short',
        content: 'hello',
        size: 0, // the pax size wins
        pax: { path: long, size: '5', uid: '3000000000', gid: '4000000000', uname: 'ünïcode', gname: 'grp' },
      },
      { name: 'l', type: 'symlink', linkname: 'x', pax: { linkpath: `/${'t'.repeat(300)}` } },
    ]);
    const { entries } = await readAll(data);
    const h = entries[0].header;
    assert.equal(h.path, long);
    assert.equal(h.size, 5);
    assert.equal(entries[0].content.toString(), 'hello');
    assert.deepEqual([h.uid, h.gid, h.uname, h.gname], [3000000000, 4000000000, 'ünïcode', 'grp']);
    assert.equal(entries[1].header.linkname, `/${'t'.repeat(300)}`);
  });

  it('reads fractional and negative times to the nanosecond', async () => {
    const data = buildTar([
      { name: 'a', pax: { mtime: '1700000000.123456789', atime: '1700000001.5' } },
      { name: 'b', pax: { mtime: '-1.25' } },
      { name: 'c', pax: { mtime: '1700000000.1234567891234' } },
    ]);
    const { entries } = await readAll(data);
    assert.deepEqual(entries[0].header.mtime, { sec: 1700000000, nsec: 123456789 });
    assert.deepEqual(entries[0].header.atime, { sec: 1700000001, nsec: 500000000 });
    assert.deepEqual(entries[1].header.mtime, { sec: -2, nsec: 750000000 });
    assert.deepEqual(entries[2].header.mtime, { sec: 1700000000, nsec: 123456789 });
  });

  it('keeps SCHILY.xattr values as raw bytes, NULs included', async () => {
    // A real security.capability value: version 2, with NUL bytes in the middle.
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    const withNewline = Buffer.from([0x61, 0x0a, 0x00, 0x3d, 0x20, 0xff]); // "a\n\0= \xff"
    const data = buildTar([{ name: 'bin/ping', pax: { 'SCHILY.xattr.security.capability': cap, 'SCHILY.xattr.user.odd': withNewline } }]);
    const { entries } = await readAll(data, 100);
    assert.deepEqual(entries[0].header.xattrs.get('security.capability'), cap);
    assert.deepEqual(entries[0].header.xattrs.get('user.odd'), withNewline);
  });

  it('decodes LIBARCHIVE.xattr names (URL-encoded) and values (base64)', async () => {
    const value = Buffer.from([0, 1, 2, 255]);
    const data = buildTar([{ name: 'f', pax: { 'LIBARCHIVE.xattr.user.a%3Db': value.toString('base64') } }]);
    const { entries } = await readAll(data);
    assert.deepEqual(entries[0].header.xattrs.get('user.a=b'), value);
  });

  it('applies global records to every later entry, local records override them', async () => {
    const data = buildTar([
      paxHeader({ uid: '77', 'SCHILY.xattr.user.g': 'global', path: 'ignored-in-g' }, 'g'),
      { name: 'a' },
      { name: 'b', pax: { uid: '88' } },
      paxHeader({ uid: '' }, 'g'), // an empty value deletes the global keyword
      { name: 'c', uid: 5 },
    ]);
    const { entries } = await readAll(data);
    assert.deepEqual(
      entries.map((e) => [e.header.path, e.header.uid, e.header.xattrs.get('user.g')?.toString()]),
      [
        ['a', 77, 'global'],
        ['b', 88, 'global'],
        ['c', 5, 'global'],
      ],
    );
  });

  it('rejects a malformed pax record', async () => {
    const bad = Buffer.from('99 path=x\n');
    const data = Buffer.concat([
      tarHeader({ name: 'p', typeflag: 'x', content: bad }),
      Buffer.concat([bad, Buffer.alloc(512 - bad.length)]),
      tarEntry({ name: 'a' }),
      END_OF_ARCHIVE,
    ]);
    await expectTarError(data, /pax record/);
  });

  it('refuses GNU sparse files (their body is not the file content)', async () => {
    await expectTarError(
      buildTar([{ name: 'sparse', pax: { 'GNU.sparse.major': '1', 'GNU.sparse.minor': '0' } }]),
      /GNU sparse/,
      UnionctlError,
    );
    await expectTarError(
      buildTar([{ name: 'old-sparse', typeflag: 'S', format: 'gnu' }]),
      /"old-sparse".*typeflag 'S'.*sparse/,
      UnionctlError,
    );
  });

  it('rejects a pax header that describes no entry', async () => {
    await expectTarError(buildTar([paxHeader({ path: 'dangling' })]), /describes no entry/);
  });
});

describe('readTar: GNU and v7', () => {
  it('reads GNU long names and long link targets (L / K records)', async () => {
    const name = `gnu/${'n'.repeat(200)}`;
    const link = `target/${'t'.repeat(150)}`;
    const data = buildTar([
      gnuLongRecord(name, 'L'),
      gnuLongRecord(link, 'K'),
      tarEntry({ name: name.slice(0, 99), type: 'symlink', linkname: link.slice(0, 99), format: 'gnu' }),
    ]);
    const { entries } = await readAll(data);
    assert.equal(entries[0].header.path, name);
    assert.equal(entries[0].header.linkname, link);
  });

  it('reads what GNU tar --format=gnu writes for long names', async () => {
    const dir = mkdtempSync('/tmp/unionctl-test-gnutar-');
    try {
      const deep = join('src', 'a'.repeat(60), 'b'.repeat(60), 'c'.repeat(60));
      mkdirSync(join(dir, deep), { recursive: true });
      writeFileSync(join(dir, deep, 'file.txt'), 'content');
      const data = execFileSync('tar', ['--format=gnu', '--numeric-owner', '-C', dir, '-cf', '-', 'src']);
      const { entries } = await readAll(data);
      const file = entries.find((e) => e.header.path.endsWith('file.txt'));
      assert.equal(file?.header.path, `${deep}/file.txt`);
      assert.equal(file?.content.toString(), 'content');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads GNU base-256 numbers (large uid, negative mtime)', async () => {
    const data = buildTar([
      { name: 'big-uid', uid: 3_000_000_000, gid: 70_000_000, mtime: -86400, base256: ['uid', 'gid', 'mtime'], format: 'gnu' },
    ]);
    const { entries } = await readAll(data);
    assert.deepEqual([entries[0].header.uid, entries[0].header.gid], [3_000_000_000, 70_000_000]);
    assert.deepEqual(entries[0].header.mtime, { sec: -86400, nsec: 0 });
  });

  it('reads the old GNU magic and skips volume labels', async () => {
    const data = buildTar([
      { name: 'label', typeflag: 'V', format: 'gnu' },
      { name: 'f', content: 'x', format: 'gnu', uname: 'bob' },
    ]);
    const { entries } = await readAll(data);
    assert.deepEqual(
      entries.map((e) => e.header.path),
      ['f'],
    );
    assert.equal(entries[0].header.uname, 'bob');
  });

  it('reads v7 headers (no magic): "\\0" type, a trailing slash makes a directory', async () => {
    const data = buildTar([
      { name: 'olddir/', typeflag: '\0', format: 'v7' },
      { name: 'olddir/file', typeflag: '\0', format: 'v7', content: 'v7' },
    ]);
    const { entries } = await readAll(data);
    assert.deepEqual(
      entries.map((e) => [e.header.path, e.header.type, e.header.uname]),
      [
        ['olddir/', 'dir', undefined],
        ['olddir/file', 'file', undefined],
      ],
    );
    assert.equal(entries[1].content.toString(), 'v7');
  });
});

/** Recomputes the checksum of a hand-edited header block. */
function fixChecksum(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
}

describe('readTar: integrity', () => {
  it('rejects a header with a bad checksum, naming the entry and offset', async () => {
    const data = buildTar([
      { name: 'good', content: 'x' },
      { name: 'evil', badChecksum: true },
    ]);
    await expectTarError(data, /entry "evil", offset 1024.*checksum/);
  });

  it('accepts the historic signed checksum', async () => {
    const block = tarHeader({ name: 'caf\u00e9' }); // a byte >= 0x80 in the name
    block.fill(0x20, 148, 156);
    let signed = 0;
    for (const b of block) signed += b >= 0x80 ? b - 256 : b;
    block.write(`${signed.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    const { entries } = await readAll(Buffer.concat([block, END_OF_ARCHIVE]));
    assert.equal(entries[0].header.path, 'caf\u00e9');
  });

  it('rejects data that is not a tar', async () => {
    await expectTarError(Buffer.concat([Buffer.from('this is not a tar archive'.repeat(30)), Buffer.alloc(512)]), /checksum/);
  });

  it('rejects a stream cut inside a header, a body or its padding', async () => {
    const data = buildTar([{ name: 'file', content: Buffer.alloc(1000, 1) }, { name: 'next' }]);
    await expectTarError(data.subarray(0, 300), /truncated.*inside a header/);
    await expectTarError(data.subarray(0, 512 + 600), /entry "file".*truncated/);
    await expectTarError(data.subarray(0, 512 + 1010), /entry "file".*truncated/);
  });

  it('is lenient at the end: EOF at a block boundary or after a single zero block', async () => {
    const entries = buildTar([{ name: 'a', content: 'x' }], { end: false });
    assert.equal((await readAll(entries)).entries.length, 1);
    assert.equal((await readAll(Buffer.concat([entries, Buffer.alloc(512)]))).entries.length, 1);
    assert.equal((await readAll(Buffer.alloc(0))).entries.length, 0);
  });

  it('rejects a lone zero block followed by more data', async () => {
    const data = Buffer.concat([tarEntry({ name: 'a' }), Buffer.alloc(512), tarEntry({ name: 'b' }), END_OF_ARCHIVE]);
    await expectTarError(data, /single zero block/);
  });

  it('refuses unknown entry types, naming the entry and the typeflag', async () => {
    await expectTarError(buildTar([{ name: 'weird', typeflag: 'Q' }]), /"weird".*typeflag 'Q'/, UnionctlError);
  });
});

describe('readTar: malformed input is a typed error naming the entry or offset', () => {
  it('refuses a NUL byte in a pax path, linkpath, uname or gname', async () => {
    for (const key of ['path', 'linkpath', 'uname', 'gname']) {
      const data = buildTar([{ name: 'victim', type: 'symlink', linkname: 't', pax: { [key]: 'a\0b' } }]);
      await expectTarError(data, new RegExp(`entry "victim", offset 1024.*pax ${key} "a\\\\u0000b" holds a NUL byte`));
    }
  });

  it('refuses a NUL byte inside a GNU long name or long link', async () => {
    await expectTarError(buildTar([gnuLongRecord('a\0b', 'L'), { name: 'x', format: 'gnu' }]), /offset 0.*NUL byte inside the name/);
    await expectTarError(
      buildTar([gnuLongRecord('t\0u', 'K'), { name: 'l', type: 'symlink', linkname: 't', format: 'gnu' }]),
      /NUL byte inside the name/,
    );
  });

  it('refuses a NUL byte in an xattr name (a NUL in the key, or %00 in a LIBARCHIVE name) and an empty one', async () => {
    await expectTarError(buildTar([{ name: 'f', pax: { 'SCHILY.xattr.user.a\0b': 'v' } }]), /NUL byte in its key/);
    await expectTarError(buildTar([{ name: 'f', pax: { 'LIBARCHIVE.xattr.user.a%00b': 'dg==' } }]), /entry "f".*bad xattr name/);
    await expectTarError(buildTar([{ name: 'f', pax: { 'SCHILY.xattr.': 'v' } }]), /entry "f".*bad xattr name/);
  });

  it('refuses a pax path that is not UTF-8 (UNSUPPORTED), as it does a header name', async () => {
    const data = buildTar([{ name: 'f', pax: { path: Buffer.from([0x63, 0x61, 0x66, 0xe9]) } }]);
    await expectTarError(data, /not valid UTF-8/, UnionctlError);
  });

  it('refuses uid and gid past what Linux can apply, from pax records and base-256 fields', async () => {
    const cases: Array<[TarSpec, RegExp]> = [
      [{ name: 'a', pax: { uid: '99999999999999' } }, /entry "a", offset 1024.*uid 99999999999999 is out of range/],
      [{ name: 'a', pax: { gid: '4294967296' } }, /gid 4294967296 is out of range/],
      [{ name: 'a', pax: { uid: '4294967295' } }, /uid 4294967295 is out of range/], // (uid_t)-1: "no change" to chown
      [{ name: 'a', pax: { uid: '-1' } }, /bad pax uid "-1"/],
      [{ name: 'a', pax: { uid: '1e3' } }, /bad pax uid "1e3"/],
      [{ name: 'a', pax: { uid: '90071992547409930' } }, /bad pax uid/],
      [{ name: 'a', uid: 2 ** 40, base256: ['uid'], format: 'gnu' }, /entry "a", offset 0.*uid 1099511627776 is out of range/],
      [{ name: 'a', gid: -5, base256: ['gid'], format: 'gnu' }, /gid -5 is out of range/],
    ];
    for (const [spec, pattern] of cases) await expectTarError(buildTar([spec]), pattern);
    const { entries } = await readAll(buildTar([{ name: 'max', pax: { uid: '4294967294', gid: '0' } }]));
    assert.equal(entries[0]!.header.uid, 4294967294);
  });

  it('refuses a global pax uid out of range at the entry it would apply to', async () => {
    await expectTarError(
      buildTar([paxHeader({ uid: '5000000000' }, 'g'), { name: 'later' }]),
      /entry "later".*uid 5000000000 is out of range/,
    );
  });

  it('refuses bad sizes: negative, beyond a safe integer, not a number', async () => {
    await expectTarError(buildTar([{ name: 'a', content: 'x', pax: { size: '-1' } }]), /entry "a".*bad pax size "-1"/);
    await expectTarError(buildTar([{ name: 'a', content: 'x', pax: { size: '9007199254740993' } }]), /bad pax size "9007199254740993"/);
    await expectTarError(buildTar([{ name: 'a', content: 'x', pax: { size: ' 1' } }]), /bad pax size/);
    await expectTarError(
      buildTar([{ name: 'a', content: 'x', size: -1, base256: ['size'], format: 'gnu' }]),
      /entry "a".*negative size -1/,
    );
    // A pax header whose own size field is negative (base-256) is refused before anything is read for it.
    const pax = tarHeader({ name: 'PaxHeader', typeflag: 'x', size: -512, base256: ['size'], format: 'gnu' });
    await expectTarError(Buffer.concat([pax, tarEntry({ name: 'a' }), END_OF_ARCHIVE]), /"PaxHeader".*negative size -512/);
  });

  it('refuses bad times: not a number, beyond a safe integer (pax and base-256)', async () => {
    for (const mtime of ['abc', '', '1.2.3', '-', '99999999999999999', '0x10', '1e9']) {
      if (mtime === '') continue; // an empty value means "no record": the header's mtime applies
      await expectTarError(buildTar([{ name: 'a', pax: { mtime } }]), new RegExp(`entry "a".*bad pax mtime`));
    }
    await expectTarError(buildTar([{ name: 'a', pax: { atime: 'soon' } }]), /bad pax atime "soon"/);
    const block = tarHeader({ name: 'far', format: 'gnu' });
    block.fill(0xff, 136, 148); // mtime: base-256, all ones after the marker: below -2^53
    block[136] = 0xff;
    block.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of block) sum += b;
    block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    assert.equal((await readAll(Buffer.concat([block, END_OF_ARCHIVE]))).entries[0]!.header.mtime.sec, -1); // -1 in base-256 is fine
    const huge = tarHeader({ name: 'far', format: 'gnu' });
    huge.fill(0, 136, 148);
    huge[136] = 0x80;
    huge[137] = 0x01; // 2^80: past a safe integer
    huge.fill(0x20, 148, 156);
    sum = 0;
    for (const b of huge) sum += b;
    huge.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    await expectTarError(Buffer.concat([huge, END_OF_ARCHIVE]), /entry "far".*bad mtime field.*too large/);
  });

  it('refuses device numbers that are no dev_t half, on char and block entries', async () => {
    const block = tarHeader({ name: 'dev', type: 'char', format: 'gnu' });
    // devmajor in base-256: 2^33
    block.fill(0, 329, 337);
    block[329] = 0x80;
    block[332] = 0x02;
    block.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of block) sum += b;
    block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    await expectTarError(Buffer.concat([block, END_OF_ARCHIVE]), /entry "dev".*devmajor 8589934592 is out of range/);
  });

  it('lets the later of two records of a key win, as Go archive/tar (Docker, containerd) and GNU tar do', async () => {
    const data = Buffer.concat([paxRecord('path', 'first'), paxRecord('uid', '1'), paxRecord('path', 'second'), paxRecord('uid', '2')]);
    const tar = Buffer.concat([
      tarHeader({ name: 'PaxHeader', typeflag: 'x', content: data }),
      padTo512(data),
      tarEntry({ name: 'plain' }),
      END_OF_ARCHIVE,
    ]);
    const { entries } = await readAll(tar);
    assert.deepEqual([entries[0]!.header.path, entries[0]!.header.uid], ['second', 2]);
  });

  it('lets a second pax header before one entry replace the first, as Go archive/tar does', async () => {
    const data = buildTar([paxHeader({ path: 'from-first', uid: '7' }), paxHeader({ gid: '9' }), { name: 'plain', uid: 1 }]);
    const { entries } = await readAll(data);
    assert.deepEqual([entries[0]!.header.path, entries[0]!.header.uid, entries[0]!.header.gid], ['plain', 1, 9]);
  });

  it('refuses a pax header whose records are longer than its size says', async () => {
    const records = Buffer.concat([paxRecord('path', 'p'.repeat(100)), paxRecord('uid', '5')]);
    for (const size of [10, 50, records.length - 1]) {
      const header = tarHeader({ name: 'PaxHeader', typeflag: 'x', size });
      const tar = Buffer.concat([header, padTo512(records), tarEntry({ name: 'a' }), END_OF_ARCHIVE]);
      await expectTarError(tar, /pax record at byte \d+ overruns its header or lacks its newline/);
    }
  });

  it('refuses a pax record whose length field disagrees with its content', async () => {
    const good = paxRecord('path', 'name-from-pax').toString('latin1');
    for (const length of ['3', '17', '25', '26', '28', '99', '0', '01', '-5']) {
      const data = Buffer.from(good.replace(/^\d+/, length), 'latin1');
      const tar = Buffer.concat([
        tarHeader({ name: 'PaxHeader', typeflag: 'x', content: data }),
        padTo512(data),
        tarEntry({ name: 'a' }),
        END_OF_ARCHIVE,
      ]);
      await expectTarError(tar, /offset 0.*pax record/);
    }
  });

  it('ends with a typed error or cleanly when cut at any byte', async () => {
    const data = buildTar([
      paxHeader({ 'SCHILY.xattr.user.k': 'v', mtime: '1700000000.5' }, 'g'),
      { name: 'dir/', type: 'dir' },
      { name: 'dir/file', content: 'x'.repeat(700), pax: { path: `dir/${'long'.repeat(40)}` } },
      gnuLongRecord(`gnu/${'n'.repeat(120)}`),
      { name: 'gnu-short', content: 'y', format: 'gnu' },
      { name: 'link', type: 'symlink', linkname: 'dir/file' },
    ]);
    const whole = (await readAll(data)).entries.length;
    let clean = 0;
    for (let cut = 0; cut < data.length; cut++) {
      try {
        // No digest: a StreamDigest per run costs more than the parse, and this runs thousands of times.
        const entries: TarHeader[] = [];
        for await (const { header, body } of readTar(chunked(data.subarray(0, cut), [cut % 7 === 0 ? 512 : 97, 1000]), { digest: false })) {
          for await (const _ of body);
          entries.push(header);
        }
        clean++;
        assert.equal(cut % 512, 0, `cut at ${cut}: accepted only at a block boundary`);
        assert.ok(entries.length <= whole);
      } catch (e) {
        assert.ok(e instanceof TarFormatError, `cut at ${cut}: ${String(e)}`);
        assert.match(e.message, /offset \d+/, `cut at ${cut}: the message names the offset`);
      }
    }
    assert.ok(clean > 0 && clean < data.length / 512 + 1, `${clean} clean cuts`);
  });
});

describe('readTar: digest', () => {
  it('hashes every byte of the stream, including what follows the end blocks', async () => {
    const data = Buffer.concat([buildTar([{ name: 'a', content: 'abc' }]), Buffer.alloc(8192), Buffer.from('trailing junk')]);
    const { diffId, bytes } = await readAll(data, 1000);
    assert.equal(diffId, sha256(data));
    assert.equal(bytes, data.length);
  });

  it('reads an archive of zero blocks only as an empty archive, hashing them all (Docker: two zero blocks end it)', async () => {
    const data = Buffer.alloc(10240);
    const { entries, diffId, bytes } = await readAll(data, 3000);
    assert.deepEqual([entries.length, diffId, bytes], [0, sha256(data), 10240]);
  });

  it('reads and hashes up to maxTrailingBytes after the end blocks, and refuses more, naming the end offset', async () => {
    const tar = buildTar([{ name: 'a', content: 'abc' }]);
    const within = Buffer.concat([tar, Buffer.alloc(4096, 7)]);
    const tr = readTar(chunked(within, 1000), { maxTrailingBytes: 4096 });
    for await (const _entry of tr);
    assert.equal(tr.digest.diffId(), sha256(within));
    const beyond = Buffer.concat([tar, Buffer.alloc(4097, 7)]);
    await assert.rejects(
      (async () => {
        for await (const _entry of readTar(chunked(beyond, 1000), { maxTrailingBytes: 4096 }));
      })(),
      (e: unknown) =>
        e instanceof TarFormatError && /offset 2048.*more than 4096 bytes of data follow the end-of-archive blocks/.test(e.message),
    );
  });

  it(
    'ends an endless input (like /dev/zero) after MAX_TRAILING_BYTES, having read that much and no more',
    { timeout: 60_000 },
    async () => {
      let read = 0;
      const chunk = Buffer.alloc(1 << 20);
      async function* endlessZeros(): AsyncGenerator<Buffer> {
        for (;;) {
          read += chunk.length;
          yield chunk;
        }
      }
      await assert.rejects(
        (async () => {
          for await (const _entry of readTar(endlessZeros()));
        })(),
        (e: unknown) => e instanceof TarFormatError && /offset 1024.*more than 16 MiB of data follow/.test(e.message),
      );
      assert.ok(read <= MAX_TRAILING_BYTES + 2 * chunk.length, `${read} bytes read`);
    },
  );

  it('hashes a large stream exactly (through the hashing thread when it is used)', async () => {
    const content = Buffer.alloc(40 * 1024 * 1024);
    for (let i = 0; i < content.length; i += 4096) content.writeUInt32LE(i, i);
    const data = buildTar([
      { name: 'big', content },
      { name: 'small', content: 'x' },
    ]);
    for (const thread of ['1', '0']) {
      process.env.UNIONCTL_DIGEST_THREAD = thread;
      try {
        const { diffId, entries } = await readAll(data, 1 << 20);
        assert.equal(diffId, sha256(data), `digest thread ${thread}`);
        assert.equal(entries[0].content.length, content.length);
      } finally {
        delete process.env.UNIONCTL_DIGEST_THREAD;
      }
    }
  });

  it('has no digest before the stream is read to its end', async () => {
    const tar = readTar(chunked(buildTar([{ name: 'a' }])));
    await tar.next();
    assert.throws(() => tar.digest.diffId(), /before the stream was read/);
    for await (const _ of tar) {
      /* drain */
    }
    assert.match(tar.digest.diffId(), /^sha256:[0-9a-f]{64}$/);
  });

  it('reports progress in bytes', async () => {
    const data = buildTar([{ name: 'a', content: Buffer.alloc(10_000) }]);
    const seen: number[] = [];
    for await (const _ of readTar(chunked(data, 4096), { onBytes: (n) => seen.push(n) })) {
      /* skip bodies */
    }
    assert.equal(seen.at(-1), data.length);
    assert.deepEqual(
      seen,
      [...seen].sort((a, b) => a - b),
    );
  });

  it('matches the diff_ids of the sample layers', async () => {
    const expected = [
      '9e721e9db1f84b04216fcb0f3fe271f3e9d48a5fe020252e82180d636f2a27b1',
      'd52c36bcc68cf387ca56ba2a2736674cdac472ea3ef6ef70393743c36580deca',
    ];
    const files = ['fixtures/layers/1-base.tar', 'fixtures/layers/4-changes.tar'];
    for (const [i, file] of files.entries()) {
      const { entries, diffId } = await readAll(readFileSync(join(repoRoot(), file)));
      assert.equal(diffId, `sha256:${expected[i]}`);
      assert.equal(entries.length, i === 0 ? 285 : 18);
    }
  });
});

/** Tests run from the repository root (or UNIONCTL_REPO names it). */
function repoRoot(): string {
  return process.env.UNIONCTL_REPO ?? process.cwd();
}
