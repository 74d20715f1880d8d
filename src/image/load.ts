/**
 * unionctl load: image archives into the layer store.
 *
 * 1. Open and check the archive (archive.ts, manifest.ts): every manifest, config and blob name is
 *    checked before anything changes.
 * 2. For each layer, bottom up: its chain ID; a layer with that chain ID already in the store is
 *    reused, otherwise the blob is imported (store.importLayer: tar-split recorded, applied by the
 *    driver) and, before the layer is made complete, its blob digest and diff ID are compared with
 *    what the manifest and config promise — a mismatch rolls the layer back.
 * 3. All image records are written at the end. A failure anywhere removes the layers this load
 *    created (a journal makes the same happen on the next open when the process is killed).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { StreamDigest } from '../archive/stream-digest.js';
import { inflateOnThread, inflateThreadFree, type SourceOnThread } from '../archive/inflate-thread.js';
import { UnionctlError } from '../errors.js';
import type { ApplyResult } from '../graph/driver.js';
import { chainIdOf, type LayerStore, type StoreTx } from '../graph/store.js';
import { openArchive, type ArchiveFiles } from './archive.js';
import { refreshContainersStorage } from './containers-storage/index.js';
import { readImages, type ImageToLoad, type LayerToLoad } from './manifest.js';
import {
  endLoad,
  idsClaimedByLoads,
  LoadJournal,
  normalizeName,
  readImageRecords,
  removeDirIfEmpty,
  rollBackLoad,
  writeImageRecord,
  type ImageLayerRef,
  type ImageRecord,
} from './records.js';

export interface LoadOptions {
  /** Load only the image with this name (or id) from a multi-image archive. */
  image?: string;
  /** Progress: uncompressed layer bytes of the current layer, layers done / to do. */
  onProgress?: (p: LoadProgress) => void;
  /**
   * Layers imported at once (default 1). More is for sources whose blobs can be read at the same
   * time (a registry: `pull --max-concurrent-downloads`): a layer is applied while its parent is
   * still being applied, where the driver allows it (store.importLayer's parentImport).
   */
  maxConcurrentLayers?: number;
}

export interface LoadProgress {
  layer: number;
  layers: number;
  bytes: number;
}

export interface LoadedImage {
  id: string;
  names: string[];
  layers: Array<ImageLayerRef & { reused: boolean }>;
}

/**
 * Where the layer blobs of the images being loaded come from: an archive's members, or a
 * registry's blobs (registry/pull.ts). Asked only for the layers the store does not hold yet.
 */
export interface LayerBlobs {
  /** Says where, at the start of messages: "archive sample.tar", "registry 127.0.0.1:5000". */
  description: string;
  /** The blob's bytes as they come. */
  chunks(layer: LayerToLoad): AsyncIterable<Buffer>;
  /** A local file holding exactly the blob, when there is one: the import reads it directly. */
  filePath?(layer: LayerToLoad): string | undefined;
  /**
   * The blob as a source a worker thread can read by itself (a registry's GET, made there), for
   * a gzip blob inflated on a thread of its own (inflate-thread.ts); `chunks` otherwise.
   */
  threadSource?(layer: LayerToLoad): SourceOnThread;
}

/** Loads every image of FILE / directory / '-' (stdin) into the store. */
export async function loadImages(store: LayerStore, input: string, opts: LoadOptions = {}): Promise<LoadedImage[]> {
  const tmp = join(store.root, 'tmp');
  try {
    const archive = await openArchive(input, tmp);
    try {
      const images = pickImages(archive, readImages(archive), opts.image);
      const blobs: LayerBlobs = {
        description: archive.description,
        chunks: (layer) => archive.chunks(layer.member),
        filePath: (layer) => archive.filePath(layer.member),
      };
      return await loadChecked(store, blobs, images, opts);
    } finally {
      archive.close();
    }
  } finally {
    leaveRootAsItWas(store);
  }
}

/**
 * Loads `images`, already checked but for their layer contents, taking the blobs of the layers the
 * store does not hold from `blobs`: the layers (each verified against its blob digest and diff ID
 * before it is complete), then all image records at once. On failure, the layers it made go.
 */
export async function loadImagesFrom(
  store: LayerStore,
  blobs: LayerBlobs,
  images: ImageToLoad[],
  opts: LoadOptions = {},
): Promise<LoadedImage[]> {
  try {
    return await loadChecked(store, blobs, images, opts);
  } finally {
    leaveRootAsItWas(store);
  }
}

/** A failed first load leaves the store root exactly as it was: no empty images/ or tmp/. */
function leaveRootAsItWas(store: LayerStore): void {
  removeDirIfEmpty(join(store.root, 'tmp'));
  removeDirIfEmpty(join(store.root, 'images'));
}

function pickImages(archive: ArchiveFiles, images: ImageToLoad[], wanted: string | undefined): ImageToLoad[] {
  if (images.length === 0) throw new UnionctlError('USAGE', `${archive.description} holds no images`);
  if (wanted === undefined) return images;
  const name = normalizeName(wanted);
  const hex = wanted.replace(/^sha256:/, '');
  const match = images.filter(
    (i) => i.names.includes(name) || (/^[0-9a-f]{4,64}$/.test(hex) && i.id.slice('sha256:'.length).startsWith(hex)),
  );
  if (match.length === 0) {
    const known = images.map((i) => i.names[0] ?? i.id).join(', ');
    throw new UnionctlError('NOT_FOUND', `${archive.description} has no image ${wanted} (it has: ${known})`, {
      hint: 'give one of those names to --image',
    });
  }
  // Only the name asked for is given to the picked image.
  return match.map((i) => (i.names.includes(name) ? { ...i, names: [name] } : i));
}

async function loadChecked(store: LayerStore, blobs: LayerBlobs, images: ImageToLoad[], opts: LoadOptions): Promise<LoadedImage[]> {
  const journal = new LoadJournal();
  const totalLayers = images.reduce((n, i) => n + i.layers.length, 0);
  let before = 0;
  try {
    const loaded: LoadedImage[] = [];
    for (const image of images) {
      const layers = await loadImageLayers(store, blobs, image, journal, { ...opts, first: before, total: totalLayers });
      before += image.layers.length;
      loaded.push({ id: image.id, names: image.names, layers });
    }
    await store.transaction(async (tx) => {
      for (const [i, image] of images.entries()) recordImage(tx, image, loaded[i]!);
      // Layers this load made that no image ended up using (a concurrent load of the same image won) go.
      endLoad(tx, journal.created, journal.name);
    });
    // Containers-storage exports show the new images (a failure there is a warning: the load is done).
    await refreshContainersStorage(store);
    return loaded;
  } catch (e) {
    try {
      await rollBackLoad(store, journal.created, journal.name);
    } catch (cleanupError) {
      process.emitWarning(
        `unionctl: the failed load left layers behind (${(cleanupError as Error).message}); reopening the store retries the clean-up`,
      );
    }
    throw e;
  }
}

/** A layer import under way: `done` resolves when the layer is complete, rejects when it failed. */
interface LayerInFlight {
  created: Promise<unknown>;
  done: Promise<unknown>;
}

type LoadedLayer = LoadedImage['layers'][number];

/**
 * The layers of one image, bottom up. Each is claimed in order (reused, or a fresh id in the
 * journal); up to `maxConcurrentLayers` of the new ones are imported at once, each child on its
 * parent while the parent is still being applied (store.importLayer's parentImport). Waits for
 * every import to settle, then throws the lowest layer's failure, if any: the failed ones rolled
 * themselves back, and the caller's rollBackLoad removes the rest.
 */
async function loadImageLayers(
  store: LayerStore,
  blobs: LayerBlobs,
  image: ImageToLoad,
  journal: LoadJournal,
  opts: LoadOptions & { first: number; total: number },
): Promise<LoadedLayer[]> {
  const slots = new Slots(opts.maxConcurrentLayers ?? 1);
  const results: Array<Promise<LoadedLayer>> = [];
  let parent: { ref: ImageLayerRef; inFlight?: LayerInFlight } | undefined;
  for (const [j, layer] of image.layers.entries()) {
    const chainId = chainIdOf(parent?.ref.chainId, layer.diffId);
    const claim = await claimLayer(store, chainId, journal);
    const ref = { id: claim.id, diffId: layer.diffId, chainId };
    if (claim.reused) {
      results.push(Promise.resolve({ ...ref, reused: true }));
      parent = { ref };
      continue;
    }
    const onBytes =
      opts.onProgress === undefined
        ? undefined
        : (bytes: number) => opts.onProgress?.({ layer: opts.first + j + 1, layers: opts.total, bytes });
    const created = settled();
    const target = { id: claim.id, parent: parent?.ref.id, parentImport: parent?.inFlight, onCreated: created.resolve, onBytes };
    const done = slots.run(() => importBlob(store, blobs, image, layer, target));
    done.catch(created.reject);
    results.push(done.then(() => ({ ...ref, reused: false })));
    parent = { ref, inFlight: { created: quiet(created.promise), done: quiet(done) } };
  }
  const outcomes = await Promise.allSettled(results);
  const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return outcomes.map((o) => (o as PromiseFulfilledResult<LoadedLayer>).value);
}

/**
 * Claims the layer with this chain ID in one transaction: a reused layer is held by the journal
 * before anyone can remove it; a new layer's id is in the journal before the layer exists, so a
 * kill right after its import started still finds it.
 */
async function claimLayer(store: LayerStore, chainId: string, journal: LoadJournal): Promise<{ id: string; reused: boolean }> {
  return store.transaction(async (tx) => {
    const existing = tx.layerByChainId(chainId);
    if (existing !== undefined) {
      journal.addReused(tx, existing.id);
      return { id: existing.id, reused: true };
    }
    const id = await freshLayerId(tx, chainId);
    journal.addCreated(tx, id);
    return { id, reused: false };
  });
}

/** Imports a claimed layer from its blob, checking the blob digest and the diff ID before it is complete. */
async function importBlob(
  store: LayerStore,
  blobs: LayerBlobs,
  image: ImageToLoad,
  layer: LayerToLoad,
  target: { id: string; parent?: string; parentImport?: LayerInFlight; onCreated: () => void; onBytes?: (bytes: number) => void },
): Promise<void> {
  const what = `layer ${layer.index} of ${image.label} (${layer.member})`;
  const blob = blobInput(blobs, layer);
  try {
    await store.importLayer(blob.input, {
      id: target.id,
      parent: target.parent,
      origin: 'image',
      parentImport: target.parentImport,
      onCreated: target.onCreated,
      onProgress: target.onBytes,
      verify: async (result) => {
        await blob.verify(result, what);
        if (result.diffId !== layer.diffId) {
          throw new UnionctlError(
            'CORRUPT',
            `${blobs.description}: ${what}: diff ID mismatch: the config says ${layer.diffId}, the layer's tar has ${result.diffId}`,
            {
              hint: 'the image is damaged or was tampered with; nothing was loaded',
            },
          );
        }
      },
    });
  } catch (e) {
    blob.abort();
    throw inContext(e, blobs.description, what);
  }
}

/** A promise with its resolve and reject at hand. */
function settled(): { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** The same promise, marked as handled: a parent's failure that no child awaits must not crash the process. */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** At most `limit` tasks at a time, started in the order they were asked for. */
class Slots {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    // A finished task hands its slot straight to the next in line: nobody can overtake it meanwhile.
    if (this.running < this.limit) this.running++;
    else await new Promise<void>((go) => this.waiting.push(go));
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next === undefined) this.running--;
      else next();
    }
  }
}

/** The chain ID's hex as the layer id (Docker keys its layer db the same way), unless taken. */
async function freshLayerId(tx: StoreTx, chainId: string): Promise<string> {
  const hex = chainId.slice('sha256:'.length);
  // Another load running now may have claimed it without having made its record yet.
  if (tx.record(hex) === undefined && !idsClaimedByLoads(tx).has(hex) && !(await tx.store.driver.exists(hex))) return hex;
  return `${hex.slice(0, 48)}-${randomBytes(4).toString('hex')}`;
}

/**
 * Adds "archive: layer N of image X: " to an error that only names a tar entry or a file, and makes
 * a plain system error (ENOSPC while writing the layer) one of ours with a hint.
 */
function inContext(e: unknown, description: string, what: string): unknown {
  // SysCallError carries the errno name in .errno, node's fs errors in .code.
  const errno = (e as { errno?: unknown }).errno;
  const code = typeof errno === 'string' ? errno : (e as NodeJS.ErrnoException | undefined)?.code;
  const spaceHint = code === 'ENOSPC' || code === 'EDQUOT' ? 'free space on the filesystem of the store root, then load again' : undefined;
  if (e instanceof UnionctlError) {
    if (e.message.startsWith(description)) return e;
    return new UnionctlError(e.code, `${description}: ${what}: ${e.message}`, { hint: e.hint ?? spaceHint, cause: e });
  }
  if (typeof code !== 'string') return e;
  return new UnionctlError('SYSCALL', `${description}: ${what}: ${(e as Error).message}`, { hint: spaceHint, cause: e });
}

/**
 * What importLayer reads for a blob, and the check of the blob's digest. An uncompressed blob's
 * digest is its diff ID (one hash does both); a compressed one is hashed on its way in.
 */
interface BlobInput {
  input: string | Readable;
  verify: (r: ApplyResult, what: string) => Promise<void>;
  /** Stops the hashing thread after a failure. */
  abort: () => void;
}

function blobInput(blobs: LayerBlobs, layer: LayerToLoad): BlobInput {
  const expected = layer.blobDigest;
  const path = blobs.filePath?.(layer);
  const mismatch = (actual: string, what: string) =>
    new UnionctlError(
      'CORRUPT',
      `${blobs.description}: ${what}: blob digest mismatch: the manifest says ${expected}, the blob is ${actual}`,
      {
        hint: 'the image is damaged or was tampered with; nothing was loaded',
      },
    );
  if (expected === undefined || layer.compression === 'none') {
    return {
      input: path ?? (blobs.chunks(layer) as Readable),
      verify: async (r, what) => {
        if (expected !== undefined && r.diffId !== expected) throw mismatch(r.diffId, what);
      },
      abort: () => {},
    };
  }
  // gzip from a stream: hashed and inflated on a thread of its own while one is free (see inflate-thread.ts).
  if (layer.compression === 'gzip' && inflateThreadFree()) {
    const inflated = inflateOnThread(blobs.threadSource?.(layer) ?? blobs.chunks(layer));
    return {
      input: inflated.chunks as unknown as Readable,
      verify: async (_r, what) => {
        const hex = await inflated.digest;
        if (`sha256:${hex}` !== expected) throw mismatch(`sha256:${hex}`, what);
      },
      abort: () => void inflated.abort(),
    };
  }
  // Hashed on this thread: a compressed blob is being inflated on another core meanwhile, and a
  // hashing thread on top of that costs more than it saves (measured on a 243 MB gzip layer from a
  // registry, 2 cores: the pull took 2.2 s hashing here, 2.4 s with a thread).
  const digest = new StreamDigest({ useWorker: false });
  return {
    // importLayer hands a stream to the driver's apply, which reads any async iterable of chunks.
    input: hashed(blobs.chunks(layer), digest) as unknown as Readable,
    verify: async (_r, what) => {
      const hex = await digest.finish();
      if (`sha256:${hex}` !== expected) throw mismatch(`sha256:${hex}`, what);
    },
    abort: () => {
      if (digest.value === undefined) void digest.abort();
    },
  };
}

async function* hashed(chunks: AsyncIterable<Buffer>, digest: StreamDigest): AsyncGenerator<Buffer, void, undefined> {
  for await (const chunk of chunks) {
    const full = digest.update(chunk); // copies into the digest's own ring
    if (full !== undefined) await full;
    yield chunk;
  }
}

/**
 * The image record; names move from any image that had them (as with docker load). An image that
 * is already in the store keeps its layers (another load may have made them while this one ran).
 */
function recordImage(tx: StoreTx, image: ImageToLoad, loaded: LoadedImage): void {
  const records = readImageRecords(tx);
  for (const other of records) {
    if (other.id === image.id) continue;
    const kept = other.names.filter((n) => !image.names.includes(n));
    if (kept.length !== other.names.length) writeImageRecord(tx, { ...other, names: kept });
  }
  const previous = records.find((r) => r.id === image.id);
  const keepPrevious = previous !== undefined && previous.layers.every((l) => tx.record(l.id)?.state === 'complete');
  const names = [...new Set([...(previous?.names ?? []), ...image.names])];
  const rec: ImageRecord = {
    id: image.id,
    names,
    layers: keepPrevious ? previous.layers : loaded.layers.map(({ id, diffId, chainId }) => ({ id, diffId, chainId })),
    config: image.config,
    loaded: previous?.loaded ?? new Date().toISOString(),
  };
  writeImageRecord(tx, rec);
  if (keepPrevious) loaded.layers = previous.layers.map((l) => ({ ...l, reused: true }));
  loaded.names = names;
}
