/**
 * Full-fidelity tree copy: vfs copies its parent's tree into a new layer with it, overlay (v1)
 * builds its hardlink farms with it.
 *
 * Every kind of inode is recreated (files, directories, symlinks, char/block devices, FIFOs and
 * sockets — a socket inode is made with mknod, it carries no connection), with owner, permission
 * bits (setuid/setgid/sticky too), all xattrs (trusted.* and security.capability included) and
 * atime/mtime to the nanosecond — the naive diff compares nanoseconds, so a copy that lost them
 * would make every file look changed. Directory times are set after their contents are written.
 * Paths that are hardlinks of each other in `src` are hardlinks of each other in `dest`.
 */
import {
  type BigIntStats,
  constants as fsConstants,
  copyFileSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  symlinkSync,
} from 'node:fs';
import { UnionctlError } from '../errors.js';
import { mknod } from '../sys/index.js';
import { applyMetadata, readMetadata } from './metadata.js';

export type CopyMode = 'copy' | 'reflink' | 'hardlink';

export interface CopyTreeOptions {
  /**
   * How regular files are copied:
   * - 'copy': a copy of the content through the kernel (copy_file_range, which xfs and btrfs
   *   may still answer by sharing extents: the result is an independent file either way);
   * - 'reflink': share the data blocks (FICLONE) where the filesystem can (btrfs, xfs with
   *   reflink), a plain copy where it cannot;
   * - 'hardlink': link the files of `src` (same inodes); everything else is still copied. `src`
   *   and `dest` must be on one filesystem.
   * Default 'copy'.
   */
  mode?: CopyMode;
}

const S_IFMT = 0o170000n;
const S_IFREG = 0o100000n;
const S_IFDIR = 0o040000n;
const S_IFLNK = 0o120000n;

/** What one copy shares across the whole walk. */
interface CopyContext {
  mode: CopyMode;
  /** "dev:ino" of a src inode with several links → the dest path it was first copied to. */
  copiedLinks: Map<string, string>;
}

/** glibc's major()/minor() of a dev_t. */
function deviceNumbers(rdev: bigint): [number, number] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return [Number(major), Number(minor)];
}

/**
 * Links `to` to the dest copy of an inode already copied (a hardlink inside src). Returns false
 * when this is the first path of the inode met, after remembering it.
 */
function linkToEarlierCopy(ctx: CopyContext, st: BigIntStats, to: string): boolean {
  if (st.nlink <= 1n) return false;
  const key = `${st.dev}:${st.ino}`;
  const earlier = ctx.copiedLinks.get(key);
  if (earlier === undefined) {
    ctx.copiedLinks.set(key, to);
    return false;
  }
  linkSync(earlier, to);
  return true;
}

function copyFileContent(ctx: CopyContext, from: string, to: string): void {
  // COPYFILE_FICLONE asks for a clone and falls back to copying by itself; COPYFILE_EXCL because
  // dest is new: an existing file there means the tree changed under us.
  const flags = fsConstants.COPYFILE_EXCL | (ctx.mode === 'reflink' ? fsConstants.COPYFILE_FICLONE : 0);
  copyFileSync(from, to, flags);
}

function copyDirContents(ctx: CopyContext, srcDir: string, destDir: string): void {
  for (const name of readdirSync(srcDir)) {
    const from = `${srcDir}/${name}`;
    const to = `${destDir}/${name}`;
    const st = lstatSync(from, { bigint: true });
    const type = st.mode & S_IFMT;
    if (type === S_IFDIR) {
      mkdirSync(to, { mode: 0o700 });
      copyDirContents(ctx, from, to);
      applyMetadata(to, readMetadata(from, st), 'dir'); // after the contents: writing them moved its mtime
      continue;
    }
    if (type === S_IFREG && ctx.mode === 'hardlink') {
      linkSync(from, to);
      continue;
    }
    if (linkToEarlierCopy(ctx, st, to)) continue;
    if (type === S_IFREG) {
      copyFileContent(ctx, from, to);
      applyMetadata(to, readMetadata(from, st), 'file');
    } else if (type === S_IFLNK) {
      symlinkSync(readlinkSync(from), to);
      applyMetadata(to, readMetadata(from, st), 'symlink');
    } else {
      const [major, minor] = deviceNumbers(st.rdev);
      mknod(to, Number(type) | 0o600, major, minor);
      applyMetadata(to, readMetadata(from, st), 'other');
    }
  }
}

/** dest must not exist (it is created) or be an empty directory. */
function prepareDest(dest: string): void {
  let st;
  try {
    st = lstatSync(dest);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    mkdirSync(dest, { mode: 0o700 });
    return;
  }
  if (!st.isDirectory() || readdirSync(dest).length > 0) {
    throw new UnionctlError('EXISTS', `cannot copy a tree into ${dest}: it exists and is not an empty directory`, {
      hint: 'copy into a new path or remove what is there first',
    });
  }
}

/**
 * Copies the tree `src` to `dest` with every inode kind, owner, mode, xattr, time and hardlink
 * (see the top of this file). The root of `dest` gets the metadata of the root of `src`.
 */
export async function copyTree(src: string, dest: string, opts: CopyTreeOptions = {}): Promise<void> {
  const srcSt = lstatSync(src, { bigint: true, throwIfNoEntry: false });
  if (srcSt === undefined || (srcSt.mode & S_IFMT) !== S_IFDIR) {
    throw new UnionctlError('NOT_FOUND', `cannot copy ${src}: it is not a directory`);
  }
  prepareDest(dest);
  const ctx: CopyContext = { mode: opts.mode ?? 'copy', copiedLinks: new Map() };
  copyDirContents(ctx, src, dest);
  applyMetadata(dest, readMetadata(src, srcSt), 'dir');
}
