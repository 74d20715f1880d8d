/**
 * unionctl commit: a layer and its ancestry become an image, as `docker commit` makes one of a
 * container's writable layer.
 *
 * The layers at the bottom of the chain that are already image layers (read-only, with a diff ID
 * and a chain ID: what load, pull or import made) are the image's layers as they are. Every layer
 * from the first one that is not (a writable layer from `mount --rw`, a layer made empty with
 * `create` and written through a mount) up to the top is turned into a new image layer: its diff
 * against its parent is written to a spool file, hashed (its diff ID), and loaded like a layer of
 * an image archive — so it gets a tar-split record (save and push give back the same bytes), is
 * found by chain ID when the same content is already in the store (committing twice without a
 * change makes no new layer), and goes through the load journal (a commit killed half way leaves
 * nothing behind). The writable layer itself stays as it is: the container it belongs to goes on.
 *
 * The config is derived from the base image's (the image whose layers are the longest proper
 * prefix of the chain; none when no image is): runtime settings kept (changed by `--change`),
 * diff IDs for all the layers, a history entry for each layer the base does not have, and a new
 * created time; its sha256 is the new image's id.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { UnionctlError } from '../errors.js';
import type { LayerRecord, LayerStore } from '../graph/store.js';
import { applyConfigChanges, type RuntimeConfig } from './config-changes.js';
import { writeBlob } from './layer-blobs.js';
import { loadImagesFrom, type LayerBlobs, type LoadedImage } from './load.js';
import { hostPlatform, sha256Digest, type ImageToLoad, type LayerToLoad } from './manifest.js';
import { diskDocuments, normalizeName, readImageRecords, removeDirIfEmpty, type ImageRecord } from './records.js';
import { parseReference } from './registry/reference.js';

export interface CommitOptions {
  /** The new image's name (`name` gets ":latest"); without one the image lists as <none>. */
  name?: string;
  /** The history entry's comment (docker commit -m). */
  message?: string;
  /** The config's author (docker commit -a). */
  author?: string;
  /** Dockerfile instructions applied to the config (docker commit -c): CMD, ENV, LABEL, … (config-changes.ts). */
  changes?: string[];
}

export interface CommittedImage extends LoadedImage {
  /** The image the config was derived from, if any. */
  base?: string;
}

/** A history entry of an image config (OCI image-spec "history"). */
interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

interface ImageConfig {
  architecture?: string;
  os?: string;
  author?: string;
  created?: string;
  config?: RuntimeConfig;
  rootfs?: { type: string; diff_ids: string[] };
  history?: HistoryEntry[];
  [field: string]: unknown;
}

/**
 * Makes an image of layer REF (an id or a unique prefix) and the layers below it. Refuses, with
 * nothing changed: INVALID_ID / NOT_FOUND / USAGE (ambiguous) for REF, USAGE for a name that is not
 * an image reference or names a digest and for a bad --change, CORRUPT when the base image's
 * config is not JSON. Writes through a mount while the commit runs may or may not be in the image:
 * stop the writers first (podman pauses the container; unionctl does not know it).
 */
export async function commitLayer(store: LayerStore, ref: string, opts: CommitOptions = {}): Promise<CommittedImage> {
  const name = opts.name === undefined ? undefined : imageName(opts.name);
  const top = await store.resolveLayer(ref);
  const chain = await ancestry(store, top);
  const base = baseImage(readImageRecords(diskDocuments(store)), chain);
  const baseConfig = base === undefined ? {} : parseConfig(base);
  // Checked before any work: a bad --change changes nothing.
  const runtime = applyConfigChanges(baseConfig.config ?? {}, opts.changes ?? []);
  const sealed = sealedPrefix(chain);
  const tmp = join(store.root, 'tmp');
  // Named as a load's spool dir: the next open removes it if this process is killed.
  const spool = join(tmp, `load-${process.pid}-commit-${randomBytes(6).toString('hex')}`);
  mkdirSync(spool, { recursive: true, mode: 0o700 });
  try {
    const layers = await layersToLoad(store, chain, sealed, spool);
    const now = new Date().toISOString();
    const config: ImageConfig = {
      ...withoutBuildFields(baseConfig),
      ...platformOf(baseConfig),
      created: now,
      ...(opts.author === undefined ? {} : { author: opts.author }),
      config: runtime,
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: history(baseConfig, base?.layers.length ?? 0, chain, { ...opts, now }),
    };
    const text = JSON.stringify(config);
    const image: ImageToLoad = {
      id: sha256Digest(text),
      names: name === undefined ? [] : [name],
      config: text,
      layers,
      label: `commit of layer ${top}`,
    };
    const blobs: LayerBlobs = {
      description: `commit of layer ${top}`,
      filePath: (layer) => spooledFile(spool, sealed, layer),
      chunks: (layer) => diffChunks(store, chain[layer.index - 1]!.id, spooledFile(spool, sealed, layer)),
    };
    const [loaded] = await loadImagesFrom(store, blobs, [image]);
    return { ...loaded!, ...(base === undefined ? {} : { base: base.id }) };
  } finally {
    rmSync(spool, { recursive: true, force: true });
    removeDirIfEmpty(tmp);
  }
}

function imageName(name: string): string {
  const parsed = parseReference(name);
  if (parsed.digest !== undefined)
    throw new UnionctlError('USAGE', `${name} names a digest: an image name cannot`, { hint: 'write NAME or NAME:TAG' });
  return normalizeName(name);
}

/** The layer and its parents, bottom first. */
async function ancestry(store: LayerStore, top: string): Promise<LayerRecord[]> {
  const chain: LayerRecord[] = [];
  for (let id: string | undefined = top; id !== undefined;) {
    const rec = await store.layer(id);
    chain.unshift(rec);
    id = rec.parent;
  }
  return chain;
}

/**
 * The image whose layers are the longest proper prefix of `chain` (the image a writable layer was
 * made on), a named one before one without names; undefined when none is.
 */
function baseImage(images: readonly ImageRecord[], chain: readonly LayerRecord[]): ImageRecord | undefined {
  for (let length = chain.length - 1; length > 0; length--) {
    const matching = images.filter((i) => i.layers.length === length && i.layers.every((l, j) => l.id === chain[j]!.id));
    if (matching.length > 0) return matching.find((i) => i.names.length > 0) ?? matching[0];
  }
  return undefined;
}

function parseConfig(image: ImageRecord): ImageConfig {
  try {
    const parsed = JSON.parse(image.config) as unknown;
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) return parsed as ImageConfig;
  } catch {
    /* below */
  }
  throw new UnionctlError('CORRUPT', `the config of image ${image.id} is not a JSON object`, {
    hint: 'commit on a layer of another image, or remove the image (unionctl rmi) and load it again',
  });
}

/** How many layers at the bottom are image layers already: read-only, with a diff ID and a chain ID. */
function sealedPrefix(chain: readonly LayerRecord[]): number {
  const at = chain.findIndex((l) => l.writable || l.diffId === undefined || l.chainId === undefined);
  return at === -1 ? chain.length : at;
}

/**
 * The layers of the new image: the sealed ones by the diff IDs they have, the others by the diff
 * of each against its parent, spooled to a file whose sha256 is its diff ID.
 */
async function layersToLoad(store: LayerStore, chain: readonly LayerRecord[], sealed: number, spool: string): Promise<LayerToLoad[]> {
  const layers: LayerToLoad[] = [];
  for (const [i, rec] of chain.entries()) {
    const index = i + 1;
    if (i < sealed) {
      layers.push({ index, member: `layer ${rec.id}`, diffId: rec.diffId! });
      continue;
    }
    const blob = await writeBlob(await store.diff(rec.id), spoolPath(spool, index), 'none');
    layers.push({ index, member: `diff of layer ${rec.id}`, diffId: blob.diffId, blobDigest: blob.diffId, compression: 'none' });
  }
  return layers;
}

const spoolPath = (spool: string, index: number) => join(spool, `layer-${index}.tar`);

/** The spool file of a layer above the `sealed` ones (layersToLoad spooled its diff); undefined for a sealed layer. */
function spooledFile(spool: string, sealed: number, layer: LayerToLoad): string | undefined {
  return layer.index > sealed ? spoolPath(spool, layer.index) : undefined;
}

/**
 * A layer's bytes when the load asks for them as a stream. It does so only for a sealed layer the
 * store no longer holds by chain ID (removed while the commit ran): its diff is then taken again.
 */
async function* diffChunks(store: LayerStore, id: string, file: string | undefined): AsyncGenerator<Buffer, void, undefined> {
  const stream = file === undefined ? await store.diff(id) : createReadStream(file);
  for await (const chunk of stream) yield chunk as Buffer;
}

/** Fields that describe how the base image was built, not the new one (Docker's v1 leftovers). */
function withoutBuildFields(config: ImageConfig): ImageConfig {
  const { container: _c, container_config: _cc, docker_version: _d, id: _i, parent: _p, author: _a, ...rest } = config;
  return rest;
}

function platformOf(config: ImageConfig): Pick<ImageConfig, 'architecture' | 'os'> {
  if (config.architecture !== undefined && config.os !== undefined) return {};
  const host = hostPlatform();
  return { architecture: host.architecture, os: host.os, ...(host.variant === undefined ? {} : { variant: host.variant }) };
}

/**
 * The base's history, then one entry per layer above the base's: the top one says it is this
 * commit (with the message and author), those between (layers made with import or create)
 * name their layer.
 */
function history(
  base: ImageConfig,
  baseLayers: number,
  chain: readonly LayerRecord[],
  opts: CommitOptions & { now: string },
): HistoryEntry[] {
  const entries = [...(base.history ?? [])];
  for (const [i, rec] of chain.entries()) {
    if (i < baseLayers) continue;
    if (i < chain.length - 1) {
      entries.push({ created: rec.created, created_by: `unionctl layer ${rec.id}` });
      continue;
    }
    entries.push({
      created: opts.now,
      created_by: 'unionctl commit',
      ...(opts.author === undefined ? {} : { author: opts.author }),
      ...(opts.message === undefined ? {} : { comment: opts.message }),
    });
  }
  return entries;
}
