/**
 * Moving a whole store to another storage driver, in place (`unionctl migrate --to DRIVER`).
 *
 * Layer by layer, parents first, each layer is re-made in the new driver's home with the same id
 * and parent: its diff is exported by the old driver and applied by the new one (one stream through
 * the one tar engine, no temp copy). An image layer goes through the new driver's applyDiff; a
 * writable layer is written through its mounted view, as a container would have written it (so
 * each driver keeps writable layers in its own writable form). The records keep every field but
 * `driver` (ids, diff ID, chain ID, size, origin, creation time), the tar-splits and image records
 * are not touched: images keep their ids, and `save` rebuilds the same bytes from the new files.
 *
 * Each copied layer is verified before it counts: its merged view in the new driver must export
 * the same tar as in the old one, and an image layer's tar-split must rebuild its diff ID from the
 * new files (when it did from the old ones). Then one transaction switches the records and
 * store.json to the new driver, and only then is the old home removed.
 *
 * Crash safety: the journal (migration-journal.ts) says how far it got. A migration killed at any
 * point is finished by running it again: a half-copied layer (in the new home but not in the
 * journal's `done`) is removed and copied again; after the switch only the old home's removal is
 * left. Meanwhile every other command refuses the store, naming the command that finishes the
 * migration (or, before the switch, `--abort`, which drops the new home and leaves the store as it
 * was).
 */
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { exportLayerDir } from '../archive/export.js';
import { sha256Of } from '../archive/stream-digest.js';
import { rebuildTarStream, readTarSplit } from '../archive/tar-split.js';
import { UnionctlError } from '../errors.js';
import { currentProcess, ensureStoreDir, processAlive, removeStoreTree, storeDirExists } from '../sys/index.js';
import type { Driver } from './driver.js';
import { migrationHint, migrationInProgress, MIGRATION_JOURNAL, readMigrationJournal, type MigrationJournal } from './migration-journal.js';
import { NaiveDiff, type ViewSource } from './naive-diff.js';
import { lookupDriver, parseStorageOpts, selectDriver, storageOptsFor } from './registry.js';
import { DEFAULT_STORE_ROOT, openStore, type LayerRecord, type LayerStore, type StoreLogger, type StoreTx } from './store.js';

export interface MigrateOptions {
  /** Store root, default /var/lib/unionctl. */
  root?: string;
  /** The driver to move to. */
  to: string;
  /** "key=value" storage options, Docker's keys, for either driver: each takes the keys that are its own. */
  storageOpt?: string[];
  /** What the store does on its own (recovery) and what the migration warns about; see StoreOptions.log. */
  log?: StoreLogger;
  /** Told as the migration goes: each layer before it is copied, the switch, the old home's removal. */
  onProgress?: (event: MigrateProgress) => void;
}

export type MigrateProgress =
  | { step: 'layer'; index: number; total: number; id: string; writable: boolean }
  | { step: 'switch'; from: string; to: string }
  | { step: 'remove-old'; driver: string; home: string };

export interface MigrateResult {
  root: string;
  from: string;
  to: string;
  /** Layers the store holds (all now in `to`'s home). */
  layers: number;
  /** Layers this run copied (fewer than `layers` when it finished an interrupted migration). */
  copied: number;
  /** This run finished a migration an earlier one had begun. */
  resumed: boolean;
}

/**
 * Moves the store at opts.root to driver opts.to (see the module doc), or finishes the
 * interrupted migration to opts.to. Refuses, changing nothing: BAD_OPTION (an unknown driver, a
 * storage option neither driver knows), NOT_FOUND (no store), USAGE (the store uses opts.to
 * already; another migration is unfinished), UNSUPPORTED (this kernel cannot run opts.to), IN_USE
 * (a layer is mounted or referenced, a layer is being created or removed, another process is
 * migrating), EXISTS (opts.to's home holds data already). CORRUPT when a copied layer does not
 * check out: the old home is untouched then, and `abortMigration` goes back to it.
 */
export async function migrateStore(opts: MigrateOptions): Promise<MigrateResult> {
  const root = resolve(opts.root ?? DEFAULT_STORE_ROOT);
  const entry = lookupDriver(opts.to);
  const pending = readMigrationJournal(root);
  if (pending !== undefined) assertResumable(root, pending, opts.to);
  const { store, journal: found } = await openMigrating(root, opts);
  try {
    if (found !== undefined) assertResumable(root, found, opts.to); // as it is once the store's recovery has run
    let journal = found === undefined ? await beginMigration(store, entry.name) : await takeOver(store, found);
    const layers = parentsFirst(await store.list());
    let copied = 0;
    if (journal.phase === 'copying') {
      const target = await openDriver(root, journal.to, opts.storageOpt ?? []);
      ({ journal, copied } = await copyLayers(store, target, journal, layers, opts));
      opts.onProgress?.({ step: 'switch', from: journal.from, to: journal.to });
      journal = await switchStore(store, target, journal, layers);
    }
    opts.onProgress?.({ step: 'remove-old', driver: journal.from, home: join(root, journal.from) });
    await removeDriverHome(root, journal.from, opts.storageOpt ?? []);
    await store.transaction(async (tx) => tx.deleteDocument(MIGRATION_JOURNAL));
    return { root, from: journal.from, to: journal.to, layers: layers.length, copied, resumed: found !== undefined };
  } finally {
    await store.close();
  }
}

/**
 * Opens the store for the migration, and reads its journal once the store's own interrupted
 * transaction (if any) is finished: a switch killed half-way through its commit is completed by
 * that, and the store then has to be opened again with the driver the switch named.
 */
async function openMigrating(
  root: string,
  opts: Pick<MigrateOptions, 'log' | 'storageOpt'>,
): Promise<{ store: LayerStore; journal?: MigrationJournal }> {
  const open = () => openStore({ root, mustExist: true, migrating: true, log: opts.log, anyDriverStorageOpt: opts.storageOpt ?? [] });
  let store = await open();
  const journal = readMigrationJournal(root);
  if (journal?.phase === 'switched' && store.driver.name !== journal.to) {
    await store.close();
    store = await open();
  }
  return { store, journal };
}

/**
 * Undoes a migration that stopped before its switch: the new driver's home goes, the store stays
 * the old driver's as it was. USAGE when there is no migration, or it is past the switch (then only
 * finishing it is left); IN_USE while its process is still running.
 */
export async function abortMigration(
  opts: Pick<MigrateOptions, 'root' | 'storageOpt' | 'log'>,
): Promise<{ root: string; from: string; to: string }> {
  const root = resolve(opts.root ?? DEFAULT_STORE_ROOT);
  assertAbortable(root, readMigrationJournal(root));
  const { store, journal } = await openMigrating(root, opts);
  let j: MigrationJournal;
  try {
    j = assertAbortable(root, journal); // as it is once the store's recovery has run
    // Nothing was mounted when the migration began and nothing could mount since: what is, the
    // killed migration mounted to compare views.
    await store.cleanup();
    await removeDriverHome(root, j.to, opts.storageOpt ?? []);
    await store.transaction(async (tx) => tx.deleteDocument(MIGRATION_JOURNAL));
  } finally {
    await store.close();
  }
  return { root, from: j.from, to: j.to };
}

/** The journal, when it is one of a migration that stopped before its switch (see abortMigration). */
function assertAbortable(root: string, j: MigrationJournal | undefined): MigrationJournal {
  if (j === undefined)
    throw new UnionctlError('USAGE', `the store at ${root} is not being migrated`, { hint: 'there is nothing to abort' });
  if (processAlive(j.owner)) throw migrationInProgress(root, j);
  if (j.phase !== 'copying') {
    throw new UnionctlError('USAGE', `the migration of ${root} to ${j.to} is past its switch and cannot be undone`, {
      hint: migrationHint(j),
    });
  }
  return j;
}

/** A journal left by a migration this call may finish: to the same driver, by a process that is gone. */
function assertResumable(root: string, j: MigrationJournal, to: string): void {
  if (processAlive(j.owner)) throw migrationInProgress(root, j);
  if (j.to !== to) {
    throw new UnionctlError('USAGE', `the store at ${root} is half-way through a migration to ${j.to}, not ${to}`, {
      hint: migrationHint(j),
    });
  }
}

/** The journal with this process as its owner (a resumed migration). */
async function takeOver(store: LayerStore, j: MigrationJournal): Promise<MigrationJournal> {
  const mine = { ...j, owner: currentProcess() };
  await store.transaction(async (tx) => tx.writeDocument(MIGRATION_JOURNAL, journalText(mine)));
  return mine;
}

function journalText(j: MigrationJournal): string {
  return `${JSON.stringify(j, null, 2)}\n`;
}

/**
 * The checks that refuse a migration before anything changes, then the journal: from then on
 * other commands refuse the store. Mounts are looked for again after the journal is written, so a
 * mount made just before it is not missed (the journal is taken back then).
 */
async function beginMigration(store: LayerStore, to: string): Promise<MigrationJournal> {
  const from = store.driver.name;
  if (from === to) {
    throw new UnionctlError('USAGE', `the store at ${store.root} already uses the ${to} driver`, { hint: 'name another driver with --to' });
  }
  selectDriver(store.root, to); // UNSUPPORTED, with the reason, when this kernel cannot run it
  await assertNothingInUse(store);
  assertHomeEmpty(store.root, to);
  const journal: MigrationJournal = { from, to, phase: 'copying', done: [], started: new Date().toISOString(), owner: currentProcess() };
  await store.transaction(async (tx) => {
    // Another migrate that passed the same checks just before: only one journal.
    const other = readJournalIn(tx);
    if (other !== undefined) throw migrationInProgress(store.root, other);
    const busy = tx.scanRecords();
    if (busy.damaged.length > 0) throw busy.damaged[0]!.error;
    const unfinished = busy.records.find((r) => r.state !== 'complete');
    if (unfinished !== undefined) {
      throw new UnionctlError('IN_USE', `layer ${unfinished.id} is being ${unfinished.state === 'creating' ? 'created' : 'removed'}`, {
        hint: 'wait for that command to finish, then migrate',
      });
    }
    tx.writeDocument(MIGRATION_JOURNAL, journalText(journal));
  });
  try {
    await assertNothingInUse(store);
  } catch (e) {
    await store.transaction(async (tx) => tx.deleteDocument(MIGRATION_JOURNAL));
    throw e;
  }
  return journal;
}

function readJournalIn(tx: StoreTx): MigrationJournal | undefined {
  return tx.readDocument(MIGRATION_JOURNAL) === undefined ? undefined : readMigrationJournal(tx.store.root);
}

/** IN_USE, naming the layer, when anything of the store is mounted or held by a process. */
async function assertNothingInUse(store: LayerStore): Promise<void> {
  const mounted = await store.mounts();
  if (mounted.length > 0) {
    throw new UnionctlError(
      'IN_USE',
      `cannot migrate the store at ${store.root}: layer ${mounted[0]!.layer} is mounted (${mounted[0]!.path})`,
      {
        hint: 'unmount everything first (unionctl umount --all, or unionctl cleanup), then migrate',
      },
    );
  }
  for (const layer of await store.list()) store.assertUnused(layer.id);
}

/**
 * EXISTS when <root>/<driver> holds data (a file, or a directory that is not empty): the layers
 * could not be made there under their ids, and it is not the store's to delete.
 */
function assertHomeEmpty(root: string, driver: string): void {
  const home = join(root, driver);
  if (!storeDirExists(home, `${driver} driver home`)) return;
  const busy = readdirSync(home, { withFileTypes: true }).some((e) => !e.isDirectory() || readdirSync(join(home, e.name)).length > 0);
  if (busy) {
    throw new UnionctlError('EXISTS', `the ${driver} driver home ${home} already holds data`, {
      hint: `move it away (it is not the store's: the store uses ${driver} for nothing yet), then migrate`,
    });
  }
}

/** A driver on the store's root, as openStore would make it: its home, its state dir, its options among `storageOpt`. */
async function openDriver(root: string, name: string, storageOpt: string[]): Promise<Driver> {
  const entry = selectDriver(root, name);
  const options = parseStorageOpts(storageOptsFor(entry.optionKeys, storageOpt), entry.optionKeys, `${name} driver`);
  ensureStoreDir(join(root, 'driver-state'), 0o700, 'driver state directory');
  const stateDir = join(root, 'driver-state', name);
  ensureStoreDir(stateDir, 0o700, 'driver state directory');
  const driver = await entry.create({ home: join(root, name), root, stateDir, options });
  await driver.recover?.();
  return driver;
}

/** Layers ordered so that every parent comes before its children (then oldest first). */
function parentsFirst(layers: LayerRecord[]): LayerRecord[] {
  const byId = new Map(layers.map((l) => [l.id, l]));
  const depth = (l: LayerRecord): number => {
    let d = 0;
    for (let p = l.parent; p !== undefined && d <= layers.length; p = byId.get(p)?.parent) d++;
    return d;
  };
  return layers
    .map((l, i) => ({ l, d: depth(l), i }))
    .sort((a, b) => a.d - b.d || a.i - b.i)
    .map(({ l }) => l);
}

/**
 * Copies every layer the journal does not list as done into `target`, verifies it and adds it to
 * the journal. What an interrupted run left of a layer (storage in `target` without a journal
 * entry) is removed first, children before parents.
 */
async function copyLayers(
  store: LayerStore,
  target: Driver,
  journal: MigrationJournal,
  layers: LayerRecord[],
  opts: MigrateOptions,
): Promise<{ journal: MigrationJournal; copied: number }> {
  const done = new Set(journal.done);
  const todo = layers.filter((l) => !done.has(l.id));
  for (const layer of [...todo].reverse()) {
    if (await target.exists(layer.id)) await target.remove(layer.id, { force: true, parent: layer.parent });
  }
  const warn = (m: string) => opts.log?.('warn', m);
  let j = journal;
  for (const layer of todo) {
    opts.onProgress?.({ step: 'layer', index: layers.indexOf(layer) + 1, total: layers.length, id: layer.id, writable: layer.writable });
    await copyLayer(store, target, layer, warn);
    await verifyLayer(store, target, layer);
    j = { ...j, done: [...j.done, layer.id] };
    const next = j;
    await store.transaction(async (tx) => tx.writeDocument(MIGRATION_JOURNAL, journalText(next)));
  }
  await target.cleanup(); // what an earlier, killed run left mounted in the new home
  return { journal: j, copied: todo.length };
}

/**
 * Re-makes `layer` in `target`. An image layer loaded from a tar gets that very tar, rebuilt from
 * its tar-split and the old driver's files: the new driver then stores it exactly as a load would
 * have (an opaque directory as the driver's opaque marker, not one whiteout per entry it hid,
 * which is what a diff of a full-copy driver says). Any other layer gets the old driver's diff.
 */
async function copyLayer(store: LayerStore, target: Driver, layer: LayerRecord, warn: (m: string) => void): Promise<void> {
  if (!layer.writable && (await copyLoadedTar(store, target, layer, warn))) return;
  const tar = await store.diff(layer.id);
  try {
    if (layer.writable) {
      await target.createReadWrite(layer.id, layer.parent);
      // Through the mounted view, with real deletions: the driver stores them as its writable layers do.
      await new NaiveDiff(target).applyDiff(layer.id, layer.parent, tar, { onWarning: warn });
    } else {
      await target.create(layer.id, layer.parent);
      await target.applyDiff(layer.id, layer.parent, tar, { onWarning: warn });
    }
  } finally {
    tar.destroy();
  }
}

/**
 * Applies the layer's original tar (tar-split + old files) into a new layer of `target`; true when
 * that tar had the layer's diff ID. false, with nothing left in `target`, when the layer has no
 * tar-split or its files no longer rebuild it (written through a mount since its load).
 */
async function copyLoadedTar(store: LayerStore, target: Driver, layer: LayerRecord, warn: (m: string) => void): Promise<boolean> {
  const split = readTarSplit(store.tarSplitPath(layer.id));
  if (split === undefined || layer.diffId === undefined) return false;
  await target.create(layer.id, layer.parent);
  let applied: string | undefined;
  try {
    const result = await withView(store.driver, layer.id, (dir) =>
      target.applyDiff(layer.id, layer.parent, Readable.from(rebuildTarStream(split, dir)), { onWarning: warn }),
    );
    applied = result.diffId;
  } catch (e) {
    if (!(e instanceof UnionctlError) || e.code !== 'CORRUPT') throw e; // CORRUPT: a file no longer fits its tar-split
  }
  if (applied === layer.diffId) return true;
  await target.remove(layer.id, { force: true, parent: layer.parent });
  return false;
}

/**
 * CORRUPT unless the copy checks out: the merged views of the layer in both drivers export the
 * same tar, and the tar-split of an image layer rebuilds its diff ID from the new files (when it
 * does from the old: a layer written through a mount since its load rebuilds neither).
 */
async function verifyLayer(store: LayerStore, target: Driver, layer: LayerRecord): Promise<void> {
  const before = await withView(store.driver, layer.id, (dir) => sha256Of(exportLayerDir(dir, 'plain')));
  const after = await withView(target, layer.id, (dir) => sha256Of(exportLayerDir(dir, 'plain')));
  const notSame = (what: string) =>
    new UnionctlError('CORRUPT', `layer ${layer.id} copied into the ${target.name} driver does not check out: ${what}`, {
      hint: `nothing of the ${store.driver.name} store was changed; unionctl migrate --abort goes back to it`,
    });
  if (before !== after) throw notSame(`its merged view exports as ${after}, not ${before} as in ${store.driver.name}`);
  const split = readTarSplit(store.tarSplitPath(layer.id));
  if (split === undefined || layer.diffId === undefined) return;
  const rebuilt = await withView(target, layer.id, (dir) => sha256Of(rebuildTarStream(split, dir)));
  if (rebuilt === layer.diffId) return;
  const old = await withView(store.driver, layer.id, (dir) => sha256Of(rebuildTarStream(split, dir)));
  if (old === layer.diffId) throw notSame(`its tar-split rebuilds ${rebuilt}, not its diff ID ${layer.diffId}`);
}

async function withView<T>(driver: ViewSource, id: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await driver.get(id);
  try {
    return await fn(dir);
  } finally {
    await driver.put(id);
  }
}

/**
 * The switch: every layer is in `target` (checked), then one transaction makes the records and
 * store.json name it and the journal say "switched".
 */
async function switchStore(store: LayerStore, target: Driver, journal: MigrationJournal, layers: LayerRecord[]): Promise<MigrationJournal> {
  const done = new Set(journal.done);
  for (const layer of layers) {
    if (!done.has(layer.id) || !(await target.exists(layer.id))) {
      throw new UnionctlError('CORRUPT', `layer ${layer.id} is not in the ${target.name} driver home after copying`, {
        hint: migrationHint(journal),
      });
    }
  }
  const switched: MigrationJournal = { ...journal, phase: 'switched' };
  await store.transaction(async (tx) => {
    tx.switchDriver(target.name);
    tx.writeDocument(MIGRATION_JOURNAL, journalText(switched));
  });
  return switched;
}

/**
 * Removes a driver's home and state under root: its driver unmounts whatever it still has mounted
 * there (a view a killed run left) and releases its pools and devices, then the directories go
 * (never across a mount: removeStoreTree refuses that).
 */
async function removeDriverHome(root: string, name: string, storageOpt: string[]): Promise<void> {
  if (storeDirExists(join(root, name), `${name} driver home`)) {
    try {
      await (await openDriver(root, name, storageOpt)).cleanup();
    } catch (e) {
      // A removal killed half-way leaves a home the driver may not open; it unmounted everything
      // before it began deleting, and removeStoreTree refuses to cross a mount anyway.
      if (!(e instanceof UnionctlError)) throw e;
    }
  }
  removeStoreTree(root, name, `${name} driver home`);
  removeStoreTree(root, join('driver-state', name), `${name} driver state`);
}
