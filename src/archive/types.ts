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

declare const leased: unique symbol;

/**
 * A chunk the archive engine lends rather than gives: a view into a buffer that is reused once
 * the stream has been read on. The digest ring behind openLayerStream's file reader is rewritten
 * about RING_BYTES (8 MiB, stream-digest.ts) further on; an image archive's member reader reuses
 * its ring 16 MiB on. So whoever holds one reads it before pulling that much more, or copies it
 * (`Buffer.from(chunk)`): the tar reader and applyLayer hold a chunk only while they parse or
 * write it, which is what keeps the hot import path free of copies.
 *
 * The brand is for the type checker only (at run time it is a plain Buffer): a function that
 * receives one says so in its signature. Stream data of the public API (index.ts) is never lent:
 * openLayerInput gives Buffers of their own and readTar gives views of the caller's own chunks;
 * only a TarTap's raw() is lent bytes, for the duration of the call.
 */
export type LeasedChunk = Buffer & { readonly [leased]: true };

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
