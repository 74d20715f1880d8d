/**
 * System calls node:fs does not offer, through koffi (libc.so.6). This file and the rest of
 * src/sys are the only places that talk to the kernel beyond node:fs. Every wrapper throws a
 * SysCallError carrying the errno name, the call and the path, so callers can branch on
 * `err.errno === 'ENOENT'` and users read what failed.
 *
 * koffi and libc are loaded on the first call, so importing this module costs nothing (loading
 * koffi's native addon takes ~10 ms, which a CLI `--help` should not pay).
 * Linux only; struct layouts are the 64-bit ones (x86_64, aarch64), read in native byte order.
 */
import type koffiModule from 'koffi';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { SysCallError } from '../errors.js';

// ---- constants (values from the kernel's uapi headers) -----------------------------------

/** mount(2) flags. */

/** seconds + nanoseconds since the epoch (the kernel's struct timespec). */
export interface Timespec {
  sec: number;
  nsec: number;
}

export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  SYNCHRONOUS: 0x10,
  REMOUNT: 0x20,
  DIRSYNC: 0x80,
  NOSYMFOLLOW: 0x100,
  NOATIME: 0x400,
  NODIRATIME: 0x800,
  BIND: 0x1000,
  MOVE: 0x2000,
  REC: 0x4000,
  SILENT: 0x8000,
  UNBINDABLE: 0x20000,
  PRIVATE: 0x40000,
  SLAVE: 0x80000,
  SHARED: 0x100000,
  RELATIME: 0x200000,
  STRICTATIME: 0x1000000,
  LAZYTIME: 0x2000000,
} as const;

/** umount2(2) flags. */
export const MNT_FORCE = 1;
export const MNT_DETACH = 2;
export const MNT_EXPIRE = 4;
export const UMOUNT_NOFOLLOW = 8;

export const FSOPEN_CLOEXEC = 1;
export const FSMOUNT_CLOEXEC = 1;

/** fsconfig(2) commands. */
export const FSCONFIG = {
  SET_FLAG: 0,
  SET_STRING: 1,
  SET_BINARY: 2,
  SET_PATH: 3,
  SET_PATH_EMPTY: 4,
  SET_FD: 5,
  CMD_CREATE: 6,
  CMD_RECONFIGURE: 7,
  CMD_CREATE_EXCL: 8,
} as const;

/** MOUNT_ATTR_* for fsmount's attr_flags. */
export const MOUNT_ATTR = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  RELATIME: 0x0,
  NOATIME: 0x10,
  STRICTATIME: 0x20,
  NODIRATIME: 0x80,
  IDMAP: 0x100000,
  NOSYMFOLLOW: 0x200000,
} as const;

/** move_mount(2) flags. */
export const MOVE_MOUNT = {
  F_SYMLINKS: 0x1,
  F_AUTOMOUNTS: 0x2,
  F_EMPTY_PATH: 0x4,
  T_SYMLINKS: 0x10,
  T_AUTOMOUNTS: 0x20,
  T_EMPTY_PATH: 0x40,
} as const;
export const MOVE_MOUNT_F_EMPTY_PATH = MOVE_MOUNT.F_EMPTY_PATH;

export const AT_FDCWD = -100;
/** openat2(2) `resolve` flags (struct open_how). */
export const RESOLVE = { NO_XDEV: 0x01, NO_MAGICLINKS: 0x02, NO_SYMLINKS: 0x04, BENEATH: 0x08 } as const;
export const AT_SYMLINK_NOFOLLOW = 0x100;

/** flock(2) operations. */
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/** fcntl(2) commands for open file description (OFD) record locks, and struct flock's l_type values. */
export const F_OFD_GETLK = 36;
export const F_OFD_SETLK = 37;
export const F_OFD_SETLKW = 38;
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;

/** lsetxattr(2) flags. */
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

/** File type bits of st_mode, for mknod. */
export const S_IFMT = 0o170000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;

/** sysconf(3) name of the page size. */
export const SC_PAGESIZE = 30;

/** FS_IOC_FSSETXATTR flag: new files and dirs below inherit the directory's project id. */
export const FS_XFLAG_PROJINHERIT = 0x200;

// ioctl request numbers (_IOW/_IOR encoded)
const FICLONE = 0x40049409; // _IOW(0x94, 9, int)
const FS_IOC_FSGETXATTR = 0x801c581f; // _IOR('X', 31, struct fsxattr)
const FS_IOC_FSSETXATTR = 0x401c5820; // _IOW('X', 32, struct fsxattr)

// Syscall numbers of the new mount API: the same on every architecture that has them (the
// syscall table was unified for new calls). Used only when glibc < 2.36 lacks the wrappers.
const SYS_MOVE_MOUNT = 429;
const SYS_FSOPEN = 430;
const SYS_FSCONFIG = 431;
const SYS_FSMOUNT = 432;
const SYS_OPENAT2 = 437;

// ---- errno names ---------------------------------------------------------------------------

/**
 * errno number → name. Some numbers have two names; we use EAGAIN (not EWOULDBLOCK, so a busy
 * flock with LOCK_NB reads 'EAGAIN') and EOPNOTSUPP (not ENOTSUP: the kernel's own name).
 */
const errnoNames: ReadonlyMap<number, string> = (() => {
  const names = new Map<number, string>();
  for (const [name, num] of Object.entries(constants.errno)) if (!names.has(num)) names.set(num, name);
  names.set(constants.errno.EAGAIN, 'EAGAIN');
  names.set(constants.errno.EOPNOTSUPP, 'EOPNOTSUPP');
  return names;
})();

/** errno name for a number ("EINVAL"); unknown numbers read "errno N". */
export function errnoName(num: number): string {
  return errnoNames.get(num) ?? `errno ${num}`;
}

/** The SysCallError for the errno the last call left (build it before making any other call). */
function lastError(syscall: string, path?: string, detail?: string): SysCallError {
  const num = koffi().errno();
  return new SysCallError(syscall, num, errnoName(num), path, detail);
}

function check(ret: number, syscall: string, path?: string, detail?: string): number {
  if (ret < 0) throw lastError(syscall, path, detail);
  return ret;
}

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
  moveMount: Fn;
  openat2: Fn;
  read: Fn;
  close: Fn;
  flock: Fn;
  fcntlLock: Fn;
  /** variadic: pass the third argument's C type before its value */
  ioctl: Fn;
  sysconf: Fn;
  opendir: (path: string) => bigint | null;
  readdir: (dir: bigint) => bigint | null;
  closedir: (dir: bigint) => number;
}

let koffiLoaded: typeof koffiModule | undefined;
let bound: Libc | undefined;

function koffi(): typeof koffiModule {
  return (koffiLoaded ??= createRequire(import.meta.url)('koffi') as typeof koffiModule);
}

function libc(): Libc {
  return (bound ??= bindLibc());
}

function bindLibc(): Libc {
  const lib = koffi().load('libc.so.6');
  const f = (decl: string) => lib.func(decl) as unknown as Fn;
  const syscall = lib.func('long syscall(long number, ...)');
  /** The glibc wrapper where this glibc has it, else the raw syscall with the given C arg types. */
  const wrapperOrSyscall = (decl: string, sysno: number, argTypes: string[]): Fn => {
    try {
      return f(decl);
    } catch {
      return (...args) => Number(syscall(sysno, ...argTypes.flatMap((type, i) => [type, args[i]])));
    }
  };
  return {
    mount: f('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)'),
    umount2: f('int umount2(const char *target, int flags)'),
    mknod: bindMknod(lib),
    lchown: f('int lchown(const char *path, uint32_t uid, uint32_t gid)'),
    utimensat: f('int utimensat(int dirfd, const char *path, const void *times, int flags)'),
    lsetxattr: f('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)'),
    lgetxattr: f('intptr_t lgetxattr(const char *path, const char *name, void *value, size_t size)'),
    llistxattr: f('intptr_t llistxattr(const char *path, void *list, size_t size)'),
    lremovexattr: f('int lremovexattr(const char *path, const char *name)'),
    statfs: f('int statfs(const char *path, void *buf)'),
    fsopen: wrapperOrSyscall('int fsopen(const char *fsname, unsigned int flags)', SYS_FSOPEN, ['str', 'long']),
    fsconfig: wrapperOrSyscall('int fsconfig(int fd, unsigned int cmd, const char *key, const char *value, int aux)', SYS_FSCONFIG, [
      'long',
      'long',
      'str',
      'str',
      'long',
    ]),
    fsmount: wrapperOrSyscall('int fsmount(int fd, unsigned int flags, unsigned int attr_flags)', SYS_FSMOUNT, ['long', 'long', 'long']),
    moveMount: wrapperOrSyscall(
      'int move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path, unsigned int flags)',
      SYS_MOVE_MOUNT,
      ['long', 'str', 'long', 'str', 'long'],
    ),
    // glibc has no openat2 wrapper: the raw syscall (kernel >= 5.6; ENOSYS before), declared with
    // fixed arguments (koffi parses a variadic call's types on every call: 3× slower, and a mount
    // checks one path per lower layer).
    openat2: bindOpenat2(lib),
    read: f('intptr_t read(int fd, void *buf, size_t count)'),
    close: f('int close(int fd)'),
    flock: f('int flock(int fd, int op)'),
    // fcntl is variadic; its third argument for the lock commands is a pointer, which the x86_64
    // and aarch64 calling conventions pass the same way fixed or variadic (as openat2 above).
    fcntlLock: f('int fcntl(int fd, int cmd, void *lock)'),
    ioctl: f('int ioctl(int fd, unsigned long request, ...)'),
    sysconf: f('long sysconf(int name)'),
    opendir: lib.func('void *opendir(const char *name)') as unknown as Libc['opendir'],
    readdir: lib.func('void *readdir64(void *dirp)') as unknown as Libc['readdir'],
    closedir: lib.func('int closedir(void *dirp)') as unknown as Libc['closedir'],
  };
}

function bindOpenat2(lib: ReturnType<typeof koffiModule.load>): Fn {
  const raw = lib.func('long syscall(long number, int dirfd, const char *path, const void *how, size_t size)');
  return (dirFd, path, how, size) => Number(raw(SYS_OPENAT2, dirFd, path, how, size));
}

/**
 * glibc < 2.33 exports no mknod symbol: mknod was an inline calling __xmknod with a struct
 * version (0 on 64-bit Linux) and the device number passed by pointer.
 */
function bindMknod(lib: ReturnType<typeof koffiModule.load>): Fn {
  try {
    return lib.func('int mknod(const char *path, uint32_t mode, uint64_t dev)') as unknown as Fn;
  } catch {
    const xmknod = lib.func('int __xmknod(int ver, const char *path, uint32_t mode, const void *dev)');
    return (path, mode, dev) => xmknod(0, path, mode, BigUint64Array.of(dev as bigint)) as number;
  }
}

// ---- mounts --------------------------------------------------------------------------------

export function mount(source: string, target: string, fstype: string, flags: number, data?: string): void {
  check(libc().mount(source, target, fstype, flags, data ?? null), 'mount', target, `source ${source}, type ${fstype}`);
}

export function umount2(target: string, flags = 0): void {
  check(libc().umount2(target, flags), 'umount2', target);
}

/** fsopen(2): a filesystem context fd for the new mount API. */
export function fsopen(fsname: string, flags = FSOPEN_CLOEXEC): number {
  return check(libc().fsopen(fsname, flags), 'fsopen', undefined, `filesystem ${fsname}`);
}

/**
 * fsconfig(2). On failure the kernel usually queues a human-readable reason on the context fd
 * ("e overlay: failed to resolve '…'"); it is read and put in the error so users see it.
 */
export function fsconfig(fd: number, cmd: number, key: string | null, value: string | null, aux = 0): void {
  if (libc().fsconfig(fd, cmd, key, value, aux) >= 0) return;
  const errnum = koffi().errno();
  const what = key === null ? `cmd ${cmd}` : value === null ? key : `${key}=${value}`;
  throw new SysCallError('fsconfig', errnum, errnoName(errnum), undefined, withContextMessages(fd, what));
}

/** fsmount(2): the configured context as a detached mount; returns the mount's fd. */
export function fsmount(fd: number, flags = FSMOUNT_CLOEXEC, attrFlags = 0): number {
  const mountFd = libc().fsmount(fd, flags, attrFlags);
  if (mountFd >= 0) return mountFd;
  const errnum = koffi().errno();
  throw new SysCallError('fsmount', errnum, errnoName(errnum), undefined, withContextMessages(fd, `fd ${fd}`));
}

/** `what` plus the fs context's queued messages, if any. */
function withContextMessages(fd: number, what: string): string {
  const messages = readFsContextMessages(fd);
  return messages.length === 0 ? what : `${what}: ${messages.join('; ')}`;
}

/** Drains the fs context's message log: one message per read(2), ENODATA when empty. */
function readFsContextMessages(fd: number): string[] {
  const messages: string[] = [];
  const buf = Buffer.alloc(1024);
  for (let i = 0; i < 16; i++) {
    const n = libc().read(fd, buf, buf.length);
    if (n <= 0) break;
    messages.push(buf.toString('utf8', 0, n).trim());
  }
  return messages;
}

export function moveMount(fromFd: number, fromPath: string, toFd: number, toPath: string, flags: number): void {
  check(libc().moveMount(fromFd, fromPath, toFd, toPath, flags), 'move_mount', toPath);
}

const O_PATH = 0o10000000;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC = 0o2000000;
/** struct open_how { u64 flags; u64 mode; u64 resolve; } */
const OPEN_HOW_SIZE = 24;
/** One open_how per set of resolve flags: made once, passed by pointer. */
const openHows = new Map<number, BigUint64Array>();

/**
 * Whether `path` (relative to the directory open as `dirFd`) resolves to a directory under the
 * `resolve` rules (RESOLVE.*): opens it with O_PATH through openat2(2) and closes it again.
 * Returns undefined when it does, else the errno name (ELOOP: a symlink where NO_SYMLINKS forbids
 * one; EXDEV: the path leads out of the dir under BENEATH; ENOENT, ENOTDIR; ENOSYS: no openat2).
 */
export function openat2DirCheck(dirFd: number, path: string, resolve: number): string | undefined {
  let how = openHows.get(resolve);
  if (how === undefined) openHows.set(resolve, (how = BigUint64Array.of(BigInt(O_PATH | O_DIRECTORY | O_CLOEXEC), 0n, BigInt(resolve))));
  const fd = libc().openat2(dirFd, path, how, OPEN_HOW_SIZE);
  if (fd < 0) return errnoName(koffi().errno());
  libc().close(fd);
  return undefined;
}

export function closeFd(fd: number): void {
  check(libc().close(fd), 'close', undefined, `fd ${fd}`);
}

// ---- inodes --------------------------------------------------------------------------------

/** glibc's makedev (64-bit dev_t): major bits 0-11 at 8, 12-31 at 44; minor bits 0-7 at 0, 8-31 at 20. */
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
  // struct timespec times[2]: { tv_sec, tv_nsec } twice, 64-bit fields
  const times = BigInt64Array.of(BigInt(Math.trunc(atime.sec)), BigInt(atime.nsec), BigInt(Math.trunc(mtime.sec)), BigInt(mtime.nsec));
  check(libc().utimensat(AT_FDCWD, path, times, opts.nofollow ? AT_SYMLINK_NOFOLLOW : 0), 'utimensat', path);
}

// ---- xattrs (binary-safe: values are Buffers and may hold NUL bytes) ----------------------

export function lsetxattr(path: string, name: string, value: Buffer, flags = 0): void {
  check(libc().lsetxattr(path, name, value, value.length, flags), 'lsetxattr', path, name);
}

/**
 * Scratch buffer shared by lgetxattr/llistxattr: xattr reads are on hot paths (tree walks read
 * every inode's list), so one buffer is reused and only the result is copied out.
 */
let scratch = Buffer.allocUnsafe(4096);
const ENODATA = constants.errno.ENODATA;
const ERANGE = constants.errno.ERANGE;
const EOPNOTSUPP = constants.errno.EOPNOTSUPP;

/** The attribute's value, or undefined when the inode does not have it (ENODATA). */
export function lgetxattr(path: string, name: string): Buffer | undefined {
  const c = libc();
  for (;;) {
    const n = c.lgetxattr(path, name, scratch, scratch.length);
    if (n >= 0) return Buffer.from(scratch.subarray(0, n));
    const num = koffi().errno();
    if (num === ENODATA) return undefined; // the common case: no error object built
    if (num !== ERANGE) throw new SysCallError('lgetxattr', num, errnoName(num), path, name);
    growScratch(c.lgetxattr(path, name, null, 0), 'lgetxattr', path);
  }
}

export function llistxattr(path: string): string[] {
  const c = libc();
  for (;;) {
    const n = c.llistxattr(path, scratch, scratch.length);
    if (n === 0) return [];
    if (n > 0) return scratch.toString('utf8', 0, n - 1).split('\0');
    const num = koffi().errno();
    if (num === EOPNOTSUPP) return []; // filesystem without xattrs
    if (num !== ERANGE) throw new SysCallError('llistxattr', num, errnoName(num), path);
    growScratch(c.llistxattr(path, null, 0), 'llistxattr', path);
  }
}

/** The value grew past the scratch buffer (ERANGE): make room for what the kernel says it needs. */
function growScratch(needed: number, syscall: string, path: string): void {
  if (needed < 0) throw lastError(syscall, path);
  scratch = Buffer.allocUnsafe(Math.max(needed, scratch.length * 2));
}

export function lremovexattr(path: string, name: string): void {
  check(libc().lremovexattr(path, name), 'lremovexattr', path, name);
}

// ---- filesystems ---------------------------------------------------------------------------

export interface StatFs {
  /** f_type magic number */
  type: number;
  /** the name Docker prints as "Backing Filesystem" ("extfs", "xfs", …), or the magic in hex */
  typeName: string;
  bsize: number;
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  namelen: number;
  /** ST_* mount flags (ST_RDONLY = 1, …) */
  flags: number;
}

/** f_type magic numbers (linux/magic.h) → the names Docker uses. */
const FS_MAGIC: ReadonlyMap<number, string> = new Map([
  [0xef53, 'extfs'], // ext2, ext3, ext4 share one magic
  [0x58465342, 'xfs'],
  [0x9123683e, 'btrfs'],
  [0x01021994, 'tmpfs'],
  [0x794c7630, 'overlayfs'],
  [0x61756673, 'aufs'],
  [0x65735546, 'fuse'],
  [0x2fc12fc1, 'zfs'],
  [0x6969, 'nfs'],
  [0xf2f52010, 'f2fs'],
  [0x858458f6, 'ramfs'],
  [0x73717368, 'squashfs'],
  [0xe0f5e1e2, 'erofs'],
  [0xca451a4e, 'bcachefs'],
  [0xf15f, 'ecryptfs'],
  [0x3153464a, 'jfs'],
  [0x52654973, 'reiserfs'],
  [0x5346544e, 'ntfs'],
  [0x4d44, 'msdos'],
  [0xff534d42, 'cifs'],
  [0xfe534d42, 'smb2'],
  [0x01021997, 'v9fs'],
  [0x00c36400, 'ceph'],
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x63677270, 'cgroup2'],
]);

export function fsTypeName(magic: number): string {
  return FS_MAGIC.get(magic) ?? `0x${magic.toString(16)}`;
}

// struct statfs on 64-bit Linux: 15 words of 8 bytes: f_type, f_bsize, f_blocks, f_bfree,
// f_bavail, f_files, f_ffree, f_fsid (two ints), f_namelen, f_frsize, f_flags, f_spare[4].
const STATFS_WORDS = 15;

export function statfs(path: string): StatFs {
  const w = new BigUint64Array(STATFS_WORDS);
  check(libc().statfs(path, w), 'statfs', path);
  // Every index below is a word of the fixed-size struct.
  const type = Number(w[0]! & 0xffffffffn); // magics are 32-bit; keep them unsigned
  return {
    type,
    typeName: fsTypeName(type),
    bsize: Number(w[1]),
    blocks: w[2]!,
    bfree: w[3]!,
    bavail: w[4]!,
    files: w[5]!,
    ffree: w[6]!,
    namelen: Number(w[8]),
    flags: Number(w[10]),
  };
}

// ---- fds -----------------------------------------------------------------------------------

/** flock(2). A lock held elsewhere with LOCK_NB fails with errno 'EAGAIN' (== EWOULDBLOCK). */
export function flock(fd: number, op: number): void {
  check(libc().flock(fd, op), 'flock', undefined, `fd ${fd}`);
}

// struct flock (x86_64, aarch64): s16 l_type, s16 l_whence, 4 pad, s64 l_start, s64 l_len, s32 l_pid, 4 pad
const FLOCK_SIZE = 32;
const FLOCK_PID_OFFSET = 24;

function flockStruct(type: number): Buffer {
  const lk = Buffer.alloc(FLOCK_SIZE); // l_whence SEEK_SET, l_start 0, l_len 0 (the whole file), l_pid 0 (OFD locks want 0)
  lk.writeInt16LE(type, 0);
  return lk;
}

/**
 * An OFD record lock on the whole file (fcntl F_OFD_SETLK, or F_OFD_SETLKW when `wait`, which
 * blocks the calling thread): `type` F_RDLCK, F_WRLCK or F_UNLCK. OFD locks conflict with the
 * classic POSIX record locks other programs take (containers/storage's F_SETLKW) but belong to the
 * open file description, not the process: closing another fd of the file keeps them, and two fds
 * of one process exclude each other. Returns false when another holder's lock conflicts (EAGAIN,
 * only without `wait`); the fd must be open for writing for F_WRLCK, for reading for F_RDLCK.
 */
export function fcntlRecordLock(fd: number, type: number, wait = false): boolean {
  const ret = libc().fcntlLock(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, flockStruct(type));
  if (ret >= 0) return true;
  const err = lastError('fcntl', undefined, `fd ${fd}, ${wait ? 'F_OFD_SETLKW' : 'F_OFD_SETLK'}`);
  if (!wait && (err.errno === 'EAGAIN' || err.errno === 'EACCES')) return false;
  throw err;
}

/**
 * Who holds a lock conflicting with a `type` lock on the whole file (fcntl F_OFD_GETLK): the pid
 * of a classic POSIX lock's process, -1 for an OFD lock (which has no owning process), or
 * undefined when nothing conflicts.
 */
export function fcntlLockHolder(fd: number, type: number): number | undefined {
  const lk = flockStruct(type);
  check(libc().fcntlLock(fd, F_OFD_GETLK, lk), 'fcntl', undefined, `fd ${fd}, F_OFD_GETLK`);
  if (lk.readInt16LE(0) === F_UNLCK) return undefined;
  return lk.readInt32LE(FLOCK_PID_OFFSET);
}

/** ioctl FICLONE: destFd shares srcFd's extents (reflink); EOPNOTSUPP/EXDEV/EINVAL where it can't. */
export function ficlone(destFd: number, srcFd: number): void {
  check(libc().ioctl(destFd, FICLONE, 'int', srcFd), 'ioctl(FICLONE)', undefined, `fd ${destFd} from fd ${srcFd}`);
}

// struct fsxattr: u32 fsx_xflags, fsx_extsize, fsx_nextents, fsx_projid, fsx_cowextsize; 8 pad bytes
const FSXATTR_WORDS = 7;
const FSX_XFLAGS = 0;
const FSX_PROJID = 3;

function readFsxattr(fd: number): Uint32Array {
  const fsx = new Uint32Array(FSXATTR_WORDS);
  check(libc().ioctl(fd, FS_IOC_FSGETXATTR, 'void *', fsx), 'ioctl(FS_IOC_FSGETXATTR)', undefined, `fd ${fd}`);
  return fsx;
}

/** The inode's quota project id (xfs/ext4 project quotas). */
export function getProjectId(fd: number): number {
  return readFsxattr(fd)[FSX_PROJID]!;
}

/**
 * Puts the directory in quota project `projectId` and makes everything created below it inherit
 * the id, so one project quota limit caps the whole tree (overlay2.size on xfs).
 */
export function setProjectQuota(dirFd: number, projectId: number): void {
  const fsx = readFsxattr(dirFd);
  fsx[FSX_PROJID] = projectId;
  fsx[FSX_XFLAGS]! |= FS_XFLAG_PROJINHERIT;
  check(libc().ioctl(dirFd, FS_IOC_FSSETXATTR, 'void *', fsx), 'ioctl(FS_IOC_FSSETXATTR)', undefined, `fd ${dirFd}, project ${projectId}`);
}

/** d_type values of struct dirent. */
export const DT = { UNKNOWN: 0, FIFO: 1, CHR: 2, DIR: 4, BLK: 6, REG: 8, LNK: 10, SOCK: 12 } as const;

// struct dirent64 (the same on every Linux arch): u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[]
const DIRENT_TYPE_OFFSET = 18;
const DIRENT_NAME_OFFSET = 19;

/**
 * The directory's entries with d_type exactly as the filesystem reports it (DT.UNKNOWN on a
 * filesystem without d_type). node's readdir cannot tell: for DT_UNKNOWN it lstat()s the entry
 * and hands back a Dirent with the real type. Leaves out "." and "..".
 */
export function readdirTypes(dir: string): Array<{ name: string; type: number }> {
  const c = libc();
  const handle = c.opendir(dir);
  if (handle === null) throw lastError('opendir', dir);
  try {
    const entries: Array<{ name: string; type: number }> = [];
    for (;;) {
      koffi().errno(0); // readdir returns NULL both at the end and on error
      const ent = c.readdir(handle);
      if (ent === null) {
        if (koffi().errno() !== 0) throw lastError('readdir', dir);
        return entries;
      }
      const name = koffi().decode(ent, DIRENT_NAME_OFFSET, 'char', -1) as string;
      if (name !== '.' && name !== '..') entries.push({ name, type: koffi().decode(ent, DIRENT_TYPE_OFFSET, 'uint8') as number });
    }
  } finally {
    c.closedir(handle);
  }
}

/** sysconf(3), e.g. sysconf(SC_PAGESIZE). */
export function sysconf(name: number): number {
  return check(libc().sysconf(name), 'sysconf', undefined, `name ${name}`);
}
