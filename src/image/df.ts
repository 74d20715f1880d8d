/**
 * df: where the store's bytes are, as `docker system df` tells it — per image the bytes of its
 * layers that only it uses (unique) and that it shares with other images, per layer its bytes and
 * how many images use it, and the totals. A layer's bytes are its size (file content, a hardlinked
 * inode once, symlinks by their target's length; a writable layer's as it is now), counted once
 * however many images use it.
 */
import type { LayerStore } from '../graph/store.js';
import { diskDocuments, readImageRecords } from './records.js';

export interface ImageUsage {
  id: string;
  names: string[];
  /** Bytes of all its layers. */
  size: number;
  /** Bytes of the layers only this image uses (what removing it would free). */
  unique: number;
  /** Bytes of the layers other images use too. */
  shared: number;
}

export interface LayerUsage {
  id: string;
  size: number;
  writable: boolean;
  /** How many images use it (0: no image does; prune removes it unless it is mounted or held). */
  images: number;
}

export interface DiskUsage {
  images: ImageUsage[];
  layers: LayerUsage[];
  total: {
    images: number;
    layers: number;
    /** Bytes of every layer, each once. */
    size: number;
    /** Bytes of the layers more than one image uses. */
    shared: number;
    /** Bytes of the layers no image uses. */
    outsideImages: number;
  };
}

export async function diskUsage(store: LayerStore): Promise<DiskUsage> {
  const records = await store.list();
  const sizes = new Map<string, number>();
  for (const l of records) sizes.set(l.id, await store.currentSize(l));
  const images = readImageRecords(diskDocuments(store));
  const users = new Map<string, number>();
  for (const i of images) for (const l of new Set(i.layers.map((x) => x.id))) users.set(l, (users.get(l) ?? 0) + 1);
  const sizeOf = (id: string) => sizes.get(id) ?? 0;
  const imageUsage = images.map((i) => {
    const ids = [...new Set(i.layers.map((l) => l.id))];
    const unique = ids.filter((id) => users.get(id) === 1).reduce((n, id) => n + sizeOf(id), 0);
    const size = ids.reduce((n, id) => n + sizeOf(id), 0);
    return { id: i.id, names: i.names, size, unique, shared: size - unique };
  });
  const layers = records.map((l) => ({ id: l.id, size: sizeOf(l.id), writable: l.writable, images: users.get(l.id) ?? 0 }));
  const sum = (ls: LayerUsage[]) => ls.reduce((n, l) => n + l.size, 0);
  return {
    images: imageUsage,
    layers,
    total: {
      images: images.length,
      layers: layers.length,
      size: sum(layers),
      shared: sum(layers.filter((l) => l.images > 1)),
      outsideImages: sum(layers.filter((l) => l.images === 0)),
    },
  };
}
