/**
 * A seeded, reproducible tar fuzzer: a corpus of valid layer tars (every dialect and record kind
 * unionctl reads, plain, gzip and zstd) and mutations of them — byte flips, truncations,
 * header-field mutations, pax record mutations, splices of entries from other tars, trailing
 * data. Case `i` of seed `s` is always the same bytes, so a failure reproduces from the two
 * numbers alone:
 *
 *   const c = fuzzCase(seed, i);   // { index, name: 'pax: field uid=…, flip 3', bytes, parent }
 *
 * Knobs (environment): UNIONCTL_FUZZ_SEED (a number, or "random"), UNIONCTL_FUZZ_CASES (how
 * many), UNIONCTL_FUZZ_CASE (only that one case).
 */
import { execFileSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import { BLOCK_SIZE, decodeHeader, FIELDS, writeChecksum, type FieldName } from '../../src/archive/tar-header.js';
import { buildTar, END_OF_ARCHIVE, gnuLongRecord, padToBlock, paxHeader, paxRecord, writeBase256, type TarSpec } from './tarbuild.js';

export const DEFAULT_FUZZ_SEED = 0x5eed_2024;
export const DEFAULT_FUZZ_CASES = 300;

/** The seed, the number of cases and the one case to run (if any), from the environment. */
export function fuzzSettings(): { seed: number; cases: number; only: number | undefined } {
  const raw = process.env.UNIONCTL_FUZZ_SEED;
  const seed = raw === 'random' ? Math.floor(Math.random() * 2 ** 32) : raw ? Number(raw) >>> 0 : DEFAULT_FUZZ_SEED;
  const cases = Number(process.env.UNIONCTL_FUZZ_CASES ?? DEFAULT_FUZZ_CASES);
  const only = process.env.UNIONCTL_FUZZ_CASE === undefined ? undefined : Number(process.env.UNIONCTL_FUZZ_CASE);
  return { seed, cases, only };
}

/** How to run one case again. */
export function reproduce(seed: number, index: number): string {
  return `UNIONCTL_FUZZ_SEED=${seed} UNIONCTL_FUZZ_CASE=${index}`;
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/** mulberry32: 32 bits of state, uniform enough for picking mutations. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A uniform number in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.below(256);
    return out;
  }
}

/** The generator of case `index` of `seed`: independent of every other case. */
function caseRng(seed: number, index: number): Rng {
  const rng = new Rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
  rng.next();
  return rng;
}

// ---------------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------------

/** The tree the fuzzed layers are applied on when a case takes a parent (whiteouts and hardlinks reach into it). */
export const PARENT_LAYER: TarSpec[] = [
  { name: 'etc/', type: 'dir' },
  { name: 'etc/passwd', content: 'root:x:0:0::/root:/bin/sh\n' },
  { name: 'usr/', type: 'dir' },
  { name: 'usr/lib/', type: 'dir' },
  { name: 'usr/lib/libc.so', content: Buffer.alloc(3000, 0x7f) },
  { name: 'lowerfile', content: 'from below' },
  { name: 'opt/', type: 'dir' },
  { name: 'opt/keep', content: 'kept' },
];

interface CorpusTar {
  name: string;
  bytes: Buffer;
  /** Applied on PARENT_LAYER (a hardlink to a lower file, whiteouts of lower names). */
  parent: boolean;
  /** Compressed: only byte-level mutations make sense. */
  compressed: boolean;
}

function corpusTars(): CorpusTar[] {
  const plain = (name: string, entries: Array<TarSpec | Buffer>, parent = false): CorpusTar => ({
    name,
    bytes: buildTar(entries),
    parent,
    compressed: false,
  });
  const kinds: Array<TarSpec | Buffer> = [
    { name: 'dir/', type: 'dir', mode: 0o750, uid: 1000, gid: 1000 },
    { name: 'dir/file', content: 'hello world\n'.repeat(120), mode: 0o644 },
    { name: 'dir/link', type: 'symlink', linkname: 'file' },
    { name: 'dir/hard', type: 'hardlink', linkname: 'dir/file' },
    { name: 'dir/fifo', type: 'fifo' },
    { name: 'dir/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
    { name: 'empty', content: '' },
  ];
  const long = `deep/${'d'.repeat(90)}/${'e'.repeat(90)}/file`;
  const pax: Array<TarSpec | Buffer> = [
    { name: 'deep/', type: 'dir' },
    {
      name: 'short',
      content: 'pax body',
      pax: { path: long, mtime: '1700000000.123456789', uid: '3000000000', gname: 'grp', 'SCHILY.xattr.user.note': 'v\0binary' },
    },
    { name: 'l', type: 'symlink', linkname: 'x', pax: { linkpath: `target/${'t'.repeat(150)}` } },
    {
      name: 'caps',
      content: 'bin',
      pax: { 'SCHILY.xattr.security.capability': Buffer.from('0100000200200000000000000000000000000000', 'hex') },
    },
  ];
  const gnu: Array<TarSpec | Buffer> = [
    gnuLongRecord(`gnu/${'n'.repeat(150)}`, 'L'),
    { name: 'gnu/short', content: 'gnu body', format: 'gnu', uid: 70_000_000, base256: ['uid'] },
    gnuLongRecord(`gnu/${'t'.repeat(120)}`, 'K'),
    { name: 'gnu/l', type: 'symlink', linkname: 'short', format: 'gnu' },
    { name: 'gnu/old', format: 'gnu', mtime: -86400, base256: ['mtime'] },
  ];
  const whiteouts: Array<TarSpec | Buffer> = [
    { name: 'etc/', type: 'dir' },
    { name: 'etc/.wh.passwd', mode: 0o600 },
    { name: 'opt/', type: 'dir' },
    { name: 'opt/.wh..wh..opq', mode: 0o600 },
    { name: 'opt/new', content: 'new' },
    { name: 'usr/lib/.wh.libc.so' },
  ];
  const lower: Array<TarSpec | Buffer> = [
    { name: 'linked', type: 'hardlink', linkname: 'lowerfile' },
    { name: 'usr/lib/libc.so', content: 'replaced' },
  ];
  const global: Array<TarSpec | Buffer> = [
    paxHeader({ uid: '77', 'SCHILY.xattr.user.g': 'global' }, 'g'),
    { name: 'g1', content: 'one' },
    { name: 'g2/', type: 'dir' },
  ];
  const v7: Array<TarSpec | Buffer> = [
    { name: 'v7dir/', typeflag: '\0', format: 'v7' },
    { name: 'v7dir/file', typeflag: '\0', content: 'v7', format: 'v7' },
  ];
  const tars = [
    plain('ustar: every kind', kinds),
    plain('pax: long names, xattrs, times', pax),
    plain('gnu: long names, base-256', gnu),
    plain('whiteouts on a parent', whiteouts, true),
    plain('hardlink to a lower layer', lower, true),
    plain('global pax header', global),
    plain('v7', v7),
    { name: 'empty archive', bytes: Buffer.from(END_OF_ARCHIVE), parent: false, compressed: false },
  ];
  const gz = { ...tars[0]!, name: 'gzip: every kind', bytes: gzipSync(tars[0]!.bytes), compressed: true };
  const zst = {
    ...tars[1]!,
    name: 'zstd: pax',
    bytes: execFileSync('zstd', ['-q', '-c', '--check'], { input: tars[1]!.bytes }),
    compressed: true,
  };
  return [...tars, gz, zst];
}

let corpusCache: CorpusTar[] | undefined;
export function corpus(): CorpusTar[] {
  corpusCache ??= corpusTars();
  return corpusCache;
}

// ---------------------------------------------------------------------------------------------
// The structure of a (valid) tar: where its header blocks and records are
// ---------------------------------------------------------------------------------------------

interface Block {
  offset: number;
  typeflag: string;
  /** Data bytes after the header (padded to blocks on disk). */
  size: number;
}

/** The header blocks of a tar, up to its end or the first block that is not a header. */
function headers(tar: Buffer): Block[] {
  const out: Block[] = [];
  let pendingSize: number | undefined;
  for (let pos = 0; pos + BLOCK_SIZE <= tar.length;) {
    const block = tar.subarray(pos, pos + BLOCK_SIZE);
    let h;
    try {
      h = decodeHeader(block, pos);
    } catch {
      return out;
    }
    let size = h.size;
    if (h.typeflag === 'x') {
      const m = /(?:^|\n)\d+ size=(\d+)\n/.exec(tar.toString('latin1', pos + BLOCK_SIZE, pos + BLOCK_SIZE + h.size));
      if (m) pendingSize = Number(m[1]);
    } else if (!'gLKV'.includes(h.typeflag)) {
      if (pendingSize !== undefined) size = pendingSize;
      pendingSize = undefined;
      if (!'07\0'.includes(h.typeflag)) size = 0;
    }
    out.push({ offset: pos, typeflag: h.typeflag, size });
    pos += BLOCK_SIZE + Math.ceil(size / BLOCK_SIZE) * BLOCK_SIZE;
  }
  return out;
}

/** A header block with one field replaced, its checksum made right again (unless `keepChecksum`). */
function setField(tar: Buffer, at: number, field: FieldName, value: Buffer, keepChecksum: boolean): void {
  const { offset, length } = FIELDS[field];
  const block = tar.subarray(at, at + BLOCK_SIZE);
  block.fill(0, offset, offset + length);
  value.copy(block, offset, 0, Math.min(length, value.length));
  if (!keepChecksum) writeChecksum(block);
}

// ---------------------------------------------------------------------------------------------
// Interesting values
// ---------------------------------------------------------------------------------------------

function numberValue(rng: Rng, length: number): { text: string; bytes: Buffer } {
  const octal = (n: number) => Buffer.from(`${n.toString(8).padStart(length - 1, '0')}\0`, 'latin1');
  const base256 = (n: number) => {
    const b = Buffer.alloc(length);
    writeBase256(b, 0, length, n);
    return b;
  };
  const choices: Array<[string, () => Buffer]> = [
    ['base-256 2^32', () => base256(2 ** 32)],
    ['base-256 2^32-1', () => base256(2 ** 32 - 1)],
    ['base-256 -1', () => Buffer.alloc(length, 0xff)],
    ['max octal', () => Buffer.from(`${'7'.repeat(length - 1)}\0`, 'latin1')],
    ['zero', () => octal(0)],
    ['spaces', () => Buffer.alloc(length, 0x20)],
    ['nuls', () => Buffer.alloc(length)],
    ['not octal', () => Buffer.from('12389xyz'.padEnd(length, '\0'), 'latin1')],
    ['-1', () => Buffer.from('-1\0', 'latin1')],
    ['base-256 negative', () => base256(-(2 ** 40))],
    ['base-256 huge', () => Buffer.concat([Buffer.from([0x80]), Buffer.alloc(length - 1, 0xff)])],
    ['base-256 max safe', () => (length >= 8 ? base256(Number.MAX_SAFE_INTEGER) : base256(2 ** 40))],
    ['small', () => octal(rng.below(4096))],
    ['random', () => rng.bytes(length)],
  ];
  const [text, make] = rng.pick(choices);
  return { text, bytes: make() };
}

const NAMES = [
  'a\0b',
  '../../escape',
  '/abs/path',
  '.',
  '..',
  '',
  './',
  '.wh..wh..opq',
  '.wh.',
  '.wh..',
  '.wh...',
  'etc/.wh.passwd',
  'dir/.wh..wh.plnk/x',
  'x'.repeat(100),
  'a//b/./c/',
  'dir',
  'dir/file',
  'lowerfile',
  'caf\xe9',
];

function nameValue(rng: Rng): { text: string; bytes: Buffer } {
  if (rng.chance(0.1)) return { text: 'random', bytes: rng.bytes(rng.below(100)) };
  if (rng.chance(0.05)) return { text: 'not UTF-8', bytes: Buffer.from([0x66, 0xff, 0xfe, 0x2f, 0x61]) };
  const text = rng.pick(NAMES);
  return { text: JSON.stringify(text), bytes: Buffer.from(text, text === 'caf\xe9' ? 'latin1' : 'utf8') };
}

const TYPEFLAGS = ['0', '1', '2', '3', '4', '5', '6', '7', 'x', 'g', 'L', 'K', 'V', 'S', 'D', 'M', 'N', '\0', 'Z', '\xff'];

/** Pax keys, each with the values that are interesting for its kind. */
const NAME_VALUES = ['a\0b', '\0', 'dir/\0x', '../../escape', '/abs', 'dir/file', '.wh..wh..opq', 'x'.repeat(300), '', '.', '..'];
const COUNT_VALUES = [
  '99999999999999',
  '4294967296',
  '4294967295',
  '4294967294',
  '-1',
  '9007199254740993',
  '90071992547409930',
  'abc',
  '',
  '0',
  '1e3',
  ' 1',
  '0x10',
  '512',
  '100000000',
];
const TIME_VALUES = ['abc', '-1.25', '1.5', '99999999999999999', '9999999999999', '1e9', '-', '', '0x10', '1700000000.123456789123'];
const XATTR_VALUES = ['', 'y', '/etc', '/secret', 'v\0binary'];
const PAX_KEYS: Array<[string, readonly string[]]> = [
  ['path', NAME_VALUES],
  ['linkpath', NAME_VALUES],
  ['uname', NAME_VALUES],
  ['gname', NAME_VALUES],
  ['uid', COUNT_VALUES],
  ['gid', COUNT_VALUES],
  ['size', COUNT_VALUES],
  ['mtime', TIME_VALUES],
  ['atime', TIME_VALUES],
  ['SCHILY.xattr.user.a', XATTR_VALUES],
  ['SCHILY.xattr.trusted.overlay.redirect', XATTR_VALUES],
  ['SCHILY.xattr.trusted.overlay.opaque', XATTR_VALUES],
  ['SCHILY.xattr.user.overlay.redirect', XATTR_VALUES],
  ['SCHILY.xattr.security.capability', XATTR_VALUES],
  ['SCHILY.xattr.system.posix_acl_access', XATTR_VALUES],
  ['SCHILY.xattr.', XATTR_VALUES],
  ['LIBARCHIVE.xattr.user.%00', ['dg==', '!!']],
  ['LIBARCHIVE.xattr.user.%zz', ['dg==']],
  ['GNU.sparse.major', ['1']],
  ['comment', XATTR_VALUES],
  ['', XATTR_VALUES],
  ['a\0b', XATTR_VALUES],
];

function paxValue(rng: Rng, values: readonly string[]): Buffer {
  if (rng.chance(0.1)) return rng.bytes(rng.below(40));
  if (rng.chance(0.03)) return Buffer.alloc(2000 + rng.below(3000), 0x61);
  return Buffer.from(rng.pick(values), 'utf8');
}

/** The values that are interesting for a pax key already in a header (by its kind). */
function valuesFor(key: string): readonly string[] {
  return PAX_KEYS.find(([k]) => k === key)?.[1] ?? XATTR_VALUES;
}

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

type Mutation = (rng: Rng, tar: Buffer, donor: Buffer) => { tar: Buffer; what: string };

const flip: Mutation = (rng, tar) => {
  const out = Buffer.from(tar);
  const n = 1 + rng.below(8);
  const blocks = headers(tar);
  const inHeader = blocks.length > 0 && rng.chance(0.6);
  const fixed = inHeader && rng.chance(0.7);
  const at = inHeader ? rng.pick(blocks).offset : 0;
  for (let i = 0; i < n && out.length > 0; i++) {
    const pos = inHeader ? at + rng.below(BLOCK_SIZE) : rng.below(out.length);
    out[pos] = rng.chance(0.5) ? out[pos]! ^ (1 << rng.below(8)) : rng.below(256);
  }
  if (fixed) writeChecksum(out.subarray(at, at + BLOCK_SIZE));
  return { tar: out, what: `flip ${n}${inHeader ? ` in the header at ${at}${fixed ? ', checksum fixed' : ''}` : ''}` };
};

const truncate: Mutation = (rng, tar) => {
  if (tar.length === 0) return { tar, what: 'truncate (empty)' };
  let at = rng.below(tar.length);
  if (rng.chance(0.4)) at = Math.max(0, Math.floor(at / BLOCK_SIZE) * BLOCK_SIZE + rng.pick([-1, 0, 1]));
  return { tar: tar.subarray(0, at), what: `truncate at ${at}` };
};

/** Header fields to mutate (the owner and size fields twice: they are where numbers go wrong). */
const FIELD_NAMES: FieldName[] = [
  'name',
  'mode',
  'uid',
  'uid',
  'gid',
  'gid',
  'size',
  'size',
  'mtime',
  'typeflag',
  'linkname',
  'magic',
  'version',
  'uname',
  'devmajor',
  'devminor',
  'prefix',
];

const field: Mutation = (rng, tar) => {
  const blocks = headers(tar);
  if (blocks.length === 0) return flip(rng, tar, tar);
  const out = Buffer.from(tar);
  const block = rng.pick(blocks);
  const name = rng.pick(FIELD_NAMES);
  const kind = FIELDS[name].kind;
  let value: { text: string; bytes: Buffer };
  if (kind === 'number') value = numberValue(rng, FIELDS[name].length);
  else if (name === 'typeflag') {
    const flag = rng.pick(TYPEFLAGS);
    value = { text: JSON.stringify(flag), bytes: Buffer.from(flag, 'latin1') };
  } else if (kind === 'magic') {
    value = rng.pick([
      { text: 'ustar', bytes: Buffer.from(name === 'magic' ? 'ustar\0' : '00', 'latin1') },
      { text: 'gnu', bytes: Buffer.from(name === 'magic' ? 'ustar ' : ' \0', 'latin1') },
      { text: 'random', bytes: rng.bytes(FIELDS[name].length) },
    ]);
  } else value = nameValue(rng);
  const keepChecksum = rng.chance(0.1);
  setField(out, block.offset, name, value.bytes, keepChecksum);
  return { tar: out, what: `field ${name}=${value.text} at ${block.offset}${keepChecksum ? ' (checksum kept)' : ''}` };
};

/** The records of a pax header's data, as [key, value] pairs, up to the first one that is not well-formed (an earlier mutation). */
function paxPairs(data: Buffer): Array<[string, Buffer]> {
  const pairs: Array<[string, Buffer]> = [];
  for (let pos = 0; pos < data.length && data[pos] !== 0;) {
    const space = data.indexOf(0x20, pos);
    const length = space === -1 ? NaN : Number(data.toString('latin1', pos, space));
    const equals = data.indexOf(0x3d, space);
    if (!(length > 0) || pos + length > data.length || equals === -1 || equals >= pos + length) break;
    pairs.push([data.toString('utf8', space + 1, equals), data.subarray(equals + 1, pos + length - 1)]);
    pos += length;
  }
  return pairs;
}

const pax: Mutation = (rng, tar) => {
  const blocks = headers(tar);
  const paxBlocks = blocks.filter((b) => b.typeflag === 'x' || b.typeflag === 'g');
  const entries = blocks.filter((b) => !'xgLKV'.includes(b.typeflag));
  let start: number;
  let end: number;
  let pairs: Array<[string, Buffer]>;
  let typeflag = 'x';
  if (paxBlocks.length > 0 && rng.chance(0.7)) {
    const b = rng.pick(paxBlocks);
    start = b.offset;
    end = b.offset + BLOCK_SIZE + Math.ceil(b.size / BLOCK_SIZE) * BLOCK_SIZE;
    pairs = paxPairs(tar.subarray(b.offset + BLOCK_SIZE, b.offset + BLOCK_SIZE + b.size));
    typeflag = b.typeflag;
  } else {
    // A new pax header before an entry (or at the end).
    start = entries.length > 0 ? rng.pick(entries).offset : 0;
    end = start;
    pairs = [];
  }
  const steps: string[] = [];
  for (let i = 1 + rng.below(3); i > 0; i--) {
    const op = rng.below(4);
    if (op === 0 || pairs.length === 0) {
      const [key, values] = rng.pick(PAX_KEYS);
      const value = paxValue(rng, values);
      pairs.push([key, value]);
      steps.push(`add ${JSON.stringify(key)}=${JSON.stringify(value.toString('latin1').slice(0, 40))}`);
    } else if (op === 1) {
      const k = rng.below(pairs.length);
      const value = paxValue(rng, valuesFor(pairs[k]![0]));
      pairs[k] = [pairs[k]![0], value];
      steps.push(`set ${JSON.stringify(pairs[k]![0])}=${JSON.stringify(value.toString('latin1').slice(0, 40))}`);
    } else if (op === 2) {
      const k = rng.below(pairs.length);
      pairs.push([pairs[k]![0], paxValue(rng, valuesFor(pairs[k]![0]))]);
      steps.push(`duplicate ${JSON.stringify(pairs[k]![0])}`);
    } else {
      steps.push(`drop ${JSON.stringify(pairs.splice(rng.below(pairs.length), 1)[0]![0])}`);
    }
  }
  let data = Buffer.concat(pairs.map(([k, v]) => paxRecord(k, v)));
  if (rng.chance(0.25) && data.length > 0) {
    // A length field that disagrees with its record.
    const text = data.toString('latin1');
    const m = /^\d+/.exec(text)!;
    const lie = rng.pick([String(Number(m[0]) + 1), String(Number(m[0]) - 1), '0', 'x', '99999', `0${m[0]}`]);
    data = Buffer.from(lie + text.slice(m[0].length), 'latin1');
    steps.push(`length ${m[0]}→${lie}`);
  }
  let size = data.length;
  if (rng.chance(0.15)) {
    size = Math.max(0, size + rng.pick([-1, -10, -100, 1, 10, 600]));
    steps.push(`size field ${data.length}→${size}`);
  }
  const header = paxHeader({}, typeflag as 'x' | 'g').subarray(0, BLOCK_SIZE);
  setField(header, 0, 'size', Buffer.from(`${size.toString(8).padStart(11, '0')}\0`, 'latin1'), false);
  const out = Buffer.concat([tar.subarray(0, start), header, padToBlock(data), tar.subarray(end)]);
  return { tar: out, what: `pax ${typeflag} at ${start}: ${steps.join(', ')}` };
};

/** Entries of another tar put into this one (names and types that collide, links to nothing). */
const splice: Mutation = (rng, tar, donor) => {
  const mine = headers(tar);
  const theirs = headers(donor).filter((b) => b.typeflag !== 'x' || rng.chance(0.5));
  if (theirs.length === 0) return truncate(rng, tar, donor);
  const b = rng.pick(theirs);
  const piece = donor.subarray(b.offset, b.offset + BLOCK_SIZE + Math.ceil(b.size / BLOCK_SIZE) * BLOCK_SIZE);
  const at = mine.length > 0 ? rng.pick(mine).offset : 0;
  return { tar: Buffer.concat([tar.subarray(0, at), piece, tar.subarray(at)]), what: `splice ${piece.length} bytes at ${at}` };
};

const trailing: Mutation = (rng, tar) => {
  const n = rng.pick([1, 511, 512, 1024, 10240, 70000]);
  const junk = rng.chance(0.5) ? Buffer.alloc(n) : rng.bytes(n);
  return { tar: Buffer.concat([tar, junk]), what: `${n} trailing bytes` };
};

const STRUCTURAL: Array<[Mutation, number]> = [
  [flip, 3],
  [truncate, 1],
  [field, 5],
  [pax, 6],
  [splice, 2],
  [trailing, 1],
];

function weighted(rng: Rng): Mutation {
  let r = rng.below(STRUCTURAL.reduce((sum, [, w]) => sum + w, 0));
  for (const [m, w] of STRUCTURAL) {
    if (r < w) return m;
    r -= w;
  }
  return flip;
}

export interface FuzzCase {
  index: number;
  /** The corpus tar and the mutations, for the failure message. */
  name: string;
  bytes: Buffer;
  /** Apply on PARENT_LAYER. */
  parent: boolean;
}

/** Case `index` of `seed`: a corpus tar with one mutation (sometimes two or three), then sometimes compressed. */
export function fuzzCase(seed: number, index: number): FuzzCase {
  const rng = caseRng(seed, index);
  const tars = corpus();
  const base = rng.pick(tars);
  const donor = rng.pick(tars).bytes;
  let bytes = base.bytes;
  const what: string[] = [];
  for (let n = rng.chance(0.7) ? 1 : 2 + rng.below(2); n > 0; n--) {
    const m = base.compressed ? rng.pick([flip, truncate]) : weighted(rng);
    const r = m(rng, bytes, donor);
    bytes = r.tar;
    what.push(r.what);
  }
  if (!base.compressed && rng.chance(0.1)) {
    const zstd = rng.chance(0.5);
    bytes = zstd ? execFileSync('zstd', ['-q', '-c', '--check'], { input: bytes }) : gzipSync(bytes);
    what.push(zstd ? 'then zstd' : 'then gzip');
  }
  const parent = base.parent || rng.chance(0.3);
  return { index, name: `${base.name}: ${what.join('; ')}`, bytes, parent };
}
