/**
 * The tar header block, in one place: the ustar field table (with the GNU and star variants of
 * its tail), encoding and decoding of a block, the checksum, octal and base-256 numbers, pax
 * extended header records and GNU long-name records. The reader (tar-reader.ts) and the writer
 * (tar-writer.ts) both go through here: neither knows a field's offset or width (node-tar's
 * Header class has the same role).
 *
 *   const block = encodeHeader({ name: 'a', prefix: '', typeflag: '0', size: 5, ... });
 *   decodeHeader(block, 0);   // { name: 'a', typeflag: '0', size: 5, dialect: 'ustar', ... }
 *
 * Dialects told apart by the magic: POSIX ustar ("ustar\0" "00"), star (ustar magic and "tar\0"
 * at the end of the block, a shorter prefix), old GNU ("ustar " " \0", atime and ctime where ustar
 * has its prefix) and v7 (no magic, no owner names or device numbers). The encoder writes ustar.
 *
 * A block is always a whole BLOCK_SIZE bytes (the readers refuse a short one before decoding it),
 * so the field offsets of the table below are read without bounds checks.
 */
import { isUtf8 } from 'node:buffer';
import { TarFormatError, UnionctlError } from '../errors.js';
import type { TarEntryType } from './types.js';

export const BLOCK_SIZE = 512;

/**
 * How a field is stored.
 * - string: text, NUL-terminated unless it fills the whole field (POSIX allows that for name, linkname, prefix)
 * - cstring: text that always keeps its NUL (uname, gname)
 * - number: octal ASCII digits then a NUL (leading/trailing spaces and NULs tolerated when read), or
 *   GNU base-256 (big-endian two's complement) when the high bit of the first byte is set
 * - checksum: six octal digits, a NUL and a space
 * - flag: one byte
 * - magic: fixed bytes naming the dialect
 */
export type FieldKind = 'string' | 'cstring' | 'number' | 'checksum' | 'flag' | 'magic';

export interface Field {
  readonly offset: number;
  readonly length: number;
  readonly kind: FieldKind;
}

/**
 * The field table: name → offset, length, kind. The last four overlay the ustar prefix area and
 * the block's padding: old GNU headers keep atime and ctime there, star a shorter prefix and a trailer.
 */
export const FIELDS = {
  name: { offset: 0, length: 100, kind: 'string' },
  mode: { offset: 100, length: 8, kind: 'number' },
  uid: { offset: 108, length: 8, kind: 'number' },
  gid: { offset: 116, length: 8, kind: 'number' },
  size: { offset: 124, length: 12, kind: 'number' },
  mtime: { offset: 136, length: 12, kind: 'number' },
  chksum: { offset: 148, length: 8, kind: 'checksum' },
  typeflag: { offset: 156, length: 1, kind: 'flag' },
  linkname: { offset: 157, length: 100, kind: 'string' },
  magic: { offset: 257, length: 6, kind: 'magic' },
  version: { offset: 263, length: 2, kind: 'magic' },
  uname: { offset: 265, length: 32, kind: 'cstring' },
  gname: { offset: 297, length: 32, kind: 'cstring' },
  devmajor: { offset: 329, length: 8, kind: 'number' },
  devminor: { offset: 337, length: 8, kind: 'number' },
  prefix: { offset: 345, length: 155, kind: 'string' },
  atime: { offset: 345, length: 12, kind: 'number' }, // old GNU
  ctime: { offset: 357, length: 12, kind: 'number' }, // old GNU
  starPrefix: { offset: 345, length: 131, kind: 'string' }, // star
  starTrailer: { offset: 508, length: 4, kind: 'magic' }, // star
} as const satisfies Record<string, Field>;

export type FieldName = keyof typeof FIELDS;
type NumberField = { [K in FieldName]: (typeof FIELDS)[K]['kind'] extends 'number' ? K : never }[FieldName];
type TextField = { [K in FieldName]: (typeof FIELDS)[K]['kind'] extends 'string' | 'cstring' ? K : never }[FieldName];

const USTAR_MAGIC = 'ustar\0';
const USTAR_VERSION = '00';
const GNU_MAGIC = 'ustar ';
const GNU_VERSION = ' \0';
const STAR_TRAILER = 'tar\0';

export type Dialect = 'ustar' | 'star' | 'gnu' | 'v7';

/** Zero bytes that pad `size` bytes of content (or record data) to a whole block. */
export function blockPadding(size: number): number {
  return (BLOCK_SIZE - (size % BLOCK_SIZE)) % BLOCK_SIZE;
}

export function headerError(message: string, offset: number, entry?: string): TarFormatError {
  return new TarFormatError(message, { entry, offset });
}

// ---------------------------------------------------------------------------------------------
// Typeflags
// ---------------------------------------------------------------------------------------------

/** The typeflag the encoder writes for each entry type. */
export const TYPEFLAGS: Readonly<Record<TarEntryType, string>> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

/** The entry type of each typeflag we extract (the decoder's view: more flags mean a file). */
export const ENTRY_TYPES: Readonly<Record<string, TarEntryType>> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file', // contiguous file: a regular file everywhere that matters
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

/** Typeflags we know but cannot extract, for a useful error. */
export const UNSUPPORTED_TYPES: Readonly<Record<string, string>> = {
  S: 'GNU sparse file',
  D: 'GNU incremental dump directory',
  M: 'GNU multi-volume continuation',
  N: 'old GNU long-name record',
  A: 'Solaris ACL',
  E: 'Solaris extended attribute',
  I: 'inode-only entry',
  X: 'old Solaris extended header',
};

// ---------------------------------------------------------------------------------------------
// Text fields
// ---------------------------------------------------------------------------------------------

export function isAscii(s: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(s);
}

/** Characters a text field holds: all of it, or all but the NUL a cstring keeps. */
function capacity(field: TextField): number {
  const f = FIELDS[field];
  return f.kind === 'cstring' ? f.length - 1 : f.length;
}

/** `value` can be stored in the field as it is (ASCII, short enough). */
export function fitsText(field: TextField, value: string): boolean {
  return isAscii(value) && value.length <= capacity(field);
}

/**
 * How ustar stores `path`: in the name field alone, or split at a '/' into prefix and name (every
 * ustar reader joins them back as `prefix + '/' + name`). undefined when it cannot (not ASCII, or
 * no split fits): the path then needs a pax record.
 */
export function ustarName(path: string): { prefix: string; name: string } | undefined {
  if (!isAscii(path)) return undefined;
  const nameMax = capacity('name');
  if (path.length <= nameMax) return { prefix: '', name: path };
  // The '/' between prefix and name is not stored, so it may sit at index prefix-capacity at most.
  // A trailing '/' (directories) must stay in the name part.
  const searchEnd = Math.min(path.length - 2, capacity('prefix'));
  for (let i = searchEnd; i > 0; i--) {
    if (path[i] !== '/') continue;
    const name = path.slice(i + 1);
    if (name.length > nameMax) return undefined; // moving left only makes the name longer
    return { prefix: path.slice(0, i), name };
  }
  return undefined;
}

/** Writes latin1 text (the caller made it ASCII), cut to what the field holds. */
function writeText(block: Buffer, field: TextField, value: string): void {
  const { offset, length } = FIELDS[field];
  block.write(value.slice(0, capacity(field)), offset, length, 'latin1');
}

function textEnd(block: Buffer, start: number, len: number): number {
  const nul = block.indexOf(0, start);
  return nul === -1 || nul > start + len ? start + len : nul;
}

function rawText(block: Buffer, field: TextField): string {
  const { offset, length } = FIELDS[field];
  return block.toString('utf8', offset, textEnd(block, offset, length));
}

/** A NUL-terminated text field, decoded as UTF-8 (the names in the wild are; pax says so). */
function readText(block: Buffer, field: TextField, offset: number): string {
  const text = rawText(block, field);
  if (text.includes('\ufffd')) {
    const start = FIELDS[field].offset;
    assertUtf8(block.subarray(start, textEnd(block, start, FIELDS[field].length)), offset);
  }
  return text;
}

export function assertUtf8(bytes: Buffer, offset: number): void {
  if (isUtf8(bytes)) return;
  throw new UnionctlError(
    'UNSUPPORTED',
    `tar entry at offset ${offset} has a name that is not valid UTF-8 (${JSON.stringify(bytes.toString('latin1'))})`,
    {
      hint: 'unionctl only handles UTF-8 file names; rename the file in the source tree',
    },
  );
}

function writeMagic(block: Buffer, field: 'magic' | 'version', value: string): void {
  const { offset, length } = FIELDS[field];
  block.write(value, offset, length, 'latin1');
}

function magicText(block: Buffer, field: 'magic' | 'version' | 'starTrailer'): string {
  const { offset, length } = FIELDS[field];
  return block.toString('latin1', offset, offset + length);
}

// ---------------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------------

/** `value` fits the field as octal digits (all but the last byte, which is the NUL). */
export function fitsOctal(field: NumberField, value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 8 ** (FIELDS[field].length - 1) - 1;
}

/**
 * Writes a number: zero-padded octal with a terminating NUL (as Go and GNU tar write it) when it
 * fits, else GNU base-256 (negative numbers and large ones; throws past the field or a safe integer).
 */
export function encodeNumber(block: Buffer, field: NumberField, value: number): void {
  const { offset, length } = FIELDS[field];
  if (fitsOctal(field, value)) {
    block.write(value.toString(8).padStart(length - 1, '0'), offset, length - 1, 'latin1');
    block[offset + length - 1] = 0;
    return;
  }
  if (!Number.isSafeInteger(value)) throw new RangeError(`tar ${field} ${value} is not a safe integer`);
  // Two's complement after the marker bit: a negative value stores ~(-value-1) with the sign bit 0x40 set.
  const negative = value < 0;
  let magnitude = BigInt(negative ? -value - 1 : value);
  if (magnitude >= 1n << BigInt(length * 8 - 2)) throw new RangeError(`tar ${field} ${value} does not fit ${length} bytes of base-256`);
  for (let i = length - 1; i >= 0; i--) {
    const byte = Number(magnitude & 0xffn);
    block[offset + i] = negative ? byte ^ 0xff : byte;
    magnitude >>= 8n;
  }
  block[offset]! |= 0x80;
}

/** Octal ASCII (optionally space/NUL padded), or GNU base-256 when the high bit of the first byte is set. */
export function decodeNumber(block: Buffer, field: NumberField, offset: number, entry?: string): number {
  const { offset: start, length } = FIELDS[field];
  try {
    return block[start]! & 0x80 ? parseBase256(block, start, length) : parseOctal(block, start, length);
  } catch (e) {
    throw headerError(
      `bad ${field} field ${JSON.stringify(block.toString('latin1', start, start + length))}: ${(e as Error).message}`,
      offset,
      entry || undefined,
    );
  }
}

function parseOctal(block: Buffer, start: number, len: number): number {
  let i = start;
  let end = start + len;
  while (i < end && (block[i] === 0x20 || block[i] === 0)) i++;
  while (end > i && (block[end - 1] === 0x20 || block[end - 1] === 0)) end--;
  let value = 0;
  for (; i < end; i++) {
    const digit = block[i]! - 0x30;
    if (digit < 0 || digit > 7) throw new Error('not an octal number');
    value = value * 8 + digit;
  }
  return value;
}

/**
 * Big-endian two's complement after the marker bit; negative numbers have the sign bit 0x40 set.
 * The result must be a safe integer (|n| < 2^53): a field past that is refused, not rounded.
 */
function parseBase256(block: Buffer, start: number, len: number): number {
  const invert = block[start]! & 0x40 ? 0xff : 0;
  let value = 0;
  for (let i = 0; i < len; i++) {
    let byte = block[start + i]! ^ invert;
    if (i === 0) byte &= 0x7f;
    value = value * 256 + byte;
    if (value > Number.MAX_SAFE_INTEGER) throw new Error('base-256 number too large');
  }
  if (invert && value === Number.MAX_SAFE_INTEGER) throw new Error('base-256 number too large');
  return invert ? -value - 1 : value;
}

// ---------------------------------------------------------------------------------------------
// Ranges: what a number means on Linux
// ---------------------------------------------------------------------------------------------

/**
 * Largest owner id a layer may carry: uid_t and gid_t are 32 bits, and 2^32 - 1 is (uid_t)-1,
 * which chown(2) reads as "leave unchanged", so it cannot be applied either.
 */
export const MAX_OWNER_ID = 0xfffffffe;
/** Largest mode field: seven octal digits (what the 8-byte field holds), file-type bits included (old GNU tar writes them). */
export const MAX_MODE = 0o7777777;
/** Largest device major / minor number: each half of a dev_t is 32 bits. */
export const MAX_DEVICE_NUMBER = 0xffffffff;

/**
 * A uid or gid (from the header block or a pax record) that Linux can apply, else BAD_TAR naming
 * the entry. `value` is a safe integer already (decodeNumber / the pax parser make sure of that).
 */
export function checkOwnerId(field: 'uid' | 'gid', value: number, offset: number, entry: string): number {
  if (value >= 0 && value <= MAX_OWNER_ID) return value;
  throw headerError(`${field} ${value} is out of range (0 to ${MAX_OWNER_ID})`, offset, entry);
}

/** A device number of a char or block entry, else BAD_TAR naming the entry. */
export function checkDeviceNumber(field: 'devmajor' | 'devminor', value: number, offset: number, entry: string): number {
  if (value >= 0 && value <= MAX_DEVICE_NUMBER) return value;
  throw headerError(`${field} ${value} is out of range (0 to ${MAX_DEVICE_NUMBER})`, offset, entry);
}

// ---------------------------------------------------------------------------------------------
// The checksum
// ---------------------------------------------------------------------------------------------

/**
 * The byte sums of a block with its checksum field counted as spaces: unsigned (POSIX) and
 * signed (a historic bug of some writers, which readers still accept).
 */
export function computeChecksum(block: Buffer): { unsigned: number; signed: number } {
  const { offset, length } = FIELDS.chksum;
  let unsigned = length * 0x20;
  let highBytes = 0;
  for (let i = 0; i < BLOCK_SIZE; i++) {
    if (i === offset) i += length;
    const byte = block[i]!;
    unsigned += byte;
    if (byte >= 0x80) highBytes++;
  }
  return { unsigned, signed: unsigned - 256 * highBytes };
}

/** computeChecksum's unsigned sum alone: two plain loops around the checksum field. */
function unsignedChecksum(block: Buffer): number {
  const { offset, length } = FIELDS.chksum;
  let sum = length * 0x20;
  for (let i = 0; i < offset; i++) sum += block[i]!;
  for (let i = offset + length; i < BLOCK_SIZE; i++) sum += block[i]!;
  return sum;
}

/** Fills in the checksum field of an otherwise complete block. */
export function writeChecksum(block: Buffer): void {
  const { offset, length } = FIELDS.chksum;
  const { unsigned } = computeChecksum(block);
  block.write(unsigned.toString(8).padStart(length - 2, '0'), offset, length - 2, 'latin1');
  block[offset + length - 2] = 0;
  block[offset + length - 1] = 0x20;
}

/** The stored checksum must equal the unsigned or the signed byte sum (TarFormatError otherwise). */
export function verifyChecksum(block: Buffer, offset: number): void {
  const { offset: start, length } = FIELDS.chksum;
  let stored: number;
  try {
    stored = parseOctal(block, start, length);
  } catch {
    stored = -1;
  }
  // The unsigned sum alone first: it is what every writer stores (once per header: a rootfs has thousands).
  if (stored >= 0 && stored === unsignedChecksum(block)) return;
  const { unsigned, signed } = computeChecksum(block);
  if (stored === unsigned || stored === signed) return;
  const name = rawText(block, 'name');
  throw headerError(
    `header checksum mismatch (stored ${stored < 0 ? 'unreadable' : stored}, computed ${unsigned}): not a tar archive or a corrupt header`,
    offset,
    name || undefined,
  );
}

// ---------------------------------------------------------------------------------------------
// Header blocks
// ---------------------------------------------------------------------------------------------

/** The fields of one 512-byte header block as decoded, before pax / long-name records are folded in. */
export interface HeaderBlock {
  /** Stream offset of the block (for errors). */
  offset: number;
  dialect: Dialect;
  typeflag: string;
  /** The name, joined to the ustar (or star) prefix when there is one. */
  name: string;
  linkname: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  /** Old GNU headers only, when set. */
  atime?: number;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
}

export function dialectOf(block: Buffer): Dialect {
  const magic = magicText(block, 'magic');
  if (magic === USTAR_MAGIC) return magicText(block, 'starTrailer') === STAR_TRAILER ? 'star' : 'ustar';
  if (magic === GNU_MAGIC && magicText(block, 'version') === GNU_VERSION) return 'gnu';
  return 'v7';
}

/**
 * Decodes one header block, checksum verified: TarFormatError on a bad checksum or number, a
 * negative size or a mode past seven octal digits; UNSUPPORTED on a name that is not UTF-8.
 * `offset` is the block's stream offset, for errors. A text field ends at its first NUL (POSIX;
 * Go's archive/tar, GNU tar and libarchive read them so): what follows the NUL is not part of the
 * name, so no name read from a header block can hold a NUL byte.
 */
export function decodeHeader(block: Buffer, offset: number): HeaderBlock {
  verifyChecksum(block, offset);
  const dialect = dialectOf(block);
  const name = readText(block, 'name', offset);
  const num = (field: NumberField) => decodeNumber(block, field, offset, name);
  let prefix = '';
  let atime: number | undefined;
  if (dialect === 'ustar') prefix = readText(block, 'prefix', offset);
  else if (dialect === 'star') prefix = readText(block, 'starPrefix', offset);
  else if (dialect === 'gnu') ({ prefix, atime } = gnuTimesOrPrefix(block, offset));
  const hasOwnerNames = dialect !== 'v7';
  const fullName = prefix === '' ? name : `${prefix}/${name}`;
  const mode = num('mode');
  if (mode < 0 || mode > MAX_MODE)
    throw headerError(`mode ${mode} is out of range (0 to 0o${MAX_MODE.toString(8)})`, offset, fullName || undefined);
  const size = num('size');
  if (size < 0) throw headerError(`negative size ${size}`, offset, fullName || undefined);
  return {
    offset,
    dialect,
    typeflag: String.fromCharCode(block[FIELDS.typeflag.offset]!),
    name: fullName,
    linkname: readText(block, 'linkname', offset),
    mode,
    uid: num('uid'),
    gid: num('gid'),
    size,
    mtime: num('mtime'),
    atime,
    uname: hasOwnerNames ? readText(block, 'uname', offset) : '',
    gname: hasOwnerNames ? readText(block, 'gname', offset) : '',
    devmajor: hasOwnerNames ? num('devmajor') : 0,
    devminor: hasOwnerNames ? num('devminor') : 0,
  };
}

/**
 * Old GNU headers keep atime/ctime where ustar has its prefix. Go's archive/tar before 1.8 wrote
 * GNU magic with a ustar prefix, so (like Go) when those fields are not numbers they are a prefix.
 */
function gnuTimesOrPrefix(block: Buffer, offset: number): { prefix: string; atime?: number } {
  try {
    const atime = decodeNumber(block, 'atime', offset);
    decodeNumber(block, 'ctime', offset);
    return { prefix: '', atime: atime === 0 ? undefined : atime };
  } catch {
    const prefix = readText(block, 'prefix', offset);
    return { prefix: /^[\x20-\x7e]*$/.test(prefix) ? prefix : '' };
  }
}

/** What a ustar header block holds; text is written as latin1 (make it ASCII first), numbers as in encodeNumber. */
export interface UstarFields {
  /** The name part (see ustarName); cut to the field. */
  name: string;
  prefix: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
}

/** One ustar header block ("ustar\0" "00"), checksum included. */
export function encodeHeader(f: UstarFields): Buffer {
  const block = Buffer.alloc(BLOCK_SIZE);
  writeText(block, 'name', f.name);
  encodeNumber(block, 'mode', f.mode);
  encodeNumber(block, 'uid', f.uid);
  encodeNumber(block, 'gid', f.gid);
  encodeNumber(block, 'size', f.size);
  encodeNumber(block, 'mtime', f.mtime);
  block.write(f.typeflag, FIELDS.typeflag.offset, FIELDS.typeflag.length, 'latin1');
  writeText(block, 'linkname', f.linkname);
  writeMagic(block, 'magic', USTAR_MAGIC);
  writeMagic(block, 'version', USTAR_VERSION);
  writeText(block, 'uname', f.uname);
  writeText(block, 'gname', f.gname);
  encodeNumber(block, 'devmajor', f.devmajor);
  encodeNumber(block, 'devminor', f.devminor);
  writeText(block, 'prefix', f.prefix);
  writeChecksum(block);
  return block;
}

// ---------------------------------------------------------------------------------------------
// Extended header records: pax x/g, GNU L/K
// ---------------------------------------------------------------------------------------------

/** One pax record: "<len> <key>=<value>\n", where <len> counts the whole record in bytes, itself included. */
export function encodePaxRecord(key: string, value: Buffer): Buffer {
  const keyBytes = Buffer.from(key, 'utf8');
  const rest = keyBytes.length + value.length + 3; // ' ', '=', '\n'
  let len = rest + String(rest).length;
  if (String(len).length !== String(rest).length) len = rest + String(len).length;
  const head = Buffer.from(`${len} ${key}=`, 'utf8');
  return Buffer.concat([head, value, Buffer.from('\n')]);
}

/** The data of a pax header: its records, in the order given. */
export function encodePaxRecords(records: Map<string, Buffer>): Buffer {
  return Buffer.concat([...records].map(([key, value]) => encodePaxRecord(key, value)));
}

/**
 * Pax records, binary-safe: "<len> <key>=<value>\n" where <len> counts the whole record. Values
 * stay Buffers (copied out of `data`) because SCHILY.xattr values are raw bytes. `offset` is the
 * header's stream offset, for errors (TarFormatError): a length that is not a decimal number, a
 * record that overruns the header data or does not end in a newline where its length says, a
 * record without '=', an empty key, or a key holding a NUL byte or bytes that are not UTF-8 (Go's
 * archive/tar refuses the same keys).
 *
 * Duplicate keys: the later record wins, as in Go's archive/tar (so Docker and containerd) and GNU
 * tar: a layer reads here as it reads there.
 */
export function parsePaxRecords(data: Buffer, offset = 0): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  // One copy of the whole record block (the caller's bytes may be lent); the values are views of it.
  const own = Buffer.from(data);
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // some writers pad the record block with NULs
    const space = data.indexOf(0x20, pos);
    const length = space === -1 ? NaN : paxLength(data, pos, space);
    if (Number.isNaN(length)) throw headerError(`bad pax record length at byte ${pos} of the pax header`, offset);
    const end = pos + length;
    if (end > data.length || data[end - 1] !== 0x0a || end <= space + 1)
      throw headerError(`pax record at byte ${pos} overruns its header or lacks its newline`, offset);
    const equals = data.indexOf(0x3d, space + 1);
    if (equals === -1 || equals >= end) throw headerError(`pax record at byte ${pos} has no '='`, offset);
    const key = data.toString('utf8', space + 1, equals);
    if (key === '') throw headerError(`pax record at byte ${pos} has an empty key`, offset);
    if (key.includes('\0')) throw headerError(`pax record at byte ${pos} has a NUL byte in its key ${JSON.stringify(key)}`, offset);
    if (key.includes('\ufffd') && !isUtf8(data.subarray(space + 1, equals)))
      throw headerError(
        `pax record at byte ${pos} has a key that is not UTF-8 (${JSON.stringify(data.toString('latin1', space + 1, equals))})`,
        offset,
      );
    records.set(key, own.subarray(equals + 1, end - 1));
    pos = end;
  }
  return records;
}

/** The decimal length of a pax record, data[from, to): digits only, no leading zero (else NaN); as Number() reads them. */
function paxLength(data: Buffer, from: number, to: number): number {
  if (to === from || data[from] === 0x30) return NaN;
  let n = 0;
  for (let i = from; i < to; i++) {
    const d = data[i]! - 0x30;
    if (d < 0 || d > 9) return NaN;
    n = n * 10 + d;
  }
  return n;
}

/**
 * The name a GNU 'L' / 'K' record carries: its data up to the terminating NUL, as UTF-8. Every
 * writer stores the name and one NUL (the record's size counts it); a NUL followed by more
 * non-NUL bytes inside the record is a name with a NUL byte in it, which no file can have:
 * TarFormatError naming the record's offset.
 */
export function decodeLongName(data: Buffer, offset: number): string {
  const nul = data.indexOf(0);
  if (nul !== -1) {
    for (let i = nul + 1; i < data.length; i++) {
      if (data[i] !== 0) {
        throw headerError(
          `a GNU long-name record holds a NUL byte inside the name (${JSON.stringify(data.toString('utf8', 0, Math.min(data.length, 200)))})`,
          offset,
        );
      }
    }
  }
  const bytes = nul === -1 ? data : data.subarray(0, nul);
  const text = bytes.toString('utf8');
  if (text.includes('\ufffd')) assertUtf8(bytes, offset);
  return text;
}
