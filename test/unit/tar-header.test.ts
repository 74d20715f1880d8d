/**
 * The tar header module on its own: the field table, block encode/decode of every field, octal and
 * base-256 numbers, the checksum, ustar name splitting, pax and GNU long-name records. Blocks are
 * checked against the independent test builder (test/helpers/tarbuild.ts) and node-tar's Header.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Header } from 'tar';
import { TarFormatError, UnionctlError } from '../../src/errors.js';
import {
  BLOCK_SIZE,
  blockPadding,
  computeChecksum,
  decodeHeader,
  decodeLongName,
  decodeNumber,
  dialectOf,
  encodeHeader,
  encodeNumber,
  encodePaxRecord,
  encodePaxRecords,
  ENTRY_TYPES,
  FIELDS,
  fitsOctal,
  fitsText,
  parsePaxRecords,
  TYPEFLAGS,
  ustarName,
  verifyChecksum,
  writeChecksum,
  type UstarFields,
} from '../../src/archive/tar-header.js';
import { paxRecord, tarHeader, writeBase256 } from '../helpers/tarbuild.js';

const FULL: UstarFields = {
  name: 'n'.repeat(99) + 'N',
  prefix: 'p'.repeat(154) + 'P',
  typeflag: '4',
  mode: 0o7777,
  uid: 0o7777777,
  gid: 1234,
  size: 8 ** 11 - 1,
  mtime: 1_700_000_000,
  linkname: 'l'.repeat(99) + 'L',
  uname: 'u'.repeat(31),
  gname: 'wheel',
  devmajor: 0o7777777,
  devminor: 7,
};

function expectTarError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TarFormatError, `expected a TarFormatError, got ${String(e)}`);
    assert.equal(e.code, 'BAD_TAR');
    assert.match(e.message, pattern);
    return true;
  });
}

describe('tar header: the field table', () => {
  it('lays the ustar fields end to end over the first 500 bytes; the GNU and star fields overlay the prefix area', () => {
    const ustar = ['name', 'mode', 'uid', 'gid', 'size', 'mtime', 'chksum', 'typeflag', 'linkname', 'magic', 'version'] as const;
    const tail = ['uname', 'gname', 'devmajor', 'devminor', 'prefix'] as const;
    let at = 0;
    for (const name of [...ustar, ...tail]) {
      assert.equal(FIELDS[name].offset, at, name);
      at += FIELDS[name].length;
    }
    assert.equal(at, 500);
    const prefix = FIELDS.prefix;
    for (const name of ['atime', 'ctime', 'starPrefix'] as const) {
      const f = FIELDS[name];
      assert.ok(f.offset >= prefix.offset && f.offset + f.length <= prefix.offset + prefix.length, name);
    }
    assert.equal(FIELDS.starTrailer.offset + FIELDS.starTrailer.length, BLOCK_SIZE);
  });

  it('maps every entry type to a typeflag and back', () => {
    for (const [type, flag] of Object.entries(TYPEFLAGS)) assert.equal(ENTRY_TYPES[flag], type);
    assert.equal(ENTRY_TYPES['\0'], 'file');
    assert.equal(ENTRY_TYPES['7'], 'file');
  });

  it('pads to whole blocks', () => {
    assert.deepEqual([0, 1, 511, 512, 513, 1024].map(blockPadding), [0, 511, 1, 0, 511, 0]);
  });
});

describe('tar header: encode and decode', () => {
  it('round-trips every field, each at the edge of what it holds', () => {
    const block = encodeHeader(FULL);
    assert.equal(block.length, BLOCK_SIZE);
    assert.equal(dialectOf(block), 'ustar');
    assert.deepEqual(decodeHeader(block, 4096), {
      offset: 4096,
      dialect: 'ustar',
      typeflag: FULL.typeflag,
      name: `${FULL.prefix}/${FULL.name}`,
      linkname: FULL.linkname,
      mode: FULL.mode,
      uid: FULL.uid,
      gid: FULL.gid,
      size: FULL.size,
      mtime: FULL.mtime,
      atime: undefined,
      uname: FULL.uname,
      gname: FULL.gname,
      devmajor: FULL.devmajor,
      devminor: FULL.devminor,
    });
  });

  it('round-trips each field alone (every other field empty or zero)', () => {
    const empty: UstarFields = {
      name: '',
      prefix: '',
      typeflag: '0',
      mode: 0,
      uid: 0,
      gid: 0,
      size: 0,
      mtime: 0,
      linkname: '',
      uname: '',
      gname: '',
      devmajor: 0,
      devminor: 0,
    };
    for (const key of Object.keys(FULL) as Array<keyof UstarFields>) {
      const fields = { ...empty, name: key === 'prefix' ? 'x' : empty.name, [key]: FULL[key] };
      const decoded = decodeHeader(encodeHeader(fields), 0);
      const expected = key === 'prefix' ? `${FULL.prefix}/x` : fields.name;
      assert.equal(decoded.name, expected, key);
      for (const other of [
        'typeflag',
        'mode',
        'uid',
        'gid',
        'size',
        'mtime',
        'linkname',
        'uname',
        'gname',
        'devmajor',
        'devminor',
      ] as const)
        assert.equal(decoded[other], fields[other], `${key}: ${other}`);
    }
  });

  it('writes the same bytes as an independent ustar builder', () => {
    const spec = {
      name: 'a/b',
      mode: 0o640,
      uid: 7,
      gid: 8,
      mtime: 1234,
      linkname: 'c',
      uname: 'me',
      gname: 'us',
      devmajor: 3,
      devminor: 4,
    };
    const ours = encodeHeader({ ...spec, prefix: '', typeflag: '0', size: 5 });
    const theirs = tarHeader({ ...spec, content: 'hello' });
    assert.ok(ours.equals(theirs), 'identical blocks');
  });

  it('agrees with node-tar: it decodes our blocks, we decode its blocks', () => {
    const ours = new Header(encodeHeader({ ...FULL, prefix: '', typeflag: '0', name: 'dir/file' }));
    assert.equal(ours.cksumValid, true);
    assert.equal(ours.path, 'dir/file');
    assert.equal(ours.size, FULL.size);
    assert.equal(ours.uid, FULL.uid);
    assert.equal(ours.uname, FULL.uname);
    assert.equal(ours.linkpath, FULL.linkname);
    const block = Buffer.alloc(BLOCK_SIZE);
    new Header({ path: 'x/y', mode: 0o755, uid: 1, gid: 2, size: 3, mtime: new Date(5000), type: 'File', uname: 'a', gname: 'b' }).encode(
      block,
    );
    const theirs = decodeHeader(block, 0);
    assert.deepEqual(
      [theirs.name, theirs.mode, theirs.uid, theirs.gid, theirs.size, theirs.mtime, theirs.uname, theirs.gname, theirs.typeflag],
      ['x/y', 0o755, 1, 2, 3, 5, 'a', 'b', '0'],
    );
  });

  it('reads the GNU, star and v7 dialects', () => {
    const gnu = tarHeader({ name: 'g', format: 'gnu', uname: 'owner' });
    encodeNumber(gnu, 'atime', 1_600_000_000); // where ustar has its prefix
    writeChecksum(gnu);
    assert.deepEqual((({ dialect, atime, uname }) => ({ dialect, atime, uname }))(decodeHeader(gnu, 0)), {
      dialect: 'gnu',
      atime: 1_600_000_000,
      uname: 'owner',
    });
    const v7 = tarHeader({ name: 'v', format: 'v7', uname: 'ignored' });
    assert.deepEqual((({ dialect, uname, devmajor }) => ({ dialect, uname, devmajor }))(decodeHeader(v7, 0)), {
      dialect: 'v7',
      uname: '',
      devmajor: 0,
    });
    const star = encodeHeader({ ...FULL, prefix: 'short', name: 's' });
    star.write('tar\0', FIELDS.starTrailer.offset, 'latin1');
    writeChecksum(star);
    assert.equal(decodeHeader(star, 0).dialect, 'star');
    assert.equal(decodeHeader(star, 0).name, 'short/s');
  });

  it('refuses a negative size and a mode beyond seven octal digits, naming the entry', () => {
    const negative = encodeHeader({ ...FULL, prefix: '', name: 'neg' });
    encodeNumber(negative, 'size', -1);
    writeChecksum(negative);
    expectTarError(() => decodeHeader(negative, 1536), /entry "neg", offset 1536.*negative size -1/);
    for (const mode of [-1, 0o10000000, 2 ** 40]) {
      const block = encodeHeader({ ...FULL, prefix: '', name: 'm' });
      encodeNumber(block, 'mode', mode);
      writeChecksum(block);
      expectTarError(() => decodeHeader(block, 0), new RegExp(`entry "m".*mode ${mode} is out of range`));
    }
    const typeBits = encodeHeader({ ...FULL, prefix: '', name: 'old-gnu', mode: 0o100644 }); // S_IFREG in the field, as old GNU tar wrote it
    assert.equal(decodeHeader(typeBits, 0).mode, 0o100644);
  });

  it('ends a name at its first NUL: the bytes after it are not part of the name', () => {
    const block = encodeHeader({ ...FULL, prefix: '', name: 'a' });
    block.write('a\0hidden', FIELDS.name.offset, 'latin1');
    block.write('t\0junk', FIELDS.linkname.offset, 'latin1');
    writeChecksum(block);
    const h = decodeHeader(block, 0);
    assert.deepEqual([h.name, h.linkname], ['a', 't']);
  });

  it('refuses a name that is not UTF-8 (UNSUPPORTED, not a format error)', () => {
    const block = encodeHeader({ ...FULL, prefix: '', name: 'caf\xe9' }); // latin1 é alone is not UTF-8
    assert.throws(
      () => decodeHeader(block, 512),
      (e: unknown) =>
        e instanceof UnionctlError && !(e instanceof TarFormatError) && e.code === 'UNSUPPORTED' && /offset 512/.test(e.message),
    );
  });
});

describe('tar header: numbers', () => {
  it('writes zero-padded octal with a NUL while the value fits, and knows where that ends', () => {
    const block = Buffer.alloc(BLOCK_SIZE);
    encodeNumber(block, 'mode', 0o755);
    assert.equal(block.toString('latin1', FIELDS.mode.offset, FIELDS.mode.offset + 8), '0000755\0');
    assert.equal(fitsOctal('uid', 0o7777777), true);
    assert.equal(fitsOctal('uid', 0o10000000), false);
    assert.equal(fitsOctal('size', 8 ** 11 - 1), true);
    assert.equal(fitsOctal('size', 8 ** 11), false);
    assert.equal(fitsOctal('size', -1), false);
    assert.equal(fitsOctal('size', 1.5), false);
  });

  it('reads octal padded with spaces and NULs', () => {
    const block = Buffer.alloc(BLOCK_SIZE);
    block.write('  755 \0\0', FIELDS.mode.offset, 'latin1');
    assert.equal(decodeNumber(block, 'mode', 0), 0o755);
    block.fill(0, FIELDS.uid.offset, FIELDS.uid.offset + 8);
    assert.equal(decodeNumber(block, 'uid', 0), 0);
  });

  it('round-trips base-256 numbers (large and negative), byte for byte as GNU writes them', () => {
    const cases: Array<['size' | 'uid' | 'mtime', number]> = [
      ['size', 8 ** 11],
      ['size', 10 * 1024 ** 3 * 1024],
      ['size', Number.MAX_SAFE_INTEGER],
      ['uid', 0o10000000],
      ['uid', 2 ** 40],
      ['mtime', -1],
      ['mtime', -100],
      ['mtime', -(2 ** 40) - 3],
      ['mtime', Number.MIN_SAFE_INTEGER],
    ];
    for (const [field, value] of cases) {
      const { offset, length } = FIELDS[field];
      const ours = Buffer.alloc(BLOCK_SIZE);
      encodeNumber(ours, field, value);
      assert.equal(ours[offset] & 0x80, 0x80, `${value}: marker bit`);
      assert.equal(decodeNumber(ours, field, 0), value, `${value}: round trip`);
      const theirs = Buffer.alloc(BLOCK_SIZE);
      writeBase256(theirs, offset, length, value);
      assert.ok(ours.equals(theirs), `${value}: same bytes as the reference builder`);
    }
  });

  it('refuses base-256 beyond a safe integer and unreadable octal, naming the field', () => {
    const block = Buffer.alloc(BLOCK_SIZE);
    block.fill(0xff, FIELDS.size.offset, FIELDS.size.offset + FIELDS.size.length);
    block[FIELDS.size.offset] = 0x80 | 0x3f;
    expectTarError(() => decodeNumber(block, 'size', 1024, 'big'), /entry "big", offset 1024.*bad size field.*base-256 number too large/);
    block.write('12x4\0', FIELDS.mode.offset, 'latin1');
    expectTarError(() => decodeNumber(block, 'mode', 0), /bad mode field "12x4.*not an octal number/);
    assert.throws(() => encodeNumber(block, 'size', 2 ** 60), RangeError);
  });
});

describe('tar header: checksum', () => {
  it('fills in a checksum that verifies, as six octal digits, a NUL and a space', () => {
    const block = encodeHeader(FULL);
    const { offset, length } = FIELDS.chksum;
    const text = block.toString('latin1', offset, offset + length);
    assert.match(text, /^[0-7]{6}\0 $/);
    assert.equal(parseInt(text.slice(0, 6), 8), computeChecksum(block).unsigned);
    verifyChecksum(block, 0);
  });

  it('fails on any changed byte, naming the entry and offset', () => {
    for (const at of [0, 100, 200, 300, 511]) {
      const block = encodeHeader({ ...FULL, prefix: '', name: 'victim' });
      block[at] ^= 0x01;
      expectTarError(() => decodeHeader(block, 2048), /offset 2048.*header checksum mismatch \(stored \d+, computed \d+\)/);
    }
    const garbage = Buffer.alloc(BLOCK_SIZE, 0x41);
    expectTarError(() => verifyChecksum(garbage, 0), /stored unreadable/);
  });

  it('accepts the historic signed sum', () => {
    const block = encodeHeader({ ...FULL, prefix: '', name: 'caf\u00c3\u00a9' }); // "café" in UTF-8, bytes >= 0x80
    const { signed, unsigned } = computeChecksum(block);
    assert.ok(signed < unsigned);
    block.write(`${signed.toString(8).padStart(6, '0')}\0 `, FIELDS.chksum.offset, 'latin1');
    assert.equal(decodeHeader(block, 0).name, 'caf\u00e9');
  });
});

describe('tar header: long names', () => {
  it('keeps names of up to 100 bytes whole, splits longer ASCII paths at a slash, and gives up otherwise', () => {
    assert.deepEqual(ustarName('a'.repeat(100)), { prefix: '', name: 'a'.repeat(100) });
    const split = `${'p'.repeat(155)}/${'n'.repeat(100)}`;
    assert.deepEqual(ustarName(split), { prefix: 'p'.repeat(155), name: 'n'.repeat(100) });
    assert.equal(ustarName(`${'p'.repeat(156)}/n`), undefined, 'prefix too long');
    assert.equal(ustarName(`p/${'n'.repeat(101)}`), undefined, 'name part too long');
    assert.equal(ustarName('a'.repeat(101)), undefined, 'no slash');
    assert.equal(ustarName('caf\u00e9'), undefined, 'not ASCII');
    // a directory's trailing slash stays with the name
    assert.deepEqual(ustarName(`${'d'.repeat(100)}/${'e'.repeat(99)}/`), { prefix: 'd'.repeat(100), name: `${'e'.repeat(99)}/` });
  });

  it('round-trips a split path through a block', () => {
    const path = `${'dir/'.repeat(30)}${'f'.repeat(90)}`;
    const parts = ustarName(path)!;
    assert.equal(decodeHeader(encodeHeader({ ...FULL, ...parts }), 0).name, path);
  });

  it('knows which text fits a field: name and linkname may fill it, owner names keep their NUL', () => {
    assert.equal(fitsText('linkname', 'l'.repeat(100)), true);
    assert.equal(fitsText('linkname', 'l'.repeat(101)), false);
    assert.equal(fitsText('uname', 'u'.repeat(31)), true);
    assert.equal(fitsText('uname', 'u'.repeat(32)), false);
    assert.equal(fitsText('gname', 'gr\u00fcn'), false);
  });

  it('reads GNU long-name records up to their NUL, refusing bytes that are not UTF-8', () => {
    assert.equal(decodeLongName(Buffer.from('\u00e9t\u00e9/'.repeat(80) + '\0'), 0), '\u00e9t\u00e9/'.repeat(80));
    assert.equal(decodeLongName(Buffer.from('padded\0\0\0'), 0), 'padded');
    assert.equal(decodeLongName(Buffer.from('no-nul'), 0), 'no-nul');
    assert.throws(
      () => decodeLongName(Buffer.from([0x61, 0xff, 0]), 3072),
      (e: unknown) => e instanceof UnionctlError && e.code === 'UNSUPPORTED' && /offset 3072/.test(e.message),
    );
  });

  it('refuses a NUL byte inside a long name (a NUL followed by more of the name), naming the offset', () => {
    expectTarError(
      () => decodeLongName(Buffer.from('dir/a\0b\0'), 2048),
      /offset 2048.*GNU long-name record holds a NUL byte inside the name/,
    );
    expectTarError(() => decodeLongName(Buffer.from('\0evil'), 0), /NUL byte inside the name/);
  });
});

describe('tar header: pax records', () => {
  it('counts the length in bytes, itself included, across every digit boundary', () => {
    const sizes = [...Array(1100).keys(), ...Array.from({ length: 30 }, (_, i) => 9980 + i)]; // lengths of 1 to 5 digits
    for (const valueBytes of sizes) {
      const value = Buffer.alloc(valueBytes, 0x76);
      const record = encodePaxRecord('k', value);
      const length = Number(record.toString('latin1', 0, record.indexOf(0x20)));
      assert.equal(length, record.length, `value of ${valueBytes} bytes`);
      assert.ok(record.equals(paxRecord('k', value)), `value of ${valueBytes} bytes: same as the reference builder`);
      assert.ok(parsePaxRecords(record).get('k')!.equals(value));
    }
  });

  it('round-trips multi-byte UTF-8 keys and values and binary values (NUL, newline, =)', () => {
    const records = new Map<string, Buffer>([
      ['path', Buffer.from('\u65e5\u672c\u8a9e/'.repeat(40) + '\u00e9', 'utf8')],
      ['SCHILY.xattr.user.\u00fc', Buffer.from([0, 0x0a, 0x3d, 0xff, 0x20, 0])],
      ['LIBARCHIVE.xattr.user.%C3%A9', Buffer.from('aGk=')],
      ['empty', Buffer.alloc(0)],
    ]);
    const data = encodePaxRecords(records);
    const parsed = parsePaxRecords(Buffer.concat([data, Buffer.alloc(blockPadding(data.length))]));
    assert.deepEqual([...parsed.keys()], [...records.keys()]);
    for (const [key, value] of records) assert.ok(parsed.get(key)!.equals(value), key);
    // the length counts bytes: a key of three-byte characters makes a longer record than its string length
    assert.equal(encodePaxRecord('\u65e5', Buffer.from('v')).toString('utf8'), '8 \u65e5=v\n');
  });

  it('lets a later record of a key win (as Go archive/tar and GNU tar do)', () => {
    const data = Buffer.concat([encodePaxRecord('uid', Buffer.from('1')), encodePaxRecord('uid', Buffer.from('2'))]);
    assert.equal(parsePaxRecords(data).get('uid')!.toString(), '2');
    const paths = Buffer.concat([encodePaxRecord('path', Buffer.from('first')), encodePaxRecord('path', Buffer.from('second'))]);
    assert.equal(parsePaxRecords(paths).get('path')!.toString(), 'second');
  });

  it('refuses an empty key, a NUL byte in a key and a key that is not UTF-8, naming the header offset', () => {
    expectTarError(() => parsePaxRecords(encodePaxRecord('', Buffer.from('x')), 512), /offset 512.*pax record at byte 0 has an empty key/);
    const ok = encodePaxRecord('a', Buffer.from('b'));
    const nul = encodePaxRecord('SCHILY.xattr.user.a\0b', Buffer.from('v'));
    expectTarError(() => parsePaxRecords(Buffer.concat([ok, nul]), 0), /pax record at byte 6 has a NUL byte in its key/);
    const latin1 = Buffer.concat([Buffer.from('13 '), Buffer.from([0x6b, 0xe9, 0x79]), Buffer.from('=value\n')]);
    expectTarError(() => parsePaxRecords(latin1, 0), /has a key that is not UTF-8/);
  });

  it('refuses a record whose length disagrees with its content', () => {
    const record = encodePaxRecord('path', Buffer.from('some/file')); // "18 path=some/file\n"
    const text = record.toString('latin1');
    for (const length of [5, 10, 17, 19, 40, 10 ** 20]) {
      const lying = Buffer.from(text.replace(/^\d+/, String(length)), 'latin1');
      expectTarError(() => parsePaxRecords(lying, 0), /pax record at byte 0/);
    }
  });

  it('refuses malformed records, naming the header offset', () => {
    expectTarError(() => parsePaxRecords(Buffer.from('x path=a\n'), 512), /offset 512.*bad pax record length at byte 0/);
    expectTarError(() => parsePaxRecords(Buffer.from('0 path=a\n')), /bad pax record length/);
    expectTarError(() => parsePaxRecords(Buffer.from('30 path=a\n')), /overruns its header or lacks its newline/);
    expectTarError(() => parsePaxRecords(Buffer.from('10 path=ab')), /overruns its header or lacks its newline/);
    expectTarError(() => parsePaxRecords(Buffer.from('9 pathab\n')), /has no '='/);
    const ok = encodePaxRecord('a', Buffer.from('b'));
    expectTarError(() => parsePaxRecords(Buffer.concat([ok, Buffer.from('junk')]), 0), /bad pax record length at byte 6/);
  });
});
