/**
 * The one JSON shape of each kind of object the CLI prints (`--json`, `--format`), whatever the
 * command and its flags: a layer is the same object in `ls`, `import`, `create` and `inspect`; an
 * image the same in `images`, `load`, `pull`, `commit` and `inspect`; a mount the same in `mount`
 * and `mounts`. Every field is always there: one that does not apply is null, never missing, so a
 * script can tell "none" from "not printed by this command". docs/json.md documents each field, and
 * test/integration/cli-json.test.ts checks that every field printed is documented there.
 */
import type { Change } from '../graph/driver.js';
import type { DoctorReport } from '../drivers/doctor.js';
import type { LayerRecord, LayerStore, MountEntry, MountExplanation, StoreInfo } from '../graph/store.js';
import { imageSummary, type ImageSummary } from '../image/index.js';

export interface LayerJson {
  id: string;
  parent: string | null;
  /** 'user' (import, create, mount --rw), 'image' (load, pull, commit), null for records older than origins. */
  origin: 'user' | 'image' | null;
  writable: boolean;
  diffId: string | null;
  chainId: string | null;
  /** Bytes of the layer's own content; a writable layer's as it is now. */
  size: number;
  created: string;
  driver: string;
}

/** A layer record as LayerJson; `size` when the caller measured it again (a writable layer's changes). */
export function layerJson(rec: LayerRecord, size = rec.size): LayerJson {
  return {
    id: rec.id,
    parent: rec.parent ?? null,
    origin: rec.origin ?? null,
    writable: rec.writable,
    diffId: rec.diffId ?? null,
    chainId: rec.chainId ?? null,
    size,
    created: rec.created,
    driver: rec.driver,
  };
}

export interface ImageLayerJson {
  id: string;
  diffId: string;
  chainId: string;
  size: number;
}

export interface ImageJson {
  id: string;
  names: string[];
  /** Bottom first. */
  layers: ImageLayerJson[];
  /** Bytes of all its layers. */
  size: number;
  /** When the image came into the store (load, pull, commit). */
  loaded: string;
}

/** An image summary (listImages, imageSummary) as ImageJson: the fields pinned, in their order. */
export function imageJson(image: ImageSummary): ImageJson {
  const layers = image.layers.map(({ id, diffId, chainId, size }) => ({ id, diffId, chainId, size }));
  return { id: image.id, names: image.names, layers, size: image.size, loaded: image.loaded };
}

export interface MountJson {
  /** The layer mounted. */
  id: string;
  path: string;
  readOnly: boolean;
  /** Outstanding `unionctl mount`s, from any process. */
  mounts: number;
  processes: Array<{ pid: number; count: number }>;
  /** The kernel has it mounted (false for a view that is a plain directory: a vfs layer's own). */
  mounted: boolean;
}

export function mountJson(entry: MountEntry): MountJson {
  const { layer, path, readOnly, mounts, processes, mounted } = entry;
  return { id: layer, path, readOnly, mounts, processes, mounted };
}

export interface ChangeJson {
  path: string;
  /** A added, C changed, D deleted. */
  kind: Change['kind'];
  /** The unified diff of a changed text file with `changes --patch`; null otherwise. */
  patch: string | null;
}

export interface InfoJson {
  driver: string;
  root: string;
  /** The driver's status lines, as [key, value] pairs (Docker's DriverStatus). */
  status: Array<[string, string]>;
  capabilities: StoreInfo['capabilities'];
}

export function infoJson(info: StoreInfo): InfoJson {
  return { driver: info.driver, root: info.root, status: info.status, capabilities: info.capabilities };
}

/** The ImageJson of image `id` as the store has it now (its record, its layers' sizes). */
export async function storedImageJson(store: LayerStore, id: string): Promise<ImageJson> {
  return imageJson(await imageSummary(store, id));
}

/** Ids of the layers an operation found in the store instead of making them (LoadedImage's `reused`). */
export function reusedLayers(layers: ReadonlyArray<{ id: string; reused: boolean }>): string[] {
  return layers.filter((l) => l.reused).map((l) => l.id);
}

/** What load and adopt print of the images they loaded: each as the store has it now, and every layer any of them reused, once. */
export async function loadedImagesJson(
  store: LayerStore,
  images: ReadonlyArray<{ id: string; layers: ReadonlyArray<{ id: string; reused: boolean }> }>,
): Promise<{ images: ImageJson[]; reusedLayers: string[] }> {
  const shown: ImageJson[] = [];
  for (const i of images) shown.push(await storedImageJson(store, i.id));
  return { images: shown, reusedLayers: [...new Set(images.flatMap((i) => reusedLayers(i.layers)))] };
}

/** `mount --explain`'s document: the explanation with every field there (null where it does not apply). */
export function explanationJson(e: MountExplanation): object {
  const p = e.plan;
  return {
    id: e.id,
    path: e.path,
    readOnly: e.readOnly,
    mounted: e.mounted,
    plan: {
      method: p.method,
      path: p.path,
      fsType: p.fsType ?? null,
      data: p.data,
      dataBytes: p.dataBytes ?? null,
      pageSize: p.pageSize ?? null,
      cwd: p.cwd ?? null,
      decisions: p.decisions,
    },
    bind: e.bind ?? null,
  };
}

/** `doctor`'s document, nulls for what does not apply. */
export function doctorJson(r: DoctorReport): object {
  return {
    root: r.root,
    scratch: r.scratch,
    facts: r.facts.map((f) => ({ name: f.name, value: f.value, source: f.source, consequences: f.consequences, action: f.action ?? null })),
    drivers: r.drivers.map((d) => ({ name: d.name, usable: d.usable, reason: d.reason ?? null })),
  };
}
