/**
 * The tar writer: POSIX ustar headers plus a PAX extended header only where ustar cannot say it,
 * the shape of Docker's exported layer tars (Go's archive/tar in PAX mode).
 *
 * - Names that do not fit ustar's name (100 bytes) + prefix (155 bytes), or that are not ASCII,
 *   go into a PAX `path` / `linkpath` record.
 * - uid/gid/size/mtime too big (or negative) for the octal fields go into PAX records.
 * - xattrs go into `SCHILY.xattr.<name>` records with the raw, binary value (NUL bytes included).
 * - mtime is whole seconds; atime/ctime are never written.
 * - The archive ends with two zero blocks and is not padded to a 10 KiB record (Go does the same).
 */
import { closeSync, constants as fsConstants, openSync, readSync } from 'node:fs';
import { Readable } from 'node:stream';
import { UnionctlError } from '../errors.js';
import {
  BLOCK_SIZE,
  blockPadding,
  encodeHeader as encodeUstarBlock,
  encodePaxRecords,
  fitsOctal,
  fitsText,
  TYPEFLAGS,
  ustarName,
  type UstarFields,
} from './tar-header.js';
import type { TarHeader } from './types.js';

/** Small writes are coalesced into chunks of this size before they reach the stream. */
const BATCH_SIZE = 64 * 1024;
/** Large file contents are read and pushed in chunks of this size. */
const FILE_CHUNK = 1024 * 1024;
/** O_NOATIME keeps an export from touching atimes; only the owner or root may use it. */
const NO_ATIME = process.getuid?.() === 0 ? (fsConstants.O_NOATIME ?? 0) : 0;

// ---------------------------------------------------------------------------------------------
// Header encoding (the block format itself is tar-header.ts)
// ---------------------------------------------------------------------------------------------

/** The name as stored in the archive: directories end with '/'. */
function archiveName(h: TarHeader): string {
  if (h.type === 'dir' && !h.path.endsWith('/')) return `${h.path}/`;
  return h.path;
}

/** Replaces what ustar's ASCII fields cannot hold, for the best-effort fallback name. */
function toAscii(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[^\x00-\x7f]/g, '?');
}

function checkHeader(h: TarHeader): void {
  const bad = (why: string) => new UnionctlError('USAGE', `cannot write tar entry ${JSON.stringify(h.path)}: ${why}`);
  if (h.path.length === 0) throw bad('empty name');
  if (h.path.includes('\0') || h.linkname.includes('\0')) throw bad('name or link target contains a NUL byte');
  if (!Number.isInteger(h.mode) || h.mode < 0 || h.mode > 0o7777) throw bad(`mode ${h.mode} is not a permission value (07777)`);
  for (const [what, v] of [
    ['uid', h.uid],
    ['gid', h.gid],
    ['size', h.size],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw bad(`${what} ${v} is not a non-negative integer`);
  }
  if (h.type !== 'file' && h.size !== 0) throw bad(`a ${h.type} entry cannot carry ${h.size} content bytes`);
  if (!fitsOctal('devmajor', h.devmajor) || !fitsOctal('devminor', h.devminor))
    throw bad(`device ${h.devmajor}:${h.devminor} does not fit a ustar header`);
  for (const name of h.xattrs.keys()) {
    if (name.length === 0 || name.includes('\0') || name.includes('=')) throw bad(`xattr name ${JSON.stringify(name)} cannot be stored`);
  }
}

/** The PAX records the entry needs, keyed and sorted by record name (deterministic output). */
function paxRecordsFor(h: TarHeader, name: string, mtimeSec: number): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  const utf8 = (s: string) => Buffer.from(s, 'utf8');
  if (ustarName(name) === undefined) records.set('path', utf8(name));
  if (!fitsText('linkname', h.linkname)) records.set('linkpath', utf8(h.linkname));
  if (!fitsOctal('uid', h.uid)) records.set('uid', utf8(String(h.uid)));
  if (!fitsOctal('gid', h.gid)) records.set('gid', utf8(String(h.gid)));
  if (!fitsOctal('size', h.size)) records.set('size', utf8(String(h.size)));
  if (!fitsOctal('mtime', mtimeSec)) records.set('mtime', utf8(String(mtimeSec)));
  for (const [key, value] of [
    ['uname', h.uname ?? ''],
    ['gname', h.gname ?? ''],
  ] as const) {
    if (!fitsText(key, value)) records.set(key, utf8(value));
  }
  for (const [xname, value] of h.xattrs) records.set(`SCHILY.xattr.${xname}`, value);
  return new Map([...records].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** A ustar block; a number that does not fit was put in a PAX record, and its field gets 0, as Go writes it. */
function ustarBlock(f: UstarFields): Buffer {
  return encodeUstarBlock({
    ...f,
    uid: fitsOctal('uid', f.uid) ? f.uid : 0,
    gid: fitsOctal('gid', f.gid) ? f.gid : 0,
    size: fitsOctal('size', f.size) ? f.size : 0,
    mtime: fitsOctal('mtime', f.mtime) ? f.mtime : 0,
  });
}

/** The 'x' header and its record data for the entry named `name`, padded to whole blocks. */
function paxHeaderBlocks(name: string, mtime: number, records: Map<string, Buffer>): Buffer {
  const data = encodePaxRecords(records);
  // Go names the extended header "<dir>/PaxHeaders.0/<base>"; readers ignore it.
  const slash = name.replace(/\/+$/, '').lastIndexOf('/');
  const paxName = toAscii(`${name.slice(0, slash + 1)}PaxHeaders.0/${name.slice(slash + 1)}`); // cut to the name field
  const header = ustarBlock({
    name: paxName,
    prefix: '',
    typeflag: 'x',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: data.length,
    mtime,
    linkname: '',
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
  });
  return Buffer.concat([header, data, Buffer.alloc(blockPadding(data.length))]);
}

/**
 * The header block(s) of one entry: a PAX 'x' header with its records first when ustar cannot
 * hold everything, then the ustar header. Does not include the entry's content.
 */
export function encodeHeader(h: TarHeader): Buffer {
  checkHeader(h);
  const name = archiveName(h);
  const mtime = h.mtime.sec; // whole seconds: the nanoseconds are dropped, as Docker does
  const records = paxRecordsFor(h, name, mtime);
  const split = records.has('path') ? undefined : ustarName(name);
  const ustar = ustarBlock({
    name: split?.name ?? toAscii(name),
    prefix: split?.prefix ?? '',
    typeflag: TYPEFLAGS[h.type],
    mode: h.mode,
    uid: h.uid,
    gid: h.gid,
    size: h.size,
    mtime,
    linkname: toAscii(h.linkname),
    uname: records.has('uname') ? '' : (h.uname ?? ''),
    gname: records.has('gname') ? '' : (h.gname ?? ''),
    devmajor: h.devmajor,
    devminor: h.devminor,
  });
  if (records.size === 0) return ustar;
  return Buffer.concat([paxHeaderBlocks(name, mtime, records), ustar]);
}

// ---------------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------------

function streamClosedError(): UnionctlError {
  return new UnionctlError('USAGE', 'the tar stream was closed before the archive was complete', {
    hint: 'the reader of the tar stream stopped early; nothing more can be written to it',
  });
}

export class TarWriter {
  /** The tar byte stream. */
  readonly stream: Readable;
  /** Coalesces small writes: headers, small files and padding travel together. */
  private batch = Buffer.allocUnsafe(BATCH_SIZE);
  private batchUsed = 0;
  /** Resolves the producer that waits for the consumer to ask for more. */
  private wakeProducer: (() => void) | undefined;
  private finished = false;
  /** An entry's header is written but not all of its content: the archive is unusable until it is. */
  private midEntry = false;
  /** add* calls run one after another even when a caller does not await them. */
  private queue: Promise<void> = Promise.resolve();

  constructor() {
    this.stream = new Readable({
      highWaterMark: 4 * BATCH_SIZE,
      read: () => this.wake(),
      destroy: (err, callback) => {
        this.wake();
        callback(err);
      },
    });
  }

  /** Writes one entry. `body` must hold exactly `header.size` bytes (files only). */
  addEntry(header: TarHeader, body?: Buffer | AsyncIterable<Buffer>): Promise<void> {
    return this.serialize(async () => {
      const wrongSize = (written: number) =>
        new UnionctlError(
          'USAGE',
          `tar entry ${JSON.stringify(header.path)}: the header says ${header.size} bytes but the body has ${written}`,
        );
      if (Buffer.isBuffer(body) && body.length !== header.size) throw wrongSize(body.length);
      if (body === undefined && header.size !== 0) throw wrongSize(0);
      this.beginEntry(encodeHeader(header));
      let written = 0;
      if (Buffer.isBuffer(body)) {
        written = body.length;
        await this.appendLarge(body);
      } else if (body !== undefined) {
        for await (const chunk of body) {
          written += chunk.length;
          if (written > header.size) break;
          await this.appendLarge(chunk);
        }
      }
      if (written !== header.size) throw wrongSize(written);
      await this.endEntry(header.size);
    });
  }

  /** Writes one entry whose content is read from `sourcePath` (exactly `header.size` bytes). */
  addFile(header: TarHeader, sourcePath: string): Promise<void> {
    return this.serialize(async () => {
      // O_NOFOLLOW: the path was a regular file when the header was made; if it has been swapped
      // for a symlink since, refuse rather than archive whatever it points at.
      const fd = openSync(sourcePath, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | NO_ATIME);
      try {
        this.beginEntry(encodeHeader(header));
        await this.appendFileContent(fd, header.size, sourcePath);
        await this.endEntry(header.size);
      } finally {
        closeSync(fd);
      }
    });
  }

  /** Writes the end-of-archive marker (two zero blocks) and ends the stream. */
  finish(): Promise<void> {
    return this.serialize(async () => {
      this.appendZeros(2 * BLOCK_SIZE);
      await this.flush();
      this.finished = true;
      this.stream.push(null);
    });
  }

  /**
   * Runs one add/finish after the previous one. A failure before the entry's first byte (a header
   * that cannot be encoded, a body of the wrong size) leaves the archive usable; a failure in the
   * middle of an entry breaks it, so the stream is destroyed with that error for its reader to see.
   */
  private serialize(step: () => Promise<void>): Promise<void> {
    const run = this.queue.then(async () => {
      if (this.finished) throw new UnionctlError('USAGE', 'the tar archive was already finished');
      if (this.stream.destroyed) throw streamClosedError();
      try {
        await step();
      } catch (e) {
        if (this.midEntry && !this.stream.destroyed) this.stream.destroy(e as Error);
        throw e;
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private beginEntry(headerBlocks: Buffer): void {
    this.append(headerBlocks);
    this.midEntry = true;
  }

  private async endEntry(size: number): Promise<void> {
    this.appendZeros(blockPadding(size));
    this.midEntry = false;
    await this.maybeFlush();
  }

  private wake(): void {
    const wake = this.wakeProducer;
    this.wakeProducer = undefined;
    wake?.();
  }

  /** Hands a chunk to the stream; waits while the consumer has not taken what it already has. */
  private async push(chunk: Buffer): Promise<void> {
    if (this.stream.destroyed) throw streamClosedError();
    if (this.stream.push(chunk)) return;
    await new Promise<void>((resolve) => {
      this.wakeProducer = resolve;
    });
    if (this.stream.destroyed) throw streamClosedError();
  }

  private async flush(): Promise<void> {
    if (this.batchUsed === 0) return;
    const chunk = this.batch.subarray(0, this.batchUsed);
    this.batch = Buffer.allocUnsafe(BATCH_SIZE);
    this.batchUsed = 0;
    await this.push(chunk);
  }

  private async maybeFlush(): Promise<void> {
    if (this.batchUsed >= BATCH_SIZE - BLOCK_SIZE * 4) await this.flush();
  }

  /** Copies a small piece into the batch (the batch grows if a header is bigger than it). */
  private append(data: Buffer): void {
    this.ensureRoom(data.length);
    data.copy(this.batch, this.batchUsed);
    this.batchUsed += data.length;
  }

  private appendZeros(n: number): void {
    this.ensureRoom(n);
    this.batch.fill(0, this.batchUsed, this.batchUsed + n);
    this.batchUsed += n;
  }

  private ensureRoom(n: number): void {
    if (this.batchUsed + n <= this.batch.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.batch.length * 2, this.batchUsed + n));
    this.batch.copy(bigger, 0, 0, this.batchUsed);
    this.batch = bigger;
  }

  /** Big buffers go to the stream as they are (after what is batched); small ones are batched. */
  private async appendLarge(data: Buffer): Promise<void> {
    if (this.batchUsed + data.length <= BATCH_SIZE) {
      this.append(data);
      return;
    }
    await this.flush();
    await this.push(data);
  }

  private async appendFileContent(fd: number, size: number, path: string): Promise<void> {
    // Content that fits the batch is read straight into it: no extra buffer, no extra copy.
    if (this.batchUsed + size <= BATCH_SIZE) {
      readExactly(fd, this.batch, this.batchUsed, size, 0, path);
      this.batchUsed += size;
      return;
    }
    await this.flush();
    let position = 0;
    while (position < size) {
      const length = Math.min(FILE_CHUNK, size - position);
      const chunk = Buffer.allocUnsafe(length);
      readExactly(fd, chunk, 0, length, position, path);
      await this.push(chunk);
      position += length;
    }
  }
}

/** Reads `length` bytes at `position`; a file that shrank since its size was taken is an error. */
function readExactly(fd: number, buf: Buffer, offset: number, length: number, position: number, path: string): void {
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, offset + done, length - done, position + done);
    if (n === 0) {
      throw new UnionctlError(
        'CORRUPT',
        `${path} shrank while it was being archived (expected ${position + length} bytes, found ${position + done})`,
        {
          hint: 'stop whatever writes to the layer (e.g. pause the container) and export again',
        },
      );
    }
    done += n;
  }
}
