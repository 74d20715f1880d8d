/**
 * The layer store: the graph of layers (ids, parents, digests, sizes) on top of one storage
 * driver. The driver keeps the files; the store keeps the bookkeeping, the locking and the crash
 * safety, the same for every driver.
 *
 * On disk, under the store root:
 *   layerdb/<id>.json   one record per layer (written to a temp file, fsynced, renamed over)
 *   layerdb/<id>.tar-split.gz  for an imported layer: what rebuilds its tar byte for byte
 *                       (src/archive/tar-split.ts), written before the record is "complete"
 *   images/             image records and load journals (src/image/records.ts)
 *   store.lock          flock that serialises every change to the records, between processes
 *   mounts/             store-level mount counts (MountRefs): `unionctl mount` in one process,
 *                       `unionctl umount` in another; a layer with a count cannot be removed
 *   <driver>/           the driver's home
 *
 * Crash safety. A record is written with state "creating" (and its owner process) BEFORE the
 * driver makes anything, and becomes "complete" only once the layer's content is all there; a
 * removal first marks the record "removing", then deletes the layer, then the record. So the
 * driver never holds a layer the records do not know about, and openStore can finish what a dead
 * process left: a "creating" record whose owner is gone is rolled back (driver.remove, which
 * tolerates half-made layers, then the record), a "removing" one is completed.
 * A layer directory without a record is never swept: it cannot come from this store, and might be
 * someone else's data (a Docker home the store was pointed at).
 *
 * Locking. store.lock is held for each change to the records, not for the long part of an import
 * (copying the parent, applying the tar): imports run side by side, and `unionctl mount` does not
 * wait for a big import. What keeps that safe: the "creating" record exists from the start, so the
 * new layer's parent cannot be removed under it (HAS_CHILDREN) and its id cannot be taken twice.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import '../drivers/index.js'; // registers the built-in drivers
import { readTarSplit, TarSplitRecorder, writeTarSplit, type TarSplitRecord } from '../archive/tar-split.js';
import { imagesUsingLayer, recoverInterruptedLoads } from '../image/records.js';
import { assertValidId, UnionctlError } from '../errors.js';
import { atomicTempPrefix, fsyncDir, writeFileAtomic } from '../sys/index.js';
import type { ApplyResult, Branch, Change, Driver, DriverCapabilities } from './driver.js';
import { withFileLock } from './lock.js';
import { bootId, MountRefs } from './refcount.js';
import { lookupDriver, parseStorageOpts, selectDriver, splitStorageOpts, type DriverEntry } from './registry.js';

export const DEFAULT_STORE_ROOT = '/var/lib/unionctl';

export interface StoreOptions {
  /** Store root, default /var/lib/unionctl. */
  root?: string;
  /** Driver name; default: the driver the store already uses, else the best this kernel supports. */
  driver?: string;
  /** Driver-wide storage options, "key=value" items or a map, Docker's keys. */
  storageOpt?: string[] | Record<string, string>;
}

export interface LayerRecord {
  id: string;
  parent?: string;
  /** "sha256:…" of the uncompressed layer tar (imported layers only). */
  diffId?: string;
  /** Docker's chain id: the diffId for a base layer, else sha256(parentChainId + " " + diffId). */
  chainId?: string;
  /** Bytes of file content the layer tar carried (0 for a created, empty layer). */
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
  /**
   * Runs once the tar is applied, before the layer is complete: a throw (a diff ID or blob digest
   * that does not match what an image promised) rolls the layer back like any failed import.
   */
  verify?: (result: ApplyResult) => void | Promise<void>;
}

export interface CreateLayerOptions {
  id?: string;
  parent?: string;
  writable?: boolean;
  /** Per-layer storage options (writable layers only), e.g. size=10G. */
  storageOpt?: Record<string, string> | string[];
}

export interface StoreInfo {
  driver: string;
  root: string;
  status: Array<[string, string]>;
  capabilities: DriverCapabilities;
}

type RecordState = 'creating' | 'complete' | 'removing';

/** The process that is creating a layer; start time and boot id tell a live pid from a reused one. */
export interface Owner {
  pid: number;
  start: string;
  boot: string;
}

/** What layerdb/<id>.json holds. */
interface StoredRecord extends LayerRecord {
  state: RecordState;
  owner?: Owner;
}

// ---- process liveness ------------------------------------------------------------------------

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or undefined if no such process. */
function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: count after the last ")".
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export function currentOwner(): Owner {
  return { pid: process.pid, start: processStartTime(process.pid) ?? '', boot: bootId() };
}

export function ownerAlive(owner: Owner | undefined): boolean {
  if (owner === undefined || owner.boot !== bootId()) return false;
  return processStartTime(owner.pid) === owner.start;
}

// ---- small helpers ---------------------------------------------------------------------------

function sha256(text: string): string {
  return `sha256:${createHash('sha256').update(text).digest('hex')}`;
}

/** Docker's ChainID: diffId alone for a base layer, else sha256 of "<parent chainId> <diffId>". */
export function chainIdOf(parentChainId: string | undefined, diffId: string): string {
  return parentChainId === undefined ? diffId : sha256(`${parentChainId} ${diffId}`);
}

function randomLayerId(): string {
  return randomBytes(32).toString('hex');
}

function isMissing(e: unknown): boolean {
  return (e as NodeJS.ErrnoException).code === 'ENOENT';
}

function publicRecord(r: StoredRecord): LayerRecord {
  const { state: _state, owner: _owner, ...rest } = r;
  return rest;
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
  let files: string[];
  try {
    files = readdirSync(join(root, 'layerdb'));
  } catch (e) {
    if (isMissing(e)) return names;
    throw e;
  }
  for (const f of files) {
    if (!f.endsWith('.json') || f.startsWith('.')) continue;
    try {
      names.add((JSON.parse(readFileSync(join(root, 'layerdb', f), 'utf8')) as StoredRecord).driver);
    } catch {
      /* a damaged record is reported by list(); it does not decide the driver */
    }
  }
  return names;
}

/** The driver asked for, else the one the store's records use, else auto-selection. */
function chooseDriver(root: string, requested: string | undefined): DriverEntry {
  if (requested !== undefined) lookupDriver(requested); // unknown names first: BAD_OPTION listing the known ones
  const used = [...recordedDrivers(root)];
  if (requested !== undefined && used.length > 0 && !used.includes(requested)) {
    throw new UnionctlError('BAD_OPTION', `the store at ${root} holds layers of storage driver ${used.join(', ')}, not ${requested}`, {
      hint: `use --driver ${used[0]}, or another --root for ${requested}`,
    });
  }
  return selectDriver(root, requested ?? used[0]);
}

/**
 * Opens (creating if needed) the store at opts.root with its driver, and repairs what a crashed
 * process left behind. Unknown drivers and options are refused before anything is written.
 */
export async function openStore(opts: StoreOptions = {}): Promise<LayerStore> {
  const root = resolve(opts.root ?? DEFAULT_STORE_ROOT);
  const entry = chooseDriver(root, opts.driver);
  const options = parseStorageOpts(opts.storageOpt, entry.optionKeys, `${entry.name} driver`);
  mkdirSync(root, { recursive: true, mode: 0o700 });
  mkdirSync(join(root, 'layerdb'), { recursive: true, mode: 0o700 });
  mkdirSync(join(root, 'mounts'), { recursive: true, mode: 0o700 });
  const driver = await entry.create({ home: join(root, entry.name), root, options });
  const store = new LayerStore(root, driver);
  await store.recover();
  return store;
}

// ---- the store -------------------------------------------------------------------------------

export class LayerStore {
  readonly root: string;
  readonly driver: Driver;
  private readonly layerDb: string;
  private readonly lockPath: string;
  /** Store-level mount counts (mount/unmount), across processes. */
  private readonly mounts: MountRefs;
  private closed = false;

  constructor(root: string, driver: Driver) {
    this.root = root;
    this.driver = driver;
    this.layerDb = join(root, 'layerdb');
    this.lockPath = join(root, 'store.lock');
    this.mounts = new MountRefs(join(root, 'mounts'));
  }

  // ---- records on disk -----------------------------------------------------------------------

  private recordPath(id: string): string {
    return join(this.layerDb, `${id}.json`);
  }

  private readRecord(id: string): StoredRecord | undefined {
    let text: string;
    try {
      text = readFileSync(this.recordPath(id), 'utf8');
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
    let rec: StoredRecord;
    try {
      rec = JSON.parse(text) as StoredRecord;
    } catch {
      throw new UnionctlError('CORRUPT', `layer record ${this.recordPath(id)} is not valid JSON`, {
        hint: 'restore the file from a backup, or remove the layer record and its driver directory by hand',
      });
    }
    if (rec.id !== id)
      throw new UnionctlError('CORRUPT', `layer record ${this.recordPath(id)} is for layer ${JSON.stringify(rec.id)}`, {
        hint: 'rename or remove the file',
      });
    return rec;
  }

  /** Every record, whatever its state. */
  private readAllRecords(): StoredRecord[] {
    const records: StoredRecord[] = [];
    for (const f of readdirSync(this.layerDb)) {
      if (!f.endsWith('.json') || f.startsWith('.')) continue;
      const rec = this.readRecord(f.slice(0, -'.json'.length));
      if (rec !== undefined) records.push(rec);
    }
    return records;
  }

  /**
   * Atomic: temp file, rename. Durable (fsync of the file and the directory) for every state but
   * "complete". Why not that one: fsyncing right after an apply makes ext4 commit the journal with
   * the layer's thousands of new inodes and write out their data first — measured, a third of an
   * import's time. No graphdriver fsyncs a layer's files either; so a power cut in the seconds
   * after an import may bring the layer back as "creating", and the next openStore rolls it back,
   * which is safer than a durable "complete" over files that never reached the disk. The next
   * durable record write (any create or remove) makes it durable.
   */
  private writeRecord(rec: StoredRecord): void {
    writeFileAtomic(this.recordPath(rec.id), `${JSON.stringify(rec, null, 2)}\n`, { durable: rec.state !== 'complete' });
  }

  private deleteRecord(id: string): void {
    rmSync(this.tarSplitPath(id), { force: true });
    // Writes cut short by a crash leave `.<name>.<pid>.tmp` files (writeFileAtomic).
    const leftovers = [atomicTempPrefix(this.tarSplitPath(id)), atomicTempPrefix(this.recordPath(id))];
    for (const f of readdirSync(this.layerDb)) if (leftovers.some((p) => f.startsWith(p))) rmSync(join(this.layerDb, f), { force: true });
    rmSync(this.recordPath(id), { force: true });
    fsyncDir(this.layerDb);
  }

  /** layerdb/<id>.tar-split.gz: what rebuilds an imported layer's tar byte for byte. */
  tarSplitPath(id: string): string {
    return join(this.layerDb, `${id}.tar-split.gz`);
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    return withFileLock(this.lockPath, fn);
  }

  /** Runs fn holding store.lock (reentrant): for bookkeeping kept beside the layer records (image records). */
  withStoreLock<T>(fn: () => Promise<T>): Promise<T> {
    return this.locked(fn);
  }

  private assertOpen(): void {
    if (this.closed)
      throw new UnionctlError('USAGE', `the layer store at ${this.root} is closed`, { hint: 'open it again with openStore' });
  }

  // ---- crash recovery ------------------------------------------------------------------------

  /** Rolls back creations whose process died and completes interrupted removals. Run by openStore. */
  async recover(): Promise<void> {
    await this.locked(async () => {
      for (const rec of this.readAllRecords()) {
        try {
          if (rec.state === 'removing') await this.finishRemoval(rec.id);
          else if (rec.state === 'creating' && !ownerAlive(rec.owner)) await this.rollBackCreation(rec.id);
        } catch (e) {
          // One stuck layer must not make the whole store unusable: it stays hidden, and the next open retries.
          process.emitWarning(
            `unionctl: could not clean up the interrupted ${rec.state === 'removing' ? 'removal' : 'creation'} of layer ${rec.id}: ${(e as Error).message}`,
          );
        }
      }
      // An image load killed half-way: its finished layers have no image record; remove them.
      await recoverInterruptedLoads(this);
    });
  }

  private async finishRemoval(id: string): Promise<void> {
    await this.driver.remove(id);
    this.deleteRecord(id);
    this.mounts.forget(id);
  }

  private async rollBackCreation(id: string): Promise<void> {
    await this.locked(async () => {
      await this.driver.remove(id);
      this.deleteRecord(id);
    });
  }

  // ---- queries -------------------------------------------------------------------------------

  async info(): Promise<StoreInfo> {
    this.assertOpen();
    return { driver: this.driver.name, root: this.root, status: await this.driver.status(), capabilities: this.driver.capabilities() };
  }

  /** Complete layers, oldest first. */
  async list(): Promise<LayerRecord[]> {
    this.assertOpen();
    return this.readAllRecords()
      .filter((r) => r.state === 'complete')
      .sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id))
      .map(publicRecord);
  }

  async layer(id: string): Promise<LayerRecord> {
    this.assertOpen();
    return publicRecord(this.completeRecord(id));
  }

  /** The complete image layer with this chain ID (for reuse by an image load), if any. */
  async layerByChainId(chainId: string): Promise<LayerRecord | undefined> {
    this.assertOpen();
    const found = this.readAllRecords()
      .filter((r) => r.state === 'complete' && !r.writable && r.chainId === chainId)
      .sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id));
    return found.length === 0 ? undefined : publicRecord(found[0]);
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

  private completeRecord(id: string, what = 'layer'): StoredRecord {
    assertValidId(id, `${what} id`);
    const rec = this.readRecord(id);
    if (rec === undefined)
      throw new UnionctlError('NOT_FOUND', `${what} ${id} does not exist`, { hint: 'list the layers with unionctl ls' });
    if (rec.state === 'creating') {
      throw new UnionctlError('NOT_FOUND', `${what} ${id} is still being created (by process ${rec.owner?.pid ?? '?'})`, {
        hint: 'wait for that import or create to finish',
      });
    }
    if (rec.state === 'removing')
      throw new UnionctlError('NOT_FOUND', `${what} ${id} is being removed`, { hint: 'list the layers with unionctl ls' });
    return rec;
  }

  // ---- create / import -----------------------------------------------------------------------

  /**
   * Checks the id and parent and writes the "creating" record, under the lock. Returns the parent's
   * record. Nothing has changed when this throws.
   */
  private async beginCreate(id: string, parent: string | undefined, writable: boolean): Promise<StoredRecord | undefined> {
    return this.locked(async () => {
      if (this.readRecord(id) !== undefined) throw new UnionctlError('EXISTS', `layer ${id} already exists`, { hint: 'choose another id' });
      // A directory the records do not know (someone else's data): never take it over, never delete it.
      if (await this.driver.exists(id)) {
        throw new UnionctlError(
          'EXISTS',
          `layer id ${id} is already used by a directory in ${this.driver.home} that this store does not know`,
          {
            hint: 'choose another id',
          },
        );
      }
      let parentRec: StoredRecord | undefined;
      if (parent !== undefined) {
        assertValidId(parent, 'parent layer id');
        const rec = this.readRecord(parent);
        if (rec === undefined || rec.state === 'removing') {
          throw new UnionctlError('NOT_FOUND', `parent layer ${parent} does not exist`, {
            hint: 'import or create the parent first (unionctl ls lists the layers)',
          });
        }
        if (rec.state === 'creating') {
          throw new UnionctlError('NOT_FOUND', `parent layer ${parent} is still being created (by process ${rec.owner?.pid ?? '?'})`, {
            hint: 'wait for that import to finish',
          });
        }
        parentRec = rec;
      }
      this.writeRecord({
        id,
        ...(parent === undefined ? {} : { parent }),
        size: 0,
        created: new Date().toISOString(),
        driver: this.driver.name,
        writable,
        state: 'creating',
        owner: currentOwner(),
      });
      return parentRec;
    });
  }

  private async completeCreate(id: string, fields: Partial<LayerRecord>): Promise<LayerRecord> {
    return this.locked(async () => {
      const rec = this.readRecord(id);
      if (rec === undefined) throw new UnionctlError('CORRUPT', `the record of layer ${id} disappeared while the layer was being created`);
      const { owner: _owner, ...rest } = rec;
      const done: StoredRecord = { ...rest, ...fields, state: 'complete' };
      this.writeRecord(done);
      return publicRecord(done);
    });
  }

  /**
   * Runs the driver part of a creation. On any failure the layer and its record are removed
   * before the error is rethrown, so the store is as it was.
   */
  private async createWithRollback(
    id: string,
    parent: string | undefined,
    writable: boolean,
    build: (parentRec: StoredRecord | undefined) => Promise<Partial<LayerRecord>>,
  ): Promise<LayerRecord> {
    const parentRec = await this.beginCreate(id, parent, writable);
    let fields: Partial<LayerRecord>;
    try {
      fields = await build(parentRec);
    } catch (e) {
      try {
        await this.rollBackCreation(id);
      } catch (cleanupError) {
        throw new UnionctlError(
          'CORRUPT',
          `creating layer ${id} failed (${(e as Error).message}) and so did removing what was made: ${(cleanupError as Error).message}`,
          {
            cause: e,
            hint: 'reopen the store (any unionctl command) to retry the clean-up',
          },
        );
      }
      throw e;
    }
    return this.completeCreate(id, fields);
  }

  /** An empty layer (image layer, or writable with `writable: true`) on top of parent. */
  async create(opts: CreateLayerOptions = {}): Promise<LayerRecord> {
    this.assertOpen();
    const id = opts.id ?? randomLayerId();
    assertValidId(id);
    const writable = opts.writable ?? false;
    const storageOpt = splitStorageOpts(opts.storageOpt, 'layer');
    if (!writable && Object.keys(storageOpt).length > 0) {
      throw new UnionctlError(
        'BAD_OPTION',
        `per-layer storage options (${Object.keys(storageOpt).join(', ')}) are only accepted for writable layers`,
        {
          hint: 'add --rw, or drop the options',
        },
      );
    }
    return this.createWithRollback(id, opts.parent, writable, async () => {
      if (writable) await this.driver.createReadWrite(id, opts.parent, { storageOpt });
      else await this.driver.create(id, opts.parent);
      return { size: 0 };
    });
  }

  /**
   * A new image layer from a layer tarball (path, '-' for stdin, or a stream; uncompressed, gzip
   * or zstd) on top of parent. Computes diffId, chainId and size.
   */
  async importLayer(input: string | Readable, opts: ImportOptions = {}): Promise<LayerRecord> {
    this.assertOpen();
    const id = opts.id ?? randomLayerId();
    assertValidId(id);
    if (opts.parent !== undefined) assertValidId(opts.parent, 'parent layer id');
    const tar = openInput(input);
    return this.createWithRollback(id, opts.parent, false, async (parentRec) => {
      await this.driver.create(id, opts.parent);
      // The tar-split tap sees the stream as the driver's apply reads it, whichever driver it is.
      const recorder = new TarSplitRecorder();
      const result = await this.driver.applyDiff(id, opts.parent, tar, { onProgress: opts.onProgress, tap: recorder });
      await opts.verify?.(result);
      if (recorder.active) await writeTarSplit(this.tarSplitPath(id), recorder.encoded());
      const parentChain = parentRec === undefined ? undefined : parentRec.chainId;
      const chainId = parentRec !== undefined && parentChain === undefined ? undefined : chainIdOf(parentChain, result.diffId);
      return { diffId: result.diffId, ...(chainId === undefined ? {} : { chainId }), size: result.size };
    });
  }

  // ---- mount / unmount -----------------------------------------------------------------------

  /**
   * Mounts the layer's merged view and counts the mount (so another process can unmount it, and
   * the layer cannot be removed meanwhile). With rw on an image layer, a new writable layer
   * `<id>-rw-<6 hex>` is created on top and mounted instead: the returned id says which.
   */
  async mount(id: string, opts: { rw?: boolean; mountLabel?: string } = {}): Promise<{ id: string; path: string }> {
    this.assertOpen();
    return this.locked(async () => {
      const rec = this.completeRecord(id);
      const madeChild = opts.rw === true && !rec.writable;
      const target = madeChild ? (await this.create({ id: writableChildId(id), parent: id, writable: true })).id : id;
      try {
        const path = await this.driver.get(target, { mountLabel: opts.mountLabel });
        try {
          await this.mounts.acquire(
            target,
            () => true,
            () => {},
          );
        } catch (e) {
          await this.driver.put(target);
          throw e;
        }
        return { id: target, path };
      } catch (e) {
        if (madeChild) await this.rollBackCreation(target);
        throw e;
      }
    });
  }

  /** Releases one mount made by mount(); the driver unmounts when nobody uses the view any more. */
  async unmount(id: string): Promise<void> {
    this.assertOpen();
    await this.locked(async () => {
      this.completeRecord(id);
      if (this.mounts.count(id) === 0) {
        throw new UnionctlError('USAGE', `layer ${id} is not mounted`, {
          hint: `unionctl mount ${id} mounts it; unionctl cleanup unmounts everything`,
        });
      }
      await this.driver.put(id);
      await this.mounts.release(
        id,
        () => false,
        () => {},
      );
    });
  }

  /** The number of outstanding mount() calls on the layer, from any process. */
  mountCount(id: string): number {
    return this.mounts.count(id);
  }

  // ---- remove --------------------------------------------------------------------------------

  /** Deletes a layer that has no children and is not mounted. */
  async remove(id: string): Promise<void> {
    this.assertOpen();
    await this.locked(async () => {
      const rec = this.completeRecord(id);
      const children = this.readAllRecords()
        .filter((r) => r.parent === id)
        .map((r) => r.id)
        .sort();
      if (children.length > 0) {
        throw new UnionctlError('HAS_CHILDREN', `layer ${id} has child layers: ${children.join(', ')}`, {
          hint: 'remove the children first',
        });
      }
      const images = imagesUsingLayer(this, id);
      if (images.length > 0) {
        throw new UnionctlError('IN_USE', `layer ${id} belongs to image ${images[0]}`, {
          hint: `remove the image instead: unionctl rmi ${images[0]}`,
        });
      }
      const mounted = this.mounts.count(id);
      if (mounted > 0) {
        throw new UnionctlError('IN_USE', `layer ${id} is mounted (${mounted} mount${mounted === 1 ? '' : 's'})`, {
          hint: `unmount it first: unionctl umount ${id}`,
        });
      }
      this.writeRecord({ ...rec, state: 'removing' });
      try {
        await this.driver.remove(id);
      } catch (e) {
        // Refused (a reader in another process): nothing was deleted, the layer stays. Any other
        // failure may have deleted part of it: the record stays "removing", hidden, and the next
        // openStore finishes the job.
        if ((e as UnionctlError).code === 'IN_USE') this.writeRecord(rec);
        throw e;
      }
      this.deleteRecord(id);
      this.mounts.forget(id);
    });
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

  /** The layer's changes as an OCI layer tar (whiteouts as .wh. entries). */
  async diff(id: string, opts: { parent?: string } = {}): Promise<Readable> {
    this.assertOpen();
    return this.driver.diff(...this.diffPair(id, opts));
  }

  async changes(id: string, opts: { parent?: string } = {}): Promise<Change[]> {
    this.assertOpen();
    return this.driver.changes(...this.diffPair(id, opts));
  }

  async diffSize(id: string, opts: { parent?: string } = {}): Promise<number> {
    this.assertOpen();
    return this.driver.diffSize(...this.diffPair(id, opts));
  }

  // ---- cleanup, close ------------------------------------------------------------------------

  /** Unmounts everything the driver mounted and clears every mount count. */
  async cleanup(): Promise<void> {
    this.assertOpen();
    await this.locked(async () => {
      await this.driver.cleanup();
      for (const id of this.mounts.ids()) this.mounts.forget(id);
    });
  }

  /**
   * Ends this handle. Mounts stay (a CLI `mount` must outlive its process): unmount or cleanup()
   * first to release them.
   */
  async close(): Promise<void> {
    this.closed = true;
  }
}

/** `<id>-rw-<6 hex>`, or a fresh random id when that would be longer than an id may be. */
function writableChildId(id: string): string {
  const child = `${id}-rw-${randomBytes(3).toString('hex')}`;
  return child.length <= 128 ? child : randomLayerId();
}
