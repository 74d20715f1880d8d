/**
 * A tiny tar builder for tests: real ustar / GNU / v7 header blocks with correct checksums, pax
 * records, GNU long-name records and base-256 numbers, so tests can craft exactly the archive
 * they need — including malicious and broken ones no tar tool would write.
 *
 *   buildTar([{ name: 'a', content: 'hi' }, { name: 'l', type: 'symlink', linkname: '../x' }])
 */

export type EntryKind = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

const TYPEFLAGS: Record<EntryKind, string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

export interface TarSpec {
  name: string;
  /** Entry kind (default file), or a raw typeflag with `typeflag`. */
  type?: EntryKind;
  typeflag?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds. */
  mtime?: number;
  linkname?: string;
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
  content?: Buffer | string;
  /** Size field override (default: content length). */
  size?: number;
  /** pax records emitted in an 'x' header before this entry. */
  pax?: Record<string, string | Buffer>;
  /** Header dialect (default ustar). */
  format?: 'ustar' | 'gnu' | 'v7';
  /** Numeric fields written in GNU base-256 instead of octal. */
  base256?: Array<'uid' | 'gid' | 'size' | 'mtime'>;
  /** Use the ustar prefix field for names longer than 100 bytes (default true for ustar). */
  prefix?: string;
  /** Write a wrong checksum. */
  badChecksum?: boolean;
}

const BLOCK = 512;

function writeString(block: Buffer, offset: number, length: number, value: string | Buffer): void {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  if (bytes.length > length) throw new Error(`tarbuild: ${JSON.stringify(value.toString())} does not fit ${length} bytes`);
  bytes.copy(block, offset);
}

function writeOctal(block: Buffer, offset: number, length: number, value: number): void {
  const digits = value.toString(8).padStart(length - 1, '0');
  if (digits.length > length - 1) throw new Error(`tarbuild: ${value} does not fit an octal field of ${length}`);
  writeString(block, offset, length, `${digits}\0`);
}

/** GNU base-256: 0x80 marker, big-endian two's complement. */
export function writeBase256(block: Buffer, offset: number, length: number, value: number): void {
  let v = BigInt(value);
  if (v < 0n) v = (1n << BigInt(length * 8)) + v; // two's complement over the whole field
  for (let i = length - 1; i >= 0; i--) {
    block[offset + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  block[offset] |= 0x80;
}

function writeNumber(
  block: Buffer,
  spec: TarSpec,
  field: 'uid' | 'gid' | 'size' | 'mtime',
  offset: number,
  length: number,
  value: number,
): void {
  if (spec.base256?.includes(field)) writeBase256(block, offset, length, value);
  else writeOctal(block, offset, length, value);
}

/** One 512-byte header block. */
export function tarHeader(spec: TarSpec): Buffer {
  const block = Buffer.alloc(BLOCK);
  const content = spec.content === undefined ? Buffer.alloc(0) : Buffer.from(spec.content);
  const format = spec.format ?? 'ustar';
  writeString(block, 0, 100, spec.name);
  writeOctal(block, 100, 8, spec.mode ?? (spec.type === 'dir' ? 0o755 : 0o644));
  writeNumber(block, spec, 'uid', 108, 8, spec.uid ?? 0);
  writeNumber(block, spec, 'gid', 116, 8, spec.gid ?? 0);
  writeNumber(block, spec, 'size', 124, 12, spec.size ?? content.length);
  writeNumber(block, spec, 'mtime', 136, 12, spec.mtime ?? 1700000000);
  block.write(spec.typeflag ?? TYPEFLAGS[spec.type ?? 'file'], 156, 'latin1');
  writeString(block, 157, 100, spec.linkname ?? '');
  if (format === 'ustar') block.write('ustar\x0000', 257, 'latin1');
  if (format === 'gnu') block.write('ustar  \x00', 257, 'latin1');
  if (format !== 'v7') {
    writeString(block, 265, 32, spec.uname ?? 'root');
    writeString(block, 297, 32, spec.gname ?? 'root');
    writeOctal(block, 329, 8, spec.devmajor ?? 0);
    writeOctal(block, 337, 8, spec.devminor ?? 0);
  }
  if (spec.prefix !== undefined) writeString(block, 345, 155, spec.prefix);
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  writeString(block, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  if (spec.badChecksum) writeString(block, 148, 8, `${(sum + 1).toString(8).padStart(6, '0')}\0 `);
  return block;
}

export function padToBlock(data: Buffer): Buffer {
  const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
  return pad === 0 ? data : Buffer.concat([data, Buffer.alloc(pad)]);
}

/** One pax record: "<len> <key>=<value>\n", where <len> counts itself. Values are raw bytes. */
export function paxRecord(key: string, value: string | Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), Buffer.from(value), Buffer.from('\n')]);
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return Buffer.concat([Buffer.from(String(length)), body]);
}

/** A pax extended header ('x', or 'g' for global) with its records, padded. */
export function paxHeader(records: Record<string, string | Buffer>, typeflag: 'x' | 'g' = 'x', name = 'PaxHeader'): Buffer {
  const data = Buffer.concat(Object.entries(records).map(([k, v]) => paxRecord(k, v)));
  return Buffer.concat([tarHeader({ name, typeflag, content: data }), padToBlock(data)]);
}

/** A GNU long-name ('L') or long-link ('K') record. */
export function gnuLongRecord(value: string, typeflag: 'L' | 'K' = 'L'): Buffer {
  const data = Buffer.from(`${value}\0`, 'utf8');
  return Buffer.concat([tarHeader({ name: '././@LongLink', typeflag, content: data, format: 'gnu' }), padToBlock(data)]);
}

/** Header (with its pax record first, if any) plus padded content. */
export function tarEntry(spec: TarSpec): Buffer {
  const parts: Buffer[] = [];
  if (spec.pax !== undefined) parts.push(paxHeader(spec.pax));
  const content = spec.content === undefined ? Buffer.alloc(0) : Buffer.from(spec.content);
  parts.push(tarHeader(spec), padToBlock(content));
  return Buffer.concat(parts);
}

export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);

/** A whole archive: entries (specs or raw pre-built blocks), then two zero blocks unless `end: false`. */
export function buildTar(entries: Array<TarSpec | Buffer>, opts: { end?: boolean } = {}): Buffer {
  const parts = entries.map((e) => (Buffer.isBuffer(e) ? e : tarEntry(e)));
  if (opts.end ?? true) parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

/** Yields `data` in pieces of `size` bytes (or the sizes given in turn), to exercise chunk boundaries. */
export async function* chunked(data: Buffer, size: number | number[] = 64 * 1024): AsyncGenerator<Buffer> {
  const sizes = Array.isArray(size) ? size : [size];
  for (let at = 0, i = 0; at < data.length; i++) {
    const n = sizes[i % sizes.length];
    yield data.subarray(at, at + n);
    at += n;
  }
}

/**
 * The chunks of `data` (64 KiB each) as an async generator, noting in `state` when the consumer
 * closes it (return()) or reads it to its end; with `failAt`, it throws that error once it gets
 * to that offset (a connection cut, a disk failing).
 */
export async function* trackedChunks(
  data: Buffer,
  state: { closed: boolean },
  failAt?: { offset: number; error: Error },
): AsyncGenerator<Buffer> {
  try {
    for (let at = 0; at < data.length; at += 65536) {
      if (failAt !== undefined && at >= failAt.offset) throw failAt.error;
      yield data.subarray(at, at + 65536);
    }
  } finally {
    state.closed = true;
  }
}
