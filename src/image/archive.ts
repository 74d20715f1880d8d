/**
 * Where an image comes from: a tar archive (`docker save`, OCI image archive; plain, or gzip/zstd
 * as a whole), an OCI image layout directory, or stdin. All of them become an ArchiveFiles: the
 * archive's members by name, each readable as a stream, without unpacking anything to disk.
 *
 * A tar archive is indexed by seeking from header to header (the tar engine's header and pax
 * parsers), then members are read with positional file streams. Stdin and compressed archives
 * have no random access: they are first spooled (decompressed) into a temp file under the store
 * root, which is removed when the load ends.
 */
import {
  closeSync,
  constants,
  createReadStream,
  createWriteStream,
  fstatSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  readSync,
  realpathSync,
  rmSync,
  statSync,
  type Stats,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decompressedStream, sniffCompression } from '../archive/decompress.js';
import { decodeHeader, parsePaxRecords } from '../archive/tar-header.js';
import { TarFormatError, UnionctlError } from '../errors.js';
import { storeDirExists } from '../sys/store-files.js';
import { fileError, isErrnoError } from '../sys/user-file.js';

/** Members of an image archive, by their name in it ("manifest.json", "blobs/sha256/<hex>"). */
export interface ArchiveFiles {
  /** For messages: "docker archive /x/y.tar", "OCI layout /x/dir". */
  readonly description: string;
  has(name: string): boolean;
  size(name: string): number;
  /** The member's bytes as a stream. */
  open(name: string): Readable;
  /**
   * The member's bytes as chunks that are views into a reused ring of buffers (no allocation per
   * chunk): each stays valid until RING_BYTES more have been read — enough for the tar engine,
   * which holds on to a chunk only while it parses it.
   */
  chunks(name: string): AsyncIterable<Buffer>;
  /** A member that is a file of its own on disk (OCI layout dirs): the fast way into the tar engine. */
  filePath(name: string): string | undefined;
  /** The whole member, for small ones (manifests, configs); refuses anything over `limit` bytes. */
  read(name: string, limit?: number): Buffer;
  /** Removes any spool file. */
  close(): void;
}

const READ_CHUNK = 1024 * 1024;
/** 16 chunks: twice what the tar engine's own file reader keeps valid (see decompress.ts openLayerStream). */
const RING_BYTES = 16 * READ_CHUNK;

/**
 * Reads `size` bytes of `path` from `offset` into a ring of buffers. Synchronous reads, as in the
 * tar engine's file reader: from the page cache a 1 MiB read costs less than an async round trip.
 */
async function* ringChunks(path: string, offset: number, size: number): AsyncGenerator<Buffer, void, undefined> {
  const fd = openSync(path, 'r');
  try {
    // A member smaller than the ring gets a buffer of its own size and is never wrapped over.
    const ring = Buffer.allocUnsafe(Math.min(RING_BYTES, size));
    let at = 0;
    let left = size;
    while (left > 0) {
      const want = Math.min(READ_CHUNK, left);
      if (at + want > ring.length) at = 0;
      const n = readSync(fd, ring, at, want, offset + (size - left));
      if (n === 0)
        throw new UnionctlError('BAD_TAR', `${path}: the file ended ${left} bytes before the end of the member`, {
          hint: 'the archive was truncated while it was being read',
        });
      left -= n;
      yield ring.subarray(at, at + n);
      at += n;
    }
  } finally {
    closeSync(fd);
  }
}
/** Manifests, indexes and configs are small; a huge one is a broken or hostile archive. */
const SMALL_MEMBER_LIMIT = 32 * 1024 * 1024;

/** "./a//b" → "a/b" (tools differ in how they spell member names). */
function cleanName(name: string): string {
  return name
    .split('/')
    .filter((p) => p !== '' && p !== '.')
    .join('/');
}

/** The first component of a member name, as cleanName would have it ('' for the root itself). */
function topLevelName(name: string): string {
  let start = 0;
  for (;;) {
    const slash = name.indexOf('/', start);
    const part = name.slice(start, slash < 0 ? name.length : slash);
    if (slash < 0 || (part !== '' && part !== '.')) return part === '.' ? '' : part;
    start = slash + 1;
  }
}

function tooLarge(description: string, name: string, size: number, limit: number): UnionctlError {
  return new UnionctlError('BAD_TAR', `${description}: ${name} is ${size} bytes, more than the ${limit} a manifest or config may have`, {
    hint: 'the archive is damaged or not an image archive',
  });
}

// ---- a tar archive on disk -------------------------------------------------------------------

interface Member {
  offset: number;
  size: number;
}

class TarArchiveFiles implements ArchiveFiles {
  constructor(
    readonly description: string,
    private readonly path: string,
    private readonly members: Map<string, Member>,
    private readonly spoolDir: string | undefined,
  ) {}

  has(name: string): boolean {
    return this.members.has(cleanName(name));
  }

  size(name: string): number {
    return this.member(name).size;
  }

  open(name: string): Readable {
    const m = this.member(name);
    if (m.size === 0) return Readable.from([]);
    return createReadStream(this.path, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: READ_CHUNK });
  }

  chunks(name: string): AsyncIterable<Buffer> {
    const m = this.member(name);
    return ringChunks(this.path, m.offset, m.size);
  }

  filePath(): string | undefined {
    return undefined;
  }

  read(name: string, limit = SMALL_MEMBER_LIMIT): Buffer {
    const m = this.member(name);
    if (m.size > limit) throw tooLarge(this.description, name, m.size, limit);
    const buf = Buffer.alloc(m.size);
    const fd = openSync(this.path, 'r');
    try {
      let done = 0;
      while (done < m.size) {
        const n = readSync(fd, buf, done, m.size - done, m.offset + done);
        if (n === 0) break;
        done += n;
      }
    } finally {
      closeSync(fd);
    }
    return buf;
  }

  close(): void {
    if (this.spoolDir !== undefined) rmSync(this.spoolDir, { recursive: true, force: true });
  }

  private member(name: string): Member {
    const m = this.members.get(cleanName(name));
    if (m === undefined)
      throw new UnionctlError('NOT_FOUND', `${this.description} has no member ${name}`, { hint: 'the archive is incomplete' });
    return m;
  }
}

/** Typeflags whose entries carry content blocks (Go's archive/tar, and so Docker, give no data to the others). */
const CONTENT_TYPES = new Set(['0', '\0', '7', 'x', 'g', 'L', 'K', 'V']);
const FILE_TYPES = new Set(['0', '\0', '7']);

/** A first block that is not a tar header at all: say so plainly, not as a checksum error. */
function assertLooksLikeTar(block: Buffer, description: string): void {
  try {
    decodeHeader(block, 0);
  } catch {
    throw new UnionctlError('USAGE', `${description} is not an image archive (not a tar file, nor a gzip or zstd compressed one)`, {
      hint: 'give a docker save or OCI image archive, or an OCI image layout directory',
    });
  }
}

/**
 * Member names and content offsets of a plain tar file. It seeks from header to header (pread of
 * 512 bytes, the tar engine's header parser and pax parser), so indexing a 300 MB archive reads a
 * few KiB. A member cut short by the end of the file is reported as a truncated archive.
 * `more(name)`, when given, sees each member's name as it is found; false stops the indexing there.
 */
function indexTar(path: string, description: string, more?: (name: string) => boolean): Map<string, Member> {
  const members = new Map<string, Member>();
  const fd = openSync(path, 'r');
  try {
    const fileSize = fstatSync(fd).size;
    if (fileSize === 0) {
      throw new UnionctlError('USAGE', `${description} is empty (0 bytes)`, {
        hint: 'give a docker save or OCI image archive, or an OCI image layout directory',
      });
    }
    const block = Buffer.alloc(512);
    let pos = 0;
    let pending: { path?: string; size?: number } = {};
    const readAt = (buf: Buffer, at: number) => readSync(fd, buf, 0, buf.length, at);
    for (;;) {
      const n = readAt(block, pos);
      if (n === 0) break; // EOF without end-of-archive blocks: accepted, like GNU tar
      if (n < 512) throw new TarFormatError(`truncated archive: the file ends inside a header (${n} of 512 bytes)`, { offset: pos });
      if (block.every((b) => b === 0)) break;
      if (pos === 0) assertLooksLikeTar(block, description);
      const h = decodeHeader(block, pos);
      const isFile = FILE_TYPES.has(h.typeflag);
      // A pax size overrides the header's for the file it describes; dirs, links, devices have no data.
      const size = isFile ? (pending.size ?? h.size) : CONTENT_TYPES.has(h.typeflag) ? h.size : 0;
      const dataStart = pos + 512;
      const next = dataStart + Math.ceil(size / 512) * 512;
      const name = pending.path ?? h.name;
      if (dataStart + size > fileSize) {
        throw new TarFormatError(
          `truncated archive: ${size} content bytes announced, the file ends after ${Math.max(0, fileSize - dataStart)}`,
          { entry: name, offset: pos },
        );
      }
      if (h.typeflag === 'x' || h.typeflag === 'L') {
        const data = Buffer.alloc(h.size);
        readAt(data, dataStart);
        if (h.typeflag === 'L') pending.path = data.toString('utf8').replace(/\0.*$/s, '');
        else {
          const pax = parsePaxRecords(data, pos);
          if (pax.get('path')?.length) pending.path = pax.get('path')!.toString('utf8');
          if (pax.get('size')?.length) pending.size = Number(pax.get('size')!.toString('latin1'));
        }
      } else if (h.typeflag !== 'g' && h.typeflag !== 'K' && h.typeflag !== 'V') {
        if (isFile) members.set(cleanName(name), { offset: dataStart, size });
        pending = {};
        if (isFile && more !== undefined && !more(name)) break;
      }
      pos = next;
    }
  } catch (e) {
    if (e instanceof UnionctlError && !e.message.startsWith(description)) {
      throw new UnionctlError(e.code, `${description}: ${e.message}`, { hint: e.hint ?? 'the archive is damaged or truncated', cause: e });
    }
    throw e;
  } finally {
    closeSync(fd);
  }
  return members;
}

// ---- an OCI layout directory -----------------------------------------------------------------

/** A member of a directory, open: reads go through the fd's own path, /proc/self/fd/N, which is that very file. */
interface OpenMember {
  fd: number;
  size: number;
}

/**
 * An OCI layout directory, or an unpacked docker save. Nothing outside it is ever read: a member
 * is resolved (symbolic links inside the directory are followed: docker save links a repeated
 * layer.tar to the first copy), refused unless where it leads is inside the directory, opened
 * without following a link at its last component and checked once more by the path the kernel
 * gives the open file. Every later read goes through that fd (its /proc/self/fd path), so a
 * link swapped in meanwhile changes nothing. A member that is not a regular file (a FIFO, a device,
 * a directory) is never opened and counts as missing.
 */
class DirectoryFiles implements ArchiveFiles {
  readonly description: string;
  /** realpath of the directory. */
  private readonly real: string;
  private readonly members = new Map<string, OpenMember | undefined>();

  constructor(dir: string) {
    this.description = `image directory ${dir}`;
    this.real = realpathSync(dir);
  }

  private inside(path: string): boolean {
    return path.startsWith(`${this.real}/`);
  }

  /** `where`: the path the member resolves to, or undefined when that is not known (it changed while it was opened). */
  private outside(name: string, where: string | undefined): UnionctlError {
    const to = where === undefined ? '' : ` (it resolves to ${JSON.stringify(where)})`;
    return new UnionctlError(
      'UNSAFE_ENTRY',
      `${this.description}: ${JSON.stringify(name)} leads outside the directory${to}; refusing to read it`,
      {
        hint: 'a load reads only files inside the directory (symbolic links may point only within it): copy the file in instead of linking to it',
      },
    );
  }

  private member(name: string): OpenMember | undefined {
    const clean = cleanName(name);
    if (this.members.has(clean)) return this.members.get(clean);
    if (clean.split('/').includes('..')) throw this.outside(name, resolve(this.real, clean));
    if (clean === '') return undefined; // the directory itself
    const m = this.openMember(name, join(this.real, clean));
    this.members.set(clean, m);
    return m;
  }

  private openMember(name: string, path: string): OpenMember | undefined {
    let real: string;
    try {
      real = realpathSync(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      if (code === 'ELOOP')
        throw new UnionctlError('UNSAFE_ENTRY', `${this.description}: ${JSON.stringify(name)} is a loop of symbolic links`, {
          hint: 'the directory is damaged',
        });
      throw fileError(e, `${this.description}: member`, name);
    }
    if (!this.inside(real)) throw this.outside(name, real);
    let st: Stats;
    try {
      st = lstatSync(real);
    } catch {
      return undefined; // gone meanwhile
    }
    if (!st.isFile()) return undefined;
    let fd: number;
    try {
      fd = openSync(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (e) {
      // ELOOP: a symbolic link was put there since; ENOENT: the file went.
      if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw this.outside(name, undefined);
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fileError(e, `${this.description}: member`, name);
    }
    try {
      const opened = fstatSync(fd);
      // A directory above was swapped for a link between the checks and the open: the fd says where it is.
      const where = readlinkSync(`/proc/self/fd/${fd}`);
      if (!this.inside(where)) throw this.outside(name, where);
      if (!opened.isFile()) {
        closeSync(fd);
        return undefined;
      }
      return { fd, size: opened.size };
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  private existing(name: string): OpenMember & { path: string } {
    const m = this.member(name);
    if (m === undefined) throw new UnionctlError('NOT_FOUND', `${this.description} has no file ${name}`);
    return { ...m, path: `/proc/self/fd/${m.fd}` };
  }

  has(name: string): boolean {
    return this.member(name) !== undefined;
  }

  size(name: string): number {
    return this.existing(name).size;
  }

  open(name: string): Readable {
    return createReadStream(this.existing(name).path, { highWaterMark: READ_CHUNK });
  }

  chunks(name: string): AsyncIterable<Buffer> {
    const m = this.existing(name);
    return ringChunks(m.path, 0, m.size);
  }

  filePath(name: string): string | undefined {
    return this.has(name) ? this.existing(name).path : undefined;
  }

  read(name: string, limit = SMALL_MEMBER_LIMIT): Buffer {
    const m = this.existing(name);
    if (m.size > limit) throw tooLarge(this.description, name, m.size, limit);
    return readFileSync(m.path);
  }

  close(): void {
    for (const m of this.members.values()) if (m !== undefined) closeSync(m.fd);
    this.members.clear();
  }
}

// ---- opening ---------------------------------------------------------------------------------

/** A typed error of the decompression, with the archive named first. */
function inArchive(e: UnionctlError, description: string): UnionctlError {
  if (e.message.startsWith(description)) return e;
  return new UnionctlError(e.code, `${description}: ${e.message}`, { hint: 'the archive is damaged or truncated', cause: e });
}

/**
 * Copies a stream (decompressing gzip/zstd) into a temp file under `tmpRoot`. A full disk there,
 * or any other error of the spool file, is a typed error naming the archive and the spool file.
 */
async function spool(input: Readable, tmpRoot: string, description: string): Promise<{ dir: string; path: string }> {
  const spaceHint = `free space on the filesystem of ${tmpRoot} (where the store root is), then load again`;
  let dir: string;
  try {
    // <root>/tmp: never a symlink (the archive would be spooled outside the store).
    if (!storeDirExists(tmpRoot, 'load spool directory')) mkdirSync(tmpRoot, { recursive: true, mode: 0o700 });
    // The pid in the name lets the next openStore remove the spool of a load that was killed.
    dir = mkdtempSync(join(tmpRoot, `load-${process.pid}-`));
  } catch (e) {
    throw fileError(e, `${description}: cannot make a spool directory in`, tmpRoot, { spaceHint });
  }
  const path = join(dir, 'archive.tar');
  const file = createWriteStream(path, { flags: 'wx', mode: 0o600 });
  let writeFailure: unknown;
  file.once('error', (e) => (writeFailure ??= e));
  try {
    const { stream } = await decompressedStream(input);
    await pipeline(Readable.from(stream), file);
  } catch (e) {
    file.destroy();
    rmSync(dir, { recursive: true, force: true });
    if (writeFailure !== undefined) throw fileError(writeFailure, `${description}: cannot spool it to`, path, { spaceHint });
    if (e instanceof UnionctlError) throw inArchive(e, description);
    if (isErrnoError(e)) throw new UnionctlError('SYSCALL', `${description}: ${e.message}`, { cause: e });
    throw e;
  }
  return { dir, path };
}

function headOf(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(8);
    const n = readSync(fd, head, 0, 8, 0);
    return head.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens FILE, a directory, or '-' (stdin). `tmpRoot` is where stdin and compressed archives are
 * spooled (the store's own filesystem, which has room for what is about to be loaded anyway).
 */
export async function openArchive(input: string, tmpRoot: string): Promise<ArchiveFiles> {
  if (input === '-') {
    const { dir, path } = await spool(process.stdin, tmpRoot, 'archive from stdin');
    return openTarFile(path, 'archive from stdin', dir);
  }
  let st: Stats;
  try {
    st = statSync(input);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new UnionctlError('NOT_FOUND', `image archive ${input} does not exist`, { hint: 'check the path' });
    throw new UnionctlError('USAGE', `cannot read image archive ${input}: ${(e as Error).message}`, { cause: e });
  }
  if (st.isDirectory()) return new DirectoryFiles(resolve(input));
  const compression = sniffCompression(headOf(input));
  if (compression === 'none') return openTarFile(input, `image archive ${input}`, undefined);
  if (compression !== 'gzip' && compression !== 'zstd') {
    throw new UnionctlError('UNSUPPORTED', `image archive ${input} is ${compression}-compressed`, {
      hint: 'decompress it first, or use gzip/zstd',
    });
  }
  const { dir, path } = await spool(createReadStream(input, { highWaterMark: READ_CHUNK }), tmpRoot, `image archive ${input}`);
  return openTarFile(path, `image archive ${input}`, dir);
}

async function openTarFile(path: string, description: string, spoolDir: string | undefined): Promise<ArchiveFiles> {
  try {
    return new TarArchiveFiles(description, path, indexTar(path, description), spoolDir);
  } catch (e) {
    if (spoolDir !== undefined) rmSync(spoolDir, { recursive: true, force: true });
    throw e;
  }
}

// ---- telling an image archive from a layer tarball --------------------------------------------

/** What kind of image archive a tar is, by the names at its top level. */
export type ImageArchiveKind = 'OCI image layout' | 'docker save archive';

/**
 * Watches the member names of a tar go by and says whether it is an image archive rather than a
 * layer tarball: `oci-layout` with `index.json` (an OCI layout), or `manifest.json` with layer
 * members (`<dir>/layer.tar` or `blobs/…`, what docker save and podman save write). A root file
 * system that merely holds a manifest.json is not one.
 */
export class ImageArchiveSniffer {
  private readonly topLevel = new Set<string>();
  private layerMembers = false;

  /** Called for every entry of an import (thousands): the plain case costs no split and join. */
  see(memberName: string): void {
    const top = topLevelName(memberName);
    this.topLevel.add(top);
    if (top === 'blobs' || (memberName.endsWith('layer.tar') && /^[^/]+\/layer\.tar$/.test(cleanName(memberName))))
      this.layerMembers = true;
  }

  kind(): ImageArchiveKind | undefined {
    if (this.topLevel.has('oci-layout') && this.topLevel.has('index.json')) return 'OCI image layout';
    if (this.topLevel.has('manifest.json') && this.layerMembers) return 'docker save archive';
    return undefined;
  }
}

/** Top-level names of the members of docker save and OCI image archives (config and layer dirs are hex IDs). */
const IMAGE_ARCHIVE_TOP_LEVEL = /^(?:[0-9a-f]{64}(?:\.json)?|blobs|index\.json|manifest\.json|oci-layout|repositories)$/;

/**
 * The kind of image archive a plain tar file is, from its headers alone (a seek from header to
 * header); undefined for anything else, including a file that is no valid tar (its import says why).
 *
 * It stops at the first member that no image archive holds (`bin/sh`, `etc/passwd`): a root file
 * system is told apart in a header or two instead of a seek through all its thousands (~0.1 s of a
 * Debian rootfs import). A tar that mixes both is then not refused up front, but still refused
 * once its import has seen every name (the CLI's ImageArchiveSniffer, which rolls the import back).
 */
export function imageArchiveKindOf(path: string): ImageArchiveKind | undefined {
  const sniffer = new ImageArchiveSniffer();
  try {
    indexTar(path, `input file ${path}`, (name) => {
      if (!IMAGE_ARCHIVE_TOP_LEVEL.test(cleanName(name).split('/', 1)[0]!)) return false;
      sniffer.see(name);
      return sniffer.kind() === undefined;
    });
  } catch {
    return undefined;
  }
  return sniffer.kind();
}
