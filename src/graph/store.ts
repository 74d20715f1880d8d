/**
 * The layer store: the graph of layers (ids, parents, digests, sizes) on top of one storage
 * driver. The driver keeps the files and the mount references; the store keeps the records, the
 * transactions and the crash safety, the same for every driver.
 *
 * On disk, under the store root:
 *   layerdb/<id>.json   one record per layer
 *   layerdb/<id>.tar-split.gz  for an imported layer: what rebuilds its tar byte for byte
 *                       (src/archive/tar-split.ts), written before the record is "complete"
 *   images/             image records and load journals (src/image/records.ts, through transactions)
 *   journal/            transactions being committed (transaction.ts)
 *   store.lock          the transaction lock (flock), between processes
 *   store.json          {"driver": …}: the driver the store was made with (kept while it has no layers)
 *   plugins/            state of servers on the store (src/serve/: a Docker plugin's persisted Init)
 *   migrate.json        a move to another driver under way (migrate.ts, migration-journal.ts)
 *   driver-state/<driver>/  the driver's own bookkeeping: mount references, per-layer locks (and
 *                       `cleanup` while a cleanup runs)
 *   <driver>/           the driver's home, exactly as Docker's driver of that name lays it out
 *
 * Transactions. Every change to the records runs in `store.transaction(async (tx) => …)`: under
 * the store lock, all-or-nothing (a body that throws changes nothing; a crash mid-commit is
 * finished by the next transaction). Code that needs the lock takes a StoreTx parameter: that is
 * how it says so. The lock is never held for slow work: deleting a layer's files, applying a tar,
 * mounting. Those run outside, between two transactions, with the record saying where they are
 * (containerd's overlay snapshotter works the same way). Readers (list, layer, …) take no lock:
 * every file is replaced atomically, so they see it before or after a change, never half.
 *
 * Crash safety. A record is written with state "creating" (and its owner process) BEFORE the
 * driver makes anything, and becomes "complete" only once the layer's content is all there; a
 * removal first marks the record "removing", then deletes the layer, then the record. So the
 * driver never holds a layer the records do not know about, and openStore finishes what a dead
 * process left: a "creating" record whose owner is gone is rolled back (driver.remove with force,
 * which tolerates half-made layers, then the record), a "removing" one is completed, and so is
 * a cleanup (recorded in driver-state/<driver>/cleanup while it runs).
 * A layer directory without a record is never swept: it cannot come from this store, and might be
 * someone else's data (a Docker home the store was pointed at). What recovery did is said through
 * StoreOptions.log, one line each; the library says nothing unless asked.
 *
 * Damage. Every file is read without following a symlink and checked (sys/store-files.ts,
 * parseRecord): a damaged one is CORRUPT naming it, pointing to `unionctl check`. Listings can go
 * on without a damaged record (list's onDamaged); changes cannot when the damage might matter (a
 * removal whose layer a damaged record might be built on).
 *
 * Extensions (image records, src/image/) plug in with registerStoreExtension: a guard that can
 * keep a layer from being removed, and a recovery step run when a store is opened.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { ReadOnlyViews, readOnlyViewPath } from './read-only-views.js';
import { readTarSplit, TarSplitRecorder, writeTarSplit, type TarSplitRecord } from '../archive/tar-split.js';
import type { TarTap } from '../archive/tar-reader.js';
import { exportLayerDir } from '../archive/export.js';
import { ambiguousPrefixError, assertValidId, corruptError, damagedFilesError, isValidId, UnionctlError } from '../errors.js';
import {
  atomicTempPrefix,
  currentProcess,
  ensureStoreDir,
  parseStoreJsonObject,
  processAlive,
  readStoreFile,
  removeDeadTempFiles,
  isMountPoint,
  storeDirExists,
  type ProcessIdentity,
} from '../sys/index.js';
import type { ApplyResult, Branch, Change, CheckFinding, Driver, DriverCapabilities, MountPlan, References } from './driver.js';
import {
  driverNames,
  lookupDriver,
  parseStorageOpts,
  selectDriver,
  splitStorageOpts,
  storageOptsFor,
  type DriverEntry,
} from './registry.js';
import { runTransaction, type FileTransaction, type WriteOptions } from './transaction.js';
import { assertNotMigrating, MIGRATION_JOURNAL } from './migration-journal.js';

export const DEFAULT_STORE_ROOT = '/var/lib/unionctl';

export interface StoreOptions {
  /** Store root, default /var/lib/unionctl. */
  root?: string;
  /** Driver name; default: the driver the store already uses, else the best this kernel supports. */
  driver?: string;
  /** Driver-wide storage options, "key=value" items or a map, Docker's keys. */
  storageOpt?: string[] | Record<string, string>;
  /**
   * Storage options that may be meant for any driver (a configuration file's, Docker's names:
   * `overlay2.size=10G`, `dm.basesize=20G`): the opened driver takes those among its option keys,
   * beside `storageOpt`, and the others are left alone, as containers-storage leaves the
   * `[storage.options.<driver>]` tables of other drivers.
   */
  anyDriverStorageOpt?: string[];
  /**
   * Where the store says what it did on its own: 'info' — what crash recovery rolled back or
   * finished (one line each); 'warn' — what it could not do. Default: info is dropped (the library
   * stays quiet unless asked), warnings go to process.emitWarning. The CLI prints both on stderr.
   */
  log?: StoreLogger;
  /**
   * Open only a store that is there (what read-only commands want): NOT_FOUND "no store at ROOT"
   * when ROOT holds no store, and, when `driver` is given, NOT_FOUND when the store has no layers
   * of that driver. Nothing is created, probed or written then. Default: a missing store is made.
   */
  mustExist?: boolean;
  /**
   * Open a store that a driver migration is moving (src/graph/migrate.ts): only the migration
   * itself does. Without it, a store with a migration journal is IN_USE, saying what to run.
   */
  migrating?: boolean;
}

export type StoreLogLevel = 'info' | 'warn';
export type StoreLogger = (level: StoreLogLevel, message: string) => void;

const defaultLogger: StoreLogger = (level, message) => {
  if (level === 'warn') process.emitWarning(`unionctl: ${message}`);
};

/**
 * Who a layer was made for. 'user': made directly (import, create, mount --rw): the user owns it,
 * and removing an image that came to use it (a load that found it by chain ID) keeps it.
 * 'image': came in with an image (load, pull) or was made for a runtime (containerd, dockerd);
 * it goes with the last image that uses it. Records written before origins were kept have none:
 * they count as 'image' (as every layer of an image did then).
 */
export type LayerOrigin = 'user' | 'image';

export interface LayerRecord {
  id: string;
  parent?: string;
  /** See LayerOrigin; absent in older records. */
  origin?: LayerOrigin;
  /** "sha256:…" of the uncompressed layer tar (imported layers only). */
  diffId?: string;
  /** Docker's chain id: the diffId for a base layer, else sha256(parentChainId + " " + diffId). */
  chainId?: string;
  /** Bytes of file content the layer tar carried, symlinks counting their target's length, as its diff size counts them (0 for a created, empty layer). */
  size: number;
  /** ISO 8601. */
  created: string;
  driver: string;
  writable: boolean;
}

export interface ImportOptions {
  id?: string;
  parent?: string;
  /** Called as the input is read, with the uncompressed tar bytes read so far. */
  onProgress?: (bytesRead: number) => void;
  /** What the apply skipped or took as it is (an empty input, xattrs dropped or refused); default process.emitWarning. */
  onWarning?: (message: string) => void;
  /**
   * Runs once the tar is applied, before the layer is complete: a throw (a diff ID or blob digest
   * that does not match what an image promised) rolls the layer back like any failed import.
   */
  verify?: (result: ApplyResult) => void | Promise<void>;
  /**
   * The parent is being imported by this process right now (a pull applying its layers at once):
   * `created` resolves once the parent's storage exists, `done` once its import has completed,
   * and `done` rejects when it failed. With a driver whose layer dirs hold only their own diff
   * (overlay2, aufs) this layer is created and applied meanwhile — the entries that read the
   * layers below wait for `done` — and is made complete after its parent, with the chain ID the
   * complete parent gives. The other drivers (vfs, overlay, devicemapper) build a layer from its
   * parent's contents: there the import starts once `done` has resolved. A failed parent fails
   * this import too, rolled back like any failed import.
   */
  parentImport?: { created: Promise<unknown>; done: Promise<unknown> };
  /** Called once the layer's storage exists (still empty), before the tar is applied: a child's parentImport.created. */
  onCreated?: () => void;
  /** Every entry's name as the tar spells it, before the entry is applied (the CLI's image-archive sniffer); a throw fails the import. */
  onEntry?: (name: string) => void;
  /** Who the layer is for (LayerOrigin); default 'user'. load and pull give 'image'. */
  origin?: LayerOrigin;
}

/** What LayerStore.applyDiff takes: importLayer's hooks, and the parent the caller expects the layer to have. */
export interface ApplyDiffOptions extends Pick<ImportOptions, 'onProgress' | 'onWarning' | 'verify'> {
  /** When given, must be the layer's parent (USAGE otherwise): Docker's ApplyDiff names it. */
  parent?: string;
}

export interface ListOptions {
  /** Told about each damaged record file (a CORRUPT error naming it); the listing then goes on without it instead of failing. */
  onDamaged?: (error: UnionctlError) => void;
}

export interface CreateLayerOptions {
  id?: string;
  parent?: string;
  writable?: boolean;
  /** Per-layer storage options (writable layers only), e.g. size=10G. */
  storageOpt?: Record<string, string> | string[];
  /** Who the layer is for (LayerOrigin); default 'user'. The runtime servers give 'image'. */
  origin?: LayerOrigin;
}

export interface StoreInfo {
  driver: string;
  root: string;
  status: Array<[string, string]>;
  capabilities: DriverCapabilities;
}

type RecordState = 'creating' | 'complete' | 'removing';

/** The process that is creating a layer. */
export type Owner = ProcessIdentity;

/** What layerdb/<id>.json holds. */
export interface StoredRecord extends LayerRecord {
  state: RecordState;
  owner?: Owner;
}

/** What a store extension (src/image/) plugs in. */
export interface StoreExtension {
  name: string;
  /**
   * Why layer `id` must stay (e.g. "it belongs to image X"), read inside the removing transaction,
   * or undefined when it may go. A reason refuses the removal with IN_USE.
   */
  removeGuard?(tx: StoreTx, id: string): { reason: string; hint: string } | undefined;
  /**
   * Asked by an image removal, in its transaction: why layer `id` stays although the image that
   * used it goes (a containerd snapshot holds it), or undefined. Keeping it, the extension takes the
   * layer over: it becomes the extension's to remove, so nothing is left owned by nobody. Unlike a
   * removeGuard, which refuses the removal.
   */
  keeps?(tx: StoreTx, id: string): string | undefined;
  /** Runs when a store is opened, after the layer records are recovered, outside any transaction. */
  recover?(store: LayerStore): Promise<void>;
  /** Names of files the extension keeps directly in the store root (a root holding them is still only a store). */
  rootFiles?: readonly string[];
  /** Its part of `unionctl check` (graph/check.ts), in the check's transaction: problems of its records. */
  check?(tx: StoreTx): CheckFinding[];
}

const extensions: StoreExtension[] = [];

/** The extensions registered, in order (what `unionctl check` asks too). */
export function storeExtensions(): readonly StoreExtension[] {
  return extensions;
}

/** Adds an extension to every store opened from now on (the composition root, src/index.ts, does this). */
export function registerStoreExtension(ext: StoreExtension): void {
  if (extensions.some((e) => e.name === ext.name)) return;
  extensions.push(ext);
}

// ---- small helpers ---------------------------------------------------------------------------

function sha256(text: string): string {
  return `sha256:${createHash('sha256').update(text).digest('hex')}`;
}

/** Docker's ChainID: diffId alone for a base layer, else sha256 of "<parent chainId> <diffId>". */
export function chainIdOf(parentChainId: string | undefined, diffId: string): string {
  return parentChainId === undefined ? diffId : sha256(`${parentChainId} ${diffId}`);
}

function isMissing(e: unknown): boolean {
  return (e as NodeJS.ErrnoException).code === 'ENOENT';
}

function publicRecord(r: StoredRecord): LayerRecord {
  const { state: _state, owner: _owner, ...rest } = r;
  return rest;
}

const byAge = (a: LayerRecord, b: LayerRecord) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id);

/** The oldest complete image layer with this chain ID among `records` (damaged records are never among them). */
function oldestImageLayerWithChain(records: StoredRecord[], chainId: string): StoredRecord | undefined {
  return records.filter((r) => r.state === 'complete' && !r.writable && r.chainId === chainId).sort(byAge)[0];
}

const LAYERDB = 'layerdb';
const recordPath = (id: string) => `${LAYERDB}/${id}.json`;
const tarSplitRelPath = (id: string) => `${LAYERDB}/${id}.tar-split.gz`;

const RECORD_STATES: readonly string[] = ['creating', 'complete', 'removing'];

/** A record file's content, checked: a damaged one is CORRUPT naming the file and the field, never an internal error. */
function parseRecord(text: string, file: string, id: string): StoredRecord {
  const corrupt = (why: string) =>
    corruptError(`layer record ${file} ${why}`, {
      repair: "restore the file from a backup, or remove the record and the layer's driver directory by hand",
    });
  const r = parseStoreJsonObject(text, corrupt);
  if (r.id !== id) throw corrupt(`is for layer ${JSON.stringify(r.id)}, not ${id}`);
  const problem = recordProblem(r);
  if (problem !== undefined) throw corrupt(`has ${problem}`);
  return r as unknown as StoredRecord;
}

/** What is wrong with a parsed record ("\"created\": null, not an ISO 8601 time"), or undefined. */
function recordProblem(r: Record<string, unknown>): string | undefined {
  const field = (k: string) => (r[k] === undefined ? `no "${k}"` : `"${k}": ${JSON.stringify(r[k]).slice(0, 60)}`);
  for (const k of ['parent', 'diffId', 'chainId']) if (r[k] !== undefined && typeof r[k] !== 'string') return `${field(k)}, not a string`;
  if (r.parent !== undefined && !isValidId(r.parent)) return `${field('parent')}, not a layer id`;
  if (typeof r.size !== 'number' || !Number.isFinite(r.size) || r.size < 0) return `${field('size')}, not a byte count`;
  if (typeof r.created !== 'string' || Number.isNaN(Date.parse(r.created))) return `${field('created')}, not an ISO 8601 time`;
  if (typeof r.driver !== 'string') return `${field('driver')}, not a driver name`;
  if (typeof r.writable !== 'boolean') return `${field('writable')}, not true or false`;
  if (typeof r.state !== 'string' || !RECORD_STATES.includes(r.state)) return `${field('state')}, not one of ${RECORD_STATES.join(', ')}`;
  if (r.owner !== undefined && !isProcessIdentity(r.owner)) return `${field('owner')}, not {pid, start, boot}`;
  if (r.origin !== undefined && r.origin !== 'user' && r.origin !== 'image') return `${field('origin')}, not "user" or "image"`;
  return undefined;
}

function isProcessIdentity(v: unknown): v is ProcessIdentity {
  const p = v as Partial<ProcessIdentity> | null;
  return typeof p === 'object' && p !== null && Number.isSafeInteger(p.pid) && typeof p.start === 'string' && typeof p.boot === 'string';
}

/** A record file that did not parse: the error naming it, and what can still be told of its parent. */
interface DamagedRecord {
  id: string;
  error: UnionctlError;
  /** Its "parent" when the file is JSON that still says (a string, or none: undefined); null when it cannot be told. */
  parent: string | undefined | null;
}

/** The records of a listing, and the files that are damaged (a listing can go on without them). */
interface RecordScan {
  records: StoredRecord[];
  damaged: DamagedRecord[];
}

/** Parses every `<id>.json` of `names` with `read`, keeping the damaged ones apart. */
function scanRecords(
  names: readonly string[],
  read: (id: string) => StoredRecord | undefined,
  rawText: (id: string) => string | undefined,
): RecordScan {
  const scan: RecordScan = { records: [], damaged: [] };
  for (const f of names) {
    if (!f.endsWith('.json') || f.startsWith('.')) continue;
    const id = f.slice(0, -'.json'.length);
    if (!isValidId(id)) continue; // not a record name this store writes
    try {
      const rec = read(id);
      if (rec !== undefined) scan.records.push(rec);
    } catch (e) {
      if ((e as UnionctlError).code !== 'CORRUPT') throw e;
      scan.damaged.push({ id, error: e as UnionctlError, parent: parentOfDamaged(rawText, id) });
    }
  }
  return scan;
}

function parentOfDamaged(rawText: (id: string) => string | undefined, id: string): string | undefined | null {
  try {
    const v = JSON.parse(rawText(id) ?? '') as { parent?: unknown } | null;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
    if (v.parent === undefined) return undefined;
    return isValidId(v.parent) ? v.parent : null;
  } catch {
    return null;
  }
}

/** The process a cleanup record names; undefined (a dead owner) when the record is damaged. */
function parseOwner(text: string): ProcessIdentity | undefined {
  try {
    const o = JSON.parse(text) as unknown;
    return isProcessIdentity(o) ? o : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What an import reads. A file is checked here, so a bad path fails before anything changes, and
 * is then handed to the driver by path: the tar engine reads a file without an extra stream stage.
 */
function openInput(input: string | Readable): string | Readable {
  if (typeof input !== 'string') return input;
  if (input === '-') return process.stdin;
  let fd: number;
  try {
    fd = openSync(input, 'r');
  } catch (e) {
    if (isMissing(e)) throw new UnionctlError('NOT_FOUND', `layer tarball ${input} does not exist`, { hint: 'check the path' });
    throw new UnionctlError('USAGE', `cannot read layer tarball ${input}: ${(e as Error).message}`, { cause: e });
  }
  try {
    if (fstatSync(fd).isDirectory()) {
      throw new UnionctlError('USAGE', `${input} is a directory, not a layer tarball`, { hint: 'give a .tar, .tar.gz or .tar.zst file' });
    }
  } finally {
    closeSync(fd);
  }
  return input;
}

// ---- opening ---------------------------------------------------------------------------------

/** Driver names the records under root were made with (read-only: opening must not write before the checks). */
function recordedDrivers(root: string): Set<string> {
  const names = new Set<string>();
  const dir = join(root, LAYERDB);
  if (!storeDirExists(dir, 'layer record directory')) return names;
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.json') || f.startsWith('.')) continue;
    try {
      const driver = (JSON.parse(readStoreFile(join(dir, f), 'layer record') ?? '') as Partial<StoredRecord>).driver;
      if (typeof driver === 'string') names.add(driver);
    } catch {
      /* a damaged record is reported by list(); it does not decide the driver */
    }
  }
  return names;
}

/** <root>/store.json: the store's own settings, today the driver it was made with. */
const STORE_SETTINGS = 'store.json';

interface StoreSettings {
  driver: string;
}

function readStoreSettings(root: string): StoreSettings | undefined {
  const file = join(root, STORE_SETTINGS);
  const text = readStoreFile(file, 'store settings file');
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  const driver = (value as Partial<StoreSettings> | null | undefined)?.driver;
  if (typeof driver !== 'string' || driver === '') {
    throw corruptError(`store settings file ${file} does not hold {"driver": "<name>"}`, {
      repair: 'write the driver the store was made with into it, or remove it (the driver is then taken from the layers)',
    });
  }
  return { driver };
}

/**
 * The driver asked for; else the one store.json names (the driver the store was made with, even
 * while it has no layers); else the one its layer records use; else auto-selection.
 */
function chooseDriver(root: string, requested: string | undefined, mustExist: boolean): DriverEntry {
  if (requested !== undefined) lookupDriver(requested); // unknown names first: BAD_OPTION listing the known ones
  if (mustExist) assertStoreExists(root); // before any probe of a kernel feature writes near a root that is not there
  const settings = readStoreSettings(root);
  const used = [...recordedDrivers(root)];
  if (requested !== undefined && used.length > 0 && !used.includes(requested)) {
    throw new UnionctlError('BAD_OPTION', `the store at ${root} holds layers of storage driver ${used.join(', ')}, not ${requested}`, {
      hint: `use --driver ${used[0]}, or another --root for ${requested}`,
    });
  }
  if (requested === undefined && settings !== undefined && used.length > 0 && !used.includes(settings.driver)) {
    throw corruptError(
      `store settings file ${join(root, STORE_SETTINGS)} names storage driver ${settings.driver}, but the store's layers are ${used.join(', ')}'s`,
      { repair: `name the driver: --driver ${used[0]} (which rewrites the file)` },
    );
  }
  return selectDriver(root, requested ?? settings?.driver ?? used[0]);
}

/** Docker's post-CVE-2021-41091 modes: nobody but root may traverse the store root. */
const ROOT_MODE = 0o700;
/** What a store root holds besides the driver homes (plugins/: the state of servers on the store, src/serve/). */
const STORE_ENTRIES = new Set([
  LAYERDB,
  'store.lock',
  STORE_SETTINGS,
  'driver-state',
  'journal',
  'images',
  'tmp',
  'mounts',
  'plugins',
  MIGRATION_JOURNAL,
]);

/**
 * Makes the store root (0700, also when it existed with a wider mode: Docker's daemon root is
 * chmodded the same way — but only a directory that holds nothing but a store: `--root /tmp` by
 * mistake must not take /tmp away from everyone; the driver homes, 0710, still keep other users
 * out of the layers there) and its layerdb/ and driver-state/<driver>/, none of them a symlink.
 */
function prepareRoot(root: string, driver: string): string {
  ensureRootDir(root);
  ensureStoreDir(join(root, LAYERDB), 0o700, 'layer record directory');
  ensureStoreDir(join(root, 'driver-state'), 0o700, 'driver state directory');
  const stateDir = join(root, 'driver-state', driver);
  ensureStoreDir(stateDir, 0o700, 'driver state directory');
  storeDirExists(join(root, driver), `${driver} driver home`); // the driver makes it; it must not be a symlink
  return stateDir;
}

function ensureRootDir(root: string): void {
  let st = statSync(root, { throwIfNoEntry: false }); // the root itself may be a symlink: the user named it
  if (st === undefined) {
    mkdirSync(root, { recursive: true, mode: ROOT_MODE });
    st = statSync(root);
  }
  if (!st.isDirectory()) throw new UnionctlError('USAGE', `the store root ${root} is not a directory`, { hint: 'give another --root' });
  if ((st.mode & 0o7777) === ROOT_MODE) return;
  const drivers = new Set(driverNames());
  const leftover = atomicTempPrefix(join(root, STORE_SETTINGS)); // a store.json write that crashed
  const extensionFiles = new Set(extensions.flatMap((e) => e.rootFiles ?? []));
  const onlyStore = readdirSync(root).every(
    (n) => STORE_ENTRIES.has(n) || drivers.has(n) || extensionFiles.has(n) || n.startsWith(leftover),
  );
  if (onlyStore) chmodSync(root, ROOT_MODE);
}

/** storageOpt as "key=value" items, whichever form it came in. */
function storageOptItems(opts: StoreOptions['storageOpt']): string[] {
  if (opts === undefined || Array.isArray(opts)) return opts ?? [];
  return Object.entries(opts).map(([key, value]) => `${key}=${value}`);
}

/**
 * Opens (creating if needed) the store at opts.root with its driver, and repairs what a crashed
 * process left behind. Unknown drivers and options are refused before anything is written.
 */
export async function openStore(opts: StoreOptions = {}): Promise<LayerStore> {
  const root = resolve(opts.root ?? DEFAULT_STORE_ROOT);
  if (opts.migrating !== true) assertNotMigrating(root);
  const entry = chooseDriver(root, opts.driver, opts.mustExist ?? false);
  if (opts.mustExist && opts.driver !== undefined) assertStoreExists(root, entry.name);
  const options = parseStorageOpts(
    [...storageOptItems(opts.storageOpt), ...storageOptsFor(entry.optionKeys, opts.anyDriverStorageOpt ?? [])],
    entry.optionKeys,
    `${entry.name} driver`,
  );
  const stateDir = prepareRoot(root, entry.name);
  const driver = await entry.create({ home: join(root, entry.name), root, stateDir, options });
  removeLegacyMountCounts(root);
  const store = new LayerStore(root, driver, opts.log ?? defaultLogger);
  if (readStoreSettings(root)?.driver !== entry.name) {
    await store.transaction(async (tx) =>
      tx.writeDocument(STORE_SETTINGS, `${JSON.stringify({ driver: entry.name } satisfies StoreSettings)}\n`),
    );
  }
  await store.recover();
  // A migration's first transaction, killed in its commit, shows its journal only once recovery replayed it.
  if (opts.migrating !== true) assertNotMigrating(root);
  return store;
}

/**
 * A store is a root with its settings file or its layer records (a store older than the settings
 * file has only those); with a driver named, that driver's home must be there too.
 */
function assertStoreExists(root: string, driver?: string): void {
  const has = (name: string) => lstatSync(join(root, name), { throwIfNoEntry: false }) !== undefined;
  if (!has(STORE_SETTINGS) && !has(LAYERDB)) {
    throw new UnionctlError('NOT_FOUND', `no store at ${root}`, {
      hint: 'check --root (or UNIONCTL_ROOT); a store is made by the first import, create, load or pull',
    });
  }
  if (driver !== undefined && !has(driver)) {
    const uses = readStoreSettings(root)?.driver;
    throw new UnionctlError('NOT_FOUND', `the store at ${root} has no ${driver} layers${uses === undefined ? '' : ` (it uses ${uses})`}`, {
      hint: uses === undefined ? 'check --driver' : `leave out --driver, or use --driver ${uses}`,
    });
  }
}

/**
 * <root>/mounts/: the store's own mount counts before the mount lifecycle counted them (the
 * driver's reference files, read as persistent references, carry the same counts). Only files of
 * that format ({"count", "boot"}) and its lock are deleted; anything else there stays.
 */
function removeLegacyMountCounts(root: string): void {
  const dir = join(root, 'mounts');
  let names: string[];
  try {
    if (!storeDirExists(dir, 'legacy mount count directory')) return;
    names = readdirSync(dir);
  } catch {
    return; // a symlink there is not followed: left alone
  }
  for (const name of names) {
    const file = join(dir, name);
    try {
      const v =
        name === '.lock' ? {} : (JSON.parse(readStoreFile(file, 'legacy mount count') ?? '') as { count?: unknown; boot?: unknown });
      if (name === '.lock' || (typeof v.count === 'number' && typeof v.boot === 'string')) rmSync(file);
    } catch {
      /* not ours: left alone */
    }
  }
  try {
    rmdirSync(dir);
  } catch {
    /* not empty: something else is in there */
  }
}

// ---- the transaction handle --------------------------------------------------------------------

/**
 * The handle of one store transaction (see the module doc): the layer records as the transaction
 * sees them, the changes it makes, and documents of extensions (image records) under the root.
 * Every method throws USAGE once the transaction has ended.
 */
export class StoreTx {
  constructor(
    readonly store: LayerStore,
    private readonly files: FileTransaction,
  ) {}

  /** The record of `id` in any state, or undefined. CORRUPT for a damaged record file. */
  record(id: string): StoredRecord | undefined {
    assertValidId(id);
    const text = this.files.read(recordPath(id));
    return text === undefined ? undefined : parseRecord(text, join(this.store.root, recordPath(id)), id);
  }

  /** Every intact record, whatever its state (damaged record files are left out: see scanRecords). */
  records(): StoredRecord[] {
    return this.scanRecords().records;
  }

  /** Every record, and apart from them the record files that are damaged. */
  scanRecords(): RecordScan {
    return scanRecords(
      this.files.list(LAYERDB),
      (id) => this.record(id),
      (id) => this.files.read(recordPath(id)),
    );
  }

  /** The complete layer `id` (NOT_FOUND when there is none, or it is still being created or removed). */
  layer(id: string, what = 'layer'): StoredRecord {
    return requireComplete(id, this.record(id), what);
  }

  /**
   * Ids of the layers built on `id` (those being removed do not count), sorted. A damaged record
   * counts as a child when it still names `id` as its parent; one that cannot say what its parent
   * is makes this CORRUPT (it might be a child): a removal must not guess.
   */
  children(id: string): string[] {
    const { records, damaged } = this.scanRecords();
    const unknown = damaged.find((d) => d.parent === null);
    if (unknown !== undefined) throw unknown.error;
    return [
      ...records.filter((r) => r.parent === id && r.state !== 'removing').map((r) => r.id),
      ...damaged.filter((d) => d.parent === id).map((d) => d.id),
    ].sort();
  }

  /**
   * Writes a record. Durable unless it is "complete": fsyncing right after an apply makes ext4
   * commit the journal with the layer's thousands of new inodes and write out their data first —
   * measured, a third of an import's time. No graphdriver fsyncs a layer's files either; so a
   * power cut in the seconds after an import may bring the layer back as "creating", and the next
   * openStore rolls it back, which is safer than a durable "complete" over files that never
   * reached the disk. The next durable write (any create or remove) makes it durable.
   */
  putRecord(rec: StoredRecord): void {
    this.files.write(recordPath(rec.id), `${JSON.stringify(rec, null, 2)}\n`, { durable: rec.state !== 'complete' });
  }

  /**
   * Deletes the record and the layer's tar-split, with any temp files a crash left of them.
   * `afterStorage`: the layer's storage is gone already and the record says "removing" or
   * "creating", so the deletion need not be durable: undone by a crash, the record is back in a
   * state whose recovery (finish the removal, roll back the creation) finds nothing left to do
   * but delete it again.
   */
  deleteRecord(id: string, opts: { afterStorage?: boolean } = {}): void {
    const durable = !opts.afterStorage;
    this.files.delete(tarSplitRelPath(id), { durable });
    this.files.delete(recordPath(id), { durable });
    const leftovers = [
      atomicTempPrefix(join(this.store.root, tarSplitRelPath(id))),
      atomicTempPrefix(join(this.store.root, recordPath(id))),
    ];
    for (const f of this.files.list(LAYERDB)) if (leftovers.some((p) => f.startsWith(p))) this.files.delete(`${LAYERDB}/${f}`);
  }

  /**
   * Removes layer `id` as part of this transaction: refused (nothing changes) with NOT_FOUND,
   * HAS_CHILDREN, IN_USE (an extension's guard, or the layer is mounted or referenced). Its
   * record turns "removing" at the commit; its storage and then the record are deleted after
   * the commit, outside the lock. If a reader takes the layer in that moment (the driver refuses
   * with IN_USE), `onInUse` decides: 'restore' makes it complete again and the removal throws;
   * 'finish-later' leaves it "removing" (hidden) for the next openStore to finish.
   */
  removeLayer(id: string, opts: { onInUse: 'restore' | 'finish-later' }): void {
    const rec = this.layer(id);
    this.assertNoChildren(id, 'remove the children first');
    const guard = this.removeGuardOf(id);
    if (guard !== undefined) throw new UnionctlError('IN_USE', `layer ${id} ${guard.reason}`, { hint: guard.hint });
    this.store.assertUnused(id);
    this.putRecord({ ...rec, state: 'removing' });
    this.afterCommit(async () => {
      await this.store.finishRemoval(rec, opts.onInUse);
    });
  }

  /** HAS_CHILDREN, naming them, while layers are built on `id`. */
  private assertNoChildren(id: string, hint?: string): void {
    const children = this.children(id);
    if (children.length > 0) {
      throw new UnionctlError('HAS_CHILDREN', `layer ${id} has child layers: ${children.join(', ')}`, { hint });
    }
  }

  /** Why an extension refuses the removal of layer `id` (the first reason), or undefined. */
  removeGuardOf(id: string): { reason: string; hint: string } | undefined {
    for (const ext of extensions) {
      const guard = ext.removeGuard?.(this, id);
      if (guard !== undefined) return guard;
    }
    return undefined;
  }

  /** Why an extension keeps layer `id` when an image using it is removed (StoreExtension.keeps), or undefined. */
  keptByExtension(id: string): string | undefined {
    for (const ext of extensions) {
      const reason = ext.keeps?.(this, id);
      if (reason !== undefined) return reason;
    }
    return undefined;
  }

  /**
   * Makes writable layer `id` an image layer in this transaction (containerd's Commit of an
   * active snapshot): the driver drops what marks it writable at once (idempotent, so a commit
   * that fails after it is simply retried), and the record turns non-writable with the diff ID,
   * chain ID and size given. Refuses, changing nothing: NOT_FOUND, USAGE (not a writable layer),
   * HAS_CHILDREN, IN_USE (mounted or referenced through the store), UNSUPPORTED (the driver keeps
   * writable layers in another format: it has no sealWritable).
   */
  async commitWritableLayer(id: string, fields: { diffId?: string; chainId?: string; size: number }): Promise<LayerRecord> {
    const rec = this.layer(id);
    if (!rec.writable)
      throw new UnionctlError('USAGE', `layer ${id} is not a writable layer`, { hint: 'only a writable layer can be committed' });
    const driver = this.store.driver;
    if (driver.sealWritable === undefined) {
      throw new UnionctlError('UNSUPPORTED', `the ${driver.name} driver cannot turn a writable layer into an image layer`, {
        hint: 'serve a store of a driver that can (overlay2, overlay, vfs, aufs, devicemapper)',
      });
    }
    this.assertNoChildren(id);
    this.store.assertUnused(id);
    await driver.sealWritable(id);
    const { diffId: _d, chainId: _c, ...base } = rec;
    const done: StoredRecord = {
      ...base,
      ...(fields.diffId === undefined ? {} : { diffId: fields.diffId }),
      ...(fields.chainId === undefined ? {} : { chainId: fields.chainId }),
      size: fields.size,
      writable: false,
    };
    this.putRecord(done);
    return publicRecord(done);
  }

  /**
   * Makes `driver` the store's driver in this transaction (a migration's switch, migrate.ts):
   * every record names it, and so does store.json. The layers must be in its home already.
   * CORRUPT, changing nothing, when a record file is damaged (it would keep the old driver).
   */
  switchDriver(driver: string): void {
    const { records, damaged } = this.scanRecords();
    if (damaged.length > 0) throw damagedFilesError(damaged.map((d) => d.error));
    for (const rec of records) this.putRecord({ ...rec, driver });
    this.files.write(STORE_SETTINGS, `${JSON.stringify({ driver } satisfies StoreSettings)}\n`);
  }

  /** The complete image layer with this chain ID as this transaction sees it (the oldest of several), if any: what a load or an adoption reuses. */
  layerByChainId(chainId: string): StoredRecord | undefined {
    return oldestImageLayerWithChain(this.records(), chainId);
  }

  /** A document of an extension (path relative to the root): its content as this transaction sees it. */
  readDocument(path: string): string | undefined {
    return this.files.read(path);
  }

  /** Names in a directory of documents, as this transaction sees it. */
  listDocuments(dir: string): string[] {
    return this.files.list(dir);
  }

  /**
   * `durable: false`: a crash may undo the write (the file is then as before); for a document
   * whose loss the next open repairs, which spares the transaction its fsyncs. `mode`: the file's
   * mode (default 0600), for a file of a driver's home (unionctl check --repair rewrites some).
   */
  writeDocument(path: string, content: string, opts: WriteOptions = {}): void {
    this.files.write(path, content, opts);
  }

  /** `durable: false`: a crash may undo the deletion (transaction.ts: then it needs no journal beside one other change). */
  deleteDocument(path: string, opts: { durable?: boolean } = {}): void {
    this.files.delete(path, opts);
  }

  /** Runs `fn` after the commit, outside the lock (slow work: deleting files, mounting). */
  afterCommit(fn: () => Promise<void>): void {
    this.files.afterCommit(fn);
  }
}

function requireComplete(id: string, rec: StoredRecord | undefined, what: string): StoredRecord {
  if (rec === undefined) throw new UnionctlError('NOT_FOUND', `${what} ${id} does not exist`, { hint: 'list the layers with unionctl ls' });
  if (rec.state === 'creating') {
    throw new UnionctlError('NOT_FOUND', `${what} ${id} is still being created (by process ${rec.owner?.pid ?? '?'})`, {
      hint: 'wait for that import or create to finish',
    });
  }
  if (rec.state === 'removing')
    throw new UnionctlError('NOT_FOUND', `${what} ${id} is being removed`, { hint: 'list the layers with unionctl ls' });
  return rec;
}

/**
 * Records ordered so that a layer comes before its parent: a pull that was killed may leave a
 * "creating" layer on a "creating" parent, and the child goes first.
 */
function childrenFirst(recs: StoredRecord[]): StoredRecord[] {
  const byId = new Map(recs.map((r) => [r.id, r]));
  const depth = (r: StoredRecord): number => {
    let d = 0;
    for (let p = r.parent; p !== undefined && byId.has(p) && d <= recs.length; p = byId.get(p)!.parent) d++;
    return d;
  };
  return recs
    .map((r) => ({ r, d: depth(r) }))
    .sort((a, b) => b.d - a.d)
    .map(({ r }) => r);
}

/** How beginCreate and createWithRollback make a record. */
interface CreationOptions {
  /** A parent this process is still creating will do (a pull applying layers at once). */
  parentMayBeCreating?: boolean;
  origin?: LayerOrigin;
}

// ---- the store -------------------------------------------------------------------------------

export class LayerStore {
  readonly root: string;
  readonly driver: Driver;
  private readonly lockPath: string;
  private readonly log: StoreLogger;
  private closed = false;
  /**
   * Releases that run after a stream the store handed out has closed (flatten's put, diff's
   * release): close() waits for them, so a process that ends after close() leaves no layer
   * mounted or device active behind (devicemapper's put runs dmsetup, which a process.exit
   * right after the stream would cut off).
   */
  private readonly pendingReleases = new Set<Promise<void>>();
  private views: ReadOnlyViews | undefined;

  constructor(root: string, driver: Driver, log: StoreLogger = defaultLogger) {
    this.root = root;
    this.driver = driver;
    this.lockPath = join(root, 'store.lock');
    this.log = log;
  }

  /** Says what the store did on its own (recovery) through the logger it was opened with (StoreOptions.log). */
  report(level: StoreLogLevel, message: string): void {
    this.log(level, message);
  }

  /**
   * Runs `body` as one transaction (see the module doc) and returns what it returns, once the
   * changes are committed and the after-commit work has run. Not reentrant: a transaction started
   * from inside a body waits for that body to end (awaiting it there is a deadlock, ended by a
   * LOCKED error after 60 s). The handle must not be used after the body has returned.
   */
  transaction<T>(body: (tx: StoreTx) => Promise<T>): Promise<T> {
    this.assertOpen();
    return runTransaction(this.root, this.lockPath, (files) => body(new StoreTx(this, files)), {
      onReplay: (j) => this.report('info', `finished an interrupted transaction (${j.changes} changes journaled in ${j.file})`),
    });
  }

  // ---- records, read without the lock ----------------------------------------------------------

  private readRecord(id: string): StoredRecord | undefined {
    const file = join(this.root, recordPath(id));
    const text = readStoreFile(file, 'layer record');
    return text === undefined ? undefined : parseRecord(text, file, id);
  }

  /** Every record, the damaged record files apart. */
  private readAllRecords(): RecordScan {
    const dir = join(this.root, LAYERDB);
    const names = storeDirExists(dir, 'layer record directory') ? readdirSync(dir) : [];
    return scanRecords(
      names,
      (id) => this.readRecord(id),
      (id) => readStoreFile(join(this.root, recordPath(id)), 'layer record'),
    );
  }

  private completeRecord(id: string, what = 'layer'): StoredRecord {
    assertValidId(id, `${what} id`);
    return requireComplete(id, this.readRecord(id), what);
  }

  /** layerdb/<id>.tar-split.gz: what rebuilds an imported layer's tar byte for byte. */
  tarSplitPath(id: string): string {
    return join(this.root, tarSplitRelPath(id));
  }

  private assertOpen(): void {
    if (this.closed)
      throw new UnionctlError('USAGE', `the layer store at ${this.root} is closed`, { hint: 'open it again with openStore' });
  }

  // ---- crash recovery ------------------------------------------------------------------------

  /**
   * Removes the temp files of record writes that were killed and what killed mounts and unmounts
   * left (the driver's recover), rolls back creations whose process died, completes interrupted
   * removals and cleanups, then runs the extensions' recovery (interrupted image loads). Run by
   * openStore. One stuck layer does not make the store unusable: it stays hidden, a warning says
   * why, and the next open retries.
   */
  async recover(): Promise<void> {
    // Records (and the cleanup record) whose writer was killed before its rename.
    for (const dir of [LAYERDB, dirname(this.cleanupPath)]) removeDeadTempFiles(join(this.root, dir));
    await this.driver.recover?.();
    await this.readOnlyViews('if-any')?.prune();
    const { stale, cleanup } = await this.transaction(async (tx) => ({
      stale: tx.records().filter((r) => r.state === 'removing' || (r.state === 'creating' && !processAlive(r.owner))),
      cleanup: tx.readDocument(this.cleanupPath),
    }));
    for (const rec of childrenFirst(stale)) {
      try {
        if (rec.state === 'removing') {
          if (await this.finishRemoval(rec, 'finish-later')) this.report('info', `finished the interrupted removal of layer ${rec.id}`);
        } else {
          await this.rollBackCreation(rec.id, rec.parent);
          this.report('info', `rolled back the interrupted creation of layer ${rec.id} (its process ${rec.owner?.pid ?? '?'} is gone)`);
        }
      } catch (e) {
        const what = rec.state === 'removing' ? 'removal' : 'creation';
        this.report('warn', `could not clean up the interrupted ${what} of layer ${rec.id}: ${(e as Error).message}`);
      }
    }
    if (cleanup !== undefined && !processAlive(parseOwner(cleanup))) {
      try {
        await this.unmountEverything();
        await this.transaction(async (tx) => {
          if (tx.readDocument(this.cleanupPath) === cleanup) tx.deleteDocument(this.cleanupPath);
        });
        this.report('info', 'finished an interrupted cleanup (its process is gone)');
      } catch (e) {
        this.report('warn', `could not finish an interrupted cleanup: ${(e as Error).message}`);
      }
    }
    for (const ext of extensions) await ext.recover?.(this);
  }

  /**
   * After a "removing" record was committed: deletes the layer's storage, then its record (true).
   * When a reader holds the layer (IN_USE), 'restore' makes the record complete again and
   * rethrows; 'finish-later' leaves it for the next openStore (false).
   */
  async finishRemoval(rec: StoredRecord, onInUse: 'restore' | 'finish-later'): Promise<boolean> {
    try {
      await this.driver.remove(rec.id, { parent: rec.parent });
    } catch (e) {
      if ((e as UnionctlError).code !== 'IN_USE') throw e; // may have deleted part: stays "removing", finished on the next open
      if (onInUse === 'finish-later') return false;
      await this.transaction(async (tx) => tx.putRecord({ ...rec, state: 'complete' }));
      throw e;
    }
    await this.transaction(async (tx) => tx.deleteRecord(rec.id, { afterStorage: true }));
    return true;
  }

  /** Removes a layer that is being created (nobody else knows it: force) and its record. */
  private async rollBackCreation(id: string, parent: string | undefined): Promise<void> {
    await this.driver.remove(id, { force: true, parent });
    await this.transaction(async (tx) => tx.deleteRecord(id, { afterStorage: true }));
  }

  /** IN_USE when the layer is mounted (its own view or its read-only view) or referenced by any process. */
  assertUnused(id: string): void {
    const refs = this.driver.references(id);
    if (refs.total === 0 && !refs.mounted) return;
    const mounts = this.mountCount(id);
    const why =
      mounts > 0
        ? `is mounted (${mounts} mount${mounts === 1 ? '' : 's'})`
        : refs.processes.length > 0
          ? `is in use by another process (${refs.processes.map((p) => p.pid).join(', ')})`
          : refs.heldBy.length > 0
            ? `is held by ${refs.heldBy.join(', ')}`
            : 'has its union mounted (by no counted reference)';
    throw new UnionctlError('IN_USE', `layer ${id} ${why}`, {
      hint: mounts > 0 ? `unmount it first: unionctl umount ${id}` : 'wait for that process to finish, or run unionctl cleanup',
    });
  }

  // ---- queries -------------------------------------------------------------------------------

  async info(): Promise<StoreInfo> {
    this.assertOpen();
    return { driver: this.driver.name, root: this.root, status: await this.driver.status(), capabilities: this.driver.capabilities() };
  }

  /**
   * Complete layers, oldest first. A damaged record file makes this CORRUPT (naming the file), unless
   * `onDamaged` is given: then it is told each damaged record and the listing goes on without them
   * (the CLI's `ls` lists the rest and then fails naming them).
   */
  async list(opts: ListOptions = {}): Promise<LayerRecord[]> {
    this.assertOpen();
    const { records, damaged } = this.readAllRecords();
    if (damaged.length > 0 && opts.onDamaged === undefined) throw damagedFilesError(damaged.map((d) => d.error));
    for (const d of damaged) opts.onDamaged?.(d.error);
    return records
      .filter((r) => r.state === 'complete')
      .sort(byAge)
      .map(publicRecord);
  }

  async layer(id: string): Promise<LayerRecord> {
    this.assertOpen();
    return publicRecord(this.completeRecord(id));
  }

  /**
   * The id of the layer `ref` names: `ref` itself when a complete layer has that id, else the one
   * complete layer whose id starts with `ref` (a short id, as tables show it, or any longer prefix).
   * Refuses INVALID_ID (`ref` cannot start an id), NOT_FOUND (no layer has it or starts with it) and
   * USAGE when several layers start with it (the message lists them).
   */
  async resolveLayer(ref: string): Promise<string> {
    this.assertOpen();
    assertValidId(ref);
    if (this.readRecord(ref)?.state === 'complete') return ref;
    const matches = this.layerIdsStartingWith(ref);
    if (matches.length === 1) return matches[0]!;
    if (matches.length === 0)
      throw new UnionctlError('NOT_FOUND', `layer ${ref} does not exist`, { hint: 'list the layers with unionctl ls' });
    throw ambiguousPrefixError(`layer id prefix ${ref}`, matches);
  }

  /** Ids of the complete layers that start with `prefix` (the exact id included), sorted. */
  layerIdsStartingWith(prefix: string): string[] {
    this.assertOpen();
    const dir = join(this.root, LAYERDB);
    const names = storeDirExists(dir, 'layer record directory') ? readdirSync(dir) : [];
    return names
      .filter((n) => n.startsWith(prefix) && n.endsWith('.json'))
      .map((n) => n.slice(0, -'.json'.length))
      .filter((id) => isValidId(id) && this.readRecord(id)?.state === 'complete')
      .sort();
  }

  /** The complete image layer with this chain ID (for reuse by an image load), if any. Damaged records are never reused. */
  async layerByChainId(chainId: string): Promise<LayerRecord | undefined> {
    this.assertOpen();
    const found = oldestImageLayerWithChain(this.readAllRecords().records, chainId);
    return found === undefined ? undefined : publicRecord(found);
  }

  /**
   * The layer's size as it is now: an image layer's as its record says (fixed when it was made), a
   * writable layer's the bytes of its changes (diffSize; its record says 0, its content changes
   * while it is used). A layer removed meanwhile keeps the size of the record given.
   */
  async currentSize(layer: LayerRecord): Promise<number> {
    if (!layer.writable) return layer.size;
    try {
      return await this.diffSize(layer.id);
    } catch (e) {
      if ((e as UnionctlError).code !== 'NOT_FOUND') throw e;
      return layer.size;
    }
  }

  /** The layer's tar-split record (undefined: the layer was not imported from a tar, or predates them). */
  async tarSplit(id: string): Promise<TarSplitRecord | undefined> {
    this.assertOpen();
    this.completeRecord(id);
    return readTarSplit(this.tarSplitPath(id));
  }

  /**
   * Runs fn with a directory that shows the layer's files at their paths (the driver's merged view,
   * mounted for the call if it needs a mount): what rebuilding the layer's tar reads.
   */
  async withLayerFiles<T>(id: string, fn: (dir: string) => Promise<T>): Promise<T> {
    this.assertOpen();
    this.completeRecord(id);
    const dir = await this.driver.get(id);
    try {
      return await fn(dir);
    } finally {
      await this.driver.put(id);
    }
  }

  // ---- create / import -----------------------------------------------------------------------

  /**
   * Checks the id and parent and queues the "creating" record. Returns the parent's record.
   * Refuses EXISTS (the id is taken, by a record or by a directory the store does not know — never
   * taken over, never deleted) and NOT_FOUND (no complete parent; with parentMayBeCreating, a
   * parent this process is creating will do).
   */
  private async beginCreate(
    tx: StoreTx,
    id: string,
    parent: string | undefined,
    writable: boolean,
    opts: CreationOptions = {},
  ): Promise<StoredRecord | undefined> {
    if (tx.record(id) !== undefined) throw new UnionctlError('EXISTS', `layer ${id} already exists`, { hint: 'choose another id' });
    if (await this.driver.exists(id)) {
      throw new UnionctlError(
        'EXISTS',
        `layer id ${id} is already used by a directory in ${this.driver.home} that this store does not know`,
        {
          hint: 'choose another id',
        },
      );
    }
    const parentRec = parent === undefined ? undefined : this.parentRecord(tx, parent, opts.parentMayBeCreating === true);
    tx.putRecord({
      id,
      ...(parent === undefined ? {} : { parent }),
      size: 0,
      created: new Date().toISOString(),
      driver: this.driver.name,
      writable,
      origin: opts.origin ?? 'user',
      state: 'creating',
      owner: currentProcess(),
    });
    return parentRec;
  }

  /** The complete parent; or, when `creatingByUs`, one this process is still creating. */
  private parentRecord(tx: StoreTx, parent: string, creatingByUs: boolean): StoredRecord {
    const rec = tx.record(parent);
    const me = currentProcess();
    if (creatingByUs && rec?.state === 'creating' && rec.owner?.pid === me.pid && rec.owner.start === me.start) return rec;
    return tx.layer(parent, 'parent layer');
  }

  private async completeCreate(id: string, fields: Partial<LayerRecord>): Promise<LayerRecord> {
    return this.transaction(async (tx) => {
      const rec = tx.record(id);
      if (rec === undefined) throw new UnionctlError('CORRUPT', `the record of layer ${id} disappeared while the layer was being created`);
      const { owner: _owner, ...rest } = rec;
      const done: StoredRecord = { ...rest, ...fields, state: 'complete' };
      tx.putRecord(done);
      return publicRecord(done);
    });
  }

  /**
   * Creates layer `id`: the "creating" record (one transaction), the driver's work (`build`,
   * outside the lock), the complete record (another). On any failure the layer and its record are
   * removed before the error is rethrown, so the store is as it was.
   */
  private async createWithRollback(
    id: string,
    parent: string | undefined,
    writable: boolean,
    build: (parentRec: StoredRecord | undefined) => Promise<Partial<LayerRecord>>,
    opts: CreationOptions = {},
  ): Promise<LayerRecord> {
    const parentRec = await this.transaction((tx) => this.beginCreate(tx, id, parent, writable, opts));
    let fields: Partial<LayerRecord>;
    try {
      fields = await build(parentRec);
      return await this.completeCreate(id, fields);
    } catch (e) {
      // EXISTS: the driver found storage under the id that it did not make (a race with a
      // directory made by hand) and touched nothing: only the record is ours to take back.
      if ((e as UnionctlError).code === 'EXISTS') await this.undoCreation(id, e, { recordOnly: true });
      else await this.undoCreation(id, e, { parent });
      throw e;
    }
  }

  /**
   * After `failure` (of `doing`, default "creating"), removes the layer being created (its storage
   * and record; only the record with recordOnly). A clean-up that fails too is CORRUPT, naming
   * both (the next openStore retries it).
   */
  private async undoCreation(
    id: string,
    failure: unknown,
    opts: { recordOnly?: boolean; doing?: string; parent?: string } = {},
  ): Promise<void> {
    try {
      if (opts.recordOnly) await this.transaction(async (tx) => tx.deleteRecord(id));
      else await this.rollBackCreation(id, opts.parent);
    } catch (cleanupError) {
      throw new UnionctlError(
        'CORRUPT',
        `${opts.doing ?? 'creating'} layer ${id} failed (${(failure as Error).message}) and so did removing what was made: ${(cleanupError as Error).message}`,
        { cause: failure, hint: 'reopen the store (any unionctl command) to retry the clean-up' },
      );
    }
  }

  /** An empty layer (image layer, or writable with `writable: true`) on top of parent. */
  async create(opts: CreateLayerOptions = {}): Promise<LayerRecord> {
    this.assertOpen();
    const id = opts.id ?? this.freshLayerId();
    assertValidId(id);
    if (opts.parent !== undefined) assertValidId(opts.parent, 'parent layer id');
    const writable = opts.writable ?? false;
    const storageOpt = splitStorageOpts(opts.storageOpt, 'layer');
    if (!writable && Object.keys(storageOpt).length > 0) {
      throw new UnionctlError(
        'BAD_OPTION',
        `per-layer storage options (${Object.keys(storageOpt).join(', ')}) are only accepted for writable layers`,
        { hint: 'add --rw, or drop the options' },
      );
    }
    return this.createWithRollback(
      id,
      opts.parent,
      writable,
      async () => {
        if (writable) await this.driver.createReadWrite(id, opts.parent, { storageOpt });
        else await this.driver.create(id, opts.parent);
        return { size: 0 };
      },
      { origin: opts.origin },
    );
  }

  /**
   * A new image layer from a layer tarball (path, '-' for stdin, or a stream; uncompressed, gzip
   * or zstd) on top of parent. Computes diffId, chainId and size.
   */
  async importLayer(input: string | Readable, opts: ImportOptions = {}): Promise<LayerRecord> {
    this.assertOpen();
    const id = opts.id ?? this.freshLayerId();
    assertValidId(id);
    if (opts.parent !== undefined) assertValidId(opts.parent, 'parent layer id');
    let pending = opts.parentImport;
    if (pending !== undefined && opts.parent === undefined) throw new UnionctlError('USAGE', 'parentImport is given without a parent');
    if (pending !== undefined && !this.buildsOnIncompleteParents()) {
      await pending.done;
      pending = undefined;
    }
    await pending?.created;
    const tar = openInput(input);
    return this.createWithRollback(
      id,
      opts.parent,
      false,
      async (parentRec) => {
        await this.driver.create(id, opts.parent);
        opts.onCreated?.();
        const fields = await this.applyTar(id, parentRec, tar, { ...opts, lowersReady: pending?.done });
        if (pending === undefined) return fields;
        await pending.done;
        // The parent's record was "creating" when this import began: its chain ID is known now.
        const parentChain = this.completeRecord(opts.parent!).chainId;
        return { ...fields, ...(parentChain === undefined ? {} : { chainId: chainIdOf(parentChain, fields.diffId!) }) };
      },
      { parentMayBeCreating: pending !== undefined, origin: opts.origin },
    );
  }

  /**
   * Can a layer be created and applied while its parent is still being applied? Only when a
   * layer's dir holds its own diff alone: with the 'plain' whiteout format (vfs, overlay,
   * devicemapper) a layer starts as a copy or snapshot of its parent's whole tree.
   */
  private buildsOnIncompleteParents(): boolean {
    return this.driver.capabilities().whiteoutFormat !== 'plain';
  }

  /**
   * Applies a layer tar into layer `id` (just created, still empty) and returns the record fields
   * it earns: diffId, chainId (when the parent has one, or there is no parent), size. The tar-split
   * (what rebuilds the tar byte for byte) is written before those fields are: the layer is not
   * complete without it. Shared by importLayer and applyDiff; the caller's record is "creating".
   */
  private async applyTar(
    id: string,
    parentRec: StoredRecord | undefined,
    tar: string | Readable,
    opts: Pick<ImportOptions, 'onProgress' | 'onWarning' | 'verify' | 'onEntry'> & { lowersReady?: Promise<unknown> },
  ): Promise<Partial<LayerRecord>> {
    // The tar-split tap sees the stream as the driver's apply reads it, whichever driver it is.
    const recorder = new TarSplitRecorder();
    const onEntry = opts.onEntry;
    const tap: TarTap =
      onEntry === undefined
        ? recorder
        : {
            raw: (bytes) => recorder.raw(bytes),
            content: (header, offset) => recorder.content(header, offset),
            entry: (header) => {
              recorder.entry(header);
              onEntry(header.path);
            },
          };
    const result = await this.driver.applyDiff(id, parentRec?.id, tar, {
      onProgress: opts.onProgress,
      onWarning: opts.onWarning,
      tap,
      ...(opts.lowersReady === undefined ? {} : { lowersReady: opts.lowersReady }),
    });
    await opts.verify?.(result);
    if (recorder.active) await writeTarSplit(this.tarSplitPath(id), recorder.encoded());
    const parentChain = parentRec?.chainId;
    const chainId = parentRec !== undefined && parentChain === undefined ? undefined : chainIdOf(parentChain, result.diffId);
    return { diffId: result.diffId, ...(chainId === undefined ? {} : { chainId }), size: result.size };
  }

  /**
   * Applies a layer tar (path, '-' for stdin, or a stream; uncompressed, gzip or zstd) into the
   * existing image layer `id`, which create() made and nothing has been applied to yet: Docker's
   * Create-then-ApplyDiff (a graphdriver's dockerd, `docker load`, `docker commit`). Records
   * diffId, chainId, size and the tar-split exactly as importLayer does.
   *
   * Refuses, changing nothing: INVALID_ID; NOT_FOUND (no complete layer `id`); USAGE (`id` is a
   * writable layer, or already has a diff ID — a diff is applied once — or opts.parent is given
   * and is not the layer's parent); HAS_CHILDREN (layers are built on it); IN_USE (it is mounted
   * or referenced, from any process).
   *
   * Crash safety, as importLayer: the record goes back to "creating", owned by this process, for
   * the apply (the layer is hidden meanwhile: mount, create on top of it, rm see it as being
   * created). A failure of the apply (a bad tar, an unsafe entry, a full disk, opts.verify
   * throwing) REMOVES the layer — its files and its record — and rethrows: the driver cannot
   * undo a half-applied tar, and Docker removes a layer whose ApplyDiff failed anyway. A process
   * killed meanwhile leaves the "creating" record, and the next openStore removes the layer the
   * same way. The rollback failing too is CORRUPT (the next open retries it).
   */
  async applyDiff(id: string, input: string | Readable, opts: ApplyDiffOptions = {}): Promise<LayerRecord> {
    this.assertOpen();
    assertValidId(id);
    if (opts.parent !== undefined) assertValidId(opts.parent, 'parent layer id');
    const tar = openInput(input);
    const parentRec = await this.transaction(async (tx) => {
      const rec = tx.layer(id);
      const refuse = (why: string, hint: string) => new UnionctlError('USAGE', `cannot apply a diff to layer ${id}: ${why}`, { hint });
      if (rec.writable) throw refuse('it is a writable layer', 'apply diffs to image layers (unionctl create without --rw)');
      if (rec.diffId !== undefined) throw refuse(`it already holds a diff (${rec.diffId})`, 'create a new layer for another diff');
      if (opts.parent !== undefined && opts.parent !== rec.parent) {
        throw refuse(`its parent is ${rec.parent ?? 'none'}, not ${opts.parent}`, 'name the parent the layer was created on');
      }
      const children = tx.children(id);
      if (children.length > 0) {
        throw new UnionctlError('HAS_CHILDREN', `cannot apply a diff to layer ${id}: layers are built on it: ${children.join(', ')}`, {
          hint: 'apply diffs before creating layers on top',
        });
      }
      this.assertUnused(id);
      tx.putRecord({ ...rec, state: 'creating', owner: currentProcess() });
      return rec.parent === undefined ? undefined : tx.layer(rec.parent, 'parent layer');
    });
    let fields: Partial<LayerRecord>;
    try {
      fields = await this.applyTar(id, parentRec, tar, opts);
    } catch (e) {
      await this.undoCreation(id, e, { doing: 'applying a diff to', parent: parentRec?.id });
      throw e;
    }
    return this.completeCreate(id, fields);
  }

  // ---- mount / unmount -----------------------------------------------------------------------

  /**
   * Mounts the layer's merged view and counts the mount (a persistent reference: another process
   * can unmount it, and the layer cannot be removed meanwhile). A writable layer's view is
   * writable. An image layer's is read-only (a read-only bind of its view, src/graph/read-only-
   * views.ts: nothing written through it can change the image); with rw, a new writable layer is
   * created on top and mounted instead, its id `opts.name` or a fresh random one (which shares its
   * first 12 characters with no other layer): the returned id says which. Refuses USAGE for a name
   * where no layer is made (no rw, or a layer that is writable itself), INVALID_ID and EXISTS for a
   * name that is not an id or is taken. Takes no lock for a plain mount: the record is read, then
   * the driver's per-layer lifecycle does the rest (a layer removed meanwhile is NOT_FOUND there).
   */
  async mount(id: string, opts: { rw?: boolean; mountLabel?: string; name?: string } = {}): Promise<{ id: string; path: string }> {
    this.assertOpen();
    const rec = this.completeRecord(id);
    if (opts.name !== undefined && (rec.writable || opts.rw !== true)) {
      throw new UnionctlError(
        'USAGE',
        `a name is only given to the writable layer mount --rw makes on an image layer; ${id} ${rec.writable ? 'is writable itself' : 'is mounted read-only'}`,
        {
          hint: rec.writable ? `unionctl mount ${id} mounts it` : `unionctl mount --rw --name ${opts.name} ${id}`,
        },
      );
    }
    if (rec.writable) return { id, path: await this.driver.get(id, { persistent: true, mountLabel: opts.mountLabel }) };
    if (opts.rw !== true) return { id, path: await this.readOnlyViews('create')!.get(id, { mountLabel: opts.mountLabel }) };
    const child = opts.name ?? this.freshLayerId();
    assertValidId(child, 'name for the writable layer');
    let path = '';
    // The child is mounted before its record is complete: killed in between, it is rolled back whole.
    await this.createWithRollback(child, id, true, async () => {
      await this.driver.createReadWrite(child, id, {});
      path = await this.driver.get(child, { persistent: true, mountLabel: opts.mountLabel });
      return { size: 0 };
    });
    return { id: child, path };
  }

  /**
   * What mount(id) would mount, found without mounting or writing anything: the driver's plan for
   * the layer's own view (Driver.explainMount: the code its mount runs) and, for an image layer,
   * the read-only bind mount puts over it. `mounted`: the view is mounted already, so mount would
   * adopt it and make no mount. USAGE for --rw on an image layer (the writable layer it would make
   * does not exist yet, so there is nothing to plan); UNSUPPORTED for a driver without plans.
   */
  explainMount(id: string, opts: { rw?: boolean; mountLabel?: string } = {}): MountExplanation {
    this.assertOpen();
    const rec = this.completeRecord(id);
    if (!rec.writable && opts.rw === true) {
      throw new UnionctlError(
        'USAGE',
        `mount --rw on image layer ${id} makes a new writable layer, whose mount cannot be explained before it exists`,
        {
          hint: `unionctl create --rw --parent ${id}, then unionctl mount --explain <that layer>`,
        },
      );
    }
    if (this.driver.explainMount === undefined) {
      throw new UnionctlError('UNSUPPORTED', `the ${this.driver.name} driver cannot explain its mounts`, {
        hint: 'mount the layer and look at /proc/self/mountinfo',
      });
    }
    const plan = this.driver.explainMount(id, { mountLabel: opts.mountLabel });
    const unionMounted = plan.method !== 'single-dir' && isMountPoint(plan.path);
    if (rec.writable) return { id, path: plan.path, readOnly: false, mounted: unionMounted, plan };
    const view = readOnlyViewPath(join(this.root, 'driver-state', this.driver.name), id);
    // The view's own mount point exists only while it is mounted (the lifecycle removes it).
    const mounted = storeDirExists(view, 'read-only view mount point') && isMountPoint(view);
    return { id, path: view, readOnly: true, mounted, plan, bind: { source: plan.path, target: view, options: ['bind', 'ro'] } };
  }

  /**
   * A random 64-hex layer id whose first 12 characters start no layer id in the store: a short
   * id, as tables show it, then names one layer (a clash is ~2^-48 likely; it is drawn again).
   */
  private freshLayerId(): string {
    for (;;) {
      const id = randomBytes(32).toString('hex');
      if (this.layerIdsStartingWith(id.slice(0, 12)).length === 0) return id;
    }
  }

  /** Releases one mount made by mount(); the driver unmounts when nobody uses the view any more. USAGE when it is not mounted. */
  async unmount(id: string): Promise<void> {
    this.assertOpen();
    this.completeRecord(id);
    const views = this.readOnlyViews('if-any');
    if (views !== undefined && views.references(id).persistent > 0) return views.put(id);
    if (this.driver.references(id).persistent === 0) {
      throw new UnionctlError('USAGE', `layer ${id} is not mounted`, {
        hint: `unionctl mount ${id} mounts it; unionctl cleanup unmounts everything`,
      });
    }
    await this.driver.put(id, { persistent: true });
  }

  /**
   * What is mounted now, by layer: every layer with `unionctl mount`s outstanding or held mounted by
   * a running process (a server, a diff), read-only views apart from the layer's own view. Sorted by
   * layer id; read without the lock (a snapshot).
   */
  async mounts(): Promise<MountEntry[]> {
    this.assertOpen();
    const entries: MountEntry[] = [];
    const views = this.readOnlyViews('if-any');
    for (const layer of views?.referencedIds() ?? []) {
      const refs = views!.references(layer);
      if (refs.persistent + refs.processes.length > 0) entries.push(mountEntry(layer, views!.path(layer), true, refs));
    }
    for (const layer of this.driver.referencedIds()) {
      const refs = this.driver.references(layer);
      if (refs.persistent + refs.processes.length === 0) continue; // a view's backing, or a reader: not a mount
      entries.push(mountEntry(layer, this.driver.viewPath(layer), false, refs));
    }
    return entries.sort((a, b) => (a.layer === b.layer ? Number(b.readOnly) - Number(a.readOnly) : a.layer < b.layer ? -1 : 1));
  }

  /**
   * Gives back every mount made by mount() (`umount --all`), leaving what running processes hold
   * (a server's snapshots) alone; returns the layers released, one entry per layer. cleanup() is the
   * stronger one: it unmounts everything.
   */
  async unmountAll(): Promise<string[]> {
    const released: string[] = [];
    for (const entry of await this.mounts()) {
      for (let i = 0; i < entry.mounts; i++) await this.unmount(entry.layer);
      if (entry.mounts > 0 && !released.includes(entry.layer)) released.push(entry.layer);
    }
    return released;
  }

  /** The number of outstanding mount() calls on the layer, from any process. */
  mountCount(id: string): number {
    const views = this.readOnlyViews('if-any')?.references(id);
    return this.driver.references(id).persistent + (views?.persistent ?? 0);
  }

  /** Every live reference to the layer (mounts and processes reading it). */
  references(id: string): References {
    return this.driver.references(id);
  }

  // ---- remove --------------------------------------------------------------------------------

  /** Deletes a layer that has no children, belongs to no image and is not mounted or in use. */
  async remove(id: string): Promise<void> {
    assertValidId(id);
    await this.transaction(async (tx) => tx.removeLayer(id, { onInUse: 'restore' }));
  }

  // ---- branches, diffs -----------------------------------------------------------------------

  async branches(id: string): Promise<Branch[]> {
    this.assertOpen();
    this.completeRecord(id);
    return this.driver.branches(id);
  }

  /** The layer and the layer to compare it with: opts.parent when given, else its parent. */
  private diffPair(id: string, opts: { parent?: string }): [string, string | undefined] {
    const rec = this.completeRecord(id);
    if (opts.parent === undefined) return [id, rec.parent];
    this.completeRecord(opts.parent, 'parent layer');
    return [id, opts.parent];
  }

  /**
   * The layer's whole filesystem (its merged view: what a container on it starts with) as one tar,
   * no whiteouts: what `docker export` writes. The view is mounted (if the driver needs a mount)
   * and held until the stream closes. NOT_FOUND for no such complete layer.
   */
  async flatten(id: string): Promise<Readable> {
    this.assertOpen();
    this.completeRecord(id);
    const dir = await this.driver.get(id);
    let stream: Readable;
    try {
      stream = exportLayerDir(dir, 'plain');
    } catch (e) {
      await this.driver.put(id);
      throw e;
    }
    this.releaseWhenClosed(stream, () => this.driver.put(id), id);
    return stream;
  }

  /** Runs `release` once `stream` has closed; close() waits for it (pendingReleases). */
  private releaseWhenClosed(stream: Readable, release: () => Promise<void>, id: string): void {
    stream.once('close', () => {
      const running = release()
        .catch((e: unknown) => this.report('warn', `could not release layer ${id}: ${(e as Error).message}`))
        .finally(() => this.pendingReleases.delete(running));
      this.pendingReleases.add(running);
    });
  }

  /**
   * The layer's changes as an OCI layer tar stream (whiteouts as .wh. entries). The layer is held
   * (Driver.hold) until the stream ends, fails or is destroyed: rm and rmi refuse it with IN_USE
   * meanwhile, even where the driver reads its directory without a mount.
   */
  async diff(id: string, opts: { parent?: string } = {}): Promise<Readable> {
    this.assertOpen();
    const [layer, parent] = this.diffPair(id, opts);
    const release = await this.holdComplete(layer);
    let stream: Readable;
    try {
      stream = await this.driver.diff(layer, parent);
    } catch (e) {
      await release();
      throw e;
    }
    this.releaseWhenClosed(stream, release, layer);
    return stream;
  }

  /** The layer's changes; the layer is held while they are computed (see diff). */
  async changes(id: string, opts: { parent?: string } = {}): Promise<Change[]> {
    this.assertOpen();
    const [layer, parent] = this.diffPair(id, opts);
    return this.whileHeld(layer, () => this.driver.changes(layer, parent));
  }

  /** The bytes the layer's diff holds; the layer is held while they are counted (see diff). */
  async diffSize(id: string, opts: { parent?: string } = {}): Promise<number> {
    this.assertOpen();
    const [layer, parent] = this.diffPair(id, opts);
    return this.whileHeld(layer, () => this.driver.diffSize(layer, parent));
  }

  /** Driver.hold, then the record checked again: a removal that started before the hold is not read from. */
  private async holdComplete(id: string): Promise<() => Promise<void>> {
    const release = await this.driver.hold(id);
    try {
      this.completeRecord(id);
    } catch (e) {
      await release();
      throw e;
    }
    return release;
  }

  private async whileHeld<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const release = await this.holdComplete(id);
    try {
      return await fn();
    } finally {
      await release();
    }
  }

  // ---- cleanup, close ------------------------------------------------------------------------

  /**
   * Unmounts everything the driver mounted and drops every mount and reference. Recorded first
   * (driver-state/<driver>/cleanup, naming this process), so a cleanup killed half-way, with some
   * layers still mounted, is finished by the next openStore.
   */
  async cleanup(): Promise<void> {
    this.assertOpen();
    const me = JSON.stringify(currentProcess());
    await this.transaction(async (tx) => tx.writeDocument(this.cleanupPath, me));
    await this.unmountEverything();
    // Another cleanup that started meanwhile owns the record now, and ends it itself.
    await this.transaction(async (tx) => {
      if (tx.readDocument(this.cleanupPath) === me) tx.deleteDocument(this.cleanupPath);
    });
  }

  /** The read-only views first (each holds a mount of its layer), then everything the driver mounted. */
  private async unmountEverything(): Promise<void> {
    await this.readOnlyViews('if-any')?.resetAll();
    await this.driver.cleanup();
  }

  /**
   * The store's read-only views of image layers (src/graph/read-only-views.ts), made on first use;
   * with 'if-any', undefined when no view was ever made (a read-only command creates nothing).
   */
  private readOnlyViews(when: 'create' | 'if-any'): ReadOnlyViews | undefined {
    if (this.views !== undefined) return this.views;
    const stateDir = join(this.root, 'driver-state', this.driver.name);
    if (when === 'if-any' && !storeDirExists(join(stateDir, 'read-only'), 'read-only view directory')) return undefined;
    this.views = new ReadOnlyViews(this.driver, stateDir);
    return this.views;
  }

  private get cleanupPath(): string {
    return `driver-state/${this.driver.name}/cleanup`;
  }

  /**
   * Ends this handle. Mounts stay (a CLI `mount` must outlive its process): unmount or cleanup()
   * first to release them. Waits for the releases of streams already closed (flatten, diff); a
   * stream still open releases its layer when it closes, as before.
   */
  async close(): Promise<void> {
    this.closed = true;
    while (this.pendingReleases.size > 0) await Promise.all([...this.pendingReleases]);
  }
}

/** What `mount --explain` says: the mount mount() would make (LayerStore.explainMount). */
export interface MountExplanation {
  id: string;
  /** The path mount would print. */
  path: string;
  /** An image layer's read-only view: a read-only bind of the layer's own view. */
  readOnly: boolean;
  /** The view is mounted already: mount would count one more mount and make none. */
  mounted: boolean;
  /** How the layer's own view is given (its union's mount, or a single dir). */
  plan: MountPlan;
  /** The read-only bind over the view (image layers). */
  bind?: { source: string; target: string; options: string[] };
}

/** One layer's mounts, as `unionctl mounts` lists them. */
export interface MountEntry {
  layer: string;
  /** Where it is mounted: the path mount() returned. */
  path: string;
  /** An image layer's read-only view (else the layer's own view, writable for a writable layer). */
  readOnly: boolean;
  /** Outstanding mount() calls (`unionctl mount`), from any process. */
  mounts: number;
  /** Running processes holding it mounted, with their counts. */
  processes: Array<{ pid: number; count: number }>;
  /** The kernel has it mounted (false for a view that is a plain directory: a vfs or base layer's own). */
  mounted: boolean;
}

function mountEntry(layer: string, path: string, readOnly: boolean, refs: References): MountEntry {
  return { layer, path, readOnly, mounts: refs.persistent, processes: refs.processes, mounted: refs.mounted };
}
