/**
 * A containers/storage store (podman 4.x, buildah, CRI-O: its graphroot), read for adoption.
 * With driver prefix P (`overlay` or `vfs`):
 *
 *   P-layers/layers.json        the layers: "id", "parent", "diff-digest" (the diff ID), …
 *   P-layers/<id>.tar-split.gz  a layer's tar-split (vbatts/tar-split, like Docker's)
 *   P-images/images.json        the images: "id" (the config digest's hex), "names", "layer" (top)
 *   P-images/<id>/<file>        big-data items; the config under the key "sha256:<id>"
 *                               (file name: format.ts's bigDataFileName)
 *   overlay/<id>/diff/          an overlay layer's files (overlay2's layout: c/storage's overlay
 *                               is Docker's overlay2); vfs/dir/<id>/ a vfs layer's whole tree
 *
 * There is no daemon: podman locks the *.lock files (fcntl) while it works, and a running
 * container has its layer mounted below the graphroot — either refuses the adoption.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { UnionctlError } from '../../errors.js';
import { bigDataFileName, type StorageImage, type StorageLayer } from '../containers-storage/format.js';
import { diffIdsIn, labelOf, type ImageToLoad } from '../manifest.js';
import {
  assertOwnerStopped,
  foreignCorrupt,
  foreignDir,
  layerFilesDir,
  readForeignFile,
  readForeignJson,
  type ForeignDriver,
  type ForeignLayer,
  type ForeignStore,
} from './foreign.js';

/** c/storage's driver names adopt reads, and the unionctl layout their homes have. */
const DRIVERS: ReadonlyMap<string, ForeignDriver> = new Map([
  ['overlay', 'overlay2'],
  ['vfs', 'vfs'],
]);

/** Reads the graphroot `root`; refuses one podman is working on, or of a driver adopt cannot read. */
export function readPodmanStore(root: string): ForeignStore {
  const driver = storageDriverOf(root);
  const description = `containers/storage store ${root} (${driver})`;
  assertOwnerStopped(
    root,
    'podman',
    ['storage.lock', `${driver}-layers/layers.lock`, `${driver}-images/images.lock`, `${driver}-containers/containers.lock`].map((f) =>
      join(root, f),
    ),
    'wait for podman to finish (and stop its containers: podman stop --all), then adopt',
  );
  const byId = new Map<string, StorageLayer>();
  for (const l of listOf<StorageLayer>(description, join(root, `${driver}-layers`, 'layers.json'))) byId.set(l.id, l);
  const layers = new Map<string, ForeignLayer>();
  const images: ImageToLoad[] = [];
  for (const image of listOf<StorageImage>(description, join(root, `${driver}-images`, 'images.json'))) {
    if (!/^[0-9a-f]{64}$/.test(image.id)) throw foreignCorrupt(description, `images.json has the image id ${JSON.stringify(image.id)}`);
    const id = `sha256:${image.id}`;
    const configFile = join(root, `${driver}-images`, image.id, bigDataFileName(id));
    const config = readForeignFile(configFile);
    if (config === undefined || `sha256:${createHash('sha256').update(config).digest('hex')}` !== id)
      throw foreignCorrupt(description, `the config of image ${image.id} (${configFile}) is missing or does not hash to the image id`);
    const chain = layerChain(description, byId, image.layer);
    const diffIds = diffIdsIn(JSON.parse(config) as unknown);
    const stored = chain.map((l) => l['diff-digest']);
    if (diffIds === undefined || diffIds.join() !== stored.join())
      throw foreignCorrupt(description, `image ${image.id}: its config's diff IDs are not those of its layers in layers.json`);
    const names = image.names ?? [];
    for (const l of chain) {
      layers.set(`layer ${l.id}`, {
        foreignId: l.id,
        tarSplit: join(root, `${driver}-layers`, `${l.id}.tar-split.gz`),
        files: layerFilesDir(join(root, driver), DRIVERS.get(driver)!, l.id),
      });
    }
    const imageLayers = chain.map((l, i) => ({ index: i + 1, member: `layer ${l.id}`, diffId: l['diff-digest'] }));
    images.push({ id, names, config, layers: imageLayers, label: labelOf(names, id) });
  }
  return { kind: 'podman', path: root, driver, description, images, layers };
}

/** The graphroot's driver: the one of overlay, vfs with a layers.json; others are refused by name. */
function storageDriverOf(root: string): string {
  const present = foreignDir(root)
    .filter((n) => n.endsWith('-layers'))
    .map((n) => n.slice(0, -'-layers'.length));
  if (present.length === 0) {
    throw new UnionctlError('NOT_FOUND', `no containers/storage store at ${root} (it has no <driver>-layers/ directory)`, {
      hint: "give podman's graphroot (podman info --format '{{.Store.GraphRoot}}'; default /var/lib/containers/storage)",
    });
  }
  const usable = present.filter((d) => DRIVERS.has(d));
  if (usable.length !== 1) {
    throw new UnionctlError(
      'UNSUPPORTED',
      `the containers/storage store at ${root} is of storage driver ${present.join(', ')}: adopt reads one overlay or vfs store`,
      { hint: 'podman save the images and unionctl load the archive instead' },
    );
  }
  return usable[0]!;
}

function listOf<T>(description: string, file: string): T[] {
  if (readForeignFile(file) === undefined) return []; // c/storage writes the file with the first layer or image
  const list = readForeignJson(description, file);
  if (!Array.isArray(list) || !list.every((e) => typeof e === 'object' && e !== null && typeof (e as { id?: unknown }).id === 'string'))
    throw foreignCorrupt(description, `${file} is not a list of records with ids`);
  return list as T[];
}

/** The layers from the bottom to `top`, following "parent"; each must have a diff digest. */
function layerChain(description: string, byId: ReadonlyMap<string, StorageLayer>, top: string | undefined): StorageLayer[] {
  const chain: StorageLayer[] = [];
  for (let id = top; id !== undefined;) {
    const layer = byId.get(id);
    if (layer === undefined) throw foreignCorrupt(description, `layer ${id} is not in layers.json`);
    if (typeof layer['diff-digest'] !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(layer['diff-digest']))
      throw foreignCorrupt(description, `layer ${id} has no diff digest in layers.json`);
    if (chain.length > 1000) throw foreignCorrupt(description, `layer ${top} has a parent cycle`);
    chain.unshift(layer);
    id = layer.parent;
  }
  return chain;
}
