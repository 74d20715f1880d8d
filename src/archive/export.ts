/**
 * Layer export: turn a tree on disk into an OCI/Docker layer tar.
 *
 * - exportChanges: the naive export (Docker's ExportChanges): the entries of a change list, read
 *   from the merged view, deletions as `.wh.<name>` files.
 * - exportLayerDir: the native export of a driver's own layer directory, converting the driver's
 *   whiteouts back to `.wh.` entries (Docker's TarWithOptions with a whiteout converter).
 * - changesFromLayerDir: the native change list of such a directory against its lower layers.
 *
 * What every entry looks like (Docker's tarAppender): numeric owners, no uname/gname, permission
 * bits only, mtime in whole seconds, directories named with a trailing '/', xattrs as
 * SCHILY.xattr records, a second path to an inode already written becomes a hardlink entry to the
 * first path, sockets are skipped (a tar cannot hold one).
 */
import { type BigIntStats, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { lgetxattr, llistxattr } from '../sys/index.js';
import {
  assertDirectory,
  changesBetween,
  childPath,
  compareBytes,
  isDirStat,
  lstatIfExists,
  sortChanges,
  statDifferent,
} from './changes.js';
import { mtimeSeconds } from './metadata.js';
import { LayerStack } from './layer-stack.js';
import { TarWriter } from './tar-writer.js';
import type { Change, TarEntryType, TarHeader, WhiteoutFormat } from './types.js';
import {
  isUnionBookkeepingXattr,
  markerHeader,
  whiteoutConverter,
  whiteoutPath,
  whitedOutName,
  type WhiteoutConverter,
} from './whiteout.js';

const S_IFMT = 0o170000n;
const TYPE_BY_MODE = new Map<bigint, TarEntryType>([
  [0o100000n, 'file'],
  [0o040000n, 'dir'],
  [0o120000n, 'symlink'],
  [0o020000n, 'char'],
  [0o060000n, 'block'],
  [0o010000n, 'fifo'],
]);

// ---------------------------------------------------------------------------------------------
// Entries from inodes
// ---------------------------------------------------------------------------------------------

/** The tar type of an inode; undefined for sockets, which no tar can hold. */
function entryType(st: BigIntStats): TarEntryType | undefined {
  return TYPE_BY_MODE.get(st.mode & S_IFMT);
}

/** glibc's major()/minor() of a dev_t. */
function deviceNumbers(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return { major: Number(major), minor: Number(minor) };
}

/**
 * Which xattrs leave the machine in an exported layer:
 * - trusted.overlay.* is overlayfs's own bookkeeping (opaque, redirect, origin, metacopy): it is
 *   converted (opaque) or meaningless elsewhere, and overlayfs refuses to let a layer carry it;
 * - user.fuseoverlayfs.* is fuse-overlayfs's own bookkeeping (origin of a copied-up file, …) in
 *   an upper dir it wrote (the aufs driver's FUSE mounts);
 * - security.selinux is the host's label for the file: Docker and containerd never export it, the
 *   runtime labels the container's files itself.
 */
function isExportedXattr(name: string): boolean {
  return !isUnionBookkeepingXattr(name) && name !== 'security.selinux';
}

/**
 * A VFS_CAP_REVISION_3 file capability carries the root uid of the user namespace it was set in,
 * which means nothing outside this machine: like Docker, export it as revision 2 (the same
 * capability sets, without the root id).
 */
function portableCapability(value: Buffer): Buffer {
  const VERSION_OFFSET = 3;
  const REVISION_2_SIZE = 20;
  if (value.length > VERSION_OFFSET && value[VERSION_OFFSET] === 3) {
    const v2 = Buffer.from(value.subarray(0, REVISION_2_SIZE));
    v2[VERSION_OFFSET] = 2;
    return v2;
  }
  return value;
}

function exportedXattrs(path: string): Map<string, Buffer> {
  const xattrs = new Map<string, Buffer>();
  for (const name of llistxattr(path).sort(compareBytes)) {
    if (!isExportedXattr(name)) continue;
    const value = lgetxattr(path, name);
    if (value === undefined) continue; // removed since the listing
    xattrs.set(name, name === 'security.capability' ? portableCapability(value) : value);
  }
  return xattrs;
}

/** The header of the inode at `diskPath`, to be stored as `name` (no hardlink detection here). */
function headerFromInode(diskPath: string, name: string, st: BigIntStats, type: TarEntryType, read: { xattrs: boolean }): TarHeader {
  const device = type === 'char' || type === 'block' ? deviceNumbers(st.rdev) : { major: 0, minor: 0 };
  return {
    path: name,
    type,
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: type === 'file' ? Number(st.size) : 0,
    mtime: { sec: mtimeSeconds(st), nsec: 0 },
    linkname: type === 'symlink' ? readlinkSync(diskPath) : '',
    devmajor: device.major,
    devminor: device.minor,
    xattrs: read.xattrs ? exportedXattrs(diskPath) : new Map(),
  };
}

/** Writes inodes into a TarWriter, turning a second path to an inode into a hardlink entry. */
class InodeArchiver {
  /** "dev:ino" → the archive name the inode was first written under. */
  private readonly firstNames = new Map<string, string>();

  constructor(readonly writer: TarWriter) {}

  async add(diskPath: string, name: string, st: BigIntStats): Promise<void> {
    const type = entryType(st);
    if (type === undefined) return; // a socket
    if (type !== 'dir' && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const first = this.firstNames.get(key);
      if (first !== undefined) {
        // The inode's content and xattrs came with its first path; a link entry only names it.
        const link = headerFromInode(diskPath, name, st, type, { xattrs: false });
        await this.writer.addEntry({ ...link, type: 'hardlink', linkname: first, size: 0 });
        return;
      }
      this.firstNames.set(key, name);
    }
    const header = headerFromInode(diskPath, name, st, type, { xattrs: true });
    if (header.type === 'file' && header.size > 0) await this.writer.addFile(header, diskPath);
    else await this.writer.addEntry(header);
  }
}

/** Runs `produce` into the writer; a failure destroys the stream so its reader sees the error. */
function startProducing(writer: TarWriter, produce: () => Promise<void>): void {
  produce()
    .then(() => writer.finish())
    .catch((e: unknown) => {
      if (!writer.stream.destroyed) writer.stream.destroy(e as Error);
    });
}

// ---------------------------------------------------------------------------------------------
// Naive export
// ---------------------------------------------------------------------------------------------

export interface ExportChangesOptions {
  /**
   * mtime (seconds) of the `.wh.` entries of deletions. Docker uses the time of the export; pass a
   * fixed value to get the same bytes from the same changes.
   */
  whiteoutMtime?: number;
}

/**
 * The tar of `changes` taken from the tree `root` (Docker's ExportChanges): entries sorted by path
 * bytes; A and C entries as they are in `root` (the change list already holds the directories
 * above them, see changesBetween); D as an empty `.wh.<name>` file with mode 0 and owner 0:0.
 * An A/C entry that vanished from `root` since the changes were computed is left out, as Docker
 * does: a running container may still be changing the tree.
 */
export function exportChanges(root: string, changes: Change[], opts: ExportChangesOptions = {}): Readable {
  assertDirectory(root);
  const sorted = sortChanges([...changes]);
  const writer = new TarWriter();
  const archiver = new InodeArchiver(writer);
  const whiteoutMtime = opts.whiteoutMtime ?? Math.floor(Date.now() / 1000);
  startProducing(writer, async () => {
    for (const change of sorted) {
      if (change.path === '/' || change.path === '') continue;
      if (change.kind === 'D') {
        await writer.addEntry(markerHeader(whiteoutPath(change.path.slice(1)), { mode: 0, uid: 0, gid: 0, mtime: whiteoutMtime }));
        continue;
      }
      const diskPath = root + change.path;
      const st = lstatIfExists(diskPath);
      if (st === undefined) continue;
      await archiver.add(diskPath, change.path.slice(1), st);
    }
  });
  return writer.stream;
}

// ---------------------------------------------------------------------------------------------
// Native export of a layer directory
// ---------------------------------------------------------------------------------------------

function sortedNames(dir: string): string[] {
  return readdirSync(dir).sort(compareBytes);
}

async function exportDirEntries(dir: string, prefix: string, converter: WhiteoutConverter, archiver: InodeArchiver): Promise<void> {
  for (const name of sortedNames(dir)) {
    if (converter.markerKind(name) === 'bookkeeping') continue; // aufs's own files, never part of a layer's content
    const diskPath = `${dir}/${name}`;
    const archiveName = prefix + name;
    const st = lstatSync(diskPath, { bigint: true });
    // overlayfs (kernel >= 5.8) creates whiteouts as hardlinks of one shared 0/0 device, so they
    // are converted before the hardlink detection could turn them into links to each other.
    const whiteout = converter.whiteoutToTar(archiveName, st);
    if (whiteout !== undefined) {
      await archiver.writer.addEntry(whiteout);
      continue;
    }
    await archiver.add(diskPath, archiveName, st);
    if (!isDirStat(st)) continue;
    const opaque = converter.opaqueToTar(diskPath, archiveName, st);
    if (opaque !== undefined) await archiver.writer.addEntry(opaque);
    await exportDirEntries(diskPath, `${archiveName}/`, converter, archiver);
  }
}

/**
 * The tar of a layer directory in a driver's whiteout format, as an OCI layer (Docker's native
 * diff): depth first, names sorted by bytes, a directory before its children, the root itself not
 * included. The format's converter turns its whiteouts and opaque dirs into `.wh.` entries
 * (overlay: a char device 0/0 becomes `.wh.<name>`, an opaque dir is followed by
 * `<dir>/.wh..wh..opq`; aufs: the marker files are exported as they are, bookkeeping is skipped;
 * plain: everything as it is); trusted.overlay.* xattrs are never exported.
 */
export function exportLayerDir(dir: string, format: WhiteoutFormat): Readable {
  assertDirectory(dir);
  const writer = new TarWriter();
  const archiver = new InodeArchiver(writer);
  const converter = whiteoutConverter(format);
  startProducing(writer, () => exportDirEntries(dir.replace(/\/+$/, '') || '/', '', converter, archiver));
  return writer.stream;
}

// ---------------------------------------------------------------------------------------------
// Native change list of a layer directory
// ---------------------------------------------------------------------------------------------

/**
 * Walks one directory of the upper layer (`rel` absolute in the layer, "/" for its root) against
 * the lower layers' view; returns whether it appended anything.
 */
function layerDirChanges(upper: string, rel: string, lowers: LayerStack, out: Change[]): boolean {
  const converter = lowers.converter;
  const before = out.length;
  const present = new Set<string>();
  for (const name of readdirSync(upper + rel)) {
    const marker = converter.markerKind(name);
    if (marker !== undefined) {
      if (marker === 'whiteout') out.push({ path: childPath(rel, whitedOutName(name)), kind: 'D' });
      continue; // bookkeeping and the opaque marker are not entries; the marker is read below
    }
    const path = childPath(rel, name);
    const st = lstatIfExists(upper + path);
    if (st === undefined) continue;
    if (converter.isWhiteout(st)) {
      out.push({ path, kind: 'D' });
      continue;
    }
    present.add(name);
    entryChanges(upper, path, st, lowers, out);
  }
  if (converter.isOpaque(upper + rel, rel === '/')) {
    // Nothing of the lower layers shows through an opaque directory: what they had and this layer
    // does not have again is deleted.
    for (const name of lowers.children(rel.slice(1))) if (!present.has(name)) out.push({ path: childPath(rel, name), kind: 'D' });
  }
  return out.length > before;
}

/** One entry of the upper layer: A when the lower layers do not show it, else C (see below). */
function entryChanges(upper: string, path: string, st: BigIntStats, lowers: LayerStack, out: Change[]): void {
  const below = lowers.lookup(path.slice(1));
  if (below.kind !== 'found') {
    out.push({ path, kind: 'A' });
    if (isDirStat(st)) layerDirChanges(upper, path, lowers, out);
    return;
  }
  if (!isDirStat(st)) {
    // A non-directory is in the upper layer only because it was written, copied up or replaced.
    out.push({ path, kind: 'C' });
    return;
  }
  // A directory is copied up whenever something below it changes: it is a change itself only when
  // its own stat changed, or (as in changesBetween) when it contains changes.
  const own = statDifferent(below.st, st);
  if (own) out.push({ path, kind: 'C' });
  const inner = layerDirChanges(upper, path, lowers, out);
  if (!own && inner) out.push({ path, kind: 'C' }); // the list is sorted at the end
}

/**
 * The changes a layer directory in a whiteout format makes on top of its lower layers (nearest
 * first), sorted by path bytes: a whiteout of X in the format (aufs `.wh.X`, overlay a char device
 * 0/0 X) → D of X; a path the lower layers' view (LayerStack) does not show → A; else C
 * (directories only when their own stat changed or they contain changes); what the view shows in
 * a directory the layer made opaque and the layer does not have again → D.
 * A full-tree ('plain') layer directory is compared with its parent's tree (`lowerDirs[0]`) as
 * changesBetween does.
 */
export async function changesFromLayerDir(dir: string, format: WhiteoutFormat, lowerDirs: string[]): Promise<Change[]> {
  assertDirectory(dir);
  const lowers = new LayerStack(lowerDirs, format);
  if (lowers.converter.fullTree) return changesBetween(dir, lowerDirs[0]);
  const out: Change[] = [];
  layerDirChanges(dir, '/', lowers, out);
  return sortChanges(out);
}
