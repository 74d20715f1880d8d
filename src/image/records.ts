/**
 * Image records, kept next to the layer records and changed only through store transactions:
 *
 *   <root>/images/<config hex>.json   one per image: id (= config digest), names, the layer chain
 *                                     (layer id, diff ID, chain ID, bottom first) and the config
 *                                     JSON exactly as it came (its sha256 is the id, so a save
 *                                     writes the same bytes back)
 *   <root>/images/.load-<rand>.json   a load in progress: its process, the layers it created and
 *                                     the layers it reuses
 *
 * A load writes its journal (in a transaction) before creating each layer, and the image records
 * together with the journal's deletion in one last transaction. If the process dies in between,
 * the next openStore (the images extension's recovery) removes the layers that load created and
 * nothing else uses: the store is as it was before the load. While a load runs, the layers its
 * journal names are kept (another load's rollback, an `rm`, an `rmi` leave them alone).
 */
import { randomBytes } from 'node:crypto';
import { lstatSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ambiguousPrefixError, corruptError, UnionctlError } from '../errors.js';
import type { CheckFinding } from '../graph/driver.js';
import type { LayerStore, StoreExtension, StoreTx } from '../graph/store.js';
import {
  currentProcess,
  processAlive,
  readStoreFile,
  removeDeadTempFiles,
  removeEntriesOfDeadProcesses,
  removeStoreTree,
  storeDirExists,
  type ProcessIdentity,
} from '../sys/index.js';

export interface ImageLayerRef {
  /** The layer's id in the store. */
  id: string;
  diffId: string;
  chainId: string;
}

export interface ImageRecord {
  /** "sha256:<hex>" of the config JSON. */
  id: string;
  /** "name:tag", each at most on one image. */
  names: string[];
  /** Bottom layer first. */
  layers: ImageLayerRef[];
  /** The config JSON, byte for byte as it was loaded. */
  config: string;
  /** ISO 8601, when the image was loaded. */
  loaded: string;
}

/** What a load journal holds. */
interface JournalContents {
  owner: ProcessIdentity;
  /** Layers this load created (removed again if it fails), oldest first. */
  created: string[];
  /** Layers of the store this load reuses (kept while it runs). */
  reused: string[];
}

const IMAGES = 'images';

/** <root>/containers-storage.json: the store's containers-storage export dirs (containers-storage/). */
export const CONTAINERS_STORAGE_SETTINGS = 'containers-storage.json';

/**
 * Where image documents are read from: a transaction (StoreTx, which sees its own pending writes)
 * or the disk without a lock (diskDocuments) for queries.
 */
export interface DocumentReader {
  readDocument(path: string): string | undefined;
  listDocuments(dir: string): string[];
}

/** The store's documents as they are on disk now, read without a lock (every file is replaced atomically). */
export function diskDocuments(store: LayerStore): DocumentReader {
  return {
    readDocument: (path) => readStoreFile(join(store.root, path), 'store file'),
    listDocuments: (dir) => {
      const path = join(store.root, dir);
      return storeDirExists(path, 'store directory') ? readdirSync(path).sort() : [];
    },
  };
}

function hexOf(id: string): string {
  return id.startsWith('sha256:') ? id.slice('sha256:'.length) : id;
}

const recordFile = (id: string) => `${IMAGES}/${hexOf(id)}.json`;

// ---- image records ---------------------------------------------------------------------------

/**
 * Every image record, sorted by load time. A damaged one is CORRUPT naming the file — unless
 * `onDamaged` is given (a listing): then it is told, and the others are returned. Anything that
 * decides what to delete (rmi, the remove guard) reads without it: an image record that cannot be
 * read might hold the very layers about to go.
 */
export function readImageRecords(docs: DocumentReader, onDamaged?: (error: UnionctlError) => void): ImageRecord[] {
  const records: ImageRecord[] = [];
  for (const f of docs.listDocuments(IMAGES)) {
    if (f.startsWith('.') || !f.endsWith('.json')) continue;
    try {
      const text = docs.readDocument(`${IMAGES}/${f}`);
      if (text !== undefined) records.push(parseImageRecord(text, `${IMAGES}/${f}`));
    } catch (e) {
      if (onDamaged === undefined || (e as UnionctlError).code !== 'CORRUPT') throw e;
      onDamaged(e as UnionctlError);
    }
  }
  return records.sort((a, b) => a.loaded.localeCompare(b.loaded) || a.id.localeCompare(b.id));
}

function parseImageRecord(text: string, file: string): ImageRecord {
  const corrupt = () =>
    corruptError(`image record ${file} is not a valid image record`, {
      repair: 'remove the file (the image is then forgotten; rm its layers by hand)',
    });
  let rec: Partial<ImageRecord>;
  try {
    rec = JSON.parse(text) as Partial<ImageRecord>;
  } catch {
    throw corrupt();
  }
  if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) throw corrupt();
  const layersOk =
    Array.isArray(rec.layers) &&
    rec.layers.every(
      (l: Partial<ImageLayerRef>) => typeof l?.id === 'string' && typeof l.diffId === 'string' && typeof l.chainId === 'string',
    );
  const namesOk = Array.isArray(rec.names) && rec.names.every((n) => typeof n === 'string');
  if (typeof rec.id !== 'string' || !namesOk || !layersOk || typeof rec.config !== 'string' || typeof rec.loaded !== 'string')
    throw corrupt();
  return rec as ImageRecord;
}

export function writeImageRecord(tx: StoreTx, rec: ImageRecord): void {
  tx.writeDocument(recordFile(rec.id), `${JSON.stringify(rec, null, 2)}\n`);
}

export function deleteImageRecord(tx: StoreTx, id: string): void {
  tx.deleteDocument(recordFile(id));
}

/** "name" → "name:latest"; "name:tag" and "name@sha256:…" stay as they are. */
export function normalizeName(name: string): string {
  const lastSlash = name.lastIndexOf('/');
  const tail = name.slice(lastSlash + 1);
  return tail.includes(':') || tail.includes('@') ? name : `${name}:latest`;
}

/** The image with NAME (as given, or normalised: ":latest" added…) or with exactly this id (with or without "sha256:"). */
export function findImageExactly(records: readonly ImageRecord[], ref: string): ImageRecord | undefined {
  const byName = records.find((r) => r.names.includes(ref) || r.names.includes(normalizeName(ref)));
  if (byName !== undefined) return byName;
  const hex = hexOf(ref);
  return records.find((r) => hexOf(r.id) === hex);
}

/** The images whose id starts with `ref` (4+ hex digits, "sha256:" optional); none for anything else. */
export function imagesWithIdPrefix(records: readonly ImageRecord[], ref: string): ImageRecord[] {
  const hex = hexOf(ref);
  if (!/^[0-9a-f]{4,64}$/.test(hex)) return [];
  return records.filter((r) => hexOf(r.id).startsWith(hex));
}

/** An image id as tables show it: 12 hex digits. */
export function shortImageHex(id: string): string {
  return hexOf(id).slice(0, 12);
}

/**
 * The image a user means by NAME or ID: an exact name, the name with ":latest", "sha256:<hex>", or
 * a unique prefix (4+ hex digits) of the id. undefined when nothing matches; USAGE, listing them, when a prefix is ambiguous.
 */
export function findImage(docs: DocumentReader, ref: string): ImageRecord | undefined {
  const records = readImageRecords(docs);
  const exact = findImageExactly(records, ref);
  if (exact !== undefined) return exact;
  const matches = imagesWithIdPrefix(records, ref);
  if (matches.length > 1)
    throw ambiguousPrefixError(
      `image id prefix ${ref}`,
      matches.map((m) => shortImageHex(m.id)),
    );
  return matches[0];
}

export function requireImage(docs: DocumentReader, ref: string): ImageRecord {
  const rec = findImage(docs, ref);
  if (rec === undefined)
    throw new UnionctlError('NOT_FOUND', `image ${ref} does not exist`, { hint: 'list the images with unionctl images' });
  return rec;
}

/** Names (or ids) of the images whose layer chain holds layer `id`. */
export function imagesUsingLayer(docs: DocumentReader, id: string): string[] {
  return readImageRecords(docs)
    .filter((r) => r.layers.some((l) => l.id === id))
    .map((r) => r.names[0] ?? r.id);
}

/** Layer ids some image record uses (but the image `exceptImage`), or a running load holds. */
export function layersInUse(docs: DocumentReader, opts: { exceptImage?: string } = {}): Set<string> {
  const used = new Set<string>();
  for (const rec of readImageRecords(docs)) if (rec.id !== opts.exceptImage) for (const l of rec.layers) used.add(l.id);
  for (const [, journal] of readJournals(docs)) {
    if (!processAlive(journal.owner)) continue;
    for (const id of [...journal.created, ...journal.reused]) used.add(id);
  }
  return used;
}

// ---- load journals ---------------------------------------------------------------------------

/** Layer ids running loads have claimed for layers they are about to create (or are creating). */
export function idsClaimedByLoads(docs: DocumentReader): Set<string> {
  const claimed = new Set<string>();
  for (const [, journal] of readJournals(docs)) if (processAlive(journal.owner)) for (const id of journal.created) claimed.add(id);
  return claimed;
}

/** The journals of loads, running or dead, by file name. A torn or damaged one holds nothing. */
function readJournals(docs: DocumentReader): Array<[string, JournalContents]> {
  const out: Array<[string, JournalContents]> = [];
  for (const f of docs.listDocuments(IMAGES)) {
    if (!f.startsWith('.load-') || !f.endsWith('.json')) continue;
    const journal = parseJournal(docs.readDocument(`${IMAGES}/${f}`));
    if (journal !== undefined) out.push([f, journal]);
  }
  return out;
}

function parseJournal(text: string | undefined): JournalContents | undefined {
  if (text === undefined) return undefined;
  try {
    const j = JSON.parse(text) as Partial<JournalContents>;
    const ids = (a: unknown) => Array.isArray(a) && a.every((x) => typeof x === 'string');
    if (typeof j.owner?.pid !== 'number' || !ids(j.created) || !ids(j.reused)) return undefined;
    return j as JournalContents;
  } catch {
    return undefined;
  }
}

/** The journal of one running load. */
export class LoadJournal {
  readonly name = `.load-${randomBytes(6).toString('hex')}.json`;
  private readonly journal: JournalContents = { owner: currentProcess(), created: [], reused: [] };

  /** Layers this load created, oldest first. */
  get created(): readonly string[] {
    return this.journal.created;
  }

  /** Call BEFORE the layer is created, so a kill right after still finds it. */
  addCreated(tx: StoreTx, id: string): void {
    this.journal.created.push(id);
    this.save(tx);
  }

  /** Keeps an existing layer this load builds on from being removed until the load ends. */
  addReused(tx: StoreTx, id: string): void {
    if (this.journal.reused.includes(id)) return;
    this.journal.reused.push(id);
    this.save(tx);
  }

  private save(tx: StoreTx): void {
    tx.writeDocument(`${IMAGES}/${this.name}`, JSON.stringify(this.journal));
  }
}

/**
 * Ends the load of journal `journalName` in transaction `tx`: deletes the journal, then removes,
 * newest first, the layers of `ids` that no image uses, no other running load holds and nothing
 * else is built on. (The journal goes first: while it is there, it holds those very layers.)
 */
export function endLoad(tx: StoreTx, ids: readonly string[], journalName: string): void {
  tx.deleteDocument(`${IMAGES}/${journalName}`);
  const used = layersInUse(tx);
  for (const id of [...ids].reverse()) {
    if (used.has(id) || tx.record(id)?.state !== 'complete') continue;
    if (tx.children(id).length > 0) continue; // another load built on it
    tx.removeLayer(id, { onInUse: 'finish-later' });
  }
}

/** endLoad in a transaction of its own: a load that failed in-process, or (recovery) one whose process died. */
export async function rollBackLoad(store: LayerStore, ids: readonly string[], journalName: string): Promise<void> {
  await store.transaction(async (tx) => endLoad(tx, ids, journalName));
}

/** Removes `dir` if it is empty (what a load created and did not need after all). */
export function removeDirIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    /* not empty, or not there */
  }
}

/** Spool dirs (<root>/tmp/load-<pid>-…) of loads whose process is gone. A tmp/ that is not a real directory is left alone. */
function removeDeadSpools(store: LayerStore): void {
  const tmp = join(store.root, 'tmp');
  if (lstatSync(tmp, { throwIfNoEntry: false })?.isDirectory() !== true) return;
  // Never across a mount or through a symlink (removeStoreTree), and one that cannot go is reported, not fatal.
  removeEntriesOfDeadProcesses(tmp, /^load-(\d+)-/, (name) => {
    try {
      removeStoreTree(store.root, join('tmp', name), 'load spool dir');
    } catch (e) {
      store.report('warn', `could not remove the spool dir of a dead load: ${(e as Error).message}`);
    }
  });
  removeDirIfEmpty(tmp);
}

/** Rolls back the loads whose process died: their layers go (unless something uses them), then their journals and temp files. */
async function recoverInterruptedLoads(store: LayerStore): Promise<void> {
  removeDeadSpools(store);
  const dead = readJournals(diskDocuments(store)).filter(([, j]) => !processAlive(j.owner));
  for (const [name, journal] of dead) {
    try {
      await rollBackLoad(store, journal.created, name);
    } catch (e) {
      store.report('warn', `could not roll back the interrupted image load ${name}: ${(e as Error).message}`);
      continue;
    }
    const removed =
      journal.created.length === 0
        ? 'it had created no layer'
        : `removed the layers it created that nothing else uses (${journal.created.join(', ')})`;
    store.report('info', `rolled back the interrupted image load ${name} of process ${journal.owner.pid}: ${removed}`);
  }
  // Torn journals (never parsed) of dead loads held nothing: drop them with the empty dir.
  for (const f of diskDocuments(store).listDocuments(IMAGES)) {
    if (f.startsWith('.load-') && parseJournal(diskDocuments(store).readDocument(`${IMAGES}/${f}`)) === undefined) {
      rmSync(join(store.root, IMAGES, f), { force: true });
    }
  }
  removeDeadTempFiles(join(store.root, IMAGES)); // image records and journals whose writer was killed before its rename
  removeDirIfEmpty(join(store.root, IMAGES));
}

/**
 * The image records' part of `unionctl check` (graph/check.ts): records that do not parse, and
 * images naming a layer the store does not have complete, or has with another diff ID. None has a
 * repair: an image is only ever removed by the user (`unionctl rmi`), or loaded again.
 */
export function checkImageRecords(tx: StoreTx): CheckFinding[] {
  const findings: CheckFinding[] = [];
  const images = readImageRecords(tx, (e) =>
    findings.push({
      code: 'IMAGE_RECORD_DAMAGED',
      subject: /image record (\S+)/.exec(e.message)?.[1] ?? IMAGES,
      message: e.message,
      repair: 'remove the file (the image is then forgotten) or restore it from a backup',
      when: 'never',
    }),
  );
  for (const image of images) {
    for (const ref of image.layers) {
      let rec;
      try {
        rec = tx.record(ref.id);
      } catch {
        continue; // RECORD_DAMAGED (or an id that is none): the layer check reports it
      }
      const name = image.names[0] ?? image.id;
      if (rec === undefined || rec.state !== 'complete') {
        findings.push({
          code: 'IMAGE_LAYER_MISSING',
          subject: image.id,
          message: `image ${name} names layer ${ref.id}, which the store does not have`,
          repair: `remove the image (unionctl rmi ${name}) and load or pull it again`,
          when: 'never',
        });
      } else if (rec.diffId !== ref.diffId) {
        findings.push({
          code: 'IMAGE_LAYER_MISMATCH',
          subject: image.id,
          message: `image ${name} names layer ${ref.id} with diff ID ${ref.diffId}, but the layer's is ${rec.diffId ?? 'none'}`,
          repair: `remove the image (unionctl rmi ${name}) and load or pull it again`,
          when: 'never',
        });
      }
    }
  }
  return findings;
}

/**
 * The images extension of the layer store: a layer that an image uses (or a running load holds)
 * cannot be removed, and interrupted loads are rolled back when a store is opened.
 */
export const imageStoreExtension: StoreExtension = {
  name: 'images',
  removeGuard(tx, id) {
    const images = imagesUsingLayer(tx, id);
    if (images.length > 0) return { reason: `belongs to image ${images[0]}`, hint: `remove the image instead: unionctl rmi ${images[0]}` };
    if (layersInUse(tx).has(id)) return { reason: 'is being used by an image load that is running', hint: 'wait for the load to finish' };
    return undefined;
  },
  recover: recoverInterruptedLoads,
  check: checkImageRecords,
  rootFiles: [CONTAINERS_STORAGE_SETTINGS],
};
