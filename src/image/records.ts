/**
 * Image records, kept next to the layer records:
 *
 *   <root>/images/<config hex>.json   one per image: id (= config digest), names, the layer chain
 *                                     (layer id, diff ID, chain ID, bottom first) and the config
 *                                     JSON exactly as it came (its sha256 is the id, so a save
 *                                     writes the same bytes back)
 *   <root>/images/.load-<rand>.json   a load in progress: its process and the layers it created
 *
 * A load writes its journal before creating each layer and the image record last, then deletes
 * the journal. If the process dies in between, the next openStore (recoverInterruptedLoads, run
 * by LayerStore.recover under store.lock) removes the layers that load made and no image uses:
 * the store is as it was before the load. Half-made layers themselves are rolled back by the
 * layer store's own "creating" records.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { writeFileAtomic } from '../sys/index.js';
import { join } from 'node:path';
import { UnionctlError } from '../errors.js';
import { currentOwner, ownerAlive, type LayerStore, type Owner } from '../graph/store.js';

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

interface JournalContents {
  owner: Owner;
  layers: string[];
}

function imagesDir(store: LayerStore): string {
  return join(store.root, 'images');
}

function hexOf(id: string): string {
  return id.startsWith('sha256:') ? id.slice('sha256:'.length) : id;
}

function writeDurably(dir: string, name: string, text: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileAtomic(join(dir, name), text, { durable: true });
}

// ---- image records ---------------------------------------------------------------------------

/** Every image record, sorted by load time. */
export function readImageRecords(store: LayerStore): ImageRecord[] {
  let files: string[];
  try {
    files = readdirSync(imagesDir(store));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const records: ImageRecord[] = [];
  for (const f of files) {
    if (f.startsWith('.') || !f.endsWith('.json')) continue;
    const path = join(imagesDir(store), f);
    try {
      records.push(JSON.parse(readFileSync(path, 'utf8')) as ImageRecord);
    } catch {
      throw new UnionctlError('CORRUPT', `image record ${path} is not valid JSON`, {
        hint: 'remove the file (the image is then forgotten; rm its layers by hand)',
      });
    }
  }
  return records.sort((a, b) => a.loaded.localeCompare(b.loaded) || a.id.localeCompare(b.id));
}

export function writeImageRecord(store: LayerStore, rec: ImageRecord): void {
  writeDurably(imagesDir(store), `${hexOf(rec.id)}.json`, `${JSON.stringify(rec, null, 2)}\n`);
}

export function deleteImageRecord(store: LayerStore, id: string): void {
  rmSync(join(imagesDir(store), `${hexOf(id)}.json`), { force: true });
}

/** "name" → "name:latest"; "name:tag" and "name@sha256:…" stay as they are. */
export function normalizeName(name: string): string {
  const lastSlash = name.lastIndexOf('/');
  const tail = name.slice(lastSlash + 1);
  return tail.includes(':') || tail.includes('@') ? name : `${name}:latest`;
}

/**
 * The image a user means by NAME or ID: an exact name, the name with ":latest", "sha256:<hex>", or
 * a unique prefix (4+ hex digits) of the id. undefined when nothing matches.
 */
export function findImage(store: LayerStore, ref: string): ImageRecord | undefined {
  const records = readImageRecords(store);
  const byName = records.find((r) => r.names.includes(ref) || r.names.includes(normalizeName(ref)));
  if (byName !== undefined) return byName;
  const hex = hexOf(ref);
  if (!/^[0-9a-f]{4,64}$/.test(hex)) return undefined;
  const matches = records.filter((r) => hexOf(r.id).startsWith(hex));
  if (matches.length > 1) {
    throw new UnionctlError('USAGE', `image id prefix ${ref} is ambiguous: ${matches.map((m) => hexOf(m.id).slice(0, 12)).join(', ')}`, {
      hint: 'give more digits of the id',
    });
  }
  return matches[0];
}

export function requireImage(store: LayerStore, ref: string): ImageRecord {
  const rec = findImage(store, ref);
  if (rec === undefined)
    throw new UnionctlError('NOT_FOUND', `image ${ref} does not exist`, { hint: 'list the images with unionctl images' });
  return rec;
}

/** Names (or ids) of the images whose layer chain holds layer `id`. */
export function imagesUsingLayer(store: LayerStore, id: string): string[] {
  return readImageRecords(store)
    .filter((r) => r.layers.some((l) => l.id === id))
    .map((r) => r.names[0] ?? r.id);
}

/** Layer ids some image record uses. */
export function layersInUse(store: LayerStore, except?: string): Set<string> {
  const used = new Set<string>();
  for (const rec of readImageRecords(store)) if (rec.id !== except) for (const l of rec.layers) used.add(l.id);
  return used;
}

// ---- load journals ---------------------------------------------------------------------------

/** The journal of one running load. */
export class LoadJournal {
  private readonly name = `.load-${randomBytes(6).toString('hex')}.json`;
  private readonly journal: JournalContents = { owner: currentOwner(), layers: [] };

  constructor(private readonly store: LayerStore) {}

  /** Layers this load created, oldest first. */
  get layers(): readonly string[] {
    return this.journal.layers;
  }

  /** Call BEFORE the layer is created, so a kill right after still finds it. */
  addLayer(id: string): void {
    this.journal.layers.push(id);
    writeDurably(imagesDir(this.store), this.name, JSON.stringify(this.journal));
  }

  end(): void {
    rmSync(join(imagesDir(this.store), this.name), { force: true });
  }
}

/**
 * Removes, newest first, the layers a load created that no image uses and nothing is built on.
 * Used when a load fails in-process and (for a dead process) by recoverInterruptedLoads.
 */
export async function removeUnusedLayers(store: LayerStore, ids: readonly string[]): Promise<void> {
  await store.withStoreLock(async () => {
    const used = layersInUse(store);
    const all = await store.list();
    for (const id of [...ids].reverse()) {
      if (used.has(id) || !all.some((l) => l.id === id)) continue;
      if (all.some((l) => l.parent === id && !ids.includes(l.id))) continue; // another load built on it
      await store.remove(id);
    }
  });
}

/** Removes `dir` if it is empty (what a load created and did not need after all). */
export function removeDirIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    /* not empty, or not there */
  }
}

/** Spool dirs (<root>/tmp/load-<pid>-…) of loads whose process is gone. */
function removeDeadSpools(store: LayerStore): void {
  const tmp = join(store.root, 'tmp');
  let names: string[];
  try {
    names = readdirSync(tmp);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = /^load-(\d+)-/.exec(name)?.[1];
    if (pid === undefined || Number(pid) === process.pid) continue;
    try {
      process.kill(Number(pid), 0);
    } catch {
      rmSync(join(tmp, name), { recursive: true, force: true });
    }
  }
  removeDirIfEmpty(tmp);
}

/** Finishes the journals of dead loads (called by LayerStore.recover, under store.lock). */
export async function recoverInterruptedLoads(store: LayerStore): Promise<void> {
  removeDeadSpools(store);
  let files: string[];
  try {
    files = readdirSync(imagesDir(store));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  for (const f of files) {
    if (!f.startsWith('.load-') || !f.endsWith('.json')) continue;
    const path = join(imagesDir(store), f);
    let journal: JournalContents;
    try {
      journal = JSON.parse(readFileSync(path, 'utf8')) as JournalContents;
    } catch {
      rmSync(path, { force: true }); // torn write before its first layer: nothing to undo
      continue;
    }
    if (ownerAlive(journal.owner)) continue;
    try {
      await removeUnusedLayers(store, journal.layers);
      rmSync(path, { force: true });
      removeDirIfEmpty(imagesDir(store));
    } catch (e) {
      process.emitWarning(`unionctl: could not roll back the interrupted image load ${f}: ${(e as Error).message}`);
    }
  }
}
