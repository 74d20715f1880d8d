/**
 * System calls node:fs does not offer, through koffi (libc.so.6). This file and the rest of
 * src/sys are the only places that talk to the kernel beyond node:fs. Every wrapper throws a
 * SysCallError carrying the errno name, the call and the path, so callers can branch on
 * `err.errno === 'ENOENT'` and users read what failed.
 */
import koffi from 'koffi';
import { constants } from 'node:os';
import { readSync } from 'node:fs';
import { SysCallError } from '../errors.js';
import type { Timespec } from '../archive/types.js';

// ---- constants (Linux x86_64 / generic) ----------------------------------------------------

export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  REMOUNT: 0x20,
  NOATIME: 0x400,
  BIND: 0x1000,
  MOVE: 0x2000,
  REC: 0x4000,
  PRIVATE: 0x40000,
  SLAVE: 0x80000,
  SHARED: 0x100000,
} as const;

export const MNT_FORCE = 1;
export const MNT_DETACH = 2;

export const FSOPEN_CLOEXEC = 1;
export const FSMOUNT_CLOEXEC = 1;
export const FSCONFIG = {
  SET_FLAG: 0,
  SET_STRING: 1,
  SET_BINARY: 2,
  SET_PATH: 3,
  SET_PATH_EMPTY: 4,
  SET_FD: 5,
  CMD_CREATE: 6,
  CMD_RECONFIGURE: 7,
} as const;
/** MOUNT_ATTR_* for fsmount's attr_flags */
export const MOUNT_ATTR = { RDONLY: 0x1, NOSUID: 0x2, NODEV: 0x4, NOEXEC: 0x8 } as const;
export const MOVE_MOUNT_F_EMPTY_PATH = 0x4;
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

export const S_IFMT = 0o170000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;

// ioctl request numbers
const FICLONE = 0x40049409;
const FS_IOC_FSGETXATTR = 0x801c581f;
const FS_IOC_FSSETXATTR = 0x401c5820;
const FS_XFLAG_PROJINHERIT = 0x200;

// ---- binding -------------------------------------------------------------------------------

type Fn = (...args: unknown[]) => number;
interface Libc {
  mount: Fn;
  umount2: Fn;
  mknod: Fn;
  lchown: Fn;
  utimensat: Fn;
  lsetxattr: Fn;
  lgetxattr: Fn;
  llistxattr: Fn;
  lremovexattr: Fn;
  statfs: Fn;
  fsopen: Fn;
  fsconfig: Fn;
  fsmount: Fn;
  move_mount: Fn;
  close: Fn;
  flock: Fn;
  ioctl: Fn;
}

let bound: Libc | undefined;

/** Loads libc on first use, so importing src/sys costs nothing until a call is made. */
function libc(): Libc {
  if (bound) return bound;
  const lib = koffi.load('libc.so.6');
  const f = (decl: string) => lib.func(decl) as unknown as Fn;
  bound = {
    mount: f('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)'),
    umount2: f('int umount2(const char *target, int flags)'),
    mknod: f('int mknod(const char *path, uint32_t mode, uint64_t dev)'),
    lchown: f('int lchown(const char *path, uint32_t uid, uint32_t gid)'),
    utimensat: f('int utimensat(int dirfd, const char *path, const void *times, int flags)'),
    lsetxattr: f('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)'),
    lgetxattr: f('intptr_t lgetxattr(const char *path, const char *name, _Out_ void *value, size_t size)'),
    llistxattr: f('intptr_t llistxattr(const char *path, _Out_ void *list, size_t size)'),
    lremovexattr: f('int lremovexattr(const char *path, const char *name)'),
    statfs: f('int statfs(const char *path, _Out_ void *buf)'),
    fsopen: f('int fsopen(const char *fsname, unsigned int flags)'),
    fsconfig: f('int fsconfig(int fd, unsigned int cmd, const char *key, const char *value, int aux)'),
    fsmount: f('int fsmount(int fd, unsigned int flags, unsigned int attr_flags)'),
    move_mount: f('int move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path, unsigned int flags)'),
    close: f('int close(int fd)'),
    flock: f('int flock(int fd, int op)'),
    ioctl: f('int ioctl(int fd, unsigned long request, ...)'),
  };
  return bound;
}

const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(constants.errno)) if (!errnoNames.has(num)) errnoNames.set(num, name);

/** errno name for a number ("EINVAL"); EAGAIN and EWOULDBLOCK share a number and read "EAGAIN". */
export function errnoName(num: number): string {
  return errnoNames.get(num) ?? `errno ${num}`;
}

/** The SysCallError for the errno the last call left (read it before any other call). */
function lastError(syscall: string, path?: string, detail?: string): SysCallError {
  const num = koffi.errno();
  return new SysCallError(syscall, num, errnoName(num), path, detail);
}

function check(ret: number, syscall: string, path?: string, detail?: string): number {
  if (ret < 0) throw lastError(syscall, path, detail);
  return ret;
}

// ---- mounts --------------------------------------------------------------------------------

export function mount(source: string, target: string, fstype: string, flags: number, data?: string): void {
  check(libc().mount(source, target, fstype, flags, data ?? null), 'mount', target, `type ${fstype}`);
}

export function umount2(target: string, flags = 0): void {
  check(libc().umount2(target, flags), 'umount2', target);
}

/** fsopen(2): a filesystem context fd for the new mount API. */
export function fsopen(fsname: string, flags = FSOPEN_CLOEXEC): number {
  return check(libc().fsopen(fsname, flags), 'fsopen', undefined, fsname);
}

/**
 * fsconfig(2). On failure the kernel usually queues a human-readable reason on the context fd
 * ("e overlayfs: failed to resolve '…'"): it is read and put in the error so users see it.
 */
export function fsconfig(fd: number, cmd: number, key: string | null, value: string | null, aux = 0): void {
  if (libc().fsconfig(fd, cmd, key, value, aux) < 0) {
    const err = lastError('fsconfig', undefined, key === null ? `cmd ${cmd}` : `${key}${value === null ? '' : `=${value}`}`);
    const reason = readFsContextMessages(fd);
    if (reason) (err as { message: string }).message += `: ${reason}`;
    throw err;
  }
}

function readFsContextMessages(fd: number): string {
  const lines: string[] = [];
  const buf = Buffer.alloc(4096);
  for (let i = 0; i < 16; i++) {
    try {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) break;
      lines.push(buf.subarray(0, n).toString('utf8').trim());
    } catch {
      break; // ENODATA: no more messages
    }
  }
  return lines.join('; ');
}

export function fsmount(fd: number, flags = FSMOUNT_CLOEXEC, attrFlags = 0): number {
  return check(libc().fsmount(fd, flags, attrFlags), 'fsmount');
}

export function moveMount(fromFd: number, fromPath: string, toFd: number, toPath: string, flags: number): void {
  check(libc().move_mount(fromFd, fromPath, toFd, toPath, flags), 'move_mount', toPath);
}

export function closeFd(fd: number): void {
  check(libc().close(fd), 'close', undefined, `fd ${fd}`);
}

// ---- inodes --------------------------------------------------------------------------------

/** glibc's makedev: 12+20 bits of major, 8+24 bits of minor, in a 64-bit dev_t. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

/** mknod(2); `mode` carries the file type (S_IFCHR, S_IFBLK, S_IFIFO) and permission bits. */
export function mknod(path: string, mode: number, major: number, minor: number): void {
  check(libc().mknod(path, mode, makedev(major, minor)), 'mknod', path);
}

export function lchown(path: string, uid: number, gid: number): void {
  check(libc().lchown(path, uid, gid), 'lchown', path);
}

/** utimensat(2) with nanosecond precision; `nofollow` sets the times of a symlink itself. */
export function utimensat(path: string, atime: Timespec, mtime: Timespec, opts: { nofollow?: boolean } = {}): void {
  const times = Buffer.alloc(32);
  times.writeBigInt64LE(BigInt(Math.trunc(atime.sec)), 0);
  times.writeBigInt64LE(BigInt(atime.nsec), 8);
  times.writeBigInt64LE(BigInt(Math.trunc(mtime.sec)), 16);
  times.writeBigInt64LE(BigInt(mtime.nsec), 24);
  check(libc().utimensat(AT_FDCWD, path, times, opts.nofollow ? AT_SYMLINK_NOFOLLOW : 0), 'utimensat', path);
}

// ---- xattrs (binary-safe: values are Buffers and may hold NUL bytes) ----------------------

export function lsetxattr(path: string, name: string, value: Buffer, flags = 0): void {
  check(libc().lsetxattr(path, name, value, value.length, flags), 'lsetxattr', path, name);
}

/** The attribute's value, or undefined when the inode does not have it (ENODATA). */
export function lgetxattr(path: string, name: string): Buffer | undefined {
  const c = libc();
  for (let size = 256; ; ) {
    const buf = Buffer.alloc(size);
    const n = c.lgetxattr(path, name, buf, size);
    if (n >= 0) return buf.subarray(0, n);
    const err = lastError('lgetxattr', path, name);
    if (err.errno === 'ENODATA') return undefined;
    if (err.errno !== 'ERANGE') throw err;
    const needed = c.lgetxattr(path, name, null, 0); // ask the kernel how big it is now
    if (needed < 0) throw lastError('lgetxattr', path, name);
    size = Math.max(needed, size * 2);
  }
}

export function llistxattr(path: string): string[] {
  const c = libc();
  for (let size = 1024; ; ) {
    const buf = Buffer.alloc(size);
    const n = c.llistxattr(path, buf, size);
    if (n >= 0) return n === 0 ? [] : buf.subarray(0, n - 1).toString('utf8').split('\0');
    const err = lastError('llistxattr', path);
    if (err.errno === 'ENOTSUP' || err.errno === 'EOPNOTSUPP') return [];
    if (err.errno !== 'ERANGE') throw err;
    const needed = c.llistxattr(path, null, 0);
    if (needed < 0) throw lastError('llistxattr', path);
    size = Math.max(needed, size * 2);
  }
}

export function lremovexattr(path: string, name: string): void {
  check(libc().lremovexattr(path, name), 'lremovexattr', path, name);
}

// ---- filesystems ---------------------------------------------------------------------------

export interface StatFs {
  type: number;
  typeName: string;
  bsize: number;
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  namelen: number;
  flags: number;
}

/** f_type magic numbers (linux/magic.h) → the names Docker prints for "Backing Filesystem". */
const FS_MAGIC: Record<number, string> = {
  0xef53: 'extfs',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
  0x01021994: 'tmpfs',
  0x794c7630: 'overlayfs',
  0x65735546: 'fuse',
  0x2fc12fc1: 'zfs',
  0x6969: 'nfs',
  0x61756673: 'aufs',
  0xf2f52010: 'f2fs',
  0x858458f6: 'ramfs',
  0x73717368: 'squashfs',
  0x5346544e: 'ntfs',
  0x4d44: 'msdos',
  0x62656572: 'sysfs',
  0x9fa0: 'proc',
  0xca451a4e: 'bcachefs',
};

export function fsTypeName(magic: number): string {
  return FS_MAGIC[magic] ?? `0x${magic.toString(16)}`;
}

export function statfs(path: string): StatFs {
  // struct statfs on 64-bit Linux: eleven 8-byte fields (fsid is two ints) then spare words.
  const buf = Buffer.alloc(120);
  check(libc().statfs(path, buf), 'statfs', path);
  const type = Number(buf.readBigInt64LE(0)) >>> 0;
  return {
    type,
    typeName: fsTypeName(type),
    bsize: Number(buf.readBigInt64LE(8)),
    blocks: buf.readBigUInt64LE(16),
    bfree: buf.readBigUInt64LE(24),
    bavail: buf.readBigUInt64LE(32),
    files: buf.readBigUInt64LE(40),
    ffree: buf.readBigUInt64LE(48),
    namelen: Number(buf.readBigInt64LE(64)),
    flags: Number(buf.readBigInt64LE(80)),
  };
}

// ---- fds -----------------------------------------------------------------------------------

/** flock(2). A held lock with LOCK_NB fails with errno EAGAIN (== EWOULDBLOCK). */
export function flock(fd: number, op: number): void {
  check(libc().flock(fd, op), 'flock', undefined, `fd ${fd}`);
}

/** ioctl FICLONE: make destFd share srcFd's extents (reflink); EOPNOTSUPP/EXDEV where it can't. */
export function ficlone(destFd: number, srcFd: number): void {
  check(libc().ioctl(destFd, FICLONE, 'int', srcFd), 'ioctl(FICLONE)', undefined, `fd ${destFd} from fd ${srcFd}`);
}

// struct fsxattr: fsx_xflags, fsx_extsize, fsx_nextents, fsx_projid, fsx_cowextsize, 8 pad bytes
const FSXATTR_BYTES = 28;

function readFsxattr(fd: number): Buffer {
  const buf = Buffer.alloc(FSXATTR_BYTES);
  check(libc().ioctl(fd, FS_IOC_FSGETXATTR, 'void *', buf), 'ioctl(FS_IOC_FSGETXATTR)', undefined, `fd ${fd}`);
  return buf;
}

/** The directory's quota project id (xfs/ext4 project quotas). */
export function getProjectId(fd: number): number {
  return readFsxattr(fd).readUInt32LE(12);
}

/**
 * Puts the directory in quota project `projectId` and makes everything created below it inherit
 * the id, so one project quota limit caps the whole tree (overlay2.size on xfs).
 */
export function setProjectQuota(dirFd: number, projectId: number): void {
  const buf = readFsxattr(dirFd);
  buf.writeUInt32LE((buf.readUInt32LE(0) | FS_XFLAG_PROJINHERIT) >>> 0, 0);
  buf.writeUInt32LE(projectId >>> 0, 12);
  check(libc().ioctl(dirFd, FS_IOC_FSSETXATTR, 'void *', buf), 'ioctl(FS_IOC_FSSETXATTR)', undefined, `fd ${dirFd}, project ${projectId}`);
}
