/**
 * containerd snapshots on a unionctl store: the model behind `unionctl serve` (grpc.ts only turns
 * these calls into RPCs). The rules are containerd's snapshots.Snapshotter contract
 * (core/snapshots/snapshotter.go): a snapshot is active (writable, from Prepare), a view
 * (read-only, from View) or committed (from Commit of an active one); only committed snapshots
 * can be parents; a snapshot with children cannot be removed; keys are unique across kinds.
 *
 * One store, one set of layers: an active snapshot is a writable unionctl layer; Commit turns it
 * into an image layer whose record carries the chain ID containerd named it by, so `unionctl
 * load` reuses it and a later Prepare labelled `containerd.io/snapshot.ref=<chainID>` adopts a
 * layer that `unionctl load`/`import` made (answering EXISTS: containerd then downloads and
 * applies nothing). A view has no layer of its own: it shows its parent's read-only.
 *
 * Snapshot metadata are documents of the store (`snapshots/<sha256 of the key>.json`), changed
 * only in store transactions, so a crash leaves the old or the new state; a Prepare killed
 * half-way is rolled back by the next open (or Cleanup). containerd's garbage collector is the
 * only remover: Remove deletes the layer the snapshot made unless something else keeps it (a
 * unionctl image, another snapshot that adopted it): then only the snapshot goes.
 *
 * Errors are UnionctlErrors: NOT_FOUND (no such snapshot), EXISTS (the key or name is taken; or,
 * for an adopted layer, the target exists), WRONG_STATE (a parent that is not committed, a Commit
 * of what is not active), HAS_CHILDREN (Remove of a parent), USAGE (an empty key, a field that
 * cannot be updated), UNSUPPORTED (a driver that cannot serve containerd).
 */
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { diskUsage } from '../../archive/size.js';
import { isUnionctlError, UnionctlError } from '../../errors.js';
import type { MountSpec } from '../../graph/driver.js';
import { type LayerStore, type StoreExtension, type StoreTx } from '../../graph/store.js';
import { currentProcess, processAlive, removeDeadTempFiles, type ProcessIdentity } from '../../sys/index.js';
import { diskDocuments, type DocumentReader } from '../../image/records.js';
import { DiffIdRecorder, exportDiffId } from './diff-ids.js';
import { compileFilters, type SnapshotFields } from './filters.js';

export type SnapshotKind = 'active' | 'view' | 'committed';

/** What containerd's Stat, List and Update see. */
export interface SnapshotInfo {
  name: string;
  /** The parent snapshot's name; '' for none. */
  parent: string;
  kind: SnapshotKind;
  labels: Record<string, string>;
  /** ISO 8601. */
  created: string;
  updated: string;
}

/** snapshots/<hash>.json. */
interface SnapshotRecord extends SnapshotInfo {
  /** The unionctl layer that holds the snapshot's files (none for a view of a parent). */
  layer?: string;
  /** The snapshot made its layer: removing the snapshot removes the layer (if nothing else keeps it). */
  ownsLayer: boolean;
  /** Set while a Prepare or View is making the layer: the process doing it. */
  preparing?: ProcessIdentity;
}

/** The label that names the chain ID a snapshot is unpacked for (containerd's snapshots.ref). */
export const SNAPSHOT_REF_LABEL = 'containerd.io/snapshot.ref';

const SNAPSHOTS = 'snapshots';
const CHAIN_ID_AT_END = /(sha256:[0-9a-f]{64})$/;

function docPath(name: string): string {
  return `${SNAPSHOTS}/${createHash('sha256').update(name).digest('hex')}.json`;
}

function parseSnapshot(text: string, path: string): SnapshotRecord {
  const v = JSON.parse(text) as SnapshotRecord;
  if (typeof v.name !== 'string' || !['active', 'view', 'committed'].includes(v.kind) || typeof v.labels !== 'object') {
    throw new UnionctlError('CORRUPT', `the snapshot record ${path} is damaged`, { hint: 'remove it; containerd recreates what it needs' });
  }
  return v;
}

function readSnapshot(docs: DocumentReader, name: string): SnapshotRecord | undefined {
  const path = docPath(name);
  const text = docs.readDocument(path);
  return text === undefined ? undefined : parseSnapshot(text, path);
}

/** A record's file name; anything else in snapshots/ (the temp file of a write that was killed) is not a record. */
const RECORD_FILE = /^[0-9a-f]{64}\.json$/;

function allSnapshots(docs: DocumentReader): SnapshotRecord[] {
  return docs.listDocuments(SNAPSHOTS).flatMap((file) => {
    if (!RECORD_FILE.test(file)) return [];
    const path = `${SNAPSHOTS}/${file}`;
    const text = docs.readDocument(path); // undefined: removed since the listing (a read without the lock)
    return text === undefined ? [] : [parseSnapshot(text, path)];
  });
}

/** Durable unless `durable: false` (see createSnapshot for the one record written without). */
function writeSnapshot(tx: StoreTx, rec: SnapshotRecord, opts: { durable?: boolean } = {}): void {
  tx.writeDocument(docPath(rec.name), `${JSON.stringify(rec, null, 2)}\n`, opts);
}

function publicInfo(r: SnapshotRecord): SnapshotInfo {
  return { name: r.name, parent: r.parent, kind: r.kind, labels: r.labels, created: r.created, updated: r.updated };
}

function notFound(name: string): UnionctlError {
  return new UnionctlError('NOT_FOUND', `snapshot ${name} does not exist`, { hint: 'list the snapshots with ctr snapshots ls' });
}

/** The complete (not being prepared) snapshot `name`, or NOT_FOUND. */
function requireSnapshot(docs: DocumentReader, name: string): SnapshotRecord {
  const rec = readSnapshot(docs, name);
  if (rec === undefined || rec.preparing !== undefined) throw notFound(name);
  return rec;
}

function assertKey(key: string, what = 'key'): void {
  if (key === '') throw new UnionctlError('USAGE', `a snapshot ${what} must not be empty`);
}

/**
 * The store extension: `unionctl rm` refuses a layer a snapshot holds and `rmi` keeps it (like a
 * layer another image shares); half-made Prepares of dead processes are rolled back when a store
 * opens.
 */
export const snapshotStoreExtension: StoreExtension = {
  name: 'containerd-snapshots',
  keeps(tx, id) {
    const holders = allSnapshots(tx).filter((s) => s.layer === id);
    if (holders.length === 0) return undefined;
    // The image that brought the layer goes: an adopting snapshot becomes its owner.
    if (!holders.some((h) => h.ownsLayer)) writeSnapshot(tx, { ...holders[0]!, ownsLayer: true });
    return `it holds containerd snapshot ${holders[0]!.name}`;
  },
  removeGuard(tx, id) {
    const holder = allSnapshots(tx).find((s) => s.layer === id);
    if (holder === undefined) return undefined;
    return {
      reason: `holds containerd snapshot ${holder.name}`,
      hint: 'containerd removes it with the images and containers that use it (ctr images rm, ctr snapshots rm)',
    };
  },
  async recover(store) {
    removeDeadTempFiles(join(store.root, SNAPSHOTS)); // record writes killed before their rename
    await rollBackDeadPrepares(store);
    await dropDanglingSnapshots(store);
  },
};

/**
 * Drops the snapshots whose layer is gone or going (a crash undid the deletion of their record
 * after their layer's removal had begun: dropSnapshot). Runs at every store open, after the
 * store finished the removals a crash interrupted: the records are read without the lock first,
 * and the transaction is taken only when there is something to drop.
 */
async function dropDanglingSnapshots(store: LayerStore): Promise<void> {
  const dangling = async (docs: DocumentReader, layer: (id: string) => unknown) => {
    const found: SnapshotRecord[] = [];
    for (const rec of allSnapshots(docs))
      if (rec.preparing === undefined && rec.layer !== undefined && (await layerGone(() => layer(rec.layer!)))) found.push(rec);
    return found;
  };
  if ((await dangling(diskDocuments(store), (id) => store.layer(id))).length === 0) return;
  await store.transaction(async (tx) => {
    for (const rec of await dangling(tx, (id) => tx.layer(id))) {
      tx.deleteDocument(docPath(rec.name));
      store.report('info', `dropped snapshot ${rec.name}: its layer ${rec.layer} was removed (the removal of the snapshot was cut short)`);
    }
  });
}

/** Whether looking the layer up says it is not there (missing, being created or removed); a damaged record is not this one's to judge. */
async function layerGone(lookUp: () => unknown): Promise<boolean> {
  try {
    await lookUp();
    return false;
  } catch (e) {
    return isUnionctlError(e) && e.code === 'NOT_FOUND';
  }
}

/**
 * Removes the snapshots (and their layers) whose Prepare or View was killed before it ended. Runs
 * at every store open: the records are read without the lock first, and the transaction is taken
 * only when there is something to roll back.
 */
async function rollBackDeadPrepares(store: LayerStore): Promise<string[]> {
  const isDead = (s: SnapshotRecord) => s.preparing !== undefined && !processAlive(s.preparing);
  if (!allSnapshots(diskDocuments(store)).some(isDead)) return [];
  return store.transaction(async (tx) => {
    const dead = allSnapshots(tx).filter(isDead);
    for (const rec of dead) {
      dropSnapshot(tx, rec);
      store.report('info', `rolled back the interrupted preparation of snapshot ${rec.name}`);
    }
    return dead.map((r) => r.name);
  });
}

/**
 * Deletes the snapshot's record and, in the same transaction, the layer it made, unless something
 * else keeps that layer: another snapshot holding it (which then owns it), a unionctl image, a
 * layer built on it. A layer that is not complete (a create killed half-way) is the store's own
 * recovery's to roll back.
 *
 * The record's deletion need not be durable, which spares the transaction a journal (the layer's
 * "removing" record is its one durable change): a crash that undoes it brings back a snapshot
 * containerd no longer knows, which containerd's GC removes again (it removes every snapshot its
 * metadata lacks), or one whose layer went, which the next open drops (dropDanglingSnapshots).
 */
function dropSnapshot(tx: StoreTx, rec: SnapshotRecord): void {
  tx.deleteDocument(docPath(rec.name), { durable: false });
  if (!rec.ownsLayer || rec.layer === undefined) return;
  const heir = allSnapshots(tx).find((s) => s.name !== rec.name && s.layer === rec.layer);
  if (heir !== undefined) return writeSnapshot(tx, { ...heir, ownsLayer: true });
  if (tx.record(rec.layer)?.state !== 'complete') return;
  try {
    tx.removeLayer(rec.layer, { onInUse: 'finish-later' });
  } catch (e) {
    if (!isUnionctlError(e) || (e.code !== 'IN_USE' && e.code !== 'HAS_CHILDREN')) throw e;
    tx.store.report('info', `kept layer ${rec.layer} of removed snapshot ${rec.name}: ${e.message}`);
  }
}

/**
 * Layers up to this size (what they add, in bytes) get their diff ID inside Commit; bigger ones
 * right after it, in the background (diff-ids.ts), so that containerd's unpacking of the next
 * layer does not wait for the hash.
 */
const INLINE_DIFF_ID_BYTES = 16 << 20;

export class SnapshotService {
  /** Hashes what Commit made, after the Commit has answered (diff-ids.ts says why). */
  private readonly diffIds: DiffIdRecorder;

  /**
   * The records as they are on disk, read without the store lock: what Stat, Mounts, Usage and
   * List read (each record is replaced atomically, so a read sees it before or after a change).
   * They run once or more per container start; the lock would make each wait for any
   * transaction in the store, and cost a lock file open and flock besides.
   */
  private readonly disk: DocumentReader;

  constructor(readonly store: LayerStore) {
    const d = store.driver;
    if (d.mountSpec === undefined || d.sealWritable === undefined) {
      throw new UnionctlError(
        'UNSUPPORTED',
        `the ${d.name} driver cannot serve containerd snapshots: it yields no mounts a runtime can make`,
        {
          hint: 'serve a store of a driver that does (overlay2, overlay, vfs, aufs: --driver overlay2)',
        },
      );
    }
    this.diffIds = new DiffIdRecorder(store);
    this.disk = diskDocuments(store);
    this.resumed = this.diffIds
      .resume()
      .catch((e: Error) => store.report('warn', `could not look for layers without a diff ID: ${e.message}`));
  }

  /** The layers a stopped server left without a diff ID, queued. */
  private readonly resumed: Promise<void>;

  /** Resolves once every committed layer has its diff ID recorded. */
  async diffIdsRecorded(): Promise<void> {
    await this.resumed;
    await this.diffIds.settled();
  }

  /** Stops the background work (the diff ID being hashed is finished; the rest waits for the next start). */
  async close(): Promise<void> {
    await this.diffIds.stop();
  }

  // ---- Prepare, View ------------------------------------------------------------------------

  /** An active snapshot on committed `parent` ('' for none): a new writable layer. See the module doc for adoption. */
  async prepare(key: string, parent: string, labels: Record<string, string>): Promise<MountSpec[]> {
    return this.createSnapshot('active', key, parent, labels);
  }

  /** A read-only view of committed `parent`. */
  async view(key: string, parent: string, labels: Record<string, string>): Promise<MountSpec[]> {
    return this.createSnapshot('view', key, parent, labels);
  }

  private async createSnapshot(kind: 'active' | 'view', key: string, parent: string, labels: Record<string, string>): Promise<MountSpec[]> {
    assertKey(key);
    const now = new Date().toISOString();
    const rec = await this.store.transaction(async (tx) => {
      if (readSnapshot(tx, key) !== undefined) throw new UnionctlError('EXISTS', `snapshot ${key} already exists`);
      const parentLayer = parent === '' ? undefined : this.committedLayerOf(tx, parent);
      const adopted = this.adopt(tx, parent, labels, now);
      if (adopted !== undefined) return { adopted }; // committed first: the refusal comes after
      const needsLayer = kind === 'active' || parentLayer === undefined;
      const made: SnapshotRecord = {
        name: key,
        parent,
        kind,
        labels: { ...labels },
        created: now,
        updated: now,
        ownsLayer: needsLayer,
        ...(needsLayer ? { layer: randomBytes(32).toString('hex'), preparing: currentProcess() } : { layer: parentLayer }),
      };
      // A record that is being prepared need not be durable: a crash that undoes it leaves at
      // most a "creating" layer of a dead process, which the store's recovery rolls back; one
      // that keeps it is rolled back by rollBackDeadPrepares. The record written once the layer
      // is made is durable, so a snapshot is on disk when containerd is answered. (Two fsyncs
      // less per container start: a third of Prepare's time.)
      writeSnapshot(tx, made, { durable: made.preparing === undefined });
      return { made, parentLayer };
    });
    if ('adopted' in rec) {
      // containerd's answer to this: Walk for the committed snapshot with the target's label on this parent, and use it.
      throw new UnionctlError('EXISTS', `target snapshot ${labels[SNAPSHOT_REF_LABEL]} already exists as ${rec.adopted}`);
    }
    const { made, parentLayer } = rec;
    if (made.preparing !== undefined) await this.makeLayer(made, parentLayer);
    return this.mountsOf(made);
  }

  /** Makes the new snapshot's layer, then marks the snapshot ready; on failure both go. */
  private async makeLayer(rec: SnapshotRecord, parentLayer: string | undefined): Promise<void> {
    try {
      await this.store.create({ id: rec.layer, parent: parentLayer, writable: rec.kind === 'active', origin: 'image' });
      const { preparing: _p, ...ready } = rec;
      await this.store.transaction(async (tx) => writeSnapshot(tx, ready));
    } catch (e) {
      // What was made goes (a failure to undo it leaves the record to the next open's rollback).
      await this.store.transaction(async (tx) => dropSnapshot(tx, rec)).catch(() => undefined);
      throw e;
    }
  }

  /** The layer of committed snapshot `name`: NOT_FOUND, WRONG_STATE when it is not committed. */
  private committedLayerOf(tx: StoreTx, name: string): string {
    const p = requireSnapshot(tx, name);
    if (p.kind !== 'committed' || p.layer === undefined) {
      throw new UnionctlError('WRONG_STATE', `parent snapshot ${name} is not committed (it is ${p.kind})`, {
        hint: 'commit it first',
      });
    }
    return p.layer;
  }

  /**
   * The remote-snapshotter path: when `labels` name a target chain ID (snapshots.ref) that a
   * committed snapshot on this parent already is, or that a layer of the store already holds,
   * the name of the committed snapshot containerd should use (made here for a store layer).
   */
  private adopt(tx: StoreTx, parent: string, labels: Record<string, string>, now: string): string | undefined {
    const target = labels[SNAPSHOT_REF_LABEL];
    if (target === undefined || target === '') return undefined;
    const existing = allSnapshots(tx).find(
      (s) => s.kind === 'committed' && s.preparing === undefined && s.parent === parent && s.labels[SNAPSHOT_REF_LABEL] === target,
    );
    if (existing !== undefined) return existing.name;
    const layer = tx.layerByChainId(target);
    if (layer === undefined) return undefined;
    const name = `unionctl/adopted/${target}/${createHash('sha256').update(parent).digest('hex').slice(0, 12)}`;
    if (readSnapshot(tx, name) !== undefined) return name;
    writeSnapshot(tx, {
      name,
      parent,
      kind: 'committed',
      labels: { ...labels },
      created: now,
      updated: now,
      layer: layer.id,
      ownsLayer: false,
    });
    return name;
  }

  // ---- Mounts, Stat, Usage, List ------------------------------------------------------------

  async mounts(key: string): Promise<MountSpec[]> {
    return this.mountsOf(requireSnapshot(this.disk, key));
  }

  /** Active: the writable union; view: the parent's content read-only; committed: read-only (what containerd's View shows). */
  private async mountsOf(rec: SnapshotRecord): Promise<MountSpec[]> {
    if (rec.layer === undefined) throw new UnionctlError('CORRUPT', `snapshot ${rec.name} names no layer`);
    return this.store.driver.mountSpec!(rec.layer, { readonly: rec.kind !== 'active' });
  }

  async stat(key: string): Promise<SnapshotInfo> {
    return publicInfo(requireSnapshot(this.disk, key));
  }

  /**
   * Disk use of what the snapshot itself holds (its layer's own dir): blocks and inodes, each
   * inode once. A view, which holds nothing of its own, uses nothing.
   */
  async usage(key: string): Promise<{ size: number; inodes: number }> {
    const rec = requireSnapshot(this.disk, key);
    if (rec.layer === undefined || !rec.ownsLayer || rec.kind === 'view') return { size: 0, inodes: 0 };
    const meta = await this.store.driver.metadata(rec.layer);
    const dir = meta.UpperDir ?? meta.Dir ?? meta.RootDir; // overlay (v1): a committed layer is its root/ farm
    if (dir === undefined)
      throw new UnionctlError('UNSUPPORTED', `the ${this.store.driver.name} driver does not say where layer ${rec.layer} is`);
    return diskUsage(dir);
  }

  /** Every snapshot matching any of `filters` (containerd's filter syntax; none: all), sorted by name. */
  async list(filters: string[] = []): Promise<SnapshotInfo[]> {
    const match = compileFilters(filters);
    return allSnapshots(this.disk)
      .filter((s) => s.preparing === undefined)
      .map(publicInfo)
      .filter((s) => match(snapshotFields(s)))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)); // code-point order, as containerd's bolt keys
  }

  // ---- Update ---------------------------------------------------------------------------------

  /**
   * containerd's field-mask rules: no paths replaces every label; `labels` replaces them all;
   * `labels.<key>` sets that key from `info.labels`, or deletes it when `info.labels` lacks it.
   * Any other path is USAGE (name, parent, kind and the times cannot change).
   */
  async update(info: Pick<SnapshotInfo, 'name' | 'labels'>, paths: string[]): Promise<SnapshotInfo> {
    assertKey(info.name, 'name');
    return this.store.transaction(async (tx) => {
      const rec = requireSnapshot(tx, info.name);
      const labels = paths.length === 0 ? { ...info.labels } : { ...rec.labels };
      for (const path of paths) {
        if (path === 'labels') {
          for (const k of Object.keys(labels)) delete labels[k];
          Object.assign(labels, info.labels);
        } else if (path.startsWith('labels.')) {
          const k = path.slice('labels.'.length);
          if (Object.hasOwn(info.labels, k)) labels[k] = info.labels[k]!;
          else delete labels[k];
        } else {
          throw new UnionctlError('USAGE', `cannot update the ${JSON.stringify(path)} field of snapshot ${info.name}`, {
            hint: 'only labels can be updated',
          });
        }
      }
      const updated: SnapshotRecord = { ...rec, labels, updated: new Date().toISOString() };
      writeSnapshot(tx, updated);
      return publicInfo(updated);
    });
  }

  // ---- Commit ---------------------------------------------------------------------------------

  /**
   * Active snapshot `key` becomes committed snapshot `name` (the key goes): its layer becomes an
   * image layer with the chain ID the name ends with (`…/sha256:<chainID>`, as containerd names
   * unpacked layers) and the diff ID and size of the tar unionctl exports for it.
   */
  async commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    assertKey(name, 'name');
    assertKey(key);
    const active = await this.store.transaction(async (tx) => this.activeForCommit(tx, name, key));
    await this.store.driver.releaseMountSpec?.(active.layer!); // devicemapper: the store commits an unused layer
    const { parent, ...fields } = await this.layerFacts(active.layer!, name, labels);
    // A small layer is hashed here (cheap; the record is whole at once), a big one after the answer.
    const inline = fields.size <= INLINE_DIFF_ID_BYTES;
    const diffId = inline ? await exportDiffId(this.store, active.layer!, parent) : undefined;
    await this.store.transaction(async (tx) => {
      const again = this.activeForCommit(tx, name, key);
      await tx.commitWritableLayer(again.layer!, { ...fields, ...(diffId === undefined ? {} : { diffId }) });
      const now = new Date().toISOString();
      tx.deleteDocument(docPath(key));
      writeSnapshot(tx, { ...again, name, kind: 'committed', labels: { ...again.labels, ...labels }, updated: now });
    });
    if (!inline) this.diffIds.add(active.layer!);
  }

  private activeForCommit(tx: StoreTx, name: string, key: string): SnapshotRecord {
    const rec = requireSnapshot(tx, key);
    if (rec.kind !== 'active' || rec.layer === undefined) {
      throw new UnionctlError('WRONG_STATE', `snapshot ${key} is ${rec.kind}, not active: only an active snapshot can be committed`);
    }
    if (readSnapshot(tx, name) !== undefined) throw new UnionctlError('EXISTS', `snapshot ${name} already exists`);
    return rec;
  }

  /** The layer's parent, size, and the chain ID containerd named the layer by. */
  private async layerFacts(
    layer: string,
    name: string,
    labels: Record<string, string>,
  ): Promise<{ parent?: string; chainId?: string; size: number }> {
    const parent = (await this.store.layer(layer)).parent;
    const size = await this.store.driver.diffSize(layer, parent);
    const chainId = CHAIN_ID_AT_END.exec(name)?.[1] ?? labels[SNAPSHOT_REF_LABEL];
    return { parent, size, ...(chainId === undefined ? {} : { chainId }) };
  }

  // ---- Remove, Cleanup ------------------------------------------------------------------------

  /**
   * Removes the snapshot; HAS_CHILDREN while a snapshot is built on it. The layer it made goes
   * with it unless something keeps the layer: another snapshot that adopted it (which then owns
   * it), a unionctl image, or a unionctl layer built on it.
   */
  async remove(key: string): Promise<void> {
    assertKey(key);
    await this.releaseForRemoval(key);
    await this.store.transaction(async (tx) => {
      const rec = requireSnapshot(tx, key);
      const child = allSnapshots(tx).find((s) => s.parent === key);
      if (child !== undefined)
        throw new UnionctlError('HAS_CHILDREN', `snapshot ${key} has children (${child.name})`, { hint: 'remove them first' });
      dropSnapshot(tx, rec);
    });
  }

  /**
   * What the driver's mountSpec holds for the snapshot's layer (devicemapper's mounted device) goes
   * with the snapshot when no other view shows that layer: a view shares its parent's layer with
   * the parent and the parent's other views. A snapshot with children is refused later anyway.
   */
  private async releaseForRemoval(key: string): Promise<void> {
    const release = this.store.driver.releaseMountSpec;
    if (release === undefined) return;
    const rec = await this.store.transaction(async (tx) => {
      const r = requireSnapshot(tx, key);
      if (r.layer === undefined) return undefined;
      const all = allSnapshots(tx);
      if (all.some((s) => s.parent === key)) return undefined;
      const shown = all.some((s) => s.name !== key && s.layer === r.layer && s.kind === 'view');
      return shown ? undefined : r;
    });
    if (rec !== undefined) await release.call(this.store.driver, rec.layer!);
  }

  /** Rolls back the snapshots whose Prepare was killed half-way (and their layers); returns their names. */
  async cleanup(): Promise<string[]> {
    return rollBackDeadPrepares(this.store);
  }
}

function snapshotFields(s: SnapshotInfo): SnapshotFields {
  return { name: s.name, parent: s.parent, kind: s.kind, labels: s.labels };
}
