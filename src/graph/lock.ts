/**
 * Exclusive locks shared by processes: flock(2) on a lock file, plus an in-process FIFO queue so
 * concurrent callers inside one process wait their turn instead of all polling the kernel.
 *
 * flock is tied to the open file description, so the kernel drops the lock when the holder dies
 * (SIGKILL, crash): a lock can never be left behind by a dead process.
 *
 * Not reentrant, on purpose: every call is its own critical section, whatever async context it is
 * made from, so two tasks can never be inside one lock at the same time. A call made from inside
 * `fn` on the same path waits for `fn` to end — if `fn` awaits it, that is a deadlock, which ends
 * with LOCKED after the timeout. Code that needs the lock says so in its types instead (the store's
 * transaction handle, see store.ts).
 *
 * A lock file may be deleted while it is held (removeHeldLockFile): a waiter that then gets the
 * flock on the deleted inode notices (the path names another inode, or none) and starts over on
 * the new file, so two processes never both "hold" one path.
 */
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { corruptError, UnionctlError } from '../errors.js';
import { describeProcess, flock, LOCK_EX, LOCK_NB, LOCK_UN } from '../sys/index.js';

const DEFAULT_TIMEOUT_MS = 60_000;
/** Poll interval bounds while another process holds the lock. */
const FIRST_POLL_MS = 2;
const MAX_POLL_MS = 100;

/** Per path: the promise the next in-process caller must wait for. */
const queueTails = new Map<string, Promise<void>>();

export interface FileLockOptions {
  /** Give up after this long (waiting in this process and for other processes), default 60 s. */
  timeoutMs?: number;
}

/**
 * Runs `fn` while holding the exclusive lock on `lockPath` (created, with its directory, if
 * missing) and returns what it returns. Throws LOCKED (naming the holder where /proc/locks tells)
 * when the lock is not free within the timeout; the lock is released however `fn` ends.
 */
export async function withFileLock<T>(lockPath: string, fn: () => Promise<T>, opts: FileLockOptions = {}): Promise<T> {
  const key = resolve(lockPath);
  const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const releaseTurn = await waitForTurn(key, deadline);
  try {
    const fd = await lockFile(key, deadline);
    try {
      return await fn();
    } finally {
      unlockFile(fd);
    }
  } finally {
    releaseTurn();
  }
}

/**
 * Deletes the lock file of a lock the caller holds (e.g. the per-layer lock of a layer being
 * removed). Waiters notice and lock the path afresh.
 */
export function removeHeldLockFile(lockPath: string): void {
  rmSync(resolve(lockPath), { force: true });
}

/**
 * Joins the in-process queue for `key` and resolves when every earlier caller is done. Returns the
 * function that lets the next caller go. On timeout the slot is handed on at once (the next caller
 * then waits for our predecessor directly) and LOCKED is thrown.
 */
async function waitForTurn(key: string, deadline: number): Promise<() => void> {
  const waitingFor = queueTails.get(key);
  const previous = waitingFor ?? Promise.resolve();
  let letNextGo!: () => void;
  const ours = new Promise<void>((r) => (letNextGo = r));
  const tail = previous.then(() => ours);
  queueTails.set(key, tail);
  const release = () => {
    letNextGo();
    if (queueTails.get(key) === tail) queueTails.delete(key);
  };
  // Nobody ahead of us (the usual case): no timeout to arm. Arming and aborting one costs an
  // AbortController and an AbortError per lock, a third of a store.mount's own time.
  if (waitingFor === undefined) return release;

  const timer = new AbortController();
  try {
    const timedOut = await Promise.race([
      previous.then(() => false),
      sleep(Math.max(0, deadline - Date.now()), true, { signal: timer.signal }).catch(() => false),
    ]);
    if (timedOut) {
      release();
      throw lockedError(key, `another task in this process (pid ${process.pid}) still holds it`);
    }
    return release;
  } finally {
    timer.abort();
  }
}

/** Lock files are opened for append, created 0600, never through a symlink (nor blocking on a FIFO planted there). */
const LOCK_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK;

function openLockFile(key: string): number {
  let fd: number;
  try {
    fd = openSync(key, LOCK_FLAGS, 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EISDIR')
      throw corruptError(`lock file ${key} is a directory`, { repair: 'remove that directory (rmdir) if it is empty' });
    if (code === 'ELOOP') throw corruptError(`lock file ${key} is a symbolic link`, { repair: 'remove the link (rm, not rm -r)' });
    if (code === 'ENXIO') throw corruptError(`lock file ${key} is not a regular file`, { repair: 'remove it' });
    if (code !== 'ENOENT') throw e;
    mkdirSync(dirname(key), { recursive: true, mode: 0o700 });
    fd = openSync(key, LOCK_FLAGS, 0o600);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw corruptError(`lock file ${key} is not a regular file`, { repair: 'remove it' });
  }
  return fd;
}

function isWouldBlock(e: unknown): boolean {
  const errno = (e as { errno?: unknown }).errno;
  return errno === 'EAGAIN' || errno === 'EWOULDBLOCK' || errno === 'EINTR';
}

/** The locked fd still names the file at `key` (it was not deleted, or replaced, meanwhile). */
function stillAtPath(fd: number, key: string): boolean {
  const held = fstatSync(fd);
  const now = lstatSync(key, { throwIfNoEntry: false });
  return now !== undefined && now.ino === held.ino && now.dev === held.dev;
}

/** Takes the flock, polling with backoff (a blocking flock would block the event loop). */
async function lockFile(key: string, deadline: number): Promise<number> {
  let pause = FIRST_POLL_MS;
  for (;;) {
    const fd = openLockFile(key);
    try {
      if (tryLock(fd)) {
        if (stillAtPath(fd, key)) return fd;
        closeSync(fd); // we locked a file someone deleted: start over on the new one
        continue;
      }
      if (Date.now() >= deadline) throw lockedError(key, describeHolder(fd));
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    closeSync(fd);
    await sleep(Math.min(pause, Math.max(1, deadline - Date.now())));
    pause = Math.min(pause * 2, MAX_POLL_MS);
  }
}

function tryLock(fd: number): boolean {
  try {
    flock(fd, LOCK_EX | LOCK_NB);
    return true;
  } catch (e) {
    if (isWouldBlock(e)) return false;
    throw e;
  }
}

function unlockFile(fd: number): void {
  try {
    flock(fd, LOCK_UN);
  } finally {
    closeSync(fd); // closing drops the lock anyway; the explicit unlock just makes it prompt
  }
}

function lockedError(key: string, holder: string | undefined): UnionctlError {
  return new UnionctlError('LOCKED', `timed out waiting for the lock ${key}${holder ? `: ${holder}` : ''}`, {
    hint: 'another unionctl operation on this store is still running; wait for it to finish, or stop that process',
  });
}

/**
 * Who holds the flock on the file behind `fd`, from /proc/locks ("1: FLOCK  ADVISORY  WRITE <pid>
 * <maj>:<min>:<inode> 0 EOF", major/minor in hex). Best effort: undefined when it cannot tell.
 */
function describeHolder(fd: number): string | undefined {
  try {
    const st = fstatSync(fd);
    const major = Number((BigInt(st.dev) >> 8n) & 0xfffn) | Number((BigInt(st.dev) >> 32n) & ~0xfffn);
    const minor = Number(BigInt(st.dev) & 0xffn) | Number((BigInt(st.dev) >> 12n) & 0xfff00n);
    for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f[1] !== 'FLOCK' || f[3] !== 'WRITE') continue;
      const [maj, min, ino] = (f[5] ?? '').split(':');
      if (Number(ino) !== st.ino || parseInt(maj ?? '', 16) !== major || parseInt(min ?? '', 16) !== minor) continue;
      return `held by process ${describeProcess(Number(f[4]))}`;
    }
  } catch {
    /* no /proc: say nothing rather than guess */
  }
  return undefined;
}
