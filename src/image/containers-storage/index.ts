/**
 * unionctl as a read-only containers/storage image store (`additionalimagestores` of podman,
 * buildah and CRI-O): `unionctl export-storage DIR` writes c/storage's metadata for the store's
 * images into DIR (format.ts says what), with DIR/overlay a symlink to the overlay2 home, whose
 * per-layer layout (diff/, link, lower, l/) is the one c/storage's overlay driver reads. The
 * layers are used where they are: nothing is copied, and c/storage never writes into the store.
 *
 * Staying up to date. The store remembers its export dirs (<root>/containers-storage.json,
 * {"exports": [DIR, …]}, written in store transactions), and every change of image records
 * rewrites the metadata of each: rmi inside its own transaction, before the commit and so before
 * any layer's files go (podman never sees an image whose files are being deleted; an export that
 * fails refuses the rmi), load in a transaction of its own right after its commit (the image is
 * loaded whatever happens to the export; a failure is a warning). Both run under the store lock,
 * so the metadata is written in the order the records changed.
 *
 * Under c/storage's own locks. c/storage guards layers.json with overlay-layers/layers.lock and
 * images.json with overlay-images/images.lock (fcntl record locks: readers take read locks, a
 * writer a write lock), and notices a change by the 64-byte "last writer" token at the start of the
 * lock file, rewritten by every writer. A rewrite takes both write locks in c/storage's order
 * (layers, then images) — a podman reading meanwhile holds them for reading and the rewrite waits,
 * saying so — writes every file to a temp file renamed over it (sys/atomic-file.ts), then writes new
 * tokens and lets go. A reader sees the old metadata or the new, never a mix.
 *
 * In use. c/storage cannot tell a read-only store that a container uses its layers; the mount
 * table can: containersStorageExtension refuses to remove a layer that a mounted overlay has among
 * its lowerdirs through an export dir (a running podman container), so rmi is refused (IN_USE).
 *
 * Only overlay2 stores can be exported: c/storage has no driver that reads the other layouts.
 */
import { randomBytes } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readlinkSync, symlinkSync, writeSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { corruptError, UnionctlError } from '../../errors.js';
import type { LayerStore, StoreExtension, StoreTx } from '../../graph/store.js';
import {
  parseOverlayOptions,
  readMountInfo,
  lockRecordFile,
  readStoreFile,
  removeDeadTempFiles,
  removeStoreTree,
  writeFileAtomic,
  type HeldRecordLock,
} from '../../sys/index.js';
import { CONTAINERS_STORAGE_SETTINGS, diskDocuments, readImageRecords, type DocumentReader } from '../records.js';
import { buildStorageMetadata, type LayerFacts, type StorageMetadata } from './format.js';

export { bigDataFileName, buildStorageMetadata, storageImageName, synthesizeManifest } from './format.js';
export type { StorageImage, StorageLayer, StorageMetadata, LayerFacts, BigDataItem } from './format.js';

const EXPORT_SETTINGS = CONTAINERS_STORAGE_SETTINGS;

/** In an export dir: which store it belongs to, so a dir of someone else's is never written over. */
const MARKER = '.unionctl-export.json';
const LAYERS_DIR = 'overlay-layers';
const IMAGES_DIR = 'overlay-images';
const DRIVER_LINK = 'overlay';
const LAST_WRITER_BYTES = 64;

export interface ExportSummary {
  dir: string;
  images: number;
  layers: number;
}

export interface ExportOptions {
  /** Said when a rewrite has to wait for a lock podman (or another reader) holds. */
  onWait?: (message: string) => void;
  /** How long to wait for c/storage's locks before LOCKED (default 60 s). */
  lockTimeoutMs?: number;
}

// ---- settings ----------------------------------------------------------------------------------

interface ExportSettings {
  exports: string[];
}

function readSettings(docs: DocumentReader, root: string): ExportSettings {
  const text = docs.readDocument(EXPORT_SETTINGS);
  if (text === undefined) return { exports: [] };
  let value: Partial<ExportSettings> | null = null;
  try {
    value = JSON.parse(text) as Partial<ExportSettings> | null;
  } catch {
    /* reported below */
  }
  if (!Array.isArray(value?.exports) || !value.exports.every((d) => typeof d === 'string' && isAbsolute(d))) {
    throw corruptError(`containers-storage settings file ${join(root, EXPORT_SETTINGS)} does not hold {"exports": [absolute paths]}`, {
      repair: 'remove the file, then run unionctl export-storage DIR again for each export dir',
    });
  }
  return { exports: value.exports };
}

function writeSettings(tx: StoreTx, settings: ExportSettings): void {
  if (settings.exports.length === 0) tx.deleteDocument(EXPORT_SETTINGS);
  else tx.writeDocument(EXPORT_SETTINGS, `${JSON.stringify(settings, null, 2)}\n`);
}

/** The store's export dirs (read without a lock: the settings file is replaced atomically). */
export function listExports(store: LayerStore): string[] {
  return readSettings(diskDocuments(store), store.root).exports;
}

// ---- checks ------------------------------------------------------------------------------------

function assertOverlay2(store: LayerStore): void {
  if (store.driver.name === 'overlay2') return;
  throw new UnionctlError(
    'UNSUPPORTED',
    `export-storage needs the overlay2 driver, and the store at ${store.root} uses ${store.driver.name}: containers/storage ` +
      `reads an image store's layers through its overlay driver, whose layout (diff/, link, lower, l/) only overlay2 has`,
    { hint: 'load the images into a store made with --driver overlay2 and export that one' },
  );
}

/**
 * DIR must be outside the store, and either new, empty, or an export of this very store: c/storage's
 * files in a dir of someone else's (podman's own graphroot) are never written over.
 */
function checkExportDir(store: LayerStore, dir: string): void {
  const inside = relative(store.root, dir);
  if (inside === '' || (!inside.startsWith('..') && !isAbsolute(inside)) || !relative(dir, store.root).startsWith('..')) {
    throw new UnionctlError('USAGE', `the export dir ${dir} must be outside the store root ${store.root}, and not contain it`, {
      hint: 'give a directory of its own, e.g. /var/lib/unionctl-containers-storage',
    });
  }
  const st = lstatSync(dir, { throwIfNoEntry: false });
  if (st === undefined) return;
  if (!st.isDirectory()) throw new UnionctlError('USAGE', `the export dir ${dir} is not a directory`, { hint: 'give a directory' });
  if (markerRoot(dir) === store.root) return;
  if (readdirSync(dir).length > 0) {
    throw new UnionctlError('EXISTS', `the export dir ${dir} is not empty and is not an export of the store at ${store.root}`, {
      hint: 'give an empty or new directory (never a containers/storage graphroot)',
    });
  }
}

function markerRoot(dir: string): string | undefined {
  try {
    const root = (JSON.parse(readStoreFile(join(dir, MARKER), 'export marker') ?? 'null') as { store?: unknown } | null)?.store;
    return typeof root === 'string' ? root : undefined;
  } catch {
    return undefined;
  }
}

// ---- writing -----------------------------------------------------------------------------------

/** What the store knows of layer `id` (complete layers only), with the size of its tar. */
async function layerFacts(tx: StoreTx, id: string, sizes: ReadonlyMap<string, number>): Promise<LayerFacts | undefined> {
  const rec = tx.record(id);
  if (rec?.state !== 'complete' || rec.diffId === undefined) return undefined;
  let tarSize = sizes.get(`${id} ${rec.diffId}`);
  if (tarSize === undefined) {
    const split = await tx.store.tarSplit(id).catch(() => undefined);
    tarSize = split?.totalBytes ?? -1;
  }
  return { id, parent: rec.parent, created: rec.created, diffId: rec.diffId, tarSize };
}

/** "id diff-digest" → diff-size of the layers.json written last: a tar's size is read from its tar-split once. */
function previousSizes(dir: string): Map<string, number> {
  const sizes = new Map<string, number>();
  try {
    const layers = JSON.parse(readStoreFile(join(dir, LAYERS_DIR, 'layers.json'), 'layers.json') ?? '[]') as unknown;
    if (!Array.isArray(layers)) return sizes;
    for (const l of layers as Array<Record<string, unknown>>) {
      const size = l['diff-size'];
      if (typeof l.id === 'string' && typeof l['diff-digest'] === 'string' && typeof size === 'number' && size >= 0) {
        sizes.set(`${l.id} ${l['diff-digest']}`, size);
      }
    }
  } catch {
    /* none yet, or not ours to trust: read the tar-splits */
  }
  return sizes;
}

/** The metadata of the store's images as the transaction sees them. */
async function metadataOf(tx: StoreTx, dir: string): Promise<StorageMetadata> {
  const images = readImageRecords(tx);
  const sizes = previousSizes(dir);
  const facts = new Map<string, LayerFacts | undefined>();
  for (const l of images.flatMap((i) => i.layers)) if (!facts.has(l.id)) facts.set(l.id, await layerFacts(tx, l.id, sizes));
  return buildStorageMetadata(images, (id) => facts.get(id));
}

/** c/storage's last-writer token (lockfile.newLastWriterID): time, a counter, the pid, random bytes; 64 bytes. */
let writerCounter = 0n;
function lastWriterToken(): Buffer {
  const token = Buffer.alloc(LAST_WRITER_BYTES);
  token.writeBigUInt64LE(BigInt(Date.now()) * 1_000_000n, 0);
  token.writeBigUInt64LE(++writerCounter, 8);
  token.writeUInt32LE(process.pid, 16);
  randomBytes(LAST_WRITER_BYTES - 20).copy(token, 20);
  return token;
}

/** Runs `fn` holding c/storage's write locks of the export dir, layers first (c/storage's order), then marks both as written. */
async function withStorageLocks<T>(dir: string, opts: ExportOptions, fn: () => T): Promise<T> {
  const held: HeldRecordLock[] = [];
  try {
    for (const sub of [LAYERS_DIR, IMAGES_DIR]) {
      const name = sub === LAYERS_DIR ? 'layers' : 'images';
      const path = join(dir, sub, `${name}.lock`);
      held.push(
        await lockRecordFile(path, 'write', {
          timeoutMs: opts.lockTimeoutMs,
          onWait: (holder) => opts.onWait?.(`waiting for the containers-storage lock ${path}: held by ${holder}`),
        }),
      );
    }
    const result = fn();
    for (const lock of held) writeSync(lock.fd, lastWriterToken(), 0, LAST_WRITER_BYTES, 0);
    return result;
  } finally {
    for (const lock of held.reverse()) lock.release();
  }
}

function ensureDir(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
}

/** DIR/overlay → the overlay2 home; a link elsewhere (or anything else there) is refused. */
function ensureDriverLink(dir: string, home: string): void {
  const link = join(dir, DRIVER_LINK);
  const st = lstatSync(link, { throwIfNoEntry: false });
  if (st === undefined) return symlinkSync(home, link);
  if (st.isSymbolicLink() && readlinkSync(link) === home) return;
  throw new UnionctlError('EXISTS', `${link} is not a symbolic link to the store's overlay2 home ${home}`, {
    hint: `remove it, then run unionctl export-storage ${dir} again`,
  });
}

/** Writes `meta` into `dir` (both locks held): big data first, then the lists, then stale big data goes. */
function writeMetadata(dir: string, meta: StorageMetadata): void {
  const imagesDir = join(dir, IMAGES_DIR);
  // Temp files of a rewrite whose process was killed before its renames.
  for (const d of [join(dir, LAYERS_DIR), imagesDir]) removeDeadTempFiles(d);
  for (const [id, items] of meta.bigData) {
    ensureDir(join(imagesDir, id));
    removeDeadTempFiles(join(imagesDir, id));
    for (const item of items) {
      const path = join(imagesDir, id, item.file);
      if (readStoreFile(path, 'big-data file') === item.data.toString()) continue; // unchanged: configs and manifests are fixed
      writeFileAtomic(path, item.data);
    }
  }
  writeFileAtomic(join(dir, LAYERS_DIR, 'layers.json'), JSON.stringify(meta.layers));
  writeFileAtomic(join(imagesDir, 'images.json'), JSON.stringify(meta.images));
  for (const name of readdirSync(imagesDir)) {
    if (!/^[0-9a-f]{64}$/.test(name) || meta.bigData.has(name)) continue;
    removeStoreTree(dir, join(IMAGES_DIR, name), 'big-data directory of a removed image');
  }
}

/** Rewrites the metadata of one export dir from the transaction's view of the records. */
async function writeExport(tx: StoreTx, dir: string, opts: ExportOptions): Promise<ExportSummary> {
  const meta = await metadataOf(tx, dir);
  ensureDir(join(dir, LAYERS_DIR));
  ensureDir(join(dir, IMAGES_DIR));
  ensureDriverLink(dir, tx.store.driver.home);
  await withStorageLocks(dir, opts, () => writeMetadata(dir, meta));
  return { dir, images: meta.images.length, layers: meta.layers.length };
}

/**
 * Rewrites every export dir of the store from the transaction's view (call it inside the
 * transaction that changes image records, before it commits). Nothing when there are none.
 */
export async function syncContainersStorage(tx: StoreTx, opts: ExportOptions = {}): Promise<void> {
  const dirs = readSettings(tx, tx.store.root).exports;
  if (dirs.length === 0) return;
  if (tx.store.driver.name !== 'overlay2') return; // the store switched drivers while it held no layers: nothing to show
  for (const dir of dirs) await writeExport(tx, dir, opts);
}

/** syncContainersStorage in a transaction of its own (after a load's commit); a failure is reported, not thrown. */
export async function refreshContainersStorage(store: LayerStore): Promise<void> {
  try {
    // No export (the usual case): no transaction. An export-storage starting meanwhile reads the
    // records under the lock after this load's commit, so it shows the new images itself.
    if (listExports(store).length === 0) return;
    await store.transaction(async (tx) => syncContainersStorage(tx, { onWait: (m) => store.report('info', m) }));
  } catch (e) {
    store.report(
      'warn',
      `the containers-storage export was not updated (${(e as Error).message}); run unionctl export-storage DIR to retry`,
    );
  }
}

/**
 * `unionctl export-storage DIR`: DIR becomes (or stays) an additional image store for podman,
 * buildah and CRI-O, kept up to date from now on. UNSUPPORTED unless the store is overlay2; USAGE
 * for a DIR inside the store; EXISTS for a DIR that holds anything but an export of this store.
 */
export async function exportStorage(store: LayerStore, dir: string, opts: ExportOptions = {}): Promise<ExportSummary> {
  assertOverlay2(store);
  const abs = resolve(dir);
  checkExportDir(store, abs);
  return store.transaction(async (tx) => {
    const settings = readSettings(tx, tx.store.root);
    ensureDir(abs);
    writeFileAtomic(join(abs, MARKER), `${JSON.stringify({ store: store.root })}\n`);
    const summary = await writeExport(tx, abs, opts);
    if (!settings.exports.includes(abs)) writeSettings(tx, { exports: [...settings.exports, abs] });
    return summary;
  });
}

/**
 * `unionctl export-storage --remove DIR`: the store forgets DIR, and DIR becomes an empty image
 * store — the lists are rewritten empty under c/storage's locks (a podman reading them sees no
 * images, never a layer about to go), then the big data and the overlay link go. DIR itself stays
 * (c/storage refuses to start while a listed additional store is missing) with its empty lists,
 * lock files and marker: drop it from storage.conf, then delete it. NOT_FOUND when DIR is not an
 * export of this store.
 */
export async function removeExport(store: LayerStore, dir: string, opts: ExportOptions = {}): Promise<void> {
  const abs = resolve(dir);
  await store.transaction(async (tx) => {
    const settings = readSettings(tx, tx.store.root);
    const known = settings.exports.includes(abs);
    if (!known && markerRoot(abs) !== store.root) {
      throw new UnionctlError('NOT_FOUND', `${abs} is not a containers-storage export of the store at ${store.root}`, {
        hint: 'list the exports with unionctl export-storage',
      });
    }
    if (known) writeSettings(tx, { exports: settings.exports.filter((d) => d !== abs) });
    if (lstatSync(abs, { throwIfNoEntry: false }) === undefined) return;
    ensureDir(join(abs, LAYERS_DIR));
    ensureDir(join(abs, IMAGES_DIR));
    await withStorageLocks(abs, opts, () => writeMetadata(abs, { layers: [], images: [], bigData: new Map() }));
    removeStoreTree(abs, DRIVER_LINK, 'overlay link'); // unlinked, never followed
  });
}

// ---- layers in use by containers of podman, buildah, CRI-O --------------------------------------

/**
 * Where a container that c/storage mounted from export `dir` shows layer `id` among its lowerdirs:
 * c/storage names an additional store's layers `<dir>/overlay/l/<LID>` (or `<dir>/overlay/<id>/diff`).
 */
function exportPathsOf(store: LayerStore, dirs: readonly string[], id: string): Set<string> {
  const paths = new Set<string>();
  let lid: string | undefined;
  try {
    lid = readStoreFile(join(store.driver.home, id, 'link'), 'overlay2 link file')?.trim();
  } catch {
    lid = undefined; // a damaged link file: the driver's own checks report it
  }
  for (const dir of dirs) {
    paths.add(join(dir, DRIVER_LINK, id, 'diff'));
    if (lid !== undefined && lid !== '') paths.add(join(dir, DRIVER_LINK, 'l', lid));
  }
  return paths;
}

/**
 * The store extension of the export: a layer that a mounted container of podman, buildah or
 * CRI-O uses through an export dir (an overlay mount in the mount table with it among its
 * lowerdirs) cannot be removed — c/storage cannot tell unionctl it uses a read-only store's layer,
 * but the kernel's mount table can. Registered by the composition root (src/index.ts).
 */
export const containersStorageExtension: StoreExtension = {
  name: 'containers-storage',
  removeGuard(tx, id) {
    const dirs = readSettings(tx, tx.store.root).exports;
    if (dirs.length === 0) return undefined;
    const paths = exportPathsOf(tx.store, dirs, id);
    for (const m of readMountInfo()) {
      if (m.fsType !== 'overlay') continue;
      const lower = parseOverlayOptions(m.superOptions).lowerdirs.find((l) => paths.has(l));
      if (lower === undefined) continue;
      return {
        reason: `is a lower layer of the overlay mounted at ${m.mountPoint} (a container of podman, buildah or CRI-O, through ${lower})`,
        hint: 'stop and remove that container first (podman rm -f), then retry',
      };
    }
    return undefined;
  },
};
