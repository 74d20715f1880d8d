/** Shared shapes of the tar engine, and what the layer-level archive functions return. */

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

import type { Timespec } from '../sys/index.js';

export type { Timespec };

/** One tar header after PAX / GNU long-name records were folded in. */
export interface TarHeader {
  /** Path as written in the archive after long-name resolution, not normalised ("./a/", "a/b"). */
  path: string;
  type: TarEntryType;
  /** Permission bits incl. setuid/setgid/sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Content bytes (regular files only; 0 otherwise). */
  size: number;
  mtime: Timespec;
  atime?: Timespec;
  /** Target of a symlink or hardlink. */
  linkname: string;
  devmajor: number;
  devminor: number;
  uname?: string;
  gname?: string;
  /** Extended attributes, binary-safe (SCHILY.xattr.* / LIBARCHIVE.xattr.*). */
  xattrs: Map<string, Buffer>;
}

/** Metadata to put on an inode (used by apply and by tree copies). */
export interface InodeMetadata {
  mode: number;
  uid: number;
  gid: number;
  mtime: Timespec;
  atime?: Timespec;
  xattrs?: Map<string, Buffer>;
}

/** How a layer directory stores deletions and opaque directories on disk (DESIGN.md §3). */
export type WhiteoutFormat =
  | 'overlay' // char device 0/0 named <name>; xattr trusted.overlay.opaque=y on the dir
  | 'aufs' // regular file .wh.<name> kept as is; file .wh..wh..opq in the dir
  | 'plain'; // the layer holds a full tree: deleted files are really removed

export type ChangeKind = 'A' | 'C' | 'D';

/** One entry of a change list. `path` is absolute inside the layer ("/etc/passwd"). */
export interface Change {
  path: string;
  kind: ChangeKind;
}

/** What applying a layer tar reports. */
export interface ApplyResult {
  /** Bytes of file content the layer tar carried (Docker's ApplyDiff size). */
  size: number;
  /** "sha256:<hex>" of the uncompressed tar stream. */
  diffId: string;
  /** Number of tar entries read. */
  entries: number;
}
