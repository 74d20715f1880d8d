/**
 * unionctl push: an image of the store to a registry.
 *
 * 1. Each layer's blob is staged (layer-blobs.ts): its tar rebuilt byte for byte from its
 *    tar-split record, so its diff ID is the config's, compressed as asked (gzip by default, as
 *    docker push; zlib's gzip is deterministic, so pushing the same image twice gives the same
 *    blobs and manifest).
 * 2. Blobs the repository has (HEAD) are skipped; one that another repository of the same
 *    registry has — the repository the image was pulled from, given as `mountFrom` — is mounted
 *    (no bytes sent); the rest are uploaded, monolithic or in chunks.
 * 3. The config, then the manifest last (Docker schema 2, or OCI with `format: 'oci'`, which zstd
 *    layers need), so the tag never names an image whose blobs are missing.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { UnionctlError } from '../../errors.js';
import type { LayerStore } from '../../graph/store.js';
import { configFor, stageLayerBlobs, type LayerBlob } from '../layer-blobs.js';
import { layerMediaType, MEDIA, sha256Digest, type LayerCompression } from '../manifest.js';
import { diskDocuments, removeDirIfEmpty, requireImage } from '../records.js';
import { RegistryClient } from './client.js';
import { credentialsFor, plainHttpFor, type RegistryOptions } from './pull.js';
import { formatReference, manifestReference, parseReference } from './reference.js';

export interface PushOptions extends RegistryOptions {
  /** Layer compression; default gzip. */
  compress?: LayerCompression;
  /** Manifest format; default docker (schema 2). zstd needs oci. */
  format?: 'docker' | 'oci';
  /** Upload blobs in PATCH chunks of this many bytes (default: one PUT each). */
  chunkSize?: number;
  /** A repository of the same registry to mount blobs from when it has them. */
  mountFrom?: string;
  /** A layer exported without its tar-split record (default: process.emitWarning). */
  onWarning?: (message: string) => void;
  onProgress?: (p: PushProgress) => void;
}

export interface PushProgress {
  /**
   * What happened to a blob: staged (compressed into the temp dir), then skipped, mounted or
   * uploaded; 'sending' while its bytes go out (`bytes` so far).
   */
  event: 'staged' | 'skipped' | 'mounted' | 'uploaded' | 'sending';
  digest: string;
  size: number;
  /** 1-based, bottom first; absent for the config. */
  layer?: number;
  layers: number;
  /** With 'sending': bytes of the blob sent so far. */
  bytes?: number;
}

export interface PushedBlob {
  digest: string;
  size: number;
  mediaType: string;
  /** exists: the registry had it; mounted: from `mountFrom`; uploaded: sent. */
  how: 'exists' | 'mounted' | 'uploaded';
}

export interface PushedImage {
  /** The image id in the store. */
  id: string;
  reference: string;
  manifestDigest: string;
  manifestMediaType: string;
  /** The config digest: the image id, unless a layer had to be exported afresh. */
  configDigest: string;
  layers: PushedBlob[];
}

/** Pushes image IMAGE (a name or id of the store) to REF (default: the image's first name). */
export async function pushImage(
  store: LayerStore,
  imageRef: string,
  destination: string | undefined,
  opts: PushOptions = {},
): Promise<PushedImage> {
  const compress = opts.compress ?? 'gzip';
  const format = opts.format ?? 'docker';
  const layerMedia = layerMediaType(format, compress);
  if (layerMedia === undefined) {
    throw new UnionctlError('USAGE', `${compress} layers cannot go into a ${format} manifest`, {
      hint: format === 'docker' ? 'use --format oci for zstd layers' : 'use --compress none, gzip or zstd',
    });
  }
  const record = requireImage(diskDocuments(store), imageRef);
  const target = destination ?? record.names[0];
  if (target === undefined)
    throw new UnionctlError('USAGE', `image ${imageRef} has no name to push it under`, {
      hint: 'give the destination: unionctl push IMAGE REGISTRY/NAME:TAG',
    });
  const ref = parseReference(target);
  const client = new RegistryClient({
    registry: ref.registry,
    repository: ref.repository,
    insecure: plainHttpFor(ref.registry, opts),
    creds: credentialsFor(ref.registry, opts),
    actions: 'pull,push',
    ...(opts.mountFrom === undefined ? {} : { alsoPull: [opts.mountFrom] }),
    signal: opts.signal,
  });
  await client.ping(); // a wrong address or refused credentials fail before any layer is staged

  const tmpDir = join(store.root, 'tmp', `push-${randomBytes(6).toString('hex')}`);
  mkdirSync(tmpDir, { recursive: true, mode: 0o700 });
  try {
    const warn = opts.onWarning ?? ((m: string) => process.emitWarning(`unionctl: ${m}`));
    const staged = await stageLayerBlobs(store, [record], tmpDir, compress, warn, undefined);
    const blobs = record.layers.map((l) => staged.get(l.id)!);
    const count = blobs.length;
    for (const [i, b] of blobs.entries())
      opts.onProgress?.({ event: 'staged', digest: b.digest, size: b.size, layer: i + 1, layers: count });
    const layers: PushedBlob[] = [];
    for (const [i, blob] of blobs.entries()) {
      layers.push({ ...(await sendBlob(client, blob, blob.path, opts, { layer: i + 1, layers: count })), mediaType: layerMedia });
    }
    const config = Buffer.from(configFor(record, staged));
    const configDigest = sha256Digest(config);
    await sendBlob(client, { digest: configDigest, size: config.length }, config, opts, { layers: count });
    const manifestMediaType = format === 'docker' ? MEDIA.dockerManifest : MEDIA.ociManifest;
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: manifestMediaType,
        config: { mediaType: format === 'docker' ? MEDIA.dockerConfig : MEDIA.ociConfig, size: config.length, digest: configDigest },
        layers: layers.map((l) => ({ mediaType: l.mediaType, size: l.size, digest: l.digest })),
      }),
    );
    const reference = manifestReference(ref);
    if (ref.digest !== undefined && ref.digest !== sha256Digest(manifest)) {
      throw new UnionctlError('USAGE', `the image's manifest has the digest ${sha256Digest(manifest)}, not ${ref.digest}`, {
        hint: 'push by tag, or give the digest the manifest has',
      });
    }
    const manifestDigest = await client.putManifest(reference, manifestMediaType, manifest);
    return { id: record.id, reference: formatReference(ref), manifestDigest, manifestMediaType, configDigest, layers };
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
    removeDirIfEmpty(join(store.root, 'tmp'));
  }
}

async function sendBlob(
  client: RegistryClient,
  blob: Pick<LayerBlob, 'digest' | 'size'>,
  data: string | Buffer,
  opts: PushOptions,
  which: { layer?: number; layers: number },
): Promise<Omit<PushedBlob, 'mediaType'>> {
  const { digest, size } = blob;
  const tell = (event: PushProgress['event'], bytes?: number) =>
    opts.onProgress?.({ event, digest, size, ...which, ...(bytes === undefined ? {} : { bytes }) });
  if (await client.hasBlob(digest)) {
    tell('skipped');
    return { digest, size, how: 'exists' };
  }
  const how = await client.uploadBlob(digest, size, data, {
    mountFrom: opts.mountFrom,
    chunkSize: opts.chunkSize,
    ...(opts.onProgress === undefined ? {} : { onSent: (bytes: number) => tell('sending', bytes) }),
  });
  tell(how);
  return { digest, size, how: how === 'mounted' ? 'mounted' : 'uploaded' };
}
