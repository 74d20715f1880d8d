/**
 * The tar reader: a streaming, binary-safe parser for the tar dialects container layers come in.
 *
 *   const tar = readTar(chunks);
 *   for await (const { header, body } of tar) { for await (const piece of body) … }
 *   tar.digest.diffId();   // "sha256:<hex>" of every byte of the stream, valid once the loop is done
 *
 * Dialects: POSIX ustar and pax (`x` and `g` records), GNU (old `ustar  \0` magic, `L`/`K` long
 * names, base-256 numbers, `V` volume labels) and v7 (no magic). We do not use node-tar's parser
 * because it cuts pax values at NUL bytes, and `SCHILY.xattr.security.capability` is binary.
 *
 * Memory stays bounded whatever the layer size: a body is handed out as subarrays of the input
 * chunks (no copies), and only headers and metadata records (at most 1 MiB) are ever assembled.
 * A body that its consumer does not read is skipped when the next entry is requested.
 *
 * The digest covers all bytes of the stream, including whatever follows the end-of-archive blocks
 * (GNU tar pads to 10 KiB records): that is what Docker hashes for a layer's diff_id (its
 * tar-split and containerd's apply read the rest of the stream to EOF, "Read any trailing data"),
 * so after the end marker the reader keeps reading, hashing as it goes, in bounded memory. But not
 * forever: past MAX_TRAILING_BYTES (16 MiB; the `maxTrailingBytes` option) of data after the end
 * marker the stream is refused (BAD_TAR) — no tar writer pads that much (GNU tar's largest
 * practical record, -b 2048, is 1 MiB), and an endless input such as /dev/zero (whose first two
 * zero blocks end an empty archive) would otherwise be read forever. Hashing is done by a
 * StreamDigest (on a second core when one is free); an input that already hashes itself
 * (openLayerStream's file reader) passes its digest in the `digest` option instead.
 *
 * Chunks: body pieces are views of the input chunks, typed like them. Over leased input
 * (AsyncIterable<LeasedChunk>, from openLayerStream) the pieces are LeasedChunks too, valid only
 * until the stream has been read on (see LeasedChunk); over plain Buffers they are Buffers that
 * live as long as the caller's chunks do.
 */
import { TarFormatError, UnionctlError } from '../errors.js';
import { StreamDigest } from './stream-digest.js';
import {
  assertUtf8,
  BLOCK_SIZE,
  blockPadding,
  checkDeviceNumber,
  checkOwnerId,
  decodeHeader,
  decodeLongName,
  ENTRY_TYPES,
  headerError,
  parsePaxRecords,
  UNSUPPORTED_TYPES,
  type HeaderBlock,
} from './tar-header.js';
import type { LeasedChunk, TarEntryType, TarHeader, Timespec } from './types.js';

/** `Chunk` is the type of the input's chunks: Buffer, or LeasedChunk over lent input. */
export interface TarEntry<Chunk extends Buffer = Buffer> {
  header: TarHeader;
  /**
   * The entry's content (regular files only; empty otherwise), as views of the input chunks.
   * Read it before asking for the next entry, or it is skipped.
   */
  body: AsyncIterable<Chunk>;
  /**
   * The whole content at once, when it is at hand (inside the input chunk being parsed), else
   * undefined (and nothing is consumed: read `body`). The fast path for small files, which are
   * most of a rootfs: no await per piece. Undefined for an empty body too.
   */
  readWhole?(): Chunk | undefined;
}

export interface TarStreamDigest {
  /** "sha256:<hex>" of all bytes of the stream. Throws until the reader has reached EOF. */
  diffId(): string;
  /** Bytes read from the stream so far. */
  bytes(): number;
}

/** The entries of a tar stream, with the digest of the stream alongside. */
export interface TarReader<Chunk extends Buffer = Buffer> extends AsyncGenerator<TarEntry<Chunk>, void, undefined> {
  readonly digest: TarStreamDigest;
}

export interface ReadTarOptions {
  /** Called after each input chunk with the total number of bytes read so far. */
  onBytes?: (total: number) => void;
  /** Sees every byte that is not entry content (tar-split, see TarTap). */
  tap?: TarTap;
  /**
   * How the stream's digest is had: true (the default) hashes here; false does not hash
   * (digest.diffId() then throws: for indexing an archive whose digest nobody needs); a
   * StreamDigest is one that the producer of the input already feeds every byte to (openLayerStream's
   * file reader hashes as it reads): the reader does not hash again, it finishes that one at EOF.
   */
  digest?: boolean | StreamDigest;
  /**
   * Most bytes read (and hashed) after the end-of-archive blocks before the stream is refused as
   * not a tar (BAD_TAR). Default MAX_TRAILING_BYTES; Infinity reads to EOF whatever comes.
   */
  maxTrailingBytes?: number;
}

/** Data after the end-of-archive blocks that is still read and hashed: see the module comment. */
export const MAX_TRAILING_BYTES = 16 * 1024 * 1024;

/**
 * A tap on the reader, for rebuilding the exact stream later (the idea of Docker's tar-split):
 * the stream is the concatenation, in call order, of every raw() piece and, at each content()
 * call, `header.size` bytes of that entry's content. raw() covers header blocks, pax and GNU
 * records, content padding, the end-of-archive blocks and whatever follows them.
 * Both are called synchronously; `bytes` is lent (a view into the input): copy what you keep.
 */
export interface TarTap {
  raw(bytes: LeasedChunk): void;
  /** The content of this entry (header.size bytes, > 0) starts at stream offset `offset`. */
  content(header: TarHeader, offset: number): void;
  /** Every entry, content or not, before it is handed out (optional). */
  entry?(header: TarHeader): void;
}

/** Largest pax / GNU long-name record we accept (Go's archive/tar uses the same limit). */
const MAX_METADATA_RECORD = 1 << 20;
const EMPTY = Buffer.alloc(0);
const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

/** The chunk type of entry bodies: the input's (Buffer for an input typed `any`, such as a Readable). */
type BodyChunk<Chunk extends Buffer> = unknown extends Chunk ? Buffer : Chunk;

/**
 * Reads a tar stream. The result is an async generator of entries that also carries `.digest`
 * (complete once the generator is done). Leaving the loop early releases the input.
 */
export function readTar<Chunk extends Buffer = Buffer>(
  input: AsyncIterable<Chunk | Uint8Array>,
  opts: ReadTarOptions = {},
): TarReader<BodyChunk<Chunk>> {
  const source = new ByteSource(input[Symbol.asyncIterator](), opts.onBytes, opts.digest ?? true);
  source.tap = opts.tap;
  source.maxTrailingBytes = opts.maxTrailingBytes ?? MAX_TRAILING_BYTES;
  const entries = parseEntries<BodyChunk<Chunk>>(source);
  return Object.defineProperty(entries, 'digest', { value: source.digest, enumerable: true }) as TarReader<BodyChunk<Chunk>>;
}

// ---------------------------------------------------------------------------------------------
// The byte source: input chunks, a read position, and the running digest
// ---------------------------------------------------------------------------------------------

class ByteSource {
  private chunk: Buffer = EMPTY;
  private pos = 0;
  /** Stream offset of chunk[0]. */
  private chunkStart = 0;
  private total = 0;
  private ended = false;
  private readonly hash: StreamDigest;
  /** Bytes are not hashed here: the input hashes itself (a StreamDigest given as the digest option), or digest: false. */
  private readonly inputHashes: boolean;
  /** Sees the non-content bytes (tar-split); undefined on the hot path. */
  tap: TarTap | undefined;
  maxTrailingBytes = MAX_TRAILING_BYTES;

  readonly digest: TarStreamDigest = {
    diffId: () => {
      const hex = this.hash.value;
      if (hex === undefined) throw new Error('tar stream digest asked for before the stream was read to its end');
      return `sha256:${hex}`;
    },
    bytes: () => this.total,
  };

  private readonly hashing: boolean;

  constructor(
    private readonly input: AsyncIterator<Buffer | Uint8Array>,
    private readonly onBytes: ((total: number) => void) | undefined,
    digest: boolean | StreamDigest,
  ) {
    this.hashing = digest !== false;
    this.hash = typeof digest === 'boolean' ? new StreamDigest() : digest;
    this.inputHashes = typeof digest !== 'boolean' || !digest;
  }

  /** Stream offset of the next unread byte. */
  get offset(): number {
    return this.chunkStart + this.pos;
  }

  get atEof(): boolean {
    return this.ended;
  }

  /** Replaces the (fully read) current chunk with the next non-empty one; false at EOF. */
  private async pull(): Promise<boolean> {
    while (!this.ended) {
      const next = await this.input.next();
      this.chunkStart += this.chunk.length;
      this.chunk = EMPTY;
      this.pos = 0;
      if (next.done) {
        this.ended = true;
        return false;
      }
      const value = next.value;
      if (value.length === 0) continue;
      this.chunk = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.length);
      if (!this.inputHashes) {
        const ringFull = this.hash.update(this.chunk);
        if (ringFull !== undefined) await ringFull;
      }
      this.total += this.chunk.length;
      this.onBytes?.(this.total);
      return true;
    }
    return false;
  }

  /**
   * Up to `n` bytes: a subarray of the current chunk when it holds them (returned at once, not as
   * a promise: most headers and records lie inside one 1 MiB chunk, and an await per read was a
   * good part of the per-entry cost), else a copy assembled across chunks. Shorter than `n` only
   * at EOF.
   */
  read(n: number): Buffer | Promise<Buffer> {
    if (this.chunk.length - this.pos >= n) return this.take(n);
    return this.readAcross(n);
  }

  private async readAcross(n: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      if (this.pos === this.chunk.length && !(await this.pull())) return out.subarray(0, filled);
      const piece = this.take(n - filled);
      piece.copy(out, filled);
      filled += piece.length;
    }
    return out;
  }

  /** Up to `n` bytes from the current chunk (pulling one if it is used up); empty only at EOF. */
  async next(n: number): Promise<Buffer> {
    if (this.pos === this.chunk.length && !(await this.pull())) return EMPTY;
    return this.take(n);
  }

  /** Skips `n` bytes; returns how many were skipped (fewer only at EOF). At once when the current chunk holds them. */
  skip(n: number): number | Promise<number> {
    if (this.chunk.length - this.pos >= n) {
      this.pos += n;
      return n;
    }
    return this.skipAcross(n);
  }

  private async skipAcross(n: number): Promise<number> {
    let skipped = 0;
    while (skipped < n) {
      if (this.pos === this.chunk.length && !(await this.pull())) break;
      const step = Math.min(n - skipped, this.chunk.length - this.pos);
      this.pos += step;
      skipped += step;
    }
    return skipped;
  }

  /**
   * After the end of the archive: reads (and hashes) everything up to EOF, a chunk at a time, then
   * computes the digest. More than maxTrailingBytes of it is refused.
   */
  async drain(): Promise<void> {
    const end = this.offset;
    this.tapRest();
    while (await this.pull()) {
      if (this.chunkStart + this.chunk.length - end > this.maxTrailingBytes) {
        throw new TarFormatError(
          `more than ${mebibytes(this.maxTrailingBytes)} of data follow the end-of-archive blocks: not a layer tar, or an endless input such as /dev/zero`,
          { offset: end },
        );
      }
      this.tapRest();
    }
    if (this.hashing) await this.hash.finish();
  }

  /** Reads up to `n` bytes that are not entry content: shown to the tap, if any, else skipped. At once when the current chunk holds them. */
  rawBytes(n: number): number | Promise<number> {
    if (this.tap === undefined) return this.skip(n);
    const bytes = this.read(n);
    return bytes instanceof Promise ? bytes.then((b) => this.lent(b)) : this.lent(bytes);
  }

  private lent(bytes: Buffer): number {
    if (bytes.length > 0) this.lendRaw(bytes);
    return bytes.length;
  }

  /** Shows bytes that are not entry content to the tap, if any: lent for the call. */
  lendRaw(bytes: Buffer): void {
    this.tap?.raw(bytes as LeasedChunk);
  }

  /** Consumes the rest of the current chunk (after the end of the archive), showing it to the tap. */
  private tapRest(): void {
    if (this.tap !== undefined && this.pos < this.chunk.length) this.lendRaw(this.chunk.subarray(this.pos));
    this.pos = this.chunk.length;
  }

  /** Lets the input go early (the consumer stopped, or an error): closes file streams and the like. */
  async release(): Promise<void> {
    if (this.hashing && this.hash.value === undefined) await this.hash.abort();
    if (this.ended) return;
    this.ended = true;
    await this.input.return?.();
  }

  /** The current chunk has `n` more bytes. */
  holds(n: number): boolean {
    return this.chunk.length - this.pos >= n;
  }

  /** The current chunk has an unread byte. */
  hasBytes(): boolean {
    return this.pos < this.chunk.length;
  }

  /** Up to `n` bytes of the current chunk, a subarray of it (see hasBytes). */
  take(n: number): Buffer {
    const end = Math.min(this.pos + n, this.chunk.length);
    const piece = this.chunk.subarray(this.pos, end);
    this.pos = end;
    return piece;
  }
}

// ---------------------------------------------------------------------------------------------
// Entry bodies
// ---------------------------------------------------------------------------------------------

/** One entry's content: an async iterator over the source, bounded by the entry size. Pieces are typed like the input's chunks. */
class EntryBody<Chunk extends Buffer> implements AsyncIterableIterator<Chunk> {
  private remaining: number;
  private stale = false;

  constructor(
    private readonly source: ByteSource,
    private readonly size: number,
    private readonly entry: string,
  ) {
    this.remaining = size;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<Chunk, undefined>> {
    if (this.stale) throw new Error(`the body of tar entry ${JSON.stringify(this.entry)} was read after the next entry was requested`);
    if (this.remaining === 0) return { done: true, value: undefined };
    const piece = this.source.hasBytes() ? this.source.take(this.remaining) : await this.source.next(this.remaining);
    if (piece.length === 0) throw truncated(this.source, this.entry, `${this.remaining} of its ${this.size} content bytes are missing`);
    this.remaining -= piece.length;
    return { done: false, value: piece as Chunk };
  }

  /** Leaving a `for await` early is fine: the rest is skipped with the next entry. */
  async return(): Promise<IteratorResult<Chunk, undefined>> {
    return { done: true, value: undefined };
  }

  invalidate(): void {
    this.stale = true;
  }

  /**
   * The whole (unread) content at once when the current chunk holds all of it, else undefined
   * (then iterate): a small file is then written without an await per piece.
   */
  readWhole(): Chunk | undefined {
    if (this.stale || this.remaining === 0 || !this.source.holds(this.remaining)) return undefined;
    const piece = this.source.take(this.remaining) as Chunk;
    this.remaining = 0;
    return piece;
  }

  /**
   * Skips what was not read plus the padding to the next block. Afterwards the body cannot be read.
   * Done at once (undefined) when the current chunk holds it all, else a promise.
   */
  finish(): Promise<void> | undefined {
    this.stale = true;
    const rest = this.remaining;
    const pad = blockPadding(this.size);
    this.remaining = 0;
    if (this.source.holds(rest + pad)) {
      this.source.take(rest); // the unread content: skipped
      const padding = this.source.take(pad);
      if (pad > 0) this.source.lendRaw(padding);
      return undefined;
    }
    return this.finishAcross(rest, pad);
  }

  private async finishAcross(rest: number, pad: number): Promise<void> {
    if (this.source.tap === undefined) {
      if ((await this.source.skip(rest + pad)) < rest + pad) throw truncated(this.source, this.entry, 'the stream ends inside the entry');
      return;
    }
    if ((await this.source.skip(rest)) < rest || (await this.source.rawBytes(pad)) < pad)
      throw truncated(this.source, this.entry, 'the stream ends inside the entry');
  }
}

const mebibytes = (n: number) => (n % (1024 * 1024) === 0 ? `${n / (1024 * 1024)} MiB` : `${n} bytes`);

function truncated(source: ByteSource, entry: string | undefined, detail: string): TarFormatError {
  return new TarFormatError(`truncated archive: ${detail}`, { entry, offset: source.offset });
}

// ---------------------------------------------------------------------------------------------
// The entry loop
// ---------------------------------------------------------------------------------------------

async function* parseEntries<Chunk extends Buffer>(source: ByteSource): AsyncGenerator<TarEntry<Chunk>, void, undefined> {
  const pending = new PendingMetadata();
  let body: EntryBody<Chunk> | undefined;
  try {
    for (;;) {
      if (body !== undefined) {
        const finishing = body.finish();
        if (finishing !== undefined) await finishing;
      }
      body = undefined;
      const offset = source.offset;
      let block = source.read(BLOCK_SIZE);
      if (block instanceof Promise) block = await block;
      if (block.length === 0) {
        // EOF at a block boundary without end-of-archive blocks: GNU tar accepts it, so do we.
        pending.assertEmpty(offset, 'the stream ends');
        break;
      }
      if (block.length < BLOCK_SIZE)
        throw truncated(source, undefined, `the stream ends inside a header (${block.length} of ${BLOCK_SIZE} bytes)`);
      source.lendRaw(block);
      if (block.equals(ZERO_BLOCK)) {
        pending.assertEmpty(offset, 'the end-of-archive marker follows');
        await readEndOfArchive(source);
        break;
      }
      const raw = decodeHeader(block, offset);
      if (isMetadataRecord(raw) && (await readMetadataRecord(source, raw, pending))) continue;
      const header = pending.resolve(raw);
      // Like Go's archive/tar (and so Docker): links, dirs, devices and FIFOs carry no data blocks,
      // whatever their size field says.
      if (HEADER_ONLY_TYPES.has(header.type)) header.size = 0;
      if (source.tap !== undefined) {
        source.tap.entry?.(header);
        if (header.size > 0) source.tap.content(header, source.offset);
      }
      const current = new EntryBody<Chunk>(source, header.size, header.path);
      body = current;
      yield { header, body: current, readWhole: () => current.readWhole() };
    }
    await source.drain();
  } finally {
    // Early return or an error: the current body is dead, and the input is let go.
    body?.invalidate();
    await source.release();
  }
}

/**
 * After a first zero block: a second one ends the archive (the normal case), so does EOF (a
 * common truncation of the marker). A non-zero block after a single zero block is what Go's
 * archive/tar calls a broken header, and so do we; a second block cut short is a truncated
 * archive there too.
 */
async function readEndOfArchive(source: ByteSource): Promise<void> {
  const offset = source.offset;
  const second = await source.read(BLOCK_SIZE);
  if (second.length > 0) source.lendRaw(second);
  if (second.length > 0 && second.length < BLOCK_SIZE) {
    throw truncated(source, undefined, `the stream ends inside the second end-of-archive block (${second.length} of ${BLOCK_SIZE} bytes)`);
  }
  if (second.length === BLOCK_SIZE && !second.equals(ZERO_BLOCK)) {
    throw new TarFormatError('a single zero block is followed by more data (a zero block ends the archive only in pairs)', { offset });
  }
}

// ---------------------------------------------------------------------------------------------
// Header blocks (the format itself is tar-header.ts)
// ---------------------------------------------------------------------------------------------

const HEADER_ONLY_TYPES: ReadonlySet<TarEntryType> = new Set(['hardlink', 'symlink', 'char', 'block', 'dir', 'fifo']);

// ---------------------------------------------------------------------------------------------
// Metadata records: pax x/g, GNU L/K, GNU V
// ---------------------------------------------------------------------------------------------

const isMetadataRecord = (raw: HeaderBlock) => {
  const kind = raw.typeflag;
  return kind === 'x' || kind === 'g' || kind === 'L' || kind === 'K' || kind === 'V';
};

/** Returns true when the header was a metadata record (consumed here), false for a real entry. */
async function readMetadataRecord(source: ByteSource, raw: HeaderBlock, pending: PendingMetadata): Promise<boolean> {
  const kind = raw.typeflag;
  if (kind !== 'x' && kind !== 'g' && kind !== 'L' && kind !== 'K' && kind !== 'V') return false;
  if (kind === 'V') {
    // A GNU volume label names the archive, not a file.
    if ((await source.rawBytes(raw.size + blockPadding(raw.size))) < raw.size + blockPadding(raw.size))
      throw truncated(source, raw.name, 'in a volume label');
    return true;
  }
  if (raw.size > MAX_METADATA_RECORD) {
    throw headerError(
      `a '${kind}' metadata record of ${raw.size} bytes is larger than the ${MAX_METADATA_RECORD}-byte limit`,
      raw.offset,
      raw.name,
    );
  }
  let data = source.read(raw.size);
  if (data instanceof Promise) data = await data;
  if (data.length < raw.size) throw truncated(source, raw.name, `the '${kind}' record has ${data.length} of ${raw.size} bytes`);
  source.lendRaw(data);
  const pad = blockPadding(raw.size);
  let padded = source.rawBytes(pad);
  if (padded instanceof Promise) padded = await padded;
  if (padded < pad) throw truncated(source, raw.name, `the '${kind}' record is not padded to a block`);
  if (kind === 'L') pending.longName = decodeLongName(data, raw.offset);
  else if (kind === 'K') pending.longLink = decodeLongName(data, raw.offset);
  else if (kind === 'x') pending.mergeLocal(parsePaxRecords(data, raw.offset));
  else pending.mergeGlobal(parsePaxRecords(data, raw.offset));
  return true;
}

/** Pax / long-name records waiting for the entry they describe, plus the global pax records. */
class PendingMetadata {
  longName: string | undefined;
  longLink: string | undefined;
  private local = new Map<string, Buffer>();
  private global = new Map<string, Buffer>();
  /** No local pax record is waiting. */
  private empty = true;

  /**
   * A second local pax header before the same entry replaces the first one, as in Go's
   * archive/tar (Docker, containerd): the entry reads as it does there.
   */
  mergeLocal(records: Map<string, Buffer>): void {
    this.local = records;
    this.empty = false;
  }

  /**
   * Global records apply to every later entry (POSIX). path, linkpath and size are per-file by
   * nature, so a global one is ignored; an empty value deletes the global keyword.
   */
  mergeGlobal(records: Map<string, Buffer>): void {
    for (const [k, v] of records) {
      if (k === 'path' || k === 'linkpath' || k === 'size') continue;
      if (v.length === 0) this.global.delete(k);
      else this.global.set(k, v);
    }
  }

  assertEmpty(offset: number, what: string): void {
    if (this.empty && this.longName === undefined && this.longLink === undefined) return;
    throw headerError(`a pax or GNU long-name record describes no entry (${what})`, offset);
  }

  /** Folds pending records into the raw header and clears them. */
  resolve(raw: HeaderBlock): TarHeader {
    const pax = this.global.size === 0 ? this.local : new Map([...this.global, ...this.local]);
    const header = this.buildHeader(raw, pax);
    if (!this.empty) this.local = new Map();
    this.empty = true;
    this.longName = undefined;
    this.longLink = undefined;
    return header;
  }

  private buildHeader(raw: HeaderBlock, pax: Map<string, Buffer>): TarHeader {
    let type: TarEntryType | undefined = ENTRY_TYPES[raw.typeflag];
    const path = paxName(pax, 'path', raw) ?? this.longName ?? raw.name;
    if (type === undefined) throw unsupportedType(raw, path);
    // Old (pre-POSIX) archives mark directories by a trailing slash on a '\0' entry.
    if (raw.typeflag === '\0' && path.endsWith('/')) type = 'dir';
    const device = type === 'char' || type === 'block';
    const header: TarHeader = {
      path,
      type,
      mode: raw.mode & 0o7777,
      uid: checkOwnerId('uid', paxInteger(pax, 'uid', raw, path) ?? raw.uid, raw.offset, path),
      gid: checkOwnerId('gid', paxInteger(pax, 'gid', raw, path) ?? raw.gid, raw.offset, path),
      size: paxInteger(pax, 'size', raw, path) ?? raw.size,
      mtime: paxTime(pax, 'mtime', raw, path) ?? { sec: raw.mtime, nsec: 0 },
      linkname: paxName(pax, 'linkpath', raw) ?? this.longLink ?? raw.linkname,
      devmajor: device ? checkDeviceNumber('devmajor', raw.devmajor, raw.offset, path) : raw.devmajor,
      devminor: device ? checkDeviceNumber('devminor', raw.devminor, raw.offset, path) : raw.devminor,
      xattrs: paxXattrs(pax, raw, path),
    };
    const atime = paxTime(pax, 'atime', raw, path) ?? (raw.atime === undefined ? undefined : { sec: raw.atime, nsec: 0 });
    if (atime !== undefined) header.atime = atime;
    const uname = paxName(pax, 'uname', raw) ?? raw.uname;
    const gname = paxName(pax, 'gname', raw) ?? raw.gname;
    if (uname !== '') header.uname = uname;
    if (gname !== '') header.gname = gname;
    return header;
  }
}

function unsupportedType(raw: HeaderBlock, path: string): UnionctlError {
  const flag = raw.typeflag;
  const printable = /^[\x20-\x7e]$/.test(flag) ? `'${flag}'` : `0x${flag.charCodeAt(0).toString(16)}`;
  const what = UNSUPPORTED_TYPES[flag] ?? 'unknown entry type';
  return new UnionctlError(
    'UNSUPPORTED',
    `tar entry ${JSON.stringify(path)} (offset ${raw.offset}) has typeflag ${printable} (${what}), which unionctl cannot extract`,
    {
      hint: 'container layers hold only files, dirs, links, devices and FIFOs; repack the layer without it',
    },
  );
}

/** An empty pax value means "no value here": the header field (or long-name record) applies. */
function paxString(pax: Map<string, Buffer>, key: string): string | undefined {
  const value = pax.get(key);
  return value === undefined || value.length === 0 ? undefined : value.toString('utf8');
}

/**
 * A name a pax record carries (path, linkpath, uname, gname): refused with a NUL byte in it (no
 * file name can hold one; Go's archive/tar refuses the same), UNSUPPORTED when not UTF-8.
 */
function paxName(pax: Map<string, Buffer>, key: string, raw: HeaderBlock): string | undefined {
  const value = pax.get(key);
  if (value === undefined || value.length === 0) return undefined;
  const text = value.toString('utf8');
  if (value.includes(0)) throw headerError(`the pax ${key} ${JSON.stringify(text)} holds a NUL byte`, raw.offset, raw.name || undefined);
  if (text.includes('\ufffd')) assertUtf8(value, raw.offset);
  return text;
}

/** A decimal count (uid, gid, size): digits only, a safe integer; BAD_TAR naming the entry otherwise. */
function paxInteger(pax: Map<string, Buffer>, key: string, raw: HeaderBlock, entry: string): number | undefined {
  const text = paxString(pax, key);
  if (text === undefined) return undefined;
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(Number(text)))
    throw headerError(`bad pax ${key} ${JSON.stringify(text)} (not a number from 0 to 2^53)`, raw.offset, entry);
  return Number(text);
}

/** "<seconds>[.<fraction>]", possibly negative, whole seconds a safe integer; fractions beyond nanoseconds are cut. */
function paxTime(pax: Map<string, Buffer>, key: string, raw: HeaderBlock, entry: string): Timespec | undefined {
  const text = paxString(pax, key);
  if (text === undefined) return undefined;
  const m = /^(-?)([0-9]+)(?:\.([0-9]*))?$/.exec(text);
  if (m === null || !Number.isSafeInteger(Number(m[2])))
    throw headerError(`bad pax ${key} ${JSON.stringify(text)} (not a time in seconds within ±2^53)`, raw.offset, entry);
  const whole = Number(m[2]);
  const nsec = Number((m[3] ?? '').padEnd(9, '0').slice(0, 9));
  if (m[1] !== '-') return { sec: whole, nsec };
  // -1.25 is 1.25 s before the epoch: sec -2, nsec 0.75e9
  return nsec === 0 ? { sec: -whole, nsec: 0 } : { sec: -whole - 1, nsec: 1e9 - nsec };
}

/**
 * SCHILY.xattr.<name>=<raw bytes> (GNU tar, Go, Docker) and LIBARCHIVE.xattr.<url-encoded name>=
 * <base64> (bsdtar). Sparse-file pax records mean the body is not the file content: refuse.
 */
function paxXattrs(pax: Map<string, Buffer>, raw: HeaderBlock, entry: string): Map<string, Buffer> {
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of pax) {
    if (key.startsWith('SCHILY.xattr.')) {
      xattrs.set(xattrName(key.slice('SCHILY.xattr.'.length), key, raw, entry), value);
    } else if (key.startsWith('LIBARCHIVE.xattr.')) {
      xattrs.set(xattrName(decodeLibarchiveName(key, raw), key, raw, entry), Buffer.from(value.toString('latin1'), 'base64'));
    } else if (key.startsWith('GNU.sparse.')) {
      throw new UnionctlError(
        'UNSUPPORTED',
        `tar entry ${JSON.stringify(entry)} (offset ${raw.offset}) is a GNU sparse file, which unionctl cannot extract`,
        {
          hint: 'repack the layer without --sparse',
        },
      );
    }
  }
  return xattrs;
}

/** An xattr name from a pax key: not empty, no NUL byte (the key's own NULs are refused already; a URL-decoded one may hold %00). */
function xattrName(name: string, key: string, raw: HeaderBlock, entry: string): string {
  if (name === '' || name.includes('\0')) throw headerError(`bad xattr name in pax key ${JSON.stringify(key)}`, raw.offset, entry);
  return name;
}

function decodeLibarchiveName(key: string, raw: HeaderBlock): string {
  try {
    return decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length));
  } catch {
    throw headerError(`bad pax key ${JSON.stringify(key)} (not URL-encoded)`, raw.offset, raw.name);
  }
}
