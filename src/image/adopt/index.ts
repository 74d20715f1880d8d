/**
 * unionctl adopt: the images of a store written by dockerd or podman, made unionctl's.
 *
 * The design. Adoption reads the foreign store and never writes to it: its layers come into
 * unionctl's store as copies, each rebuilt byte for byte from the foreign tool's own tar-split
 * (tar-split.ts parseTarSplitJson) and the layer's files in the foreign driver home, and imported
 * like any loaded layer (load.ts loadImagesFrom: a layer unionctl already holds by chain ID is
 * reused, a new one is verified against the diff ID the image config names before it is complete,
 * and a failure removes everything the adoption made). So the adopted images save, mount, diff and
 * change exactly as loaded ones do, for any unionctl driver, and neither tool depends on the other
 * afterwards: dockerd or podman may remove or change its images, unionctl's stay as they were.
 *
 * Why copies and not references to the foreign layer dirs: a unionctl driver home refuses symlinks
 * in its layer dirs (store-files.ts: a layer dir never leads out of the store), mounting and
 * creating layers writes into the layer dirs (merged/, work/, committed, l/), and the foreign tool
 * may delete a layer dir at any time. A read-only bind mount would have to be remade after every
 * reboot and cleanup. A copy costs the layers' bytes once and keeps both stores sound.
 *
 * Refused before anything is read: a store whose owner is running (foreign.ts assertOwnerStopped),
 * a driver other than overlay2, overlay, vfs (c/storage: overlay, vfs), and `takeOver` (moving the
 * foreign layers instead of copying them is not implemented).
 */
import { existsSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { readTarSplitJson, rebuildTarStream } from '../../archive/tar-split.js';
import { UnionctlError } from '../../errors.js';
import type { LayerStore } from '../../graph/store.js';
import { loadImagesFrom, type LayerBlobs, type LoadedImage, type LoadProgress } from '../load.js';
import type { LayerToLoad } from '../manifest.js';
import { readDockerStore } from './docker.js';
import type { ForeignStore } from './foreign.js';
import { readPodmanStore } from './podman.js';

export type ForeignKind = 'docker' | 'podman';
export const FOREIGN_KINDS: readonly ForeignKind[] = ['docker', 'podman'];

export interface AdoptOptions {
  /** Move the layers out of the foreign store instead of copying them: refused (not implemented). */
  takeOver?: boolean;
  onProgress?: (p: LoadProgress) => void;
}

export interface AdoptedStore {
  kind: ForeignKind;
  /** The foreign store's root, absolute. */
  path: string;
  /** Its storage driver, as the foreign tool names it. */
  driver: string;
  images: LoadedImage[];
}

/** Reads the foreign store at `path` (a dockerd --data-root, or a c/storage graphroot) and loads its images into `store`. */
export async function adoptStore(store: LayerStore, kind: ForeignKind, path: string, opts: AdoptOptions = {}): Promise<AdoptedStore> {
  const foreign = readForeignStore(kind, path, { ...opts, storeRoot: store.root });
  const images = foreign.images.length === 0 ? [] : await loadImagesFrom(store, foreignBlobs(foreign), foreign.images, opts);
  return { kind, path: foreign.path, driver: foreign.driver, images };
}

/**
 * The foreign store read and checked (nothing of unionctl's is touched): what adoptStore would load.
 * `storeRoot`, the unionctl store's root, must be neither in the foreign store (adopting would write
 * there) nor hold it.
 */
export function readForeignStore(
  kind: ForeignKind,
  path: string,
  opts: Pick<AdoptOptions, 'takeOver'> & { storeRoot?: string } = {},
): ForeignStore {
  if (!FOREIGN_KINDS.includes(kind))
    throw new UnionctlError('USAGE', `unknown store kind ${JSON.stringify(kind)}`, { hint: `give one of ${FOREIGN_KINDS.join(', ')}` });
  if (opts.takeOver === true) {
    throw new UnionctlError(
      'UNSUPPORTED',
      `taking over ${path} is not implemented: adopt copies the layers and leaves the ${kind} store as it is`,
      {
        hint: `adopt without --take-over, then remove the images with ${kind} rmi if the copies are all you want`,
      },
    );
  }
  const root = resolve(path);
  if (opts.storeRoot !== undefined) assertApart(realPath(opts.storeRoot), realPath(root), kind);
  return kind === 'docker' ? readDockerStore(root) : readPodmanStore(root);
}

/** `path` with its symlinks resolved as far as it exists (a store root may not exist yet). */
function realPath(path: string): string {
  let head = resolve(path);
  let tail = '';
  while (!existsSync(head) && dirname(head) !== head) {
    tail = tail === '' ? basename(head) : join(basename(head), tail);
    head = dirname(head);
  }
  return join(realpathSync(head), tail);
}

function assertApart(storeRoot: string, foreign: string, kind: ForeignKind): void {
  const inside = (a: string, b: string) => a === b || a.startsWith(b.endsWith('/') ? b : `${b}/`);
  if (inside(storeRoot, foreign) || inside(foreign, storeRoot)) {
    throw new UnionctlError(
      'USAGE',
      `the store root ${storeRoot} and the ${kind} store ${foreign} overlap: adopting would write into the ${kind} store`,
      {
        hint: 'give a --root outside the other store (and not around it)',
      },
    );
  }
}

/** Each layer's tar, rebuilt from the foreign tar-split and the layer's files (load checks it against the diff ID). */
function foreignBlobs(foreign: ForeignStore): LayerBlobs {
  return {
    description: foreign.description,
    chunks: (layer: LayerToLoad) => {
      const source = foreign.layers.get(layer.member)!; // every member was put there by the reader
      const record = readTarSplitJson(source.tarSplit);
      if (record === undefined) {
        throw new UnionctlError('CORRUPT', `${foreign.description}: layer ${source.foreignId} has no tar-split (${source.tarSplit})`, {
          hint: 'without it the layer cannot be rebuilt byte for byte; save the image with the foreign tool and unionctl load it',
        });
      }
      return rebuildTarStream(record, source.files);
    },
  };
}
