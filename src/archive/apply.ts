/**
 * Layer apply: extracts a layer tar (plain, gzip or zstd) into a layer directory, converting the
 * OCI whiteouts into the driver's own format, and refusing anything that would reach outside.
 *
 * The rules are Docker's (pkg/archive UnpackLayer and its whiteout converters), see DESIGN.md §3:
 * - every entry kind a rootfs has (files, dirs, symlinks, hardlinks, devices, FIFOs), with numeric
 *   owners, full modes, nanosecond times and binary xattrs; directory times are set last;
 * - an existing path is replaced (a dir by a dir is merged), and a file is always a new inode, so
 *   "a link replaced by a file" cannot change the other name of the old inode;
 * - names are cleaned and must stay inside; a parent that is a symlink is refused (we never write
 *   through a symlink), and so are symlinks / hardlinks whose target leaves the layer;
 * - `.wh.<name>` / `.wh..wh..opq` go to disk through the format's WhiteoutConverter (whiteout.ts);
 *   other `.wh..wh.*` names are aufs bookkeeping and never materialised.
 *
 * Hot path: one entry costs open(O_EXCL) + write + futimes + close for a typical file. Known-good
 * directories are cached (and forgotten when an entry replaces or removes them), chown / chmod are
 * skipped when the kernel already produced the right owner and mode.
 */
import {
  chmodSync,
  closeSync,
  constants as fsConstants,
  copyFileSync,
  fchmodSync,
  fchownSync,
  futimesSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeSync,
  type BigIntStats,
  type Stats,
} from 'node:fs';
import type { Readable } from 'node:stream';
import { SysCallError, UnionctlError, UnsafeEntryError } from '../errors.js';
import { lchown, lgetxattr, mknod, processUmask, S_IFBLK, S_IFCHR, S_IFIFO } from '../sys/index.js';
import { openLayerStream } from './decompress.js';
import { LayerStack } from './layer-stack.js';
import { applyMetadata, applyTimes, applyXattrs, readMetadata, type InodeKind } from './metadata.js';
import { readTar, type TarEntry, type TarTap } from './tar-reader.js';
import type { ApplyResult, LeasedChunk, TarHeader, Timespec, WhiteoutFormat } from './types.js';
import {
  AUFS_PLINK_DIR,
  isBookkeepingPath,
  isUnionBookkeepingXattr,
  markerKind,
  WHITEOUT_PREFIX,
  whiteoutConverter,
  whitedOutName,
  type WhiteoutConverter,
} from './whiteout.js';

export interface ApplyLayerOptions {
  whiteoutFormat: WhiteoutFormat;
  /** Read-only parent views (nearest first), used only to resolve a hardlink whose target is not in this layer but visible below (copy it up, then link). */
  lowerDirs?: string[];
  /**
   * The lower layers are still being written (a pull applies a layer while its parent is being
   * applied): resolves when they are complete. Any entry that may have to look below — a hardlink,
   * an entry whose directory this tar has not made yet — waits for it first, so the result is
   * the same as when the layers are applied one after the other. A rejection fails the apply.
   */
  lowersReady?: Promise<unknown>;
  /** Bytes of the uncompressed tar read so far. */
  onProgress?: (bytesRead: number) => void;
  /** Sees every byte that is not file content (see TarTap). */
  tap?: TarTap;
  /** Something was skipped that the caller may want to report (xattrs the filesystem refuses). Default: process.emitWarning. */
  onWarning?: (message: string) => void;
}

const ACL_DEFAULT = 'system.posix_acl_default';

/**
 * Extracts a layer tar into `dest` (an existing directory). `input` is a stream, or a file path
 * ('-' for stdin), which is the fastest way in (see openLayerStream). The chunks of a stream are
 * taken as lent (see LeasedChunk): each is written out before the next 8 MiB are asked for. On
 * error it throws; the caller removes the half layer.
 */
export async function applyLayer(
  input: Readable | AsyncIterable<Buffer> | string,
  dest: string,
  opts: ApplyLayerOptions,
): Promise<ApplyResult> {
  const applier = new LayerApplier(dest, opts);
  const layer = await openLayerStream(input);
  const tar = readTar(layer.chunks, { onBytes: opts.onProgress, tap: opts.tap, digest: layer.digest });
  try {
    for await (const entry of tar) {
      const applying = applier.apply(entry);
      if (applying !== undefined) await applying;
    }
    await opts.lowersReady; // finishApply reads the lower layers
    // Docker applies an empty input as an empty layer (moby pkg/archive DecompressStream: "the
    // layer.tar file will be empty (zero bytes) … just create an empty layer", moby issue 18170),
    // and so do we, but not without a word: an empty file is more often a failed download.
    if (tar.digest.bytes() === 0) applier.warn('the input is empty (0 bytes), not a layer tar; applied as an empty layer, as Docker does');
    applier.finish();
  } finally {
    applier.cleanup();
  }
  applier.converter.finishApply(dest, opts.lowerDirs ?? []);
  return { size: applier.contentBytes, diffId: tar.digest.diffId(), entries: applier.entries };
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

const DOT_COMPONENT = /(^|\/)\.\.?(\/|$)/;

/**
 * The entry name relative to the layer root: "./a//b/" → "a/b", "" for the root itself. `..` is
 * resolved lexically (like Go's filepath.Clean, as Docker does) and must not climb above the root.
 */
export function normaliseEntryName(name: string, entry = name, what = 'the name'): string {
  while (name.startsWith('./')) name = name.slice(2);
  if (name !== '' && name[0] !== '/' && !name.endsWith('/') && !name.includes('//') && !DOT_COMPONENT.test(name)) return name;
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part !== '..') parts.push(part);
    else if (parts.length === 0) throw new UnsafeEntryError(entry, `${what} ${JSON.stringify(name)} leads outside the layer`);
    else parts.pop();
  }
  return parts.join('/');
}

/**
 * Docker's symlink rule: the target, joined to the symlink's directory (absolute targets too) and
 * cleaned, must stay inside. Absolute targets therefore stay legal ("/bin/busybox").
 */
function symlinkLeavesLayer(rel: string, target: string): boolean {
  const parts = rel.split('/');
  parts.pop();
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part !== '..') parts.push(part);
    else if (parts.length === 0) return true;
    else parts.pop();
  }
  return false;
}

const parentOf = (rel: string) => rel.slice(0, Math.max(0, rel.lastIndexOf('/')));
const baseOf = (rel: string) => rel.slice(rel.lastIndexOf('/') + 1);
const joinRel = (dir: string, name: string) => (dir === '' ? name : `${dir}/${name}`);
const depthOf = (rel: string) => (rel === '' ? 0 : rel.split('/').length);

/** Docker: atime is the header's, but never before mtime (a plain ustar header has none). */
function accessTime(h: TarHeader): Timespec {
  const a = h.atime;
  if (a === undefined || a.sec < h.mtime.sec || (a.sec === h.mtime.sec && a.nsec < h.mtime.nsec)) return h.mtime;
  return a;
}

function errnoOf(e: unknown): string | undefined {
  if (e instanceof SysCallError) return e.errno;
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

const isMissing = (e: unknown) => errnoOf(e) === 'ENOENT' || errnoOf(e) === 'ENOTDIR';

/** Adds the entry name to a system error (Node's or ours) so the message says which entry failed. */
function withEntry(e: unknown, entry: string): unknown {
  const context = `tar entry ${JSON.stringify(entry)}`;
  if (e instanceof SysCallError) return new SysCallError(e.syscall, e.errnum, e.errno, e.path, context);
  const err = e as NodeJS.ErrnoException;
  if (!(e instanceof UnionctlError) && typeof err?.code === 'string' && typeof err.syscall === 'string') {
    return new SysCallError(err.syscall, -(err.errno ?? 0), err.code, err.path, context);
  }
  return e;
}

// ---------------------------------------------------------------------------------------------
// The applier
// ---------------------------------------------------------------------------------------------

/** What we know about a directory that is verified to be a real directory inside the layer. */
interface DirInfo {
  gid: number;
  /** No default ACL: a file created in it gets exactly mode & ~umask. */
  plainCreate: boolean;
}

const CREATE_FILE = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

class LayerApplier {
  entries = 0;
  contentBytes = 0;
  readonly converter: WhiteoutConverter;
  private readonly dest: string;
  /** The lower layers' merged view, when there are lower layers. */
  private readonly lowers: LayerStack | undefined;
  /** Verified real directories (relative names); the invariant: a name is here only if its parent is. */
  private readonly knownDirs = new Map<string, DirInfo>();
  /** Directory times to set at the end, when nothing will be added to them any more. */
  private readonly dirTimes = new Map<string, { atime: Timespec; mtime: Timespec }>();
  /** 'plain' only: every name this tar put into the layer, and their ancestors (for opaque dirs). */
  private readonly written: Set<string> | undefined;
  /** Dirs this tar made opaque, and names it whited out: they hide the lower layers' copies. */
  private readonly opaqueDirs = new Set<string>();
  private readonly whitedOut = new Set<string>();
  /** aufs pseudo-link files (`.wh..wh.plnk/<name>`), extracted to a scratch dir inside the layer. */
  private readonly plinks = new Map<string, string>();
  private plinkDir: string | undefined;
  private readonly unsupportedXattrs = new Set<string>();
  /** Union bookkeeping xattrs the tar carried and the apply dropped ("name on entry"). */
  private readonly droppedXattrs: string[] = [];
  private readonly euid: number;
  private readonly egid: number;
  private readonly umask: number;
  /** opts.lowersReady until it has resolved. */
  private lowersPending: Promise<unknown> | undefined;

  constructor(
    dest: string,
    private readonly opts: ApplyLayerOptions,
  ) {
    this.dest = dest.length > 1 ? dest.replace(/\/+$/, '') : dest;
    this.converter = whiteoutConverter(opts.whiteoutFormat);
    this.written = this.converter.fullTree ? new Set() : undefined;
    this.lowers =
      opts.lowerDirs !== undefined && opts.lowerDirs.length > 0 ? new LayerStack(opts.lowerDirs, opts.whiteoutFormat) : undefined;
    let st: Stats;
    try {
      st = statSync(this.dest);
    } catch (e) {
      throw new UnionctlError('NOT_FOUND', `layer directory ${dest} does not exist`, { cause: e });
    }
    if (!st.isDirectory()) throw new UnionctlError('USAGE', `layer directory ${dest} is not a directory`);
    this.knownDirs.set('', { gid: st.gid, plainCreate: !hasDefaultAcl(this.dest) });
    this.euid = process.geteuid?.() ?? -1;
    this.egid = process.getegid?.() ?? -1;
    this.umask = processUmask();
    this.lowersPending = this.lowers === undefined ? undefined : opts.lowersReady;
  }

  private abs(rel: string): string {
    return rel === '' ? this.dest : `${this.dest}/${rel}`;
  }

  /**
   * Writes one entry. Synchronous (undefined) for the common entry — no lower layer to wait for,
   * no whiteout name, content at hand — so that a rootfs of thousands of small files pays no
   * promise per entry; otherwise a promise. Errors name the entry either way.
   */
  apply(entry: TarEntry<LeasedChunk>): Promise<void> | undefined {
    this.entries++;
    const name = entry.header.path;
    const named = (e: unknown) => {
      throw withEntry(e, name);
    };
    try {
      const rel = normaliseEntryName(name);
      const waitForLowers = this.lowersPending !== undefined && this.mayLookBelow(rel, entry.header);
      if (waitForLowers || rel.includes(WHITEOUT_PREFIX)) return this.applyAfterChecks(rel, entry, waitForLowers).catch(named);
      return this.writeEntry(rel, entry)?.catch(named);
    } catch (e) {
      return named(e);
    }
  }

  /** apply() for an entry that must wait for the lower layers first, or whose name holds a whiteout prefix. */
  private async applyAfterChecks(rel: string, entry: TarEntry<LeasedChunk>, waitForLowers: boolean): Promise<void> {
    if (waitForLowers) {
      await this.lowersPending;
      this.lowersPending = undefined;
    }
    if (rel.includes(WHITEOUT_PREFIX) && (await this.applyWhiteoutName(rel, entry))) return;
    await this.writeEntry(rel, entry);
  }

  /**
   * Could writing this entry read the lower layers? Only a hardlink (its target may be below) and
   * an entry whose directory is not known yet (an implicit directory takes the metadata of the one
   * below) can.
   */
  private mayLookBelow(rel: string, h: TarHeader): boolean {
    return h.type === 'hardlink' || (rel !== '' && !this.knownDirs.has(parentOf(rel)));
  }

  /** Sets the directory times (deepest first) and reports skipped xattrs. */
  finish(): void {
    const dirs = [...this.dirTimes].map(([rel, t]) => ({ rel, t, depth: depthOf(rel) })).sort((a, b) => b.depth - a.depth);
    for (const { rel, t } of dirs) applyTimes(this.abs(rel), t.mtime, t.atime);
    if (this.unsupportedXattrs.size > 0) {
      this.warn(`the filesystem under ${this.dest} refused these xattrs, which were skipped: ${[...this.unsupportedXattrs].join(', ')}`);
    }
    if (this.droppedXattrs.length > 0) {
      const shown = this.droppedXattrs.slice(0, 10).join(', ');
      const more = this.droppedXattrs.length > 10 ? ` and ${this.droppedXattrs.length - 10} more` : '';
      this.warn(
        `the layer tar carried overlay filesystem xattrs, which were dropped (a layer deletes or makes opaque only with .wh. entries): ${shown}${more}`,
      );
    }
  }

  warn(message: string): void {
    (this.opts.onWarning ?? ((m: string) => process.emitWarning(m)))(message);
  }

  /** Removes the aufs pseudo-link scratch dir (its files stay reachable through their links). */
  cleanup(): void {
    if (this.plinkDir !== undefined) rmSync(this.abs(this.plinkDir), { recursive: true, force: true });
    this.plinkDir = undefined;
  }

  // ---- whiteouts ------------------------------------------------------------------------------

  /** Handles aufs bookkeeping, `.wh.` and opaque entries. Returns true when the entry must not be written as it is. */
  private async applyWhiteoutName(rel: string, entry: TarEntry<LeasedChunk>): Promise<boolean> {
    if (isBookkeepingPath(rel)) {
      await this.keepPlink(rel, entry);
      return true;
    }
    const kind = markerKind(baseOf(rel));
    if (kind === 'opaque') return !this.applyOpaque(parentOf(rel), entry.header);
    if (kind === 'whiteout') return !this.applyWhiteout(rel, entry.header);
    return false;
  }

  /** `dir/.wh.<name>`: <name> is deleted in this layer. Returns whether the entry is kept as it is. */
  private applyWhiteout(rel: string, h: TarHeader): boolean {
    const name = whitedOutName(baseOf(rel));
    if (name === '' || name === '.' || name === '..') {
      throw new UnsafeEntryError(h.path, `a whiteout must name a file in its directory, not ${JSON.stringify(name)}`);
    }
    const target = joinRel(parentOf(rel), name);
    const parent = this.ensureDir(parentOf(rel), h.path); // Docker creates the parents of every entry
    this.markWritten(parentOf(rel)); // the dir is part of this layer, as it is in an overlay upper dir
    this.removePath(target);
    this.whitedOut.add(target);
    return this.converter.fromTar('whiteout', this.abs(target), h, !this.ownerIsRight(h, parent));
  }

  /** `dir/.wh..wh..opq`: nothing of dir from the lower layers shows, only what this layer puts there. Returns whether the entry is kept. */
  private applyOpaque(dirRel: string, h: TarHeader): boolean {
    this.ensureDir(dirRel, h.path);
    this.markWritten(dirRel);
    this.opaqueDirs.add(dirRel);
    const keep = this.converter.fromTar('opaque', this.abs(dirRel), h, false);
    // Whatever its position in the tar, the marker acts first: keep what this tar wrote, drop the rest.
    if (this.converter.fullTree) this.clearOpaqueDir(dirRel);
    return keep;
  }

  private clearOpaqueDir(dirRel: string): void {
    for (const child of readdirSync(this.abs(dirRel), { withFileTypes: true })) {
      const childRel = joinRel(dirRel, child.name);
      if (!this.written!.has(childRel)) this.removePath(childRel);
      else if (child.isDirectory()) this.clearOpaqueDir(childRel);
    }
  }

  /**
   * aufs bookkeeping is never materialised, except that a regular file in the top-level
   * `.wh..wh.plnk/` may be the target of hardlinks later in the tar (layers made by Docker's aufs
   * driver): it is kept in a scratch dir until the end of the apply.
   */
  private async keepPlink(rel: string, entry: TarEntry<LeasedChunk>): Promise<void> {
    const [top, name, ...deeper] = rel.split('/');
    if (top !== AUFS_PLINK_DIR || name === undefined || deeper.length > 0 || entry.header.type !== 'file') return;
    if (this.plinkDir === undefined) {
      const dir = `.unionctl-plnk-${process.pid}-${Date.now().toString(36)}`;
      mkdirSync(this.abs(dir), 0o700);
      this.knownDirs.set(dir, { gid: lstatSync(this.abs(dir)).gid, plainCreate: this.knownDirs.get('')!.plainCreate });
      this.markWritten(dir);
      this.plinkDir = dir;
    }
    const scratch = joinRel(this.plinkDir, name);
    await this.writeFile(scratch, entry, this.knownDirs.get(this.plinkDir)!);
    this.plinks.set(name, this.abs(scratch));
  }

  // ---- entries --------------------------------------------------------------------------------

  /** Writes the entry at `rel`; a promise only when a file's content must be streamed (see writeFile). */
  private writeEntry(rel: string, entry: TarEntry<LeasedChunk>): Promise<void> | undefined {
    const h = entry.header;
    if (rel === '') {
      if (h.type !== 'dir') throw new UnsafeEntryError(h.path, `a ${h.type} cannot replace the layer root`);
      this.writeDir('', h);
      return undefined;
    }
    const parent = this.ensureDir(parentOf(rel), h.path);
    switch (h.type) {
      case 'file': {
        const writing = this.writeFile(rel, entry, parent);
        if (writing !== undefined) return writing.then(() => this.markWritten(rel));
        break;
      }
      case 'dir':
        this.writeDir(rel, h);
        break;
      case 'symlink':
        this.writeSymlink(rel, h, parent);
        break;
      case 'hardlink':
        this.writeHardlink(rel, h);
        break;
      case 'char':
      case 'block':
      case 'fifo':
        this.writeNode(rel, h);
        break;
    }
    this.markWritten(rel);
    return undefined;
  }

  /** Owner already right: a new inode gets our euid, and the parent's gid when that is ours too (setgid dirs and grpid mounts give the parent's). */
  private ownerIsRight(h: TarHeader, parent: DirInfo): boolean {
    return h.uid === this.euid && h.gid === this.egid && parent.gid === this.egid;
  }

  /**
   * A regular file: a new inode, its content, then owner, mode, xattrs and times. Synchronous
   * (undefined) when the reader has the whole content at hand, which is most files of a rootfs;
   * a promise when the content must be streamed.
   */
  private writeFile(rel: string, entry: TarEntry<LeasedChunk>, parent: DirInfo): Promise<void> | undefined {
    const h = entry.header;
    const path = this.abs(rel);
    const fd = this.createFile(rel, path, h.mode);
    let streamed = false;
    try {
      if (h.size > 0) {
        const whole = entry.readWhole?.();
        if (whole === undefined) {
          streamed = true;
          return this.streamFile(fd, path, entry, parent);
        }
        writeFully(fd, whole);
      }
      this.finishFile(fd, path, h, parent);
    } finally {
      if (!streamed) closeSync(fd);
    }
    return undefined;
  }

  /** writeFile's content from the body, piece by piece; closes `fd`. */
  private async streamFile(fd: number, path: string, entry: TarEntry<LeasedChunk>, parent: DirInfo): Promise<void> {
    try {
      for await (const chunk of entry.body) writeFully(fd, chunk);
      this.finishFile(fd, path, entry.header, parent);
    } finally {
      closeSync(fd);
    }
  }

  /** Owner, mode, xattrs and times of a file whose content is written (the caller closes `fd`). */
  private finishFile(fd: number, path: string, h: TarHeader, parent: DirInfo): void {
    const atime = accessTime(h);
    if (!this.ownerIsRight(h, parent)) fchownSync(fd, h.uid, h.gid);
    // open() gave mode & ~umask (or the default ACL's); special bits and the rest need chmod (after chown, which clears setuid).
    if ((h.mode & 0o7000) !== 0 || (h.mode & this.umask) !== 0 || !parent.plainCreate) fchmodSync(fd, h.mode);
    if (h.xattrs.size > 0) this.setXattrs(path, h);
    // Whole seconds go through futimes on the open fd; anything else (nanoseconds, negative) by path, after close is fine too.
    if (wholeSeconds(h.mtime, atime)) futimesSync(fd, atime.sec, h.mtime.sec);
    else applyTimes(path, h.mtime, atime);
    this.contentBytes += h.size;
  }

  /** A new inode, never an existing one: whatever is at the name goes first. */
  private createFile(rel: string, path: string, mode: number): number {
    try {
      return openSync(path, CREATE_FILE, mode & 0o777);
    } catch (e) {
      if (errnoOf(e) !== 'EEXIST') throw e;
    }
    this.removePath(rel);
    return openSync(path, CREATE_FILE, mode & 0o777);
  }

  private writeDir(rel: string, h: TarHeader): void {
    const path = this.abs(rel);
    const parent = rel === '' ? undefined : this.knownDirs.get(parentOf(rel))!;
    let created = false;
    if (rel !== '') {
      try {
        mkdirSync(path, 0o700);
        created = true;
      } catch (e) {
        if (errnoOf(e) !== 'EEXIST') throw e;
        if (!lstatSync(path).isDirectory()) {
          this.removePath(rel);
          mkdirSync(path, 0o700);
          created = true;
        }
      }
    }
    if (!(created && this.ownerIsRight(h, parent!))) lchown(path, h.uid, h.gid);
    chmodSync(path, h.mode);
    if (h.xattrs.size > 0) this.setXattrs(path, h);
    const inheritsAcl = created ? !parent!.plainCreate : hasDefaultAcl(path);
    this.knownDirs.set(rel, { gid: h.gid, plainCreate: !inheritsAcl && !h.xattrs.has(ACL_DEFAULT) });
    this.dirTimes.set(rel, { atime: accessTime(h), mtime: h.mtime });
  }

  private writeSymlink(rel: string, h: TarHeader, parent: DirInfo): void {
    if (symlinkLeavesLayer(rel, h.linkname)) {
      throw new UnsafeEntryError(h.path, `symlink target ${JSON.stringify(h.linkname)} points outside the layer`);
    }
    const path = this.abs(rel);
    try {
      symlinkSync(h.linkname, path);
    } catch (e) {
      if (errnoOf(e) !== 'EEXIST') throw e;
      this.removePath(rel);
      symlinkSync(h.linkname, path);
    }
    // A symlink's size is its target's length (lstat's st_size), as the layer's diff size counts it.
    this.contentBytes += Buffer.byteLength(h.linkname);
    if (!this.ownerIsRight(h, parent)) lchown(path, h.uid, h.gid);
    if (h.xattrs.size > 0) this.setXattrs(path, h);
    this.setTimesNoFollow(path, h);
  }

  private writeNode(rel: string, h: TarHeader): void {
    const type = h.type === 'char' ? S_IFCHR : h.type === 'block' ? S_IFBLK : S_IFIFO;
    const path = this.abs(rel);
    const major = h.type === 'fifo' ? 0 : h.devmajor;
    const minor = h.type === 'fifo' ? 0 : h.devminor;
    try {
      mknod(path, type | (h.mode & 0o777), major, minor);
    } catch (e) {
      if (errnoOf(e) !== 'EEXIST') throw e;
      this.removePath(rel);
      mknod(path, type | (h.mode & 0o777), major, minor);
    }
    lchown(path, h.uid, h.gid);
    chmodSync(path, h.mode); // mknod's mode went through the umask
    if (h.xattrs.size > 0) this.setXattrs(path, h);
    this.setTimesNoFollow(path, h);
  }

  /**
   * A hardlink to a name earlier in this tar or already in the layer, or (with lowerDirs) visible
   * in a layer below, which is copied up first. link() does not follow a symlink target: linking
   * to a symlink makes another name of the symlink (Docker's TestUntarHardlinkToSymlink).
   * The link shares the target's inode, so the header's own metadata is not applied (GNU tar).
   */
  private writeHardlink(rel: string, h: TarHeader): void {
    const targetRel = normaliseEntryName(h.linkname, h.path, 'hardlink target');
    if (targetRel === '') throw new UnsafeEntryError(h.path, 'a hardlink cannot point at the layer root');
    const source = targetRel.startsWith(`${AUFS_PLINK_DIR}/`) ? this.plinkSource(targetRel, h) : this.linkSource(targetRel, h);
    if (targetRel === rel) return; // a link to itself: the name already is the file
    const path = this.abs(rel);
    try {
      linkSync(source, path);
    } catch (e) {
      if (errnoOf(e) !== 'EEXIST') throw e;
      this.removePath(rel);
      linkSync(source, path);
    }
  }

  private plinkSource(targetRel: string, h: TarHeader): string {
    const source = this.plinks.get(targetRel.slice(AUFS_PLINK_DIR.length + 1));
    if (source === undefined)
      throw new UnionctlError(
        'BAD_TAR',
        `tar entry ${JSON.stringify(h.path)} links to ${JSON.stringify(h.linkname)}, which the tar does not hold`,
      );
    return source;
  }

  private linkSource(targetRel: string, h: TarHeader): string {
    const here = this.lookupInLayer(targetRel, h);
    if (here === 'present') return this.abs(targetRel);
    if (here === 'absent' && this.lowers !== undefined && !this.hiddenHere(targetRel)) {
      const found = this.findInLowers(targetRel, h.path);
      if (found !== undefined) {
        this.ensureDir(parentOf(targetRel), h.path);
        this.copyUp(targetRel, found);
        return this.abs(targetRel);
      }
    }
    throw new UnionctlError(
      'BAD_TAR',
      `tar entry ${JSON.stringify(h.path)} is a hardlink to ${JSON.stringify(h.linkname)}, which is neither earlier in the layer nor in the layers below`,
      {
        hint: 'the layer tar is incomplete, or it is applied onto the wrong parent',
      },
    );
  }

  /**
   * Is the hardlink target in the layer dir? Walks its parents without creating anything; a
   * symlinked parent is refused, a non-directory parent means the name cannot exist.
   */
  private lookupInLayer(targetRel: string, h: TarHeader): 'present' | 'absent' | 'shadowed' {
    const parts = targetRel.split('/');
    let dir = '';
    for (let i = 0; i < parts.length - 1; i++) {
      dir = joinRel(dir, parts[i]!);
      if (this.knownDirs.has(dir)) continue;
      let st: Stats;
      try {
        st = lstatSync(this.abs(dir));
      } catch (e) {
        if (isMissing(e)) return 'absent';
        throw e;
      }
      if (st.isSymbolicLink())
        throw new UnsafeEntryError(h.path, `hardlink target ${JSON.stringify(h.linkname)} goes through the symlink ${JSON.stringify(dir)}`);
      if (!st.isDirectory()) return 'shadowed';
      this.knownDirs.set(dir, { gid: st.gid, plainCreate: !hasDefaultAcl(this.abs(dir)) });
    }
    let st: Stats;
    try {
      st = lstatSync(this.abs(targetRel));
    } catch (e) {
      if (isMissing(e)) return 'absent';
      throw e;
    }
    if (st.isDirectory())
      throw new UnionctlError(
        'BAD_TAR',
        `tar entry ${JSON.stringify(h.path)} is a hardlink to the directory ${JSON.stringify(h.linkname)}`,
      );
    if (this.converter.isWhiteout(st)) return 'shadowed';
    return 'present';
  }

  /** This layer deleted the name or made one of its dirs opaque: the lower copies do not show. */
  private hiddenHere(targetRel: string): boolean {
    for (let rel = targetRel; ; rel = parentOf(rel)) {
      if (this.whitedOut.has(rel) || (rel !== targetRel && this.opaqueDirs.has(rel))) return true;
      if (rel === '') return false;
    }
  }

  /**
   * What the lower layers' merged view shows at `rel`, if it is a directory (`wantDir`) or not.
   * `entry` names the tar entry for errors: a symlink on the way to a hardlink target is refused;
   * when looking for a directory, it just means there is none.
   */
  private findInLowers(rel: string, entry: string, wantDir = false): { path: string; st: BigIntStats } | undefined {
    const hit = this.lowers?.lookup(rel);
    if (hit === undefined) return undefined;
    if (hit.kind === 'hidden' && hit.st?.isSymbolicLink() && !wantDir) {
      throw new UnsafeEntryError(entry, `its hardlink target goes through a symlink in a lower layer (${hit.at})`);
    }
    return hit.kind === 'found' && hit.st.isDirectory() === wantDir ? hit : undefined;
  }

  /**
   * Copies a lower layer's file into this layer (like an overlayfs copy-up), with its metadata.
   * Its parent dirs were made by ensureDir, which takes their metadata from below too.
   */
  private copyUp(rel: string, found: { path: string; st: BigIntStats }): void {
    const dest = this.abs(rel);
    const meta = readMetadata(found.path, found.st);
    let kind: InodeKind = 'file';
    if (found.st.isFile()) copyFileSync(found.path, dest, fsConstants.COPYFILE_EXCL);
    else if (found.st.isSymbolicLink()) {
      symlinkSync(readlinkSync(found.path), dest);
      kind = 'symlink';
    } else {
      const type = found.st.isCharacterDevice() ? S_IFCHR : found.st.isBlockDevice() ? S_IFBLK : S_IFIFO;
      mknod(dest, type | 0o600, major(Number(found.st.rdev)), minor(Number(found.st.rdev)));
      kind = 'other';
    }
    applyMetadata(dest, { ...meta, xattrs: withoutOverlayXattrs(meta.xattrs) }, kind);
  }

  /**
   * A directory the tar needs but does not hold. Docker makes it 0755 root; with lower layers we
   * take the metadata of the dir they show, so the merged view keeps it (overlayfs shows the
   * upper dir's metadata).
   */
  private makeImplicitDir(rel: string, path: string, entry: string): void {
    mkdirSync(path, 0o755);
    const below = this.findInLowers(rel, entry, true);
    if (below === undefined) {
      if ((lstatSync(path).mode & 0o7777) !== 0o755) chmodSync(path, 0o755); // the umask or a default ACL had a say
      return;
    }
    const meta = readMetadata(below.path, below.st);
    applyMetadata(path, { ...meta, xattrs: withoutOverlayXattrs(meta.xattrs) }, 'dir');
    this.dirTimes.set(rel, { atime: meta.atime ?? meta.mtime, mtime: meta.mtime });
  }

  // ---- directories and removal ----------------------------------------------------------------

  /**
   * Makes sure `rel` is a real directory inside the layer, creating missing ones (0755, owned by
   * us, like Docker's MkdirAll) and refusing a symlink anywhere on the way.
   */
  private ensureDir(rel: string, entry: string): DirInfo {
    const known = this.knownDirs.get(rel);
    if (known !== undefined) return known;
    const parent = this.ensureDir(parentOf(rel), entry);
    const path = this.abs(rel);
    let st: Stats | undefined;
    try {
      st = lstatSync(path);
    } catch (e) {
      if (!isMissing(e)) throw e;
    }
    let info: DirInfo;
    if (st === undefined) {
      this.makeImplicitDir(rel, path, entry);
      st = lstatSync(path); // its gid may come from a setgid parent or a grpid mount
      info = { gid: st.gid, plainCreate: parent.plainCreate };
    } else if (st.isDirectory()) {
      info = { gid: st.gid, plainCreate: !hasDefaultAcl(path) };
    } else if (st.isSymbolicLink()) {
      throw new UnsafeEntryError(
        entry,
        `its parent directory ${JSON.stringify(rel)} is a symlink in the layer; unionctl never writes through symlinks`,
      );
    } else {
      throw new UnionctlError(
        'BAD_TAR',
        `tar entry ${JSON.stringify(entry)}: its parent ${JSON.stringify(rel)} is not a directory in the layer`,
        {
          hint: 'the tar must replace that file with a directory entry first',
        },
      );
    }
    this.knownDirs.set(rel, info);
    return info;
  }

  /** Removes whatever is at `rel` (recursively for a dir; never following symlinks). Its parent must be verified. */
  private removePath(rel: string): void {
    const path = this.abs(rel);
    let st: Stats;
    try {
      st = lstatSync(path);
    } catch (e) {
      if (isMissing(e)) return;
      throw e;
    }
    if (st.isDirectory()) {
      rmSync(path, { recursive: true, force: true });
      this.forgetDir(rel);
    } else {
      unlinkSync(path);
    }
  }

  /** A directory went away: forget it and everything below it in the caches. */
  private forgetDir(rel: string): void {
    const below = `${rel}/`;
    for (const map of [this.knownDirs, this.dirTimes] as Array<Map<string, unknown>>) {
      for (const key of map.keys()) if (key === rel || key.startsWith(below)) map.delete(key);
    }
  }

  private markWritten(rel: string): void {
    if (this.written === undefined) return;
    for (let p = rel; p !== '' && !this.written.has(p); p = parentOf(p)) this.written.add(p);
  }

  // ---- metadata helpers ------------------------------------------------------------------------

  /**
   * The entry's xattrs, but never overlayfs's own (trusted.overlay.*, user.overlay.*, and
   * fuse-overlayfs's): set by a tar, a redirect would make a directory show another directory of
   * a lower layer, a metacopy or origin a file another file's data. They are dropped (and
   * reported): opaque comes from `.wh..wh..opq` only, which the converter turns into the format's
   * own marker.
   */
  private setXattrs(path: string, h: TarHeader): void {
    let xattrs = h.xattrs;
    for (const name of xattrs.keys()) {
      if (!isUnionBookkeepingXattr(name)) continue;
      xattrs = new Map([...h.xattrs].filter(([n]) => !isUnionBookkeepingXattr(n)));
      for (const n of h.xattrs.keys()) if (isUnionBookkeepingXattr(n)) this.droppedXattrs.push(`${n} on ${JSON.stringify(h.path)}`);
      break;
    }
    applyXattrs(path, xattrs, (name) => this.unsupportedXattrs.add(name));
  }

  private setTimesNoFollow(path: string, h: TarHeader): void {
    const atime = accessTime(h);
    if (wholeSeconds(h.mtime, atime)) lutimesSync(path, atime.sec, h.mtime.sec);
    else applyTimes(path, h.mtime, atime);
  }
}

/**
 * Node's futimes/lutimes take seconds as a double: exact for whole seconds, but a negative time
 * silently becomes "now". Anything else goes through utimensat with nanoseconds.
 */
function wholeSeconds(mtime: Timespec, atime: Timespec): boolean {
  return mtime.nsec === 0 && atime.nsec === 0 && mtime.sec >= 0 && atime.sec >= 0;
}

function writeFully(fd: number, chunk: Buffer): void {
  let done = 0;
  while (done < chunk.length) done += writeSync(fd, chunk, done, chunk.length - done);
}

function hasDefaultAcl(path: string): boolean {
  try {
    return lgetxattr(path, ACL_DEFAULT) !== undefined;
  } catch {
    return false; // no ACL support: no default ACL
  }
}

/** A copied-up inode must not carry the lower layer's overlay bookkeeping (opaque, redirect, …). */
function withoutOverlayXattrs(xattrs: Map<string, Buffer> | undefined): Map<string, Buffer> | undefined {
  if (xattrs === undefined) return undefined;
  return new Map([...xattrs].filter(([name]) => !isUnionBookkeepingXattr(name)));
}

/** glibc's major()/minor() for a 64-bit dev_t held in a double (exact below 2^53). */
function major(dev: number): number {
  return ((dev >>> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & 0xfffff000);
}
function minor(dev: number): number {
  return (dev & 0xff) | ((dev >>> 12) & 0xfff00);
}
