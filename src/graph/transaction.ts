/**
 * Transactions over the store's metadata files: all of a transaction's writes happen, or none.
 *
 * A transaction runs under the store lock (store.lock, a flock: one transaction at a time across
 * every process). Its body reads files (seeing its own pending writes) and queues writes and
 * deletions; nothing reaches the disk until the body has returned. Then:
 * - no change: nothing is written;
 * - one change: it is applied directly (a file replaced atomically, or deleted);
 * - one durable change and deletions that need not be durable (`delete(path, { durable: false })`:
 *   the caller accepts that a crash undoes them): the change is applied first, then the deletions,
 *   with no journal. A crash leaves none of them, the change alone, or all: never a deletion
 *   without the change;
 * - several others: a journal holding all of them is written first (atomically, durably), then
 *   each change is applied, then the journal is deleted. A crash between leaves the journal; the
 *   next transaction (of any process) replays it before it starts — the changes are whole files
 *   and deletions, so replaying twice is harmless.
 * A body that throws leaves the disk as it was. Work that must not happen under the lock (deleting
 * a layer's files, mounting) is handed to afterCommit() and runs once the lock is released.
 *
 * Paths are relative to the store root and must stay inside it.
 */
import { randomBytes } from 'node:crypto';
import { lstatSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { corruptError, UnionctlError } from '../errors.js';
import { fsyncDir, readStoreFile, storeDirExists, writeFileAtomic } from '../sys/index.js';
import { withFileLock } from './lock.js';

const JOURNAL_DIR = 'journal';

/** One queued change: new content for a file, or (content null) its deletion. */
interface Change {
  path: string;
  content: string | null;
  /** fsync before the transaction counts as done (the default; layer records turned complete, and records deleted after their layer, opt out: see store.ts). */
  durable: boolean;
  /** The written file's mode (default 0600); a driver's layout file keeps Docker's (`unionctl check --repair`). */
  mode?: number;
}

interface JournalFile {
  changes: Change[];
}

export interface WriteOptions {
  /** Default true. */
  durable?: boolean;
  /** Mode of a written file; default 0600. */
  mode?: number;
}

/** The handle a transaction body gets. Every method throws once the transaction has ended. */
export class FileTransaction {
  private readonly changes = new Map<string, Change>();
  private readonly after: Array<() => Promise<void>> = [];
  private open = true;

  constructor(readonly root: string) {}

  /** The file's content as this transaction sees it (its own pending writes first); undefined when absent. */
  read(path: string): string | undefined {
    this.assertOpen();
    const pending = this.changes.get(checkedPath(path));
    if (pending !== undefined) return pending.content ?? undefined;
    return readStoreFile(join(this.root, path), 'store file');
  }

  /** Names in directory `dir` as this transaction sees them (pending writes added, pending deletions left out), sorted. */
  list(dir: string): string[] {
    this.assertOpen();
    const names = new Set<string>();
    const path = join(this.root, checkedPath(dir));
    if (storeDirExists(path, 'store directory')) for (const n of readdirSync(path)) names.add(n);
    for (const c of this.changes.values()) {
      if (dirname(c.path) !== normalize(dir)) continue;
      const name = c.path.slice(c.path.lastIndexOf('/') + 1);
      if (c.content === null) names.delete(name);
      else names.add(name);
    }
    return [...names].sort();
  }

  write(path: string, content: string, opts: WriteOptions = {}): void {
    this.assertOpen();
    const p = checkedPath(path);
    this.changes.set(p, { path: p, content, durable: opts.durable ?? true, ...(opts.mode === undefined ? {} : { mode: opts.mode }) });
  }

  /**
   * Deletes the file. A file that is not on disk is no change at all (a pending write of it is
   * dropped): a transaction that deletes only absent files writes nothing, and one whose other
   * change is single needs no journal. `durable: false` for a deletion that may come undone in a
   * crash (the file is then back; e.g. a record whose state makes the next open finish its job).
   */
  delete(path: string, opts: WriteOptions = {}): void {
    this.assertOpen();
    const p = checkedPath(path);
    if (lstatSync(join(this.root, p), { throwIfNoEntry: false }) === undefined) {
      this.changes.delete(p);
      return;
    }
    this.changes.set(p, { path: p, content: null, durable: opts.durable ?? true });
  }

  /** Runs `fn` after the commit, outside the lock, in the order registered (not at all when the body throws). */
  afterCommit(fn: () => Promise<void>): void {
    this.assertOpen();
    this.after.push(fn);
  }

  private assertOpen(): void {
    if (!this.open) {
      throw new UnionctlError('USAGE', 'this store transaction has ended; its handle cannot be used any more', {
        hint: 'do the work inside the transaction body, or start a new transaction (this is a bug in the caller)',
      });
    }
  }

  /** @internal Writes the queued changes (see the module doc) and closes the handle. */
  commit(): Array<() => Promise<void>> {
    this.open = false;
    const changes = [...this.changes.values()];
    assertRealTopDirs(this.root, changes);
    const laxDeletions = changes.filter((c) => c.content === null && !c.durable);
    const others = changes.filter((c) => !laxDeletions.includes(c));
    const unjournaled = changes.length === 1 || others.length === 0 || (others.length === 1 && others[0]!.durable);
    if (unjournaled) for (const change of [...others, ...laxDeletions]) applyChange(this.root, change);
    else commitJournaled(this.root, changes);
    return this.after;
  }

  /** @internal Drops the queued changes and closes the handle. */
  abandon(): void {
    this.open = false;
  }
}

/** What a replayed journal did, for the store's log ("finished an interrupted transaction …"). */
export interface ReplayedJournal {
  file: string;
  changes: number;
}

export interface TransactionOptions {
  /** Told about each journal a crashed transaction left and this one finished first. */
  onReplay?: (journal: ReplayedJournal) => void;
}

/**
 * Runs `body` as one transaction under the lock file `lockPath`, replaying any journal a crashed
 * transaction left first. Returns what `body` returns, after the after-commit work has run.
 */
export async function runTransaction<T>(
  root: string,
  lockPath: string,
  body: (tx: FileTransaction) => Promise<T>,
  opts: TransactionOptions = {},
): Promise<T> {
  let result!: T;
  let after: Array<() => Promise<void>> = [];
  await withFileLock(lockPath, async () => {
    for (const replayed of replayJournals(root)) opts.onReplay?.(replayed);
    const tx = new FileTransaction(root);
    try {
      result = await body(tx);
    } catch (e) {
      tx.abandon();
      throw e;
    }
    after = tx.commit();
  });
  for (const fn of after) await fn();
  return result;
}

/** Finishes every transaction a crashed process left half-applied and says which. Call holding the lock. */
export function replayJournals(root: string): ReplayedJournal[] {
  const dir = join(root, JOURNAL_DIR);
  if (!storeDirExists(dir, 'store journal directory')) return [];
  const replayed: ReplayedJournal[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (name.startsWith('.')) {
      rmSync(path, { force: true }); // a journal whose write never finished: its transaction never happened
      continue;
    }
    const journal = parseJournal(readStoreFile(path, 'store journal') ?? '', path);
    assertRealTopDirs(root, journal.changes);
    for (const change of journal.changes) applyChange(root, change);
    rmSync(path, { force: true });
    replayed.push({ file: path, changes: journal.changes.length });
  }
  // As after a commit: the dir goes once it is empty, so a replay leaves the root as a commit would.
  fsyncDir(removeEmptyDir(dir) ? root : dir);
  return replayed;
}

/**
 * The store's top-level directories a transaction writes into (layerdb/, images/, …) must be real
 * directories, or missing: one replaced by a symlink would carry the writes out of the store.
 */
function assertRealTopDirs(root: string, changes: readonly Change[]): void {
  const tops = new Set(changes.filter((c) => c.path.includes('/')).map((c) => c.path.slice(0, c.path.indexOf('/'))));
  for (const top of tops) storeDirExists(join(root, top), 'store directory');
}

function commitJournaled(root: string, changes: Change[]): void {
  const dir = join(root, JOURNAL_DIR);
  const journal = join(dir, `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}.json`);
  writeFileAtomic(journal, JSON.stringify({ changes } satisfies JournalFile), { durable: true, makeDir: true });
  for (const change of changes) applyChange(root, change);
  rmSync(journal);
  // The dir goes when empty (always, but after a crash), so a store root holds only what it needs.
  // Transactions hold the store lock, so no other process is writing a journal meanwhile.
  // The fsync makes the journal's deletion durable: replayed after later transactions, it would undo them.
  fsyncDir(removeEmptyDir(dir) ? root : dir);
}

/** rmdir; false (and nothing done) when the dir is not empty. */
function removeEmptyDir(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTEMPTY' || (e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}

function applyChange(root: string, change: Change): void {
  const path = join(root, change.path);
  if (change.content !== null) {
    writeFileAtomic(path, change.content, { durable: change.durable, makeDir: true, mode: change.mode });
    return;
  }
  rmSync(path, { force: true });
  if (!change.durable) return;
  try {
    fsyncDir(dirname(path));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

function checkedPath(path: string): string {
  const p = normalize(path);
  if (p.startsWith('/') || p === '..' || p.startsWith('../') || p === '.') {
    throw new UnionctlError('USAGE', `store transaction path ${JSON.stringify(path)} is not inside the store`);
  }
  return p;
}

function parseJournal(text: string, path: string): JournalFile {
  const corrupt = (why: string) =>
    corruptError(`store journal ${path} is damaged (${why}): the transaction it records cannot be finished`, {
      repair: 'restore the store from a backup, or remove the file (the transaction is then lost)',
    });
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw corrupt('not valid JSON');
  }
  const changes = (value as Partial<JournalFile> | null)?.changes;
  if (!Array.isArray(changes)) throw corrupt('no list of changes');
  for (const c of changes as Partial<Change>[]) {
    if (
      typeof c?.path !== 'string' ||
      (c.content !== null && typeof c.content !== 'string') ||
      typeof c.durable !== 'boolean' ||
      (c.mode !== undefined && (!Number.isInteger(c.mode) || c.mode < 0 || c.mode > 0o7777))
    )
      throw corrupt('a change that is not {path, content, durable}');
    try {
      checkedPath(c.path);
    } catch {
      throw corrupt(`a change of ${JSON.stringify(c.path)}, which is not inside the store`);
    }
  }
  return value as JournalFile;
}
