/**
 * Images in the store: listing, removal (rmi) and turning an image name into the layer to mount.
 */
import { ambiguousPrefixError, isValidId, UnionctlError } from '../errors.js';
import type { LayerStore, StoreTx } from '../graph/store.js';
import { syncContainersStorage } from './containers-storage/index.js';
import { parseReference } from './registry/reference.js';
import {
  deleteImageRecord,
  diskDocuments,
  findImageExactly,
  imagesWithIdPrefix,
  shortImageHex,
  layersInUse,
  normalizeName,
  readImageRecords,
  requireImage,
  writeImageRecord,
  type ImageRecord,
} from './records.js';

export interface ImageSummary {
  id: string;
  names: string[];
  /** Bottom first, each with its bytes of file content. */
  layers: Array<{ id: string; diffId: string; chainId: string; size: number }>;
  /** Bytes of file content of all layers. */
  size: number;
  loaded: string;
}

/** The summary of image record `r`, its layers' sizes from `layerSize`. */
function summaryOf(r: ImageRecord, layerSize: (id: string) => number): ImageSummary {
  const layers = r.layers.map((l) => ({ id: l.id, diffId: l.diffId, chainId: l.chainId, size: layerSize(l.id) }));
  return { id: r.id, names: r.names, layers, size: layers.reduce((n, l) => n + l.size, 0), loaded: r.loaded };
}

export interface ListImagesOptions {
  /**
   * Told about each damaged image or layer record (a CORRUPT error naming the file); the listing
   * then goes on without it. Without it, a damaged record makes the listing CORRUPT.
   */
  onDamaged?: (error: UnionctlError) => void;
}

export async function listImages(store: LayerStore, opts: ListImagesOptions = {}): Promise<ImageSummary[]> {
  const onDamaged = opts.onDamaged;
  const layers = new Map((await store.list(onDamaged === undefined ? {} : { onDamaged })).map((l) => [l.id, l]));
  return readImageRecords(diskDocuments(store), onDamaged).map((r) => summaryOf(r, (id) => layers.get(id)?.size ?? 0));
}

/** The summary of image NAME or ID (NOT_FOUND if none), as listImages gives it. */
export async function imageSummary(store: LayerStore, ref: string): Promise<ImageSummary> {
  const record = requireImage(diskDocuments(store), ref);
  const sizes = new Map<string, number>();
  for (const l of record.layers) sizes.set(l.id, (await store.layer(l.id)).size);
  return summaryOf(record, (id) => sizes.get(id)!);
}

/** The image record for NAME or ID (NOT_FOUND if none). */
export async function getImage(store: LayerStore, ref: string): Promise<ImageRecord> {
  return requireImage(diskDocuments(store), ref);
}

/**
 * The layer a user means by REF where a layer or an image will do (mount, umount, diff, --parent…):
 * a layer id; an image name or id (its top layer); else a unique prefix of a layer id or of an
 * image id. Exact ids and names win over prefixes, and layer ids over image names: they are what
 * these commands took before images existed. Refuses NOT_FOUND (nothing matches), USAGE (an image
 * without layers; a prefix several layers or images start with, listed) and INVALID_ID.
 */
export async function resolveLayerRef(store: LayerStore, ref: string): Promise<string> {
  const records = readImageRecords(diskDocuments(store));
  if (isValidId(ref) && store.layerIdsStartingWith(ref).includes(ref)) return ref;
  const image = findImageExactly(records, ref);
  if (image !== undefined) return topLayerOf(image, ref);
  // Prefixes: every layer and image id REF starts, by the layer each stands for.
  const meant = new Map<string, string>(); // layer id → what REF matched, for the message
  if (isValidId(ref)) for (const id of store.layerIdsStartingWith(ref)) meant.set(id, id);
  for (const i of imagesWithIdPrefix(records, ref)) {
    const top = topLayerOf(i, ref);
    if (!meant.has(top)) meant.set(top, `image ${shortImageHex(i.id)}`);
  }
  if (meant.size > 1) throw ambiguousPrefixError(`prefix ${ref}`, [...meant.values()]);
  const [only] = meant.keys();
  if (only === undefined)
    throw new UnionctlError('NOT_FOUND', `no layer or image ${ref}`, { hint: 'list them with unionctl ls and unionctl images' });
  return only;
}

function topLayerOf(image: ImageRecord, ref: string): string {
  const top = image.layers.at(-1);
  if (top === undefined) throw new UnionctlError('USAGE', `image ${ref} has no layers to mount`);
  return top.id;
}

export interface RemoveImageResult {
  /** Names removed (untag), or all names of the removed image. */
  untagged: string[];
  /** The image id, when the image itself was removed. */
  deleted?: string;
  /** Layers removed, top first. */
  layers: string[];
  /**
   * Layers of the image that stay because the user made them (import, create: LayerOrigin 'user')
   * before a load found them by chain ID, bottom first. The layers below them stay too.
   */
  keptLayers: string[];
}

/**
 * rmi: by a name that is one of several on the image, only that name goes (Docker's untag). Else
 * the image record goes, and with it the layers no other image uses, top down. Refused, with
 * nothing changed, while one of those layers is mounted or has a layer built on it that is not
 * part of the image (a writable layer from `mount --rw`, an import on top), and when a
 * containers-storage export (containers-storage/) cannot be rewritten to match.
 */
export async function removeImage(store: LayerStore, ref: string): Promise<RemoveImageResult> {
  return store.transaction(async (tx) => {
    const image = requireImage(tx, ref);
    const name = image.names.find((n) => n === ref || n === normalizeName(ref));
    if (name !== undefined && image.names.length > 1) {
      writeImageRecord(tx, { ...image, names: image.names.filter((n) => n !== name) });
      await syncContainersStorage(tx, { onWait: (m) => store.report('info', m) });
      return { untagged: [name], layers: [], keptLayers: [] };
    }
    const used = layersInUse(tx, { exceptImage: image.id });
    // Layers another image, or another extension (a containerd snapshot), keeps stay.
    const unused = image.layers.map((l) => l.id).filter((id) => !used.has(id) && tx.keptByExtension(id) === undefined);
    // So does a layer the user made (import, create) before a load found it by chain ID, and with
    // it every layer below it (its parents).
    const lowestOwn = unused.reduce((low, id, i) => (tx.record(id)?.origin === 'user' ? i + 1 : low), 0);
    const own = unused.slice(lowestOwn);
    const kept = unused.slice(0, lowestOwn).filter((id) => tx.record(id)?.origin === 'user');
    assertRemovable(tx, ref, own);
    deleteImageRecord(tx, image.id);
    // Top first. The records turn "removing" with the image record's deletion, in one commit; the
    // directories go after it, outside the lock (a crash in between is finished by the next open).
    const removed = [...own].reverse();
    for (const id of removed) tx.removeLayer(id, { onInUse: 'finish-later' });
    // Before the commit: a containers-storage export stops showing the image before its files go.
    await syncContainersStorage(tx, { onWait: (m) => store.report('info', m) });
    return { untagged: image.names, deleted: image.id, layers: removed, keptLayers: kept };
  });
}

/** IN_USE, naming the image, when one of its own layers has a foreign child or is mounted. */
function assertRemovable(tx: StoreTx, ref: string, own: string[]): void {
  const ownSet = new Set(own);
  for (const id of own) {
    const child = tx.children(id).find((c) => !ownSet.has(c));
    if (child !== undefined) {
      throw new UnionctlError('IN_USE', `image ${ref} is in use: layer ${child} is built on its layer ${id}`, {
        hint: `remove that layer first: unionctl rm ${child}`,
      });
    }
    const refs = tx.store.references(id);
    if (refs.total > 0 || refs.mounted) {
      const onlyRead = !refs.mounted && refs.persistent === 0 && refs.processes.length === 0 && refs.heldBy.length === 0;
      const readers = refs.readers.map((r) => r.pid).join(', ');
      throw new UnionctlError(
        'IN_USE',
        `image ${ref} is in use: its layer ${id} is ${onlyRead ? `being read (process ${readers})` : 'mounted'}`,
        {
          hint: onlyRead ? 'wait for that diff, changes or save to finish, then retry' : `unmount it first: unionctl umount ${id}`,
        },
      );
    }
  }
}

export interface TagResult {
  /** The image's id. */
  id: string;
  /** The name as stored (":latest" added to a name without a tag). */
  name: string;
  /** The image that had the name before, when another one did. */
  movedFrom?: string;
}

/**
 * tag: gives image REF the name NAME, as `docker tag` does: a name without a tag gets ":latest",
 * and an image that had the name loses it (the name moves). Refuses NOT_FOUND (no image REF) and
 * USAGE (NAME is not an image reference: `[host[:port]/]name[:tag]`, lowercase, no digest).
 */
export async function tagImage(store: LayerStore, ref: string, name: string): Promise<TagResult> {
  const parsed = parseReference(name);
  if (parsed.digest !== undefined) {
    throw new UnionctlError('USAGE', `${name} names a digest: a tag cannot`, { hint: 'write NAME or NAME:TAG' });
  }
  const stored = normalizeName(name);
  return store.transaction(async (tx) => {
    const image = requireImage(tx, ref);
    let movedFrom: string | undefined;
    for (const other of readImageRecords(tx)) {
      if (other.id === image.id || !other.names.includes(stored)) continue;
      writeImageRecord(tx, { ...other, names: other.names.filter((n) => n !== stored) });
      movedFrom = other.id;
    }
    if (!image.names.includes(stored)) writeImageRecord(tx, { ...image, names: [...image.names, stored] });
    await syncContainersStorage(tx, { onWait: (m) => store.report('info', m) });
    return { id: image.id, name: stored, ...(movedFrom === undefined ? {} : { movedFrom }) };
  });
}

/**
 * untag: takes NAMES (all of its names when none are given) off image REF, as `podman untag`
 * does; the image and its layers stay (an image without names lists as <none>; rmi removes it).
 * Refuses NOT_FOUND for an image that does not exist or a name it does not have (nothing changes then).
 */
export async function untagImage(store: LayerStore, ref: string, names: string[] = []): Promise<{ id: string; untagged: string[] }> {
  return store.transaction(async (tx) => {
    const image = requireImage(tx, ref);
    const untagged = names.length === 0 ? image.names : names.map((n) => (image.names.includes(n) ? n : normalizeName(n)));
    for (const [i, n] of untagged.entries()) {
      if (!image.names.includes(n)) {
        throw new UnionctlError('NOT_FOUND', `image ${ref} has no name ${names[i]}`, {
          hint: `its names: ${image.names.join(', ') || 'none'}`,
        });
      }
    }
    writeImageRecord(tx, { ...image, names: image.names.filter((n) => !untagged.includes(n)) });
    await syncContainersStorage(tx, { onWait: (m) => store.report('info', m) });
    return { id: image.id, untagged };
  });
}
