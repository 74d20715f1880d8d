/**
 * Whiteouts: how a layer says "deleted here" and "nothing of this dir from below shows", in the
 * layer tar (OCI) and in each whiteout format's layer directories (DESIGN.md §3). Everything the
 * archive code knows about them is here: the names and values once, and one converter per format.
 *
 * In a layer tar (every format reads and writes the same):
 * - `dir/.wh.<name>`: <name> is deleted in this layer;
 * - `dir/.wh..wh..opq`: dir is opaque, only this layer's own entries of it show;
 * - any other `.wh..wh.*` name (`.wh..wh.plnk/`, `.wh..wh.orph/`, `.wh..wh.aufs`) is aufs bookkeeping.
 *
 * On disk, per converter:
 * - overlay: a char device 0/0 named <name>; trusted.overlay.opaque=y on the dir (ignored by the
 *   kernel on a layer's root dir, see finishApply);
 * - aufs: the tar's marker files kept as they are (`.wh.<name>`, `.wh..wh..opq`, bookkeeping);
 * - plain: no markers at all: the layer dir is a complete tree, deletions are carried out for real.
 */
import { lstatSync, readdirSync, type BigIntStats, type Stats } from 'node:fs';
import { UnionctlError } from '../errors.js';
import { lchown, lsetxattr, mknod, S_IFCHR } from '../sys/index.js';
import { getXattrIfSupported, mtimeSeconds } from './metadata.js';
import type { TarHeader, WhiteoutFormat } from './types.js';

// ---------------------------------------------------------------------------------------------
// The names and values
// ---------------------------------------------------------------------------------------------

export const WHITEOUT_PREFIX = '.wh.';
/** Prefix of the opaque marker and of aufs's bookkeeping names. */
export const WHITEOUT_META_PREFIX = '.wh..wh.';
export const WHITEOUT_OPAQUE = '.wh..wh..opq';
/** aufs keeps the other names of hardlinked files here; old aufs-made layers link to it. */
export const AUFS_PLINK_DIR = '.wh..wh.plnk';
/** overlayfs's own xattrs (opaque, redirect, origin, metacopy, …). */
export const OVERLAY_XATTR_PREFIX = 'trusted.overlay.';
/** The same, for an overlay mounted with userxattr (in a user namespace). */
export const OVERLAY_USER_XATTR_PREFIX = 'user.overlay.';
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
/** fuse-overlayfs's own xattrs in an upper dir it wrote (origin of a copied-up file, …). */
export const FUSE_OVERLAYFS_XATTR_PREFIX = 'user.fuseoverlayfs.';

const OPAQUE_VALUE = Buffer.from('y');

/** What a `.wh.` name stands for. */
export type MarkerKind = 'whiteout' | 'opaque' | 'bookkeeping';

/** What a single name (one path component) is in a layer tar; undefined for an ordinary name. */
export function markerKind(name: string): MarkerKind | undefined {
  if (!name.startsWith(WHITEOUT_PREFIX)) return undefined;
  if (!name.startsWith(WHITEOUT_META_PREFIX)) return 'whiteout';
  return name === WHITEOUT_OPAQUE ? 'opaque' : 'bookkeeping';
}

/** A `.wh..wh.` name (the opaque marker or aufs bookkeeping): never part of a merged view. */
export function isMetaName(name: string): boolean {
  return name.startsWith(WHITEOUT_META_PREFIX);
}

/** `.wh.<name>` → <name> (for a name whose markerKind is 'whiteout'). */
export function whitedOutName(marker: string): string {
  return marker.slice(WHITEOUT_PREFIX.length);
}

/** The path of the whiteout of a path: `a/b` → `a/.wh.b`, `/a/b` → `/a/.wh.b`, `b` → `.wh.b`. */
export function whiteoutPath(path: string): string {
  const slash = path.lastIndexOf('/');
  return `${path.slice(0, slash + 1)}${WHITEOUT_PREFIX}${path.slice(slash + 1)}`;
}

/** A relative tar name with aufs bookkeeping in any component (`.wh..wh.plnk/x`), the opaque marker as the last one excepted. */
export function isBookkeepingPath(rel: string): boolean {
  if (!rel.includes(WHITEOUT_META_PREFIX)) return false;
  const parts = rel.split('/');
  return parts.some((p, i) => isMetaName(p) && !(p === WHITEOUT_OPAQUE && i === parts.length - 1));
}

/**
 * overlayfs's (trusted.overlay.*, or user.overlay.* under userxattr) and fuse-overlayfs's own
 * xattrs: meaningless outside the union that wrote them, and dangerous inside one — a directory
 * with overlay.redirect shows another directory of the layers below, overlay.metacopy /
 * overlay.origin make a file's data come from elsewhere. Never exported, never applied from a tar.
 */
export function isUnionBookkeepingXattr(name: string): boolean {
  return (
    name.startsWith(OVERLAY_XATTR_PREFIX) || name.startsWith(OVERLAY_USER_XATTR_PREFIX) || name.startsWith(FUSE_OVERLAYFS_XATTR_PREFIX)
  );
}

/** An empty regular file header: the shape of every `.wh.` entry. */
export function markerHeader(name: string, fields: { mode: number; uid: number; gid: number; mtime: number }): TarHeader {
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

/** overlayfs's whiteout: a character device 0/0. */
export function isOverlayWhiteout(st: Stats | BigIntStats): boolean {
  return st.isCharacterDevice() && (st.rdev === 0 || st.rdev === 0n);
}

function exists(path: string): boolean {
  return lstatSync(path, { throwIfNoEntry: false }) !== undefined;
}

// ---------------------------------------------------------------------------------------------
// The converters
// ---------------------------------------------------------------------------------------------

/**
 * One whiteout format: tar markers → disk (apply), disk → tar markers (export), and reading a
 * layer dir of the format (the union view, change lists). Paths are absolute unless named `tar…`.
 */
export interface WhiteoutConverter {
  readonly format: WhiteoutFormat;
  /**
   * The layer dir holds the layer's whole tree ('plain'): deletions and opaque dirs are carried
   * out for real, nothing of a layer below it shows, and its changes are found by comparing it
   * with its parent's tree.
   */
  readonly fullTree: boolean;

  // ---- tar → disk (apply) ----

  /**
   * The tar said `.wh.<name>` (kind 'whiteout'; `path` is <name>, already removed from the layer)
   * or `.wh..wh..opq` (kind 'opaque'; `path` is the dir): writes what the format keeps on disk,
   * chowning a new inode to the entry's owner when `chown`. Returns whether the tar entry itself
   * is also to be written into the layer as it is.
   */
  fromTar(kind: 'whiteout' | 'opaque', path: string, h: TarHeader, chown: boolean): boolean;
  /** After the whole tar went into `dest`, over `lowerDirs` (nearest first). */
  finishApply(dest: string, lowerDirs: readonly string[]): void;

  // ---- reading a layer dir ----

  /** What a name in a layer dir is when the format keeps markers as files; undefined: content. */
  markerKind(name: string): MarkerKind | undefined;
  /** The inode is the whiteout of its own name. */
  isWhiteout(st: Stats | BigIntStats): boolean;
  /** `name` in the layer dir `dir` is whited out by a marker file beside it. */
  hasWhiteoutMarker(dir: string, name: string): boolean;
  /** Nothing of the directory `dir` from the layers below shows; `root`: it is the layer's root dir. */
  isOpaque(dir: string, root: boolean): boolean;

  // ---- disk → tar (export) ----

  /** The `.wh.` entry that stands for the inode `st` (to be named `tarPath`) when it is a whiteout; else undefined. */
  whiteoutToTar(tarPath: string, st: BigIntStats): TarHeader | undefined;
  /** The marker entry to write after the directory `dir` (named `tarPath`) when it is opaque and the format keeps no marker file. */
  opaqueToTar(dir: string, tarPath: string, st: BigIntStats): TarHeader | undefined;
}

/**
 * The plain format, and what the others change of it: a complete tree with no markers on disk
 * (devicemapper, vfs, overlay v1 image layers). Deletions and opaque dirs are carried out for real.
 */
class PlainConverter implements WhiteoutConverter {
  readonly format: WhiteoutFormat = 'plain';
  readonly fullTree: boolean = true;

  fromTar(_kind: 'whiteout' | 'opaque', _path: string, _h: TarHeader, _chown: boolean): boolean {
    return false;
  }

  finishApply(_dest: string, _lowerDirs: readonly string[]): void {}

  markerKind(_name: string): MarkerKind | undefined {
    return undefined;
  }

  isWhiteout(_st: Stats | BigIntStats): boolean {
    return false;
  }

  hasWhiteoutMarker(_dir: string, _name: string): boolean {
    return false;
  }

  isOpaque(_dir: string, _root: boolean): boolean {
    return false;
  }

  whiteoutToTar(_tarPath: string, _st: BigIntStats): TarHeader | undefined {
    return undefined;
  }

  opaqueToTar(_dir: string, _tarPath: string, _st: BigIntStats): TarHeader | undefined {
    return undefined;
  }
}

/** overlay, overlay2: char device 0/0 for a deletion, trusted.overlay.opaque=y on an opaque dir. */
class OverlayConverter extends PlainConverter {
  override readonly format = 'overlay';
  override readonly fullTree = false;

  override fromTar(kind: 'whiteout' | 'opaque', path: string, h: TarHeader, chown: boolean): boolean {
    if (kind === 'opaque') {
      lsetxattr(path, OVERLAY_OPAQUE_XATTR, OPAQUE_VALUE);
    } else {
      mknod(path, S_IFCHR, 0, 0);
      if (chown) lchown(path, h.uid, h.gid);
    }
    return false;
  }

  /**
   * overlayfs ignores trusted.overlay.opaque on a layer's root dir (the root of the union is built
   * from every layer's root, opaque or not). So a layer whose tar made the root opaque
   * (`.wh..wh..opq` at the top) also gets a 0/0 whiteout for every top-level name of the layers
   * below that it does not write itself; the xattr stays, as Docker leaves it.
   */
  override finishApply(dest: string, lowerDirs: readonly string[]): void {
    if (lowerDirs.length === 0 || !hasOpaqueXattr(dest)) return;
    const lowerNames = new Set(lowerDirs.flatMap((d) => readdirSync(d)));
    for (const name of lowerNames) {
      const path = `${dest}/${name}`;
      if (lstatSync(path, { throwIfNoEntry: false }) === undefined) mknod(path, S_IFCHR, 0, 0);
    }
  }

  override isWhiteout(st: Stats | BigIntStats): boolean {
    return isOverlayWhiteout(st);
  }

  override isOpaque(dir: string, root: boolean): boolean {
    return !root && hasOpaqueXattr(dir);
  }

  /** A char device 0/0 → `.wh.<name>`, mode 0600 with the device's owner and mtime. */
  override whiteoutToTar(tarPath: string, st: BigIntStats): TarHeader | undefined {
    if (!isOverlayWhiteout(st)) return undefined;
    return markerHeader(whiteoutPath(tarPath), { mode: 0o600, uid: Number(st.uid), gid: Number(st.gid), mtime: mtimeSeconds(st) });
  }

  /** Docker writes the marker right after the directory, with the directory's owner and permission bits and a zero mtime. */
  override opaqueToTar(dir: string, tarPath: string, st: BigIntStats): TarHeader | undefined {
    if (!hasOpaqueXattr(dir)) return undefined;
    return markerHeader(`${tarPath}/${WHITEOUT_OPAQUE}`, {
      mode: Number(st.mode & 0o777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: 0,
    });
  }
}

function hasOpaqueXattr(dir: string): boolean {
  const value = getXattrIfSupported(dir, OVERLAY_OPAQUE_XATTR);
  return value !== undefined && value.equals(OPAQUE_VALUE);
}

/** aufs: the tar's `.wh.` files are the format; they are kept, exported and read as they are. */
class AufsConverter extends PlainConverter {
  override readonly format = 'aufs';
  override readonly fullTree = false;

  override fromTar(): boolean {
    return true;
  }

  override markerKind(name: string): MarkerKind | undefined {
    return markerKind(name);
  }

  override hasWhiteoutMarker(dir: string, name: string): boolean {
    return exists(`${dir}/${WHITEOUT_PREFIX}${name}`);
  }

  override isOpaque(dir: string): boolean {
    return exists(`${dir}/${WHITEOUT_OPAQUE}`);
  }
}

const CONVERTERS: Readonly<Record<WhiteoutFormat, WhiteoutConverter>> = {
  overlay: new OverlayConverter(),
  aufs: new AufsConverter(),
  plain: new PlainConverter(),
};

/** The converter of a whiteout format. */
export function whiteoutConverter(format: WhiteoutFormat): WhiteoutConverter {
  const converter = CONVERTERS[format] as WhiteoutConverter | undefined;
  if (converter === undefined) {
    throw new UnionctlError('USAGE', `unknown whiteout format ${JSON.stringify(format)}`, {
      hint: `use one of ${Object.keys(CONVERTERS).join(', ')}`,
    });
  }
  return converter;
}
