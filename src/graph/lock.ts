/**
 * Exclusive locks shared by processes: flock(2) on a lock file, plus an in-process FIFO queue so
 * concurrent callers inside one process wait their turn instead of all polling the kernel.
 *
 * flock is tied to the open file description, so the kernel drops the lock when the holder dies
 * (SIGKILL, crash): a lock can never be left behind by a dead process. The lock file itself stays
 * on disk on purpose — deleting it while another process waits on the old inode would let two
 * processes "hold" the same path.
 *
 * Reentrancy: a call made from inside `fn` (or from anything `fn` starts asynchronously) on the
 * same path runs straight away, it does not wait for itself. AsyncLocalStorage carries the set of
 * paths the current async context holds.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnionctlError } from '../errors.js';
import { flock, LOCK_EX, LOCK_NB, LOCK_UN } from '../sys/index.js';

const DEFAULT_TIMEOUT_MS = 60_000;
/** Poll interval bounds while another process holds the lock. */
const FIRST_POLL_MS = 2;
const MAX_POLL_MS = 100;

/** Paths (resolved) the current async context holds. */
const held = new AsyncLocalStorage<ReadonlySet<string>>();
/** Per path: the promise the next in-process caller must wait for. */
const queueTails = new Map<string, Promise<void>>();

export interface FileLockOptions {
  /** Give up after this long (waiting in this process and for other processes), default 60 s. */
  timeoutMs?: number;
}

/** Runs `fn` while holding the exclusive lock on `lockPath` (created, with its directory, if missing). */
export async function withFileLock<T>(lockPath: string, fn: () => Promise<T>, opts: FileLockOptions = {}): Promise<T> {
  const key = resolve(lockPath);
  const mine = held.getStore();
  if (mine?.has(key)) return fn();

  const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const releaseTurn = await waitForTurn(key, deadline);
  try {
    const fd = await lockFile(key, deadline);
    try {
      const nowHeld = new Set(mine ?? []);
      nowHeld.add(key);
      return await held.run(nowHeld, fn);
    } finally {
      unlockFile(fd);
    }
  } finally {
    releaseTurn();
  }
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

function openLockFile(key: string): number {
  try {
    return openSync(key, 'a', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    mkdirSync(dirname(key), { recursive: true, mode: 0o700 });
    return openSync(key, 'a', 0o600);
  }
}

function isWouldBlock(e: unknown): boolean {
  const errno = (e as { errno?: unknown }).errno;
  return errno === 'EAGAIN' || errno === 'EWOULDBLOCK';
}

/** Takes the flock, polling with backoff (a blocking flock would block the event loop). */
async function lockFile(key: string, deadline: number): Promise<number> {
  const fd = openLockFile(key);
  let pause = FIRST_POLL_MS;
  try {
    for (;;) {
      try {
        flock(fd, LOCK_EX | LOCK_NB);
        return fd;
      } catch (e) {
        if (!isWouldBlock(e) && (e as { errno?: unknown }).errno !== 'EINTR') throw e;
      }
      if (Date.now() >= deadline) throw lockedError(key, describeHolder(fd));
      await sleep(Math.min(pause, Math.max(1, deadline - Date.now())));
      pause = Math.min(pause * 2, MAX_POLL_MS);
    }
  } catch (e) {
    closeSync(fd);
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
      if (Number(ino) !== st.ino || parseInt(maj, 16) !== major || parseInt(min, 16) !== minor) continue;
      const pid = Number(f[4]);
      return `held by process ${pid}${commandOf(pid)}`;
    }
  } catch {
    /* no /proc: say nothing rather than guess */
  }
  return undefined;
}

function commandOf(pid: number): string {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    return argv.length > 0 ? ` (${argv.join(' ').slice(0, 200)})` : '';
  } catch {
    return '';
  }
}
