/**
 * tar-split: what it takes to rebuild a layer tar byte for byte from the layer's files.
 *
 * A layer's identity is its diff ID, the sha256 of the exact tar stream it came in as. Exporting
 * the files again gives a different stream (other header fields, pax records, padding, order), so
 * a saved image would no longer match its own config. Docker's answer (vbatts/tar-split), and ours:
 * while the tar engine reads the layer, keep every byte that is NOT file content (header blocks,
 * pax/GNU records, padding, the end-of-archive blocks and anything after them) and, in stream
 * order, a reference to each entry's content (its name and size). The content itself is on disk
 * in the layer. Rebuilding = those raw bytes, interleaved with the contents read back from the
 * layer's files; the sha256 of the result is checked against the diff ID by the caller.
 *
 * File format (one per layer, `layerdb/<id>.tar-split.gz`), gzip'd, binary (a JSON encoding with
 * base64 payloads, as Docker's tar-split has, cost ~0.4 s per 15,000-entry layer to write):
 *   "unionctl-tar-split 1\n"
 *   then items: 'R' <u32 length> <raw bytes>            a segment of raw bytes
 *               'F' <u32 name length> <name, UTF-8> <u64 size>   `size` content bytes of that entry
 *               'N' <u32 name length> <name, UTF-8>      an entry without content (not part of the stream)
 * (integers big-endian).
 */
import { closeSync, constants as fsConstants, openSync, readSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { gunzipSync, gzip } from 'node:zlib';
import { UnionctlError } from '../errors.js';
import type { TarTap } from './tar-reader.js';
import type { TarHeader } from './types.js';
import { writeFileAtomic } from '../sys/index.js';

const gzipAsync = promisify(gzip);

/** One piece of a layer tar stream. */
export type TarSplitItem =
  | { kind: 'raw'; bytes: Buffer }
  | { kind: 'file'; name: string; size: number }
  /** An entry without content (dir, link, device, empty file, whiteout): its name only, for checking a layer against its tar. */
  | { kind: 'name'; name: string };

export interface TarSplitRecord {
  items: TarSplitItem[];
  /** Bytes the rebuilt stream will have. */
  totalBytes: number;
}

/** Raw bytes are collected in buffers of this size before a segment is cut. */
const BUFFER_SIZE = 256 * 1024;
const MAGIC = Buffer.from('unionctl-tar-split 1\n');
const RAW = 0x52; // 'R'
const FILE = 0x46; // 'F'
const NAME = 0x4e; // 'N'
/** Reading a layer's files or a record must not change them, not even their atime (when the kernel lets us: root). */
const NO_ATIME = process.getuid?.() === 0 ? (fsConstants.O_NOATIME ?? 0) : 0;

/**
 * The tap the layer store hangs on the tar reader during an import. It writes the record's file
 * format (below) as it goes, into large buffers: a tap call gets a view into the input, which is
 * reused, so raw bytes are copied (~1 KiB per entry, nothing per content byte), and at the end
 * the buffers are the file, to be gzip'd — no second pass over 15,000 items.
 */
export class TarSplitRecorder implements TarTap {
  private readonly done: Buffer[] = [MAGIC];
  private buffer = Buffer.allocUnsafe(BUFFER_SIZE);
  private used = 0;
  /** Offset in `buffer` of the length field of the open raw segment, or -1. */
  private segmentLength = -1;
  /** Whether the reader ever called us (a driver that does not read through the tar engine would not). */
  active = false;

  raw(bytes: Buffer): void {
    this.active = true;
    if (this.segmentLength >= 0 && this.used + bytes.length > this.buffer.length) this.closeSegment();
    if (this.segmentLength < 0) {
      this.ensureRoom(5 + bytes.length);
      this.buffer[this.used] = RAW;
      this.segmentLength = this.used + 1;
      this.used += 5;
    }
    bytes.copy(this.buffer, this.used);
    this.used += bytes.length;
  }

  entry(header: TarHeader): void {
    if (header.size > 0) return; // content() records it
    this.active = true;
    this.closeSegment();
    const nameLength = Buffer.byteLength(header.path);
    this.ensureRoom(5 + nameLength);
    this.buffer[this.used] = NAME;
    this.buffer.writeUInt32BE(nameLength, this.used + 1);
    this.buffer.write(header.path, this.used + 5, 'utf8');
    this.used += 5 + nameLength;
  }

  content(header: TarHeader, _offset: number): void {
    this.active = true;
    this.closeSegment();
    const nameLength = Buffer.byteLength(header.path);
    this.ensureRoom(13 + nameLength);
    this.buffer[this.used] = FILE;
    this.buffer.writeUInt32BE(nameLength, this.used + 1);
    this.buffer.write(header.path, this.used + 5, 'utf8');
    this.buffer.writeBigUInt64BE(BigInt(header.size), this.used + 5 + nameLength);
    this.used += 13 + nameLength;
  }

  /** The record in its file format, uncompressed (call once the reader is done). */
  encoded(): Buffer {
    this.closeSegment();
    return Buffer.concat([...this.done, this.buffer.subarray(0, this.used)]);
  }

  /** The record as items (call once the reader is done). */
  finish(): TarSplitRecord {
    return parseTarSplit(this.encoded(), 'in memory');
  }

  private closeSegment(): void {
    if (this.segmentLength < 0) return;
    this.buffer.writeUInt32BE(this.used - this.segmentLength - 4, this.segmentLength);
    this.segmentLength = -1;
  }

  private ensureRoom(n: number): void {
    if (this.used + n <= this.buffer.length) return;
    this.closeSegment();
    this.done.push(this.buffer.subarray(0, this.used));
    this.buffer = Buffer.allocUnsafe(Math.max(BUFFER_SIZE, n));
    this.used = 0;
  }
}

// ---- the file on disk ------------------------------------------------------------------------

export function serializeTarSplit(record: TarSplitRecord): Buffer {
  const parts: Buffer[] = [MAGIC];
  for (const item of record.items) {
    if (item.kind === 'raw') {
      const head = Buffer.allocUnsafe(5);
      head[0] = RAW;
      head.writeUInt32BE(item.bytes.length, 1);
      parts.push(head, item.bytes);
    } else if (item.kind === 'name') {
      const name = Buffer.from(item.name, 'utf8');
      const head = Buffer.allocUnsafe(5);
      head[0] = NAME;
      head.writeUInt32BE(name.length, 1);
      parts.push(head, name);
    } else {
      const name = Buffer.from(item.name, 'utf8');
      const head = Buffer.allocUnsafe(5);
      head[0] = FILE;
      head.writeUInt32BE(name.length, 1);
      const size = Buffer.allocUnsafe(8);
      size.writeBigUInt64BE(BigInt(item.size));
      parts.push(head, name, size);
    }
  }
  return Buffer.concat(parts);
}

export function parseTarSplit(data: Buffer, what: string): TarSplitRecord {
  if (!data.subarray(0, MAGIC.length).equals(MAGIC)) throw corruptRecord(what, 'unknown format');
  const items: TarSplitItem[] = [];
  let total = 0;
  let pos = MAGIC.length;
  const need = (n: number) => {
    if (pos + n > data.length) throw corruptRecord(what, `cut short at byte ${pos}`);
  };
  while (pos < data.length) {
    need(5);
    const kind = data[pos]!; // need(5) checked it
    const length = data.readUInt32BE(pos + 1);
    pos += 5;
    need(length);
    if (kind === RAW) {
      items.push({ kind: 'raw', bytes: data.subarray(pos, pos + length) });
      total += length;
      pos += length;
    } else if (kind === FILE) {
      const name = data.toString('utf8', pos, pos + length);
      pos += length;
      need(8);
      const size = Number(data.readBigUInt64BE(pos));
      pos += 8;
      items.push({ kind: 'file', name, size });
      total += size;
    } else if (kind === NAME) {
      items.push({ kind: 'name', name: data.toString('utf8', pos, pos + length) });
      pos += length;
    } else {
      throw corruptRecord(what, `unknown item type 0x${kind.toString(16)} at byte ${pos - 5}`);
    }
  }
  return { items, totalBytes: total };
}

function corruptRecord(what: string, detail: string): UnionctlError {
  return new UnionctlError('CORRUPT', `tar-split record ${what} is damaged: ${detail}`, {
    hint: 'the layer can still be exported (unionctl diff), but not byte-identical to the tar it came from',
  });
}

/** Writes the record (items, or already encoded) durably: gzip'd to a temp file, fsynced, renamed over `path`. */
export async function writeTarSplit(path: string, record: TarSplitRecord | Buffer): Promise<void> {
  const data = await gzipAsync(Buffer.isBuffer(record) ? record : serializeTarSplit(record), { level: 1 });
  writeFileAtomic(path, data, { durable: true });
}

/** The record at `path`, or undefined when the layer has none. */
export function readTarSplit(path: string): TarSplitRecord | undefined {
  const raw = readGunzipped(path);
  return raw === undefined ? undefined : parseTarSplit(raw, path);
}

/** The gunzipped content of `path` (read without touching its atime), undefined when there is no such file. */
function readGunzipped(path: string): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | NO_ATIME);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let data: Buffer;
  try {
    data = readFileSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    return gunzipSync(data);
  } catch {
    throw corruptRecord(path, 'not a gzip file');
  }
}

// ---- Docker's and containers/storage's tar-split ---------------------------------------------

/**
 * vbatts/tar-split's format, which dockerd (`image/<driver>/layerdb/sha256/<chain>/tar-split.json.gz`)
 * and containers/storage (`<driver>-layers/<id>.tar-split.gz`) keep for every layer: gzip'd JSON
 * lines, in stream order, each `{"type": 2, "payload": <base64 raw bytes>}` (a segment: headers,
 * padding, the end blocks) or `{"type": 1, "name": …, "size": …, "payload": <crc64>}` (an entry:
 * `size` content bytes of the file `name`, or no content; `name_raw`, base64, instead of `name` when
 * the name is not UTF-8). The same information as ours, so it converts item for item; the CRC is
 * not kept (the rebuilt stream's sha256 is checked against the diff ID instead).
 */
export function parseTarSplitJson(data: Buffer, what: string): TarSplitRecord {
  const items: TarSplitItem[] = [];
  let total = 0;
  const lines = data.toString('utf8').split('\n');
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    let entry: { type?: unknown; name?: unknown; name_raw?: unknown; size?: unknown; payload?: unknown };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      throw corruptRecord(what, `line ${i + 1} is not JSON`);
    }
    if (entry.type === 2) {
      if (typeof entry.payload !== 'string') throw corruptRecord(what, `line ${i + 1}: a segment without a payload`);
      const bytes = Buffer.from(entry.payload, 'base64');
      items.push({ kind: 'raw', bytes });
      total += bytes.length;
    } else if (entry.type === 1) {
      const name =
        typeof entry.name === 'string'
          ? entry.name
          : typeof entry.name_raw === 'string'
            ? Buffer.from(entry.name_raw, 'base64').toString('utf8')
            : undefined;
      const size = entry.size ?? 0;
      if (name === undefined || typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0)
        throw corruptRecord(what, `line ${i + 1}: an entry without a name or size`);
      items.push(size > 0 ? { kind: 'file', name, size } : { kind: 'name', name });
      total += size;
    } else {
      throw corruptRecord(what, `line ${i + 1}: unknown entry type ${JSON.stringify(entry.type)}`);
    }
  }
  return { items, totalBytes: total };
}

/** A vbatts/tar-split file (gzip'd JSON lines, see parseTarSplitJson), read without changing it; undefined when there is none. */
export function readTarSplitJson(path: string): TarSplitRecord | undefined {
  const raw = readGunzipped(path);
  return raw === undefined ? undefined : parseTarSplitJson(raw, path);
}

// ---- rebuilding ------------------------------------------------------------------------------

const READ_CHUNK = 1024 * 1024;

/** "./a//b/" → "a/b": where the apply put an entry's file, relative to the layer's root. */
export function layerRelativePath(name: string): string {
  return name
    .split('/')
    .filter((part) => part !== '' && part !== '.')
    .join('/');
}

/**
 * The original tar stream, rebuilt from the record and the layer's files under `layerDir` (the
 * layer's own view: a file the layer wrote is at its path there). Fails naming the entry when a
 * file is missing or has another size; the caller still checks the sha256 (content changed in
 * place, or a name that came twice in the tar).
 */
export async function* rebuildTarStream(record: TarSplitRecord, layerDir: string): AsyncGenerator<Buffer, void, undefined> {
  for (const item of record.items) {
    if (item.kind === 'raw') {
      yield item.bytes;
      continue;
    }
    if (item.kind === 'name') continue;
    yield* fileContent(`${layerDir}/${layerRelativePath(item.name)}`, item.name, item.size);
  }
}

function* fileContent(path: string, name: string, size: number): Generator<Buffer, void, undefined> {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | NO_ATIME);
  } catch (e) {
    throw cannotRebuild(name, `its file cannot be opened (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    let left = size;
    while (left > 0) {
      const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK, left));
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) throw cannotRebuild(name, `the file has ${size - left} bytes, the tar entry had ${size}`);
      left -= n;
      yield n === chunk.length ? chunk : chunk.subarray(0, n);
    }
    const probe = Buffer.allocUnsafe(1);
    if (readSync(fd, probe, 0, 1, null) !== 0) throw cannotRebuild(name, `the file is larger than the ${size} bytes the tar entry had`);
  } finally {
    closeSync(fd);
  }
}

function cannotRebuild(name: string, why: string): UnionctlError {
  return new UnionctlError('CORRUPT', `cannot rebuild the layer tar: entry ${JSON.stringify(name)}: ${why}`, {
    hint: 'the layer was changed after it was imported; it can only be exported as a new tar (unionctl diff)',
  });
}
