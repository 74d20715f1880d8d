/**
 * A `docker save` format archive (what `docker load`, `podman load`, `skopeo docker-archive:` and
 * `unionctl load` read) made from layer tars, byte-for-byte the same for the same layers:
 *
 *   manifest.json            [{"Config": "<config digest hex>.json", "RepoTags": [...], "Layers": ["<hex>/layer.tar", ...]}]
 *   <config digest hex>.json  the image config: rootfs.diff_ids lists sha256 of each uncompressed layer tar
 *   <hex>/layer.tar           each layer, <hex> = its diff id (docker save uses a v1 id there; any hex is read)
 *   <hex>/VERSION, <hex>/json legacy v1 metadata, written because older loaders look for them
 *   repositories              {"<repo>": {"<tag>": "<top layer hex>"}}
 *
 * The docker-archive format is what Docker's image/tarexport reads; facts from its documentation,
 * not its code.
 */
import { createHash } from 'node:crypto';
import { createReadStream, linkSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EPOCH, packTree } from './synthetic-layer.js';

export interface ImageArchive {
  path: string;
  bytes: number;
  /** repo:tag the archive names. */
  reference: string;
  diffIds: string[];
  /** Total bytes of the layer tars inside. */
  layerBytes: number;
  layerEntries: number;
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** What a container of the image runs (the config's `config`): the command, and with it the environment. */
export interface RunConfig {
  Entrypoint?: string[];
  Cmd?: string[];
}

/** The image config: only the fields loaders need, with fixed dates so it is the same every time. */
export function imageConfig(diffIds: string[], run: RunConfig = { Cmd: ['/bin/sh'] }): object {
  const created = EPOCH.toISOString();
  return {
    architecture: 'amd64',
    os: 'linux',
    created,
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], ...run },
    rootfs: { type: 'layers', diff_ids: diffIds.map((d) => `sha256:${d}`) },
    history: diffIds.map((_, i) => ({ created, created_by: `unionctl bench layer ${i + 1}` })),
  };
}

/**
 * Writes the archive at `archivePath` from `layers` (uncompressed layer tars, bottom first). The
 * layer tars are hard-linked into the staging dir, not copied (same tmpfs).
 */
export async function writeImageArchive(
  archivePath: string,
  layers: Array<{ path: string; entries: number }>,
  reference = 'unionctl-bench/image:latest',
  run?: RunConfig,
): Promise<ImageArchive> {
  const stage = `${archivePath}.stage`;
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage);
  try {
    const diffIds: string[] = [];
    let layerBytes = 0;
    let parentV1: string | undefined;
    for (const layer of layers) {
      const diffId = await sha256File(layer.path);
      diffIds.push(diffId);
      layerBytes += statSync(layer.path).size;
      mkdirSync(join(stage, diffId));
      linkSync(layer.path, join(stage, diffId, 'layer.tar'));
      writeFileSync(join(stage, diffId, 'VERSION'), '1.0');
      writeFileSync(
        join(stage, diffId, 'json'),
        JSON.stringify({ id: diffId, ...(parentV1 ? { parent: parentV1 } : {}), created: EPOCH.toISOString() }),
      );
      parentV1 = diffId;
    }
    const config = JSON.stringify(imageConfig(diffIds, run));
    const configHex = createHash('sha256').update(config).digest('hex');
    writeFileSync(join(stage, `${configHex}.json`), config);
    const manifest = [{ Config: `${configHex}.json`, RepoTags: [reference], Layers: diffIds.map((d) => `${d}/layer.tar`) }];
    writeFileSync(join(stage, 'manifest.json'), JSON.stringify(manifest));
    const [repo, tag] = splitReference(reference);
    writeFileSync(join(stage, 'repositories'), JSON.stringify({ [repo]: { [tag]: diffIds[diffIds.length - 1] } }));
    // Top-level names without a "./" prefix, as docker save writes them.
    packTree(stage, archivePath, readdirSync(stage).sort());
    return {
      path: archivePath,
      bytes: statSync(archivePath).size,
      reference,
      diffIds: diffIds.map((d) => `sha256:${d}`),
      layerBytes,
      layerEntries: layers.reduce((n, l) => n + l.entries, 0),
    };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

/** "repo/name:tag" → ["repo/name", "tag"] (a ':' in a registry port is not a tag separator). */
export function splitReference(ref: string): [string, string] {
  const colon = ref.lastIndexOf(':');
  return colon > ref.lastIndexOf('/') ? [ref.slice(0, colon), ref.slice(colon + 1)] : [ref, 'latest'];
}
