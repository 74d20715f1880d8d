/**
 * The journal of a store migration (src/graph/migrate.ts): `<root>/migrate.json`, written through
 * store transactions. While it is there the store is moving from one driver to another, and only
 * the migration opens it (openStore refuses everyone else with what to run): the layers are then
 * in two driver homes, and a command that changed one of them would make the other wrong.
 *
 * Its phases: "copying" — the store is still the old driver's (records and store.json say so),
 * the layers named in `done` are in the new driver's home too, verified; "switched" — the records
 * and store.json name the new driver (one transaction made the switch), the old home may still be
 * there and is removed next. The journal goes once the old home is gone.
 */
import { join } from 'node:path';
import { corruptError, UnionctlError } from '../errors.js';
import { parseStoreJsonObject, processAlive, readStoreFile, type ProcessIdentity } from '../sys/index.js';

/** The journal's path, relative to the store root. */
export const MIGRATION_JOURNAL = 'migrate.json';

export type MigrationPhase = 'copying' | 'switched';

export interface MigrationJournal {
  from: string;
  to: string;
  phase: MigrationPhase;
  /** Layers copied into `to`'s home and verified, parents first. */
  done: string[];
  /** ISO 8601: when the migration began. */
  started: string;
  /** The process running the migration now (a resumed one takes it over). */
  owner: ProcessIdentity;
}

/** The journal of the store at `root`, or undefined when no migration is under way. CORRUPT when it is damaged. */
export function readMigrationJournal(root: string): MigrationJournal | undefined {
  const file = join(root, MIGRATION_JOURNAL);
  const text = readStoreFile(file, 'migration journal');
  if (text === undefined) return undefined;
  const corrupt = (why: string) =>
    corruptError(`migration journal ${file} ${why}`, {
      repair: 'the store.json driver is the one whose layers are complete; remove the journal and the other driver home by hand',
    });
  const j = parseStoreJsonObject(text, corrupt);
  const strings = ['from', 'to', 'started'].every((k) => typeof j[k] === 'string');
  const phaseOk = j.phase === 'copying' || j.phase === 'switched';
  const doneOk = Array.isArray(j.done) && j.done.every((d) => typeof d === 'string');
  if (!strings || !phaseOk || !doneOk || typeof j.owner !== 'object' || j.owner === null) {
    throw corrupt('does not hold {from, to, phase, done, started, owner}');
  }
  return j as unknown as MigrationJournal;
}

/** The command that finishes (or, while copying, undoes) the migration the journal describes. */
export function migrationHint(j: MigrationJournal): string {
  const finish = `run unionctl migrate --to ${j.to} to finish it`;
  return j.phase === 'copying' ? `${finish}, or unionctl migrate --abort to stay with ${j.from}` : finish;
}

/**
 * IN_USE while the store at `root` is being migrated: by a running process (wait for it), or by one
 * that died (finish or abort it). What openStore says to every command but the migration.
 */
export function assertNotMigrating(root: string): void {
  const j = readMigrationJournal(root);
  if (j === undefined) return;
  throw migrationInProgress(root, j);
}

export function migrationInProgress(root: string, j: MigrationJournal): UnionctlError {
  const running = processAlive(j.owner);
  return new UnionctlError(
    'IN_USE',
    `the store at ${root} is being migrated from the ${j.from} driver to ${j.to}` +
      (running
        ? ` by process ${j.owner.pid}`
        : ` (the migration stopped ${j.phase === 'copying' ? 'while copying layers' : 'after the switch'})`),
    { hint: running ? 'wait for it to finish' : migrationHint(j) },
  );
}
