/** Shared shapes of the tar engine. */

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

/** seconds + nanoseconds since the epoch */
export interface Timespec {
  sec: number;
  nsec: number;
}

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
