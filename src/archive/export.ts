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
  AUFS_META_PREFIX,
  assertDirectory,
  changesBetween,
  childPath,
  compareBytes,
  getXattrIfSupported,
  isDirStat,
  lstatIfExists,
  sortChanges,
  statDifferent,
} from './changes.js';
import { TarWriter } from './tar-writer.js';
import type { Change, TarEntryType, TarHeader, WhiteoutFormat } from './types.js';

const S_IFMT = 0o170000n;
const TYPE_BY_MODE = new Map<bigint, TarEntryType>([
  [0o100000n, 'file'],
  [0o040000n, 'dir'],
  [0o120000n, 'symlink'],
  [0o020000n, 'char'],
  [0o060000n, 'block'],
  [0o010000n, 'fifo'],
]);

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';
const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';

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

/** mtime truncated to whole seconds (floor, also before 1970). */
function mtimeSeconds(st: BigIntStats): number {
  const ns = st.mtimeNs;
  let sec = ns / 1_000_000_000n;
  if (ns < 0n && ns % 1_000_000_000n !== 0n) sec -= 1n;
  return Number(sec);
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
  return !name.startsWith('trusted.overlay.') && !name.startsWith('user.fuseoverlayfs.') && name !== 'security.selinux';
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

/** An empty regular file header: the shape of every `.wh.` entry. */
function markerHeader(name: string, fields: { mode: number; uid: number; gid: number; mtime: number }): TarHeader {
  return {
    path: name,
    type: 'file',
    mode: fields.mode,
    uid: fields.uid,
    gid: fields.gid,
    size: 0,
    mtime: { sec: fields.mtime, nsec: 0 },
    linkname: '',
    devmajor: 0,
    devminor: 0,
    xattrs: new Map(),
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

/** `/a/b` → `a/.wh.b` */
function whiteoutName(path: string): string {
  const slash = path.lastIndexOf('/');
  return `${path.slice(1, slash + 1)}${WHITEOUT_PREFIX}${path.slice(slash + 1)}`;
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
        await writer.addEntry(markerHeader(whiteoutName(change.path), { mode: 0, uid: 0, gid: 0, mtime: whiteoutMtime }));
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

/** overlayfs marks a deletion with a character device 0/0 of the deleted name. */
function isOverlayWhiteout(st: BigIntStats): boolean {
  return (st.mode & S_IFMT) === 0o020000n && st.rdev === 0n;
}

function isOverlayOpaque(dir: string): boolean {
  const value = getXattrIfSupported(dir, OVERLAY_OPAQUE_XATTR);
  return value !== undefined && value.length === 1 && value[0] === 0x79; // 'y'
}

/** aufs's own files (.wh..wh.plnk/, .wh..wh.orph/, .wh..wh.aufs): never part of a layer's content. */
function isAufsBookkeeping(name: string): boolean {
  return name.startsWith(AUFS_META_PREFIX) && name !== OPAQUE_MARKER;
}

function sortedNames(dir: string): string[] {
  return readdirSync(dir).sort(compareBytes);
}

async function exportDirEntries(dir: string, prefix: string, format: WhiteoutFormat, archiver: InodeArchiver): Promise<void> {
  for (const name of sortedNames(dir)) {
    if (format === 'aufs' && isAufsBookkeeping(name)) continue;
    const diskPath = `${dir}/${name}`;
    const archiveName = prefix + name;
    const st = lstatSync(diskPath, { bigint: true });
    // overlayfs (kernel >= 5.8) creates whiteouts as hardlinks of one shared 0/0 device, so they
    // are converted before the hardlink detection could turn them into links to each other.
    if (format === 'overlay' && isOverlayWhiteout(st)) {
      const fields = { mode: 0o600, uid: Number(st.uid), gid: Number(st.gid), mtime: mtimeSeconds(st) };
      await archiver.writer.addEntry(markerHeader(prefix + WHITEOUT_PREFIX + name, fields));
      continue;
    }
    await archiver.add(diskPath, archiveName, st);
    if (!isDirStat(st)) continue;
    if (format === 'overlay' && isOverlayOpaque(diskPath)) {
      // Docker writes the marker right after the directory, with the directory's owner and
      // permission bits and a zero mtime.
      const fields = { mode: Number(st.mode & 0o777n), uid: Number(st.uid), gid: Number(st.gid), mtime: 0 };
      await archiver.writer.addEntry(markerHeader(`${archiveName}/${OPAQUE_MARKER}`, fields));
    }
    await exportDirEntries(diskPath, `${archiveName}/`, format, archiver);
  }
}

/**
 * The tar of a layer directory in a driver's whiteout format, as an OCI layer (Docker's native
 * diff): depth first, names sorted by bytes, a directory before its children, the root itself not
 * included.
 * - 'overlay': a char device 0/0 becomes `.wh.<name>` (mode 0600, the device's owner and mtime);
 *   a directory with trusted.overlay.opaque=y is followed by `<dir>/.wh..wh..opq`;
 *   trusted.overlay.* xattrs are never exported.
 * - 'aufs': `.wh.` files are exported as they are, aufs bookkeeping (`.wh..wh.plnk`, …) is
 *   skipped, `.wh..wh..opq` is exported.
 * - 'plain': everything as it is.
 */
export function exportLayerDir(dir: string, format: WhiteoutFormat): Readable {
  assertDirectory(dir);
  const writer = new TarWriter();
  const archiver = new InodeArchiver(writer);
  startProducing(writer, () => exportDirEntries(dir.replace(/\/+$/, '') || '/', '', format, archiver));
  return writer.stream;
}

// ---------------------------------------------------------------------------------------------
// Native change list of a layer directory
// ---------------------------------------------------------------------------------------------

/**
 * Looks a path up in a stack of layer directories in a whiteout format, nearest first: what the
 * union of those layers shows at that path. Good enough for change lists: whiteouts and opaque
 * markers of the path's own directory are honoured, those of directories further up are not.
 */
class LowerLayers {
  constructor(
    private readonly dirs: string[],
    private readonly format: WhiteoutFormat,
  ) {}

  /** The stat of what the lower layers show at `path`, or undefined. */
  lookup(path: string): BigIntStats | undefined {
    const { parent, name } = splitPath(path);
    for (const layer of this.dirs) {
      if (this.format === 'aufs' && lstatIfExists(layer + childPath(parent, WHITEOUT_PREFIX + name))) return undefined;
      const st = lstatIfExists(layer + path);
      if (st !== undefined) return this.format === 'overlay' && isOverlayWhiteout(st) ? undefined : st;
      if (this.isOpaque(layer, parent)) return undefined;
    }
    return undefined;
  }

  /** The names the lower layers show in directory `path`. */
  children(path: string): Set<string> {
    const names = new Set<string>();
    const hidden = new Set<string>();
    for (const layer of this.dirs) {
      const dir = layer + path;
      const st = lstatIfExists(dir);
      if (st !== undefined && !isDirStat(st)) break; // a non-directory here hides the layers below
      if (st !== undefined) {
        const own = this.visibleNames(dir, hidden);
        for (const name of own) names.add(name);
        if (this.isOpaque(layer, path)) break;
      } else if (this.format === 'aufs') {
        const { parent, name } = splitPath(path);
        if (lstatIfExists(layer + childPath(parent, WHITEOUT_PREFIX + name))) break;
      }
    }
    return names;
  }

  /** The real names in one layer's directory; its whiteouts are added to `hidden` for layers below. */
  private visibleNames(dir: string, hidden: Set<string>): string[] {
    const visible: string[] = [];
    const whiteouts: string[] = [];
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const name = entry.name;
      if (this.format === 'aufs' && name.startsWith(WHITEOUT_PREFIX)) {
        if (!name.startsWith(AUFS_META_PREFIX)) whiteouts.push(name.slice(WHITEOUT_PREFIX.length));
      } else if (
        this.format === 'overlay' &&
        entry.isCharacterDevice() &&
        isOverlayWhiteout(lstatSync(`${dir}/${name}`, { bigint: true }))
      ) {
        whiteouts.push(name);
      } else if (!hidden.has(name)) {
        visible.push(name);
      }
    }
    for (const name of whiteouts) hidden.add(name);
    return visible;
  }

  private isOpaque(layer: string, dir: string): boolean {
    if (this.format === 'aufs') return lstatIfExists(layer + childPath(dir, OPAQUE_MARKER)) !== undefined;
    if (this.format === 'overlay') {
      const st = lstatIfExists(layer + dir);
      return st !== undefined && isDirStat(st) && isOverlayOpaque(layer + dir);
    }
    return false;
  }
}

function splitPath(path: string): { parent: string; name: string } {
  const slash = path.lastIndexOf('/');
  return { parent: slash === 0 ? '/' : path.slice(0, slash), name: path.slice(slash + 1) };
}

/** Walks one directory of the upper layer; returns whether it appended anything. */
function layerDirChanges(upper: string, rel: string, format: WhiteoutFormat, lowers: LowerLayers, out: Change[]): boolean {
  const before = out.length;
  const present = new Set<string>();
  for (const name of readdirSync(upper + rel)) {
    if (format === 'aufs' && name.startsWith(WHITEOUT_PREFIX)) {
      if (!name.startsWith(AUFS_META_PREFIX)) out.push({ path: childPath(rel, name.slice(WHITEOUT_PREFIX.length)), kind: 'D' });
      continue; // bookkeeping and the opaque marker are not entries; the marker is read below
    }
    const path = childPath(rel, name);
    const st = lstatIfExists(upper + path);
    if (st === undefined) continue;
    if (format === 'overlay' && isOverlayWhiteout(st)) {
      out.push({ path, kind: 'D' });
      continue;
    }
    present.add(name);
    entryChanges(upper, path, st, format, lowers, out);
  }
  if (rel !== '/' && isOpaqueInUpper(upper, rel, format)) {
    // Nothing of the lower layers shows through an opaque directory: what they had and this layer
    // does not have again is deleted.
    for (const name of lowers.children(rel)) if (!present.has(name)) out.push({ path: childPath(rel, name), kind: 'D' });
  }
  return out.length > before;
}

function isOpaqueInUpper(upper: string, dir: string, format: WhiteoutFormat): boolean {
  if (format === 'aufs') return lstatIfExists(upper + childPath(dir, OPAQUE_MARKER)) !== undefined;
  return format === 'overlay' && isOverlayOpaque(upper + dir);
}

/** One entry of the upper layer: A when the lower layers do not show it, else C (see below). */
function entryChanges(upper: string, path: string, st: BigIntStats, format: WhiteoutFormat, lowers: LowerLayers, out: Change[]): void {
  const lowerSt = lowers.lookup(path);
  if (lowerSt === undefined) {
    out.push({ path, kind: 'A' });
    if (isDirStat(st)) layerDirChanges(upper, path, format, lowers, out);
    return;
  }
  if (!isDirStat(st)) {
    // A non-directory is in the upper layer only because it was written, copied up or replaced.
    out.push({ path, kind: 'C' });
    return;
  }
  // A directory is copied up whenever something below it changes: it is a change itself only when
  // its own stat changed, or (as in changesBetween) when it contains changes.
  const own = statDifferent(lowerSt, st);
  if (own) out.push({ path, kind: 'C' });
  const inner = layerDirChanges(upper, path, format, lowers, out);
  if (!own && inner) out.push({ path, kind: 'C' }); // the list is sorted at the end
}

/**
 * The changes a layer directory in a whiteout format makes on top of its lower layers (nearest
 * first), sorted by path bytes: `.wh.X` (aufs) or a char device 0/0 X (overlay) → D of X; a path
 * the lower layers do not show → A; else C (directories only when their own stat changed or they
 * contain changes); the lower entries hidden by an opaque directory → D.
 * A 'plain' layer directory is a complete tree, so it is compared with its parent's tree
 * (`lowerDirs[0]`) as changesBetween does.
 */
export async function changesFromLayerDir(dir: string, format: WhiteoutFormat, lowerDirs: string[]): Promise<Change[]> {
  assertDirectory(dir);
  if (format === 'plain') return changesBetween(dir, lowerDirs[0]);
  const out: Change[] = [];
  layerDirChanges(dir, '/', format, new LowerLayers(lowerDirs, format), out);
  return sortChanges(out);
}
