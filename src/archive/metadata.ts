/**
 * Inode metadata: owner, mode, xattrs and times, read from one inode and put on another. Shared by
 * the layer apply (from tar headers) and tree copies (from a source inode).
 *
 * The order matters: chown first, because chown clears setuid/setgid and security.capability;
 * then chmod (never on a symlink: chmod follows it); then xattrs; times last, because every other
 * change is what bumps them.
 */
import { chmodSync, lstatSync, type BigIntStats, type Stats } from 'node:fs';
import { SysCallError } from '../errors.js';
import { lchown, lgetxattr, llistxattr, lsetxattr, utimensat } from '../sys/index.js';
import type { InodeMetadata, Timespec } from './types.js';

export type InodeKind = 'file' | 'dir' | 'symlink' | 'other';

/** Owner, then mode, then xattrs, then atime/mtime (without following a symlink). */
export function applyMetadata(path: string, meta: InodeMetadata, kind: InodeKind): void {
  lchown(path, meta.uid, meta.gid);
  if (kind !== 'symlink') chmodSync(path, meta.mode & 0o7777);
  if (meta.xattrs !== undefined) applyXattrs(path, meta.xattrs);
  applyTimes(path, meta.mtime, meta.atime);
}

/**
 * Sets every xattr. With `onUnsupported`, an attribute the filesystem refuses (ENOTSUP, or EPERM
 * for a namespace we may not write) is reported there and skipped — Docker does the same, since
 * not every backing filesystem carries every namespace; without it, the error is thrown.
 */
export function applyXattrs(
  path: string,
  xattrs: ReadonlyMap<string, Buffer>,
  onUnsupported?: (name: string, err: SysCallError) => void,
): void {
  for (const [name, value] of xattrs) {
    try {
      lsetxattr(path, name, value);
    } catch (e) {
      if (onUnsupported !== undefined && e instanceof SysCallError && isUnsupportedXattr(e)) onUnsupported(name, e);
      else throw e;
    }
  }
}

function isUnsupportedXattr(e: SysCallError): boolean {
  return e.errno === 'ENOTSUP' || e.errno === 'EOPNOTSUPP' || e.errno === 'EPERM';
}

/** utimensat without following symlinks; atime defaults to mtime. */
export function applyTimes(path: string, mtime: Timespec, atime?: Timespec): void {
  utimensat(path, atime ?? mtime, mtime, { nofollow: true });
}

/** lstat (nanosecond times) plus every xattr, values as raw bytes. */
export function readMetadata(path: string, st?: Stats | BigIntStats): InodeMetadata {
  const stats = st ?? lstatSync(path, { bigint: true });
  const meta: InodeMetadata = {
    mode: Number(stats.mode) & 0o7777,
    uid: Number(stats.uid),
    gid: Number(stats.gid),
    mtime: statTime(stats, 'mtime'),
    atime: statTime(stats, 'atime'),
  };
  const xattrs = readXattrs(path);
  if (xattrs.size > 0) meta.xattrs = xattrs;
  return meta;
}

/** Every xattr of the inode itself (not a symlink's target). */
export function readXattrs(path: string): Map<string, Buffer> {
  const xattrs = new Map<string, Buffer>();
  for (const name of llistxattr(path)) {
    const value = lgetxattr(path, name);
    if (value !== undefined) xattrs.set(name, value); // removed between list and get
  }
  return xattrs;
}

/**
 * The xattr's value; undefined when the inode lacks it, vanished, or its filesystem has no xattrs.
 * Listing first is faster for the usual inode without xattrs: a failed lgetxattr (ENODATA) costs
 * an error object, the listing does not.
 */
export function getXattrIfSupported(path: string, name: string): Buffer | undefined {
  try {
    return llistxattr(path).includes(name) ? lgetxattr(path, name) : undefined;
  } catch (e) {
    const errno = (e as { errno?: unknown }).errno;
    if (errno === 'ENOTSUP' || errno === 'EOPNOTSUPP' || errno === 'ENOENT') return undefined;
    throw e;
  }
}

/** mtime truncated to whole seconds (floor, also before 1970): what a tar header holds. */
export function mtimeSeconds(st: BigIntStats): number {
  const ns = st.mtimeNs;
  let sec = ns / 1_000_000_000n;
  if (ns < 0n && ns % 1_000_000_000n !== 0n) sec -= 1n;
  return Number(sec);
}

/** A Stats' time as seconds + nanoseconds; exact with BigIntStats, millisecond-exact otherwise. */
function statTime(st: Stats | BigIntStats, which: 'mtime' | 'atime'): Timespec {
  if (isBigIntStats(st)) {
    const ns = which === 'mtime' ? st.mtimeNs : st.atimeNs;
    const sec = ns >= 0n ? ns / 1_000_000_000n : -((-ns + 999_999_999n) / 1_000_000_000n);
    return { sec: Number(sec), nsec: Number(ns - sec * 1_000_000_000n) };
  }
  const ms = which === 'mtime' ? st.mtimeMs : st.atimeMs;
  let sec = Math.floor(ms / 1000);
  let nsec = Math.round((ms - sec * 1000) * 1e6);
  if (nsec >= 1e9) {
    sec += 1;
    nsec -= 1e9;
  }
  return { sec, nsec };
}

function isBigIntStats(st: Stats | BigIntStats): st is BigIntStats {
  return typeof st.mode === 'bigint';
}
