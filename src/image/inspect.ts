/**
 * inspect and history: everything the store knows about one layer or one image, as one JSON
 * object, and an image's history (its config's history entries, matched to its layers).
 */
import { UnionctlError } from '../errors.js';
import type { References } from '../graph/driver.js';
import type { LayerRecord, LayerStore } from '../graph/store.js';
import { imageSummary } from './images.js';
import { diskDocuments, findImage, imagesUsingLayer, type ImageLayerRef } from './records.js';

export interface LayerInspection {
  type: 'layer';
  layer: LayerRecord;
  /** Where the driver keeps its parts (Docker's GraphDriver.Data: LowerDir, UpperDir, MergedDir…). */
  driverData: Record<string, string>;
  /** Outstanding `unionctl mount`s (its own view and its read-only view). */
  mounts: number;
  /** Every live reference to the layer's own view. */
  references: References;
  /** Names (or ids) of the images whose layers include it. */
  images: string[];
  /** Ids of the layers built on it. */
  children: string[];
}

export interface ImageInspection {
  type: 'image';
  id: string;
  names: string[];
  /** Bottom first, with each layer's size. */
  layers: Array<ImageLayerRef & { size: number }>;
  /** Bytes of all layers. */
  size: number;
  loaded: string;
  /** The image config (architecture, os, config, rootfs, history…), parsed. */
  config: unknown;
}

/**
 * What REF is: a layer (exact id first), else an image (name, id or id prefix), else a layer by a
 * unique id prefix. NOT_FOUND when none; USAGE for an ambiguous prefix.
 */
export async function inspect(store: LayerStore, ref: string): Promise<LayerInspection | ImageInspection> {
  const exactLayer = store.layerIdsStartingWith(ref).includes(ref);
  const image = exactLayer ? undefined : findImage(diskDocuments(store), ref);
  if (image !== undefined) {
    return { type: 'image', ...(await imageSummary(store, image.id)), config: JSON.parse(image.config) as unknown };
  }
  let id: string;
  try {
    id = await store.resolveLayer(ref);
  } catch (e) {
    if ((e as UnionctlError).code !== 'NOT_FOUND') throw e;
    throw new UnionctlError('NOT_FOUND', `no layer or image ${ref}`, { hint: 'list them with unionctl ls and unionctl images' });
  }
  const layer = await store.layer(id);
  return {
    type: 'layer',
    layer,
    driverData: await store.driver.metadata(id),
    mounts: store.mountCount(id),
    references: store.references(id),
    images: imagesUsingLayer(diskDocuments(store), id),
    children: (await store.list()).filter((l) => l.parent === id).map((l) => l.id),
  };
}

export interface HistoryEntry {
  /** The layer the step made; absent for a step that made none (ENV, CMD: empty_layer). */
  layer?: string;
  created?: string;
  createdBy: string;
  /** Bytes the step's layer holds (0 for a step without one). */
  size: number;
  comment?: string;
}

interface ConfigHistory {
  created?: string;
  created_by?: string;
  empty_layer?: boolean;
  comment?: string;
}

/**
 * An image's history, newest step first (as `docker history` lists it): the config's history
 * entries, each that made a layer matched to the image's layers bottom up. An image whose config
 * has no history gets one entry per layer. NOT_FOUND for no such image.
 */
export async function imageHistory(store: LayerStore, ref: string): Promise<HistoryEntry[]> {
  const image = findImage(diskDocuments(store), ref);
  if (image === undefined)
    throw new UnionctlError('NOT_FOUND', `image ${ref} does not exist`, { hint: 'list the images with unionctl images' });
  const sizes = new Map((await store.list()).map((l) => [l.id, l.size]));
  const steps = ((JSON.parse(image.config) as { history?: ConfigHistory[] }).history ?? []).filter((h) => typeof h === 'object');
  const layers = [...image.layers];
  const entries: HistoryEntry[] =
    steps.length === 0
      ? layers.map((l) => ({ layer: l.id, createdBy: '', size: sizes.get(l.id) ?? 0 }))
      : steps.map((h) => {
          const layer = h.empty_layer === true ? undefined : layers.shift()?.id;
          return {
            ...(layer === undefined ? {} : { layer }),
            ...(h.created === undefined ? {} : { created: h.created }),
            createdBy: h.created_by ?? '',
            size: layer === undefined ? 0 : (sizes.get(layer) ?? 0),
            ...(h.comment === undefined ? {} : { comment: h.comment }),
          };
        });
  return entries.reverse();
}
