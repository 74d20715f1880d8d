/**
 * A store written by dockerd (20.10–23), read for adoption. Under its data root:
 *
 *   image/<driver>/repositories.json      {"Repositories": {repo: {"repo:tag": "sha256:<image id>", "repo@sha256:…": …}}}
 *   image/<driver>/imagedb/content/sha256/<hex>   an image's config, byte for byte (its sha256 is the id)
 *   image/<driver>/layerdb/sha256/<chain hex>/    one image layer: diff (its diff ID), parent (the
 *                                          parent's chain ID), cache-id (its dir in the driver home),
 *                                          size, tar-split.json.gz (vbatts/tar-split)
 *   <driver>/<cache-id>/diff/  (overlay2)  the layer's files; overlay: <cache-id>/root/ (the whole
 *                                          tree); vfs: vfs/dir/<cache-id>/ (the whole tree)
 *
 * Containers (layerdb/mounts/) are not adopted: only images and their layers.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { UnionctlError } from '../../errors.js';
import { chainIdOf } from '../../graph/store.js';
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

const DRIVERS: readonly ForeignDriver[] = ['overlay2', 'overlay', 'vfs'];

/** Reads the dockerd data root `root`; refuses one dockerd is running on, or of a driver adopt cannot read. */
export function readDockerStore(root: string): ForeignStore {
  const driver = dockerDriverOf(root);
  const description = `dockerd store ${root} (${driver})`;
  assertOwnerStopped(
    root,
    'dockerd',
    ['volumes/metadata.db', 'network/files/local-kv.db', 'containerd/daemon/io.containerd.metadata.v1.bolt/meta.db'].map((f) =>
      join(root, f),
    ),
    'stop dockerd (systemctl stop docker docker.socket, or kill the daemon using this --data-root), then adopt',
  );
  const imageDir = join(root, 'image', driver);
  const names = repositoryNames(description, join(imageDir, 'repositories.json'));
  const layers = new Map<string, ForeignLayer>();
  const images: ImageToLoad[] = [];
  const contentDir = join(imageDir, 'imagedb', 'content', 'sha256');
  for (const hex of foreignDir(contentDir)) {
    if (!/^[0-9a-f]{64}$/.test(hex)) continue;
    const id = `sha256:${hex}`;
    const config = readForeignFile(join(contentDir, hex)) ?? '';
    if (`sha256:${createHash('sha256').update(config).digest('hex')}` !== id)
      throw foreignCorrupt(description, `the config ${join(contentDir, hex)} does not hash to its name`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(config);
    } catch {
      parsed = undefined;
    }
    const diffIds = diffIdsIn(parsed);
    if (diffIds === undefined) throw foreignCorrupt(description, `the config ${join(contentDir, hex)} has no rootfs.diff_ids list`);
    const imageNames = names.get(id) ?? [];
    let chainId: string | undefined;
    const imageLayers = diffIds.map((diffId, i) => {
      chainId = chainIdOf(chainId, diffId);
      const member = `layer ${chainId}`;
      if (!layers.has(member)) layers.set(member, readLayer(description, root, driver, chainId, diffId));
      return { index: i + 1, member, diffId };
    });
    images.push({ id, names: imageNames, config, layers: imageLayers, label: labelOf(imageNames, id) });
  }
  return { kind: 'docker', path: root, driver, description, images, layers };
}

/** The one driver of overlay2, overlay, vfs the data root has image metadata for. */
function dockerDriverOf(root: string): ForeignDriver {
  const present = foreignDir(join(root, 'image'));
  if (present.length === 0) {
    throw new UnionctlError('NOT_FOUND', `no dockerd store at ${root} (it has no image/<driver>/ directory)`, {
      hint: "give dockerd's --data-root (default /var/lib/docker)",
    });
  }
  const usable = present.filter((d): d is ForeignDriver => (DRIVERS as readonly string[]).includes(d));
  if (usable.length === 0) {
    throw new UnionctlError(
      'UNSUPPORTED',
      `the dockerd store at ${root} is of storage driver ${present.join(', ')}: adopt reads overlay2, overlay and vfs`,
      {
        hint: 'docker save the images and unionctl load the archive instead',
      },
    );
  }
  if (usable.length > 1) {
    throw new UnionctlError('UNSUPPORTED', `the dockerd store at ${root} holds images of several storage drivers (${usable.join(', ')})`, {
      hint: 'docker save the images and unionctl load the archive instead',
    });
  }
  return usable[0]!;
}

/** repositories.json as image id → its "name:tag" names (digest references are left out: a name here is a tag). */
function repositoryNames(description: string, file: string): Map<string, string[]> {
  const names = new Map<string, string[]>();
  if (readForeignFile(file) === undefined) return names; // no image was ever named
  const repos = (readForeignJson(description, file) as { Repositories?: unknown } | null)?.Repositories;
  if (typeof repos !== 'object' || repos === null) throw foreignCorrupt(description, `${file} has no "Repositories" object`);
  for (const refs of Object.values(repos as Record<string, unknown>)) {
    if (typeof refs !== 'object' || refs === null) continue;
    for (const [ref, id] of Object.entries(refs as Record<string, unknown>)) {
      if (typeof id !== 'string' || ref.includes('@')) continue;
      names.set(id, [...(names.get(id) ?? []), ref]);
    }
  }
  return names;
}

/** Layer `chainId` of the layer db, checked against the diff ID the image config names. */
function readLayer(description: string, root: string, driver: ForeignDriver, chainId: string, diffId: string): ForeignLayer {
  const dir = join(root, 'image', driver, 'layerdb', 'sha256', chainId.slice('sha256:'.length));
  const recorded = readForeignFile(join(dir, 'diff'))?.trim();
  if (recorded === undefined) throw foreignCorrupt(description, `layer ${chainId} is not in the layer db (${dir})`);
  if (recorded !== diffId) throw foreignCorrupt(description, `${join(dir, 'diff')} says ${recorded}, the image config ${diffId}`);
  const cacheId = readForeignFile(join(dir, 'cache-id'))?.trim() ?? '';
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(cacheId))
    throw foreignCorrupt(description, `${join(dir, 'cache-id')} does not name a layer dir`);
  const home = driver === 'vfs' ? join(root, 'vfs') : join(root, driver);
  return { foreignId: cacheId, tarSplit: join(dir, 'tar-split.json.gz'), files: layerFilesDir(home, driver, cacheId) };
}
