/**
 * Compression sniffing for layer tarballs: OCI layers are plain, gzip or zstd tars, told apart by
 * their first bytes (the media type is not always at hand: `unionctl import layer.tar.zst`).
 *
 * gzip goes through node:zlib (native, multi-member, with stream back-pressure). zstd goes through
 * the `zstd` program when there is one (zstd-program.ts: several times faster, on a core of its
 * own), else through fzstd's streaming Decompress (pure JS), fed in pieces small enough that a
 * highly compressed run (a file of zeros) cannot balloon into one huge burst of output.
 * UNIONCTL_ZSTD=native|js forces one of the two (see zstd-program.ts); both report a damaged
 * stream as BAD_TAR and let an error of the input stream through as it is.
 */
import { fstatSync, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import { UnionctlError } from '../errors.js';
import { StreamDigest } from './stream-digest.js';
import { Xxh64 } from './xxhash64.js';
import type { LeasedChunk } from './types.js';
import { startZstd, ZstdProgramError, zstdDecoder, zstdOutput, type ZstdDecoder } from './zstd-program.js';

export type Compression = 'none' | 'gzip' | 'zstd';

/** Enough bytes for every magic number we check (xz has the longest, 6). */
const SNIFF_BYTES = 6;
/**
 * zlib output chunk. zlib inflates on the thread pool one output chunk per round trip, and starts
 * the next only once the main thread has taken the last, which is busy applying the tar; each
 * chunk boundary is also where a file's content stops being at hand in one piece (readWhole) and
 * is streamed instead. Measured on the pull benchmark's image (320 MB of gzip layers from a local
 * registry, 2 cores, five runs of 5–10 alternating pulls, bench/reports/pull-and-import-levers-
 * 2026-12-08.md): 1 MiB chunks pull 7–15% faster with 6–15% less CPU than 256 KiB ones, 64 KiB ones
 * are ~15% slower, and 2 or 4 MiB gain nothing more.
 */
const GUNZIP_CHUNK = 1024 * 1024;
/** Input chunk size for layer files opened here. */
const FILE_CHUNK = 1024 * 1024;
/**
 * zlib's input is gathered into pieces at least this large. Sockets and pipes deliver 64 KiB;
 * fed as they come, every piece is a thread-pool round trip and comes out as a 64 KiB output
 * chunk, and the whole apply pays per chunk (measured on a 243 MB gzip layer from a registry:
 * 1.6 s to apply as 64 KiB pieces, 1.15 s as 1 MiB ones).
 */
const GUNZIP_INPUT = 1024 * 1024;
/**
 * The zstd program's output is gathered into pieces this large, for the same reason: its pipe
 * delivers 64 KiB at a time.
 */
export const ZSTD_OUTPUT_CHUNK = 1024 * 1024;

/** The format the first bytes of a stream announce. Anything unrecognised is taken as a plain tar. */
export function sniffCompression(head: Buffer): Compression | 'xz' | 'bzip2' {
  const starts = (...magic: number[]) => head.length >= magic.length && magic.every((b, i) => head[i] === b);
  if (starts(0x1f, 0x8b)) return 'gzip';
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) return 'zstd';
  // A zstd stream may begin with a skippable frame: magic 0x184D2A50..5F, little-endian.
  if (head.length >= 4 && (head[0]! & 0xf0) === 0x50 && head[1] === 0x2a && head[2] === 0x4d && head[3] === 0x18) return 'zstd';
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return 'xz';
  if (starts(0x42, 0x5a, 0x68)) return 'bzip2'; // "BZh"
  return 'none';
}

/**
 * Sniffs the compression from the first bytes (which are kept, not lost) and returns the
 * uncompressed byte stream. xz and bzip2 are refused: Docker and OCI layers never use them.
 */
export async function decompressedStream(
  input: Readable | AsyncIterable<Buffer | Uint8Array>,
  /** What the input is (a file path), named in decompression errors. */
  label?: string,
): Promise<{ compression: Compression; stream: AsyncIterable<Buffer> }> {
  const source = input[Symbol.asyncIterator]() as AsyncIterator<Buffer | Uint8Array>;
  const head: Buffer[] = [];
  let headBytes = 0;
  let ended = false;
  while (headBytes < SNIFF_BYTES) {
    const next = await source.next();
    if (next.done) {
      ended = true;
      break;
    }
    const chunk = asBuffer(next.value);
    head.push(chunk);
    headBytes += chunk.length;
  }
  const format = sniffCompression(Buffer.concat(head, headBytes));
  let decoder: ZstdDecoder | undefined;
  try {
    if (format === 'xz' || format === 'bzip2') throw unsupported(format);
    if (format === 'zstd') decoder = zstdDecoder(); // before any byte is read on: UNIONCTL_ZSTD may refuse
  } catch (e) {
    if (!ended) await source.return?.();
    throw e;
  }
  const raw = replay(head, ended ? undefined : source);
  if (format === 'gzip') return { compression: 'gzip', stream: gunzip(raw, label) };
  if (decoder !== undefined) return { compression: 'zstd', stream: unzstd(raw, label, decoder) };
  return { compression: 'none', stream: raw };
}

function unsupported(format: 'xz' | 'bzip2'): UnionctlError {
  return new UnionctlError('UNSUPPORTED', `the layer is ${format}-compressed; unionctl reads plain, gzip and zstd tars`, {
    hint: `decompress it first (${format === 'xz' ? 'xz -dc' : 'bzip2 -dc'} layer > layer.tar)`,
  });
}

/** An opened layer: its uncompressed bytes, lent (see LeasedChunk), and the digest that already hashes them, if any. */
export interface LayerStream {
  compression: Compression;
  chunks: AsyncIterable<LeasedChunk>;
  /**
   * Fed every byte of `chunks` as they are read (the uncompressed-file reader hashes into its ring):
   * pass it to readTar's `digest` option instead of hashing again. undefined: nobody hashes them yet.
   */
  digest: StreamDigest | undefined;
}

/**
 * Opens a layer for the archive engine: a file path, `-` (stdin) or a stream; then sniffs and
 * decompresses. The file is closed when the chunks are read to their end or abandoned (`return()`).
 *
 * An uncompressed file is the hot path (`docker save` layers, the benchmark): it is read straight
 * into the ring buffer of a StreamDigest, which hashes it (on a second core when one is free) while
 * the tar reader parses the same bytes — no copy and no allocation per chunk. The chunks are then
 * views into the ring, valid until about RING_BYTES (8 MiB) more have been read, which is all
 * readTar and applyLayer need; `digest` is that StreamDigest. Chunks of a stream are lent too:
 * whoever made it may reuse its buffers (an image archive's member reader does).
 *
 * Not exported by the public API (index.ts), which has openLayerInput: chunks the caller keeps.
 */
export async function openLayerStream(source: string | Readable | AsyncIterable<Buffer | Uint8Array>): Promise<LayerStream> {
  if (typeof source === 'string' && source !== '-') {
    const file = await openLayerFile(source);
    try {
      // A pipe, FIFO or device (`import <(zcat …)`, /dev/stdin) cannot be read at an offset: read
      // it as a stream. The head of a regular file is read in place (pread), the fd stays at 0.
      const st = fstatSync(file.fd);
      if (!st.isFile()) return lent(await decompressedStream(file.createReadStream({ highWaterMark: FILE_CHUNK }), source));
      const head = Buffer.alloc(SNIFF_BYTES);
      const { bytesRead } = await file.read(head, 0, SNIFF_BYTES, 0);
      if (sniffCompression(head.subarray(0, bytesRead)) === 'none') {
        const digest = new StreamDigest({ expectedBytes: st.size });
        return { compression: 'none', chunks: ringFileChunks(file, digest), digest };
      }
      return lent(await decompressedStream(file.createReadStream({ highWaterMark: FILE_CHUNK }), source));
    } catch (e) {
      await file.close();
      throw e;
    }
  }
  return lent(await decompressedStream(source === '-' ? process.stdin : source));
}

/**
 * Opens a layer tarball: `-` is stdin, anything else a file path (or a stream); then sniffs and
 * decompresses. The file is closed when the returned stream is read to its end or abandoned
 * (`return()`). Every chunk is a Buffer of its own, the caller's to keep (the engine's own,
 * faster way in, whose chunks are lent, is openLayerStream).
 */
export async function openLayerInput(source: string | Readable): Promise<{ compression: Compression; stream: AsyncIterable<Buffer> }> {
  if (typeof source !== 'string') return decompressedStream(source);
  if (source === '-') return decompressedStream(process.stdin);
  const file = await openLayerFile(source);
  try {
    // No `start`: a fresh fd reads from 0, and a pipe or FIFO cannot be read at an offset.
    return await decompressedStream(file.createReadStream({ highWaterMark: FILE_CHUNK }), source);
  } catch (e) {
    await file.close();
    throw e;
  }
}

async function openLayerFile(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT')
      throw new UnionctlError('NOT_FOUND', `layer tarball ${path} does not exist`, { hint: 'check the path', cause: e });
    throw new UnionctlError('USAGE', `cannot read layer tarball ${path}: ${err.message}`, { cause: e });
  }
}

/** The chunks of a decompressed stream, typed as lent: their producer may reuse the buffers. */
function lent(opened: { compression: Compression; stream: AsyncIterable<Buffer> }): LayerStream {
  return { compression: opened.compression, chunks: opened.stream as AsyncIterable<LeasedChunk>, digest: undefined };
}

/**
 * An uncompressed file read into a StreamDigest's ring: every chunk is a view into the ring. The
 * reads are synchronous: a 1 MiB read from the page cache costs ~0.2 ms, less than the thread-pool
 * round trip of an async read on a machine whose cores are busy with the apply and the digest
 * (measured: 20-30 ms less per 250 MB).
 */
async function* ringFileChunks(file: FileHandle, digest: StreamDigest): AsyncGenerator<LeasedChunk, void, undefined> {
  try {
    for (;;) {
      const reserved = digest.reserve(FILE_CHUNK);
      const view = reserved instanceof Promise ? await reserved : reserved;
      const bytesRead = readSync(file.fd, view, 0, view.length, null);
      digest.commit(bytesRead);
      if (bytesRead === 0) return;
      yield Buffer.from(view.buffer, view.byteOffset, bytesRead) as LeasedChunk;
    }
  } finally {
    await file.close();
  }
}

function asBuffer(chunk: Buffer | Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
}

/** The sniffed head chunks again, then the rest of the source. */
async function* replay(head: Buffer[], rest: AsyncIterator<Buffer | Uint8Array> | undefined): AsyncGenerator<Buffer, void, undefined> {
  try {
    for (const chunk of head) yield chunk;
    if (rest === undefined) return;
    for (;;) {
      const next = await rest.next();
      if (next.done) {
        rest = undefined;
        return;
      }
      yield asBuffer(next.value);
    }
  } finally {
    // Stopped early by the consumer: close the underlying stream.
    await rest?.return?.();
  }
}

/** A decompressor's failure; `label` (the layer file, when there is one) is named in the message. Shared with inflate-thread.ts. */
export function corruptStream(format: string, err: unknown, label?: string): UnionctlError {
  const where = label === undefined ? '' : ` in ${label}`;
  return new UnionctlError('BAD_TAR', `corrupt ${format} stream${where}: ${(err as Error).message}`, {
    hint: `the layer file is damaged or truncated; check it with ${format === 'gzip' ? 'gzip -t' : 'zstd -t'}`,
    cause: err,
  });
}

/** zlib reports its own failures with Z_* codes; errors of the input stream pass through as they are. */
function isZlibError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && code.startsWith('Z_');
}

async function* gunzip(raw: AsyncIterable<Buffer>, label: string | undefined): AsyncGenerator<Buffer, void, undefined> {
  const input = Readable.from(gathered(raw, GUNZIP_INPUT), { objectMode: false });
  // gunzip handles concatenated members (pigz, multi-member gzip) by itself.
  const inflater = createGunzip({ chunkSize: GUNZIP_CHUNK });
  pipeline(input, inflater, () => {
    /* errors surface through the iteration below */
  });
  try {
    for await (const chunk of inflater) yield chunk as Buffer;
  } catch (e) {
    throw isZlibError(e) ? corruptStream('gzip', e, label) : e;
  } finally {
    inflater.destroy();
    input.destroy();
  }
}

/**
 * The bytes of `raw` in pieces of `size` (the last one shorter). Small chunks are copied into a
 * buffer of our own, since their producer may reuse them once we ask for the next; a chunk that is
 * large enough by itself, arriving when nothing is gathered, passes through as it is.
 */
async function* gathered(raw: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer, void, undefined> {
  let piece: Buffer | undefined;
  let filled = 0;
  for await (const chunk of raw) {
    if (filled === 0 && chunk.length >= size) {
      yield chunk;
      continue;
    }
    for (let off = 0; off < chunk.length;) {
      piece ??= Buffer.allocUnsafe(size);
      const n = chunk.copy(piece, filled, off);
      filled += n;
      off += n;
      if (filled === size) {
        yield piece;
        piece = undefined;
        filled = 0;
      }
    }
  }
  if (filled > 0) yield piece!.subarray(0, filled);
}

/** zstd by `decoder`: the program (see zstd-program.ts) when it starts, else fzstd. */
async function* unzstd(
  raw: AsyncIterable<Buffer>,
  label: string | undefined,
  decoder: ZstdDecoder,
): AsyncGenerator<Buffer, void, undefined> {
  const child = decoder === 'native' ? startZstd() : undefined;
  if (child === undefined) return yield* fzstdStream(raw, label);
  try {
    yield* gathered(zstdOutput(child, raw), ZSTD_OUTPUT_CHUNK);
  } catch (e) {
    throw e instanceof ZstdProgramError ? corruptStream('zstd', e, label) : e;
  }
}

/**
 * zstd through fzstd. fzstd's push() decodes every complete block in what it is given, and a
 * compressed block of a few bytes can stand for 128 KiB of output (a file of zeros), so a 64 KiB
 * input chunk could decode to gigabytes at once. The splitter below cuts the input at block
 * boundaries (it reads just the frame and block headers) and we yield after each block: at most
 * one block (128 KiB) of output is held at a time.
 *
 * Each frame gets a decoder of its own, so its output is known to be its own: when the frame
 * header sets the Content_Checksum_Flag, the frame ends with the low 4 bytes of the XXH64 of its
 * content (RFC 8878 §3.1.1), which fzstd skips unchecked; we hash the content as it is decoded
 * and compare. A frame whose content does not hash to its checksum is a corrupt stream (BAD_TAR),
 * like a gzip member whose CRC does not match. Skippable frames are never decoded.
 */
async function* fzstdStream(raw: AsyncIterable<Buffer>, label: string | undefined): AsyncGenerator<Buffer, void, undefined> {
  const splitter = new ZstdBlockSplitter(label);
  let frame: ZstdFrame | undefined;
  let frames = 0;
  for await (const chunk of raw) {
    for (const unit of splitter.split(chunk)) {
      if (unit.kind === 'skippable') continue;
      if (frame === undefined) frame = new ZstdFrame(++frames, label);
      yield* frame.push(unit.bytes, false);
      if (unit.end === undefined) continue;
      yield* frame.push(EMPTY_BYTES, true);
      frame.verify(unit.end.checksum);
      frame = undefined;
    }
  }
  if (!splitter.atFrameBoundary) throw corruptStream('zstd', new Error(`the stream ends inside frame ${frames + (frame ? 0 : 1)}`), label);
}

const EMPTY_BYTES = new Uint8Array(0);

/** One zstd frame being decoded: its decoder, and the hash of its content when the frame carries a checksum. */
class ZstdFrame {
  private ready: Buffer[] = [];
  private readonly hash = new Xxh64();
  private readonly decoder = new Decompress((data) => {
    if (data.length === 0) return;
    this.hash.update(data);
    this.ready.push(asBuffer(data));
  });

  constructor(
    /** 1-based, for errors. */
    private readonly index: number,
    private readonly label: string | undefined,
  ) {}

  /** Decodes `piece` (with `final`, the frame is complete); returns the output it made. */
  push(piece: Uint8Array, final: boolean): Buffer[] {
    try {
      this.decoder.push(piece, final);
    } catch (e) {
      throw corruptStream('zstd', e, this.label);
    }
    const out = this.ready;
    this.ready = [];
    return out;
  }

  /** The frame is decoded: its content must hash to the checksum it carries (if it carries one). */
  verify(checksum: number | undefined): void {
    if (checksum === undefined) return;
    const computed = this.hash.digestLow32();
    if (computed === checksum) return;
    const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;
    throw corruptStream(
      'zstd',
      new Error(`frame ${this.index}: content checksum mismatch (the frame says ${hex(checksum)}, its content hashes to ${hex(computed)})`),
      this.label,
    );
  }
}

const ZSTD_MAGIC = 0xfd2fb528;
const ZSTD_BLOCK_MAX = 128 * 1024;

/** A piece of a zstd stream: part of a frame to decode, or of a skippable frame; `end` when it completes its frame. */
interface ZstdUnit {
  kind: 'frame' | 'skippable';
  bytes: Buffer;
  /** The piece ends its frame; `checksum`: the content checksum the frame ends with, if it has one. */
  end?: { checksum: number | undefined };
}

/**
 * Walks the zstd framing (RFC 8878 §3.1): frame header, blocks (3-byte header + content),
 * optional checksum, skippable frames. split() returns the chunk cut so that every piece but
 * the last ends exactly at the end of a block or of a frame, each piece labelled with the kind of
 * frame it belongs to; the last piece of a frame says so and carries the frame's checksum.
 */
class ZstdBlockSplitter {
  private phase: 'magic' | 'skip-size' | 'skip-data' | 'frame-header' | 'block-header' | 'block' | 'checksum' = 'magic';
  /** Bytes still to come in the current phase. */
  private need = 4;
  /** Header bytes collected so far (magic, frame header, block header, checksum; at most 18). */
  private acc: number[] = [];
  private lastBlock = false;
  private checksum = false;
  /** The frame being read is a skippable one (known once its magic is complete). */
  private skippable = false;
  /** Bytes of a magic number split across chunks, held until the magic says what kind of frame they start. */
  private heldMagic: Buffer | undefined;

  /** `label`: what the stream is, for errors. */
  constructor(private readonly label: string | undefined) {}

  /** Between frames: a stream may end here. */
  get atFrameBoundary(): boolean {
    return this.phase === 'magic' && this.acc.length === 0;
  }

  split(chunk: Buffer): ZstdUnit[] {
    const units: ZstdUnit[] = [];
    let start = 0;
    let pos = 0;
    while (pos < chunk.length) {
      const take = Math.min(this.need, chunk.length - pos);
      if (this.collects()) for (let i = 0; i < take; i++) this.acc.push(chunk[pos + i]!);
      pos += take;
      this.need -= take;
      if (this.need > 0) break;
      const wasMagic = this.phase === 'magic';
      const cut = this.advance();
      if (wasMagic && this.heldMagic !== undefined) {
        // The magic is complete: the bytes of it that came with the last chunk belong to this frame.
        units.push({ kind: this.skippable ? 'skippable' : 'frame', bytes: this.heldMagic });
        this.heldMagic = undefined;
      }
      if (cut !== 'none') {
        const unit: ZstdUnit = { kind: this.skippable ? 'skippable' : 'frame', bytes: chunk.subarray(start, pos) };
        if (cut !== 'block') unit.end = { checksum: cut === 'frame' ? undefined : cut };
        units.push(unit);
        start = pos;
        if (cut !== 'block') this.skippable = false;
      }
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      // Mid-magic: the kind of frame is not known yet, and the bytes are kept for when it is.
      if (this.phase === 'magic') this.heldMagic = Buffer.concat(this.heldMagic === undefined ? [rest] : [this.heldMagic, rest]);
      else units.push({ kind: this.skippable ? 'skippable' : 'frame', bytes: rest });
    }
    return units;
  }

  private collects(): boolean {
    return (
      this.phase === 'magic' ||
      this.phase === 'skip-size' ||
      this.phase === 'frame-header' ||
      this.phase === 'block-header' ||
      this.phase === 'checksum'
    );
  }

  /**
   * The little-endian number in acc[at .. at + bytes). A phase only advances once its `need`
   * bytes are all collected, so every byte read here is in acc.
   */
  private le(at: number, bytes: number): number {
    let value = 0;
    for (let i = bytes - 1; i >= 0; i--) value = value * 256 + this.acc[at + i]!;
    return value;
  }

  /**
   * The current phase is complete: move on. Returns where the bytes so far are cut: 'none', at
   * the end of a 'block', at the end of a 'frame' without checksum, or (a number) at the end of a
   * frame, whose checksum that is.
   */
  private advance(): 'none' | 'block' | 'frame' | number {
    switch (this.phase) {
      case 'magic': {
        const magic = this.le(0, 4);
        if ((magic & 0xfffffff0) === 0x184d2a50) {
          this.skippable = true;
          return this.enter('skip-size', 4);
        }
        if (magic !== ZSTD_MAGIC) throw corruptStream('zstd', new Error(`bad frame magic 0x${magic.toString(16)}`), this.label);
        return this.enter('frame-header', 1, true);
      }
      case 'skip-size': {
        const size = this.le(4, 4); // after the magic, which skip-size keeps
        if (size > 0) return this.enter('skip-data', size);
        this.enter('magic', 4);
        return 'frame';
      }
      case 'skip-data':
        this.enter('magic', 4);
        return 'frame';
      case 'frame-header': {
        if (this.acc.length === 5) {
          const fhd = this.le(4, 1); // the frame header descriptor, after the magic
          const singleSegment = (fhd >> 5) & 1;
          // Frame_Content_Size_Flag 0..3 → 0 (1 if single segment), 2, 4, 8 bytes; Dictionary_ID_Flag 0..3 → 0, 1, 2, 4 bytes.
          const fcsFlag = fhd >> 6;
          const fcsBytes = fcsFlag === 0 ? singleSegment : 1 << fcsFlag;
          const dictFlag = fhd & 3;
          const dictBytes = dictFlag === 3 ? 4 : dictFlag;
          this.checksum = ((fhd >> 2) & 1) === 1;
          const rest = (singleSegment ? 0 : 1) + dictBytes + fcsBytes;
          if (rest > 0) return this.enter('frame-header', rest, true);
        }
        return this.enter('block-header', 3);
      }
      case 'block-header': {
        const header = this.le(0, 3);
        this.lastBlock = (header & 1) === 1;
        const type = (header >> 1) & 3;
        const size = header >>> 3;
        if (type === 3) throw corruptStream('zstd', new Error('reserved block type'), this.label);
        if (size > ZSTD_BLOCK_MAX) throw corruptStream('zstd', new Error(`block of ${size} bytes exceeds the 128 KiB maximum`), this.label);
        const contentBytes = type === 1 ? 1 : size; // RLE: one byte repeated `size` times
        if (contentBytes === 0) return this.endBlock();
        return this.enter('block', contentBytes);
      }
      case 'block':
        return this.endBlock();
      case 'checksum': {
        const checksum = this.le(0, 4);
        this.enter('magic', 4);
        return checksum;
      }
    }
  }

  private endBlock(): 'block' | 'frame' {
    if (!this.lastBlock) this.enter('block-header', 3);
    else if (this.checksum) this.enter('checksum', 4);
    else {
      this.enter('magic', 4);
      return 'frame';
    }
    return 'block';
  }

  /** Starts a phase; `keep` continues collecting into the same header buffer. */
  private enter(phase: ZstdBlockSplitter['phase'], need: number, keep = false): 'none' {
    if (!keep && phase !== 'skip-size') this.acc = [];
    this.phase = phase;
    this.need = need;
    return 'none';
  }
}
