/**
 * Lock files shared with programs that lock them with POSIX record locks (fcntl F_SETLKW on the
 * whole file), as containers/storage does for its `*.lock` files: a read lock while a reader
 * looks, a write lock while a writer changes what the lock guards.
 *
 * unionctl takes OFD record locks (fcntl F_OFD_SETLK, syscalls.ts): they conflict with the classic
 * locks of the other program, and, unlike classic locks, are not dropped when this process closes
 * some other fd of the same file, and exclude each other between two callers in one process. A
 * blocking F_OFD_SETLKW would stop the event loop, so the lock is polled with backoff until a
 * deadline (as lock.ts polls its flock), and whoever holds it is named when that takes long.
 */
import { closeSync, constants, fstatSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnionctlError } from '../errors.js';
import { describeProcess } from './process.js';
import { fcntlLockHolder, fcntlRecordLock, F_RDLCK, F_UNLCK, F_WRLCK } from './syscalls.js';

export type RecordLockType = 'read' | 'write';

export interface RecordLockOptions {
  /** Give up with LOCKED after this long, default 60 s. */
  timeoutMs?: number;
  /** Told once, when the lock is not free at the first try: who holds it ("process 123 (podman images)"). */
  onWait?: (holder: string) => void;
  /** Mode of a lock file that has to be created (default 0644, containers/storage's). */
  mode?: number;
}

/** A lock held on an open lock file. */
export interface HeldRecordLock {
  readonly path: string;
  /** Open for reading (read locks) or reading and writing (write locks), at no particular offset. */
  readonly fd: number;
  /** Unlocks and closes; idempotent. */
  release(): void;
}

const FIRST_POLL_MS = 2;
const MAX_POLL_MS = 50;

/**
 * Opens (creating it and its directory when missing, never through a symlink) the lock file at
 * `path` and takes a `type` record lock on all of it. LOCKED, naming the holder, when it is not
 * free within the timeout; USAGE when what is at `path` is not a regular file.
 */
export async function lockRecordFile(path: string, type: RecordLockType, opts: RecordLockOptions = {}): Promise<HeldRecordLock> {
  const fd = openRecordLockFile(path, type, opts.mode ?? 0o644);
  const lockType = type === 'write' ? F_WRLCK : F_RDLCK;
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  let pause = FIRST_POLL_MS;
  let told = false;
  try {
    while (!fcntlRecordLock(fd, lockType)) {
      const holder = holderOf(fd, lockType);
      if (Date.now() >= deadline) {
        throw new UnionctlError('LOCKED', `timed out waiting for the ${type} lock on ${path}${holder ? `: held by ${holder}` : ''}`, {
          hint: 'another program (podman, buildah, CRI-O) holds it; wait for it to finish, or stop that process',
        });
      }
      if (!told) {
        told = true;
        opts.onWait?.(holder ?? 'another process');
      }
      await sleep(Math.min(pause, Math.max(1, deadline - Date.now())));
      pause = Math.min(pause * 2, MAX_POLL_MS);
    }
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  let held = true;
  return {
    path,
    fd,
    release: () => {
      if (!held) return;
      held = false;
      try {
        fcntlRecordLock(fd, F_UNLCK);
      } finally {
        closeSync(fd); // closing the last fd of the description drops the lock anyway
      }
    },
  };
}

function openRecordLockFile(path: string, type: RecordLockType, mode: number): number {
  const access = type === 'write' ? constants.O_RDWR : constants.O_RDONLY;
  const flags = access | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK;
  let fd: number;
  try {
    fd = openSync(path, flags, mode);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'EISDIR' || code === 'ENXIO') {
      throw new UnionctlError('USAGE', `lock file ${path} is not a regular file`, { hint: 'remove what is there; it is made again' });
    }
    if (code !== 'ENOENT') throw e;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    fd = openSync(path, flags, mode);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new UnionctlError('USAGE', `lock file ${path} is not a regular file`, { hint: 'remove what is there; it is made again' });
  }
  return fd;
}

/** "process 123 (podman images)" for a classic lock's owner; undefined for an OFD lock or when it is gone. */
function holderOf(fd: number, type: number): string | undefined {
  try {
    const pid = fcntlLockHolder(fd, type);
    return pid !== undefined && pid > 0 ? `process ${describeProcess(pid)}` : undefined;
  } catch {
    return undefined;
  }
}
