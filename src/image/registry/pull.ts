/**
 * unionctl pull: an image from a registry into the store.
 *
 * 1. The manifest at the tag or digest (every manifest type in Accept; its digest checked); an
 *    index (manifest list) is resolved to the manifest for the platform asked for (default: this
 *    host's), then the config (checked against its digest) gives the diff IDs.
 * 2. The layers, bottom up, through the same loader as `unionctl load` (load.ts): a layer whose
 *    chain ID the store holds is reused without a request; the others stream from the registry
 *    straight into the tar engine, hashed on the way (blob digest and diff ID checked before the
 *    layer is made complete), resumed with Range requests when the connection drops.
 * 3. The image record, named as podman names it (`docker.io/library/busybox:latest`).
 * A failure leaves the store as it was (the loader's journal).
 */
import { UnionctlError } from '../../errors.js';
import type { LayerStore } from '../../graph/store.js';
import { loadImagesFrom, type LayerBlobs, type LoadedImage } from '../load.js';
import {
  configDiffIds,
  hostPlatform,
  layerCompressionOf,
  mediaKind,
  sha256Digest,
  SHA256_DIGEST,
  type Descriptor,
  type ImageToLoad,
  type LayerToLoad,
  type Platform,
} from '../manifest.js';
import { parseCreds, storedCredentials, type Credentials } from './auth.js';
import { blobSource } from './blob-source.js';
import { RegistryClient, type FetchedManifest } from './client.js';
import { formatReference, imageName, manifestReference, parseReference, type ImageReference } from './reference.js';

export type { Platform } from '../manifest.js';

export interface RegistryOptions {
  /** "user:password"; default: the auth file's entry for the registry, else anonymous. */
  creds?: string;
  /** Plain HTTP. */
  insecure?: boolean;
  /** Registries (host[:port], as a reference names them) spoken to over plain HTTP without `insecure`: a configuration's list. */
  insecureRegistries?: readonly string[];
  /** The auth file to read (default $REGISTRY_AUTH_FILE, else ~/.docker/config.json). */
  authFile?: string;
  signal?: AbortSignal;
}

export interface PullOptions extends RegistryOptions {
  /** "os/arch[/variant]"; default this host's. */
  platform?: string;
  /** Layers downloaded and applied at once (default 3, as dockerd's --max-concurrent-downloads). */
  maxConcurrentDownloads?: number;
  onProgress?: (p: PullProgress) => void;
}

/** Layers a pull downloads at once unless told otherwise (dockerd's default too). */
export const DEFAULT_CONCURRENT_DOWNLOADS = 3;

export interface PullProgress {
  /** 1-based, bottom first. */
  layer: number;
  layers: number;
  /** Uncompressed bytes of that layer applied so far. */
  bytes: number;
}

export interface PulledImage extends LoadedImage {
  reference: string;
  /** The digest of the image manifest pulled (for an index: the platform's manifest). */
  manifestDigest: string;
  /** The index's digest when the reference named one. */
  indexDigest?: string;
  platform?: Platform;
}

/** The credentials to use for `registry`: --creds, else the auth file's, else none. */
export function credentialsFor(registry: string, opts: RegistryOptions): Credentials | undefined {
  if (opts.creds !== undefined) return parseCreds(opts.creds);
  return storedCredentials(registry, opts.authFile);
}

/** Whether `registry` is spoken to over plain HTTP: `insecure`, or a registry listed in `insecureRegistries`. */
export function plainHttpFor(registry: string, opts: RegistryOptions): boolean {
  return opts.insecure === true || (opts.insecureRegistries ?? []).includes(registry);
}

/** "os/arch[/variant]" → Platform; undefined → this host's. */
export function parsePlatform(text: string | undefined): Platform {
  if (text === undefined) return hostPlatform();
  const parts = text.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/.test(p)))
    throw new UnionctlError('USAGE', `--platform ${JSON.stringify(text)} is not os/arch[/variant]`, {
      hint: 'e.g. --platform linux/amd64 or linux/arm/v7',
    });
  return { os: parts[0]!, architecture: parts[1]!, ...(parts[2] === undefined ? {} : { variant: parts[2] }) };
}

function concurrentDownloads(n: number | undefined): number {
  if (n === undefined) return DEFAULT_CONCURRENT_DOWNLOADS;
  if (!Number.isInteger(n) || n < 1 || n > 99) {
    throw new UnionctlError('USAGE', `${n} concurrent downloads: give a whole number from 1 to 99`, {
      hint: `the default is ${DEFAULT_CONCURRENT_DOWNLOADS}`,
    });
  }
  return n;
}

/** Pulls REF (`[host[:port]/]name[:tag|@digest]`) into the store. */
export async function pullImage(store: LayerStore, refText: string, opts: PullOptions = {}): Promise<PulledImage> {
  const ref = parseReference(refText);
  const platform = parsePlatform(opts.platform);
  const maxConcurrentLayers = concurrentDownloads(opts.maxConcurrentDownloads);
  const client = new RegistryClient({
    registry: ref.registry,
    repository: ref.repository,
    insecure: plainHttpFor(ref.registry, opts),
    creds: credentialsFor(ref.registry, opts),
    actions: 'pull',
    signal: opts.signal,
  });
  const top = await client.getManifest(manifestReference(ref));
  const resolved = await resolvePlatform(client, top, platform);
  const image = await imageToLoad(client, ref, resolved.manifest);
  const blobs: LayerBlobs = {
    description: client.description,
    chunks: (layer) => client.blobChunks(layer.blobDigest!, layer.size),
    threadSource: (layer) => blobSource(client, layer.blobDigest!, layer.size, opts.signal),
  };
  const [loaded] = await loadImagesFrom(store, blobs, [image], {
    onProgress: opts.onProgress,
    maxConcurrentLayers,
  });
  return {
    ...loaded!,
    reference: formatReference(ref),
    manifestDigest: resolved.manifest.digest,
    ...(resolved.index === undefined ? {} : { indexDigest: resolved.index, platform: resolved.platform }),
  };
}

function parseDocument(client: RegistryClient, m: FetchedManifest, what: string): Record<string, unknown> {
  try {
    const v = JSON.parse(m.body.toString('utf8')) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    /* below */
  }
  throw new UnionctlError('REGISTRY', `${client.description}: ${what} (${m.digest}) is not a JSON object`, {
    hint: 'the registry serves something that is not an image',
  });
}

/** The image manifest for `platform`: `top` itself, or the one its index lists for the platform. */
async function resolvePlatform(
  client: RegistryClient,
  top: FetchedManifest,
  platform: Platform,
): Promise<{ manifest: FetchedManifest; index?: string; platform?: Platform }> {
  const kind = mediaKind(top.mediaType);
  if (kind === 'manifest') return { manifest: top };
  if (kind !== 'index') {
    throw new UnionctlError(
      'UNSUPPORTED',
      `${client.description}: the manifest ${top.digest} has the media type ${JSON.stringify(top.mediaType)}`,
      {
        hint: 'unionctl pulls OCI and Docker v2 (schema 2) images and indexes; schema 1 and other artifacts are not images it can store',
      },
    );
  }
  const index = parseDocument(client, top, 'the image index');
  const entries = (Array.isArray(index.manifests) ? index.manifests : []) as Descriptor[];
  const matches = entries.filter(
    (d) =>
      d.platform?.os === platform.os &&
      d.platform?.architecture === platform.architecture &&
      (platform.variant === undefined || d.platform?.variant === undefined || d.platform.variant === platform.variant),
  );
  // An exact variant first (linux/arm/v7 over linux/arm/v6 when v7 is asked for).
  const chosen = matches.find((d) => d.platform?.variant === platform.variant) ?? matches[0];
  if (chosen === undefined || typeof chosen.digest !== 'string' || !SHA256_DIGEST.test(chosen.digest)) {
    const offered = entries
      .map((d) => [d.platform?.os, d.platform?.architecture, d.platform?.variant].filter((p) => typeof p === 'string').join('/'))
      .join(', ');
    throw new UnionctlError(
      'NOT_FOUND',
      `${client.description}: the index ${top.digest} has no image for ${platformText(platform)} (it has: ${offered || 'none'})`,
      {
        hint: 'choose one of those with --platform',
      },
    );
  }
  const manifest = await client.getManifest(chosen.digest);
  if (mediaKind(manifest.mediaType) !== 'manifest')
    throw new UnionctlError(
      'UNSUPPORTED',
      `${client.description}: the index's entry ${chosen.digest} is not an image manifest (${manifest.mediaType})`,
    );
  const p = chosen.platform!;
  return {
    manifest,
    index: top.digest,
    platform: { os: String(p.os), architecture: String(p.architecture), ...(typeof p.variant === 'string' ? { variant: p.variant } : {}) },
  };
}

function platformText(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter((x) => x !== undefined).join('/');
}

/** The image as the loader takes it: config fetched and checked, layers with digests, sizes, compression and diff IDs. */
async function imageToLoad(client: RegistryClient, ref: ImageReference, m: FetchedManifest): Promise<ImageToLoad> {
  const manifest = parseDocument(client, m, 'the image manifest') as { config?: Descriptor; layers?: Descriptor[] };
  const bad = (why: string) =>
    new UnionctlError('REGISTRY', `${client.description}: the manifest ${m.digest} ${why}`, {
      hint: 'the registry serves a damaged or foreign manifest',
    });
  const config = manifest.config;
  if (typeof config !== 'object' || config === null || !Array.isArray(manifest.layers)) throw bad('lacks config or layers');
  if (typeof config.digest !== 'string' || !SHA256_DIGEST.test(config.digest)) throw bad('has no valid config digest');
  if (typeof config.mediaType !== 'string' || mediaKind(config.mediaType) !== 'config') {
    throw new UnionctlError(
      'UNSUPPORTED',
      `${client.description}: the config of ${m.digest} has the media type ${JSON.stringify(config.mediaType)}`,
      {
        hint: 'unionctl pulls container images (OCI or Docker image configs), not other OCI artifacts',
      },
    );
  }
  const configText = (await client.getBlob(config.digest, `the config ${config.digest}`)).toString('utf8');
  const diffIds = configDiffIds(configText);
  if (diffIds === undefined) throw bad(`has a config (${config.digest}) without a valid rootfs.diff_ids list`);
  if (diffIds.length !== manifest.layers.length)
    throw bad(`lists ${manifest.layers.length} layers but its config has ${diffIds.length} diff IDs`);
  const name = imageName(ref);
  const id = sha256Digest(configText);
  const label = `image ${name ?? formatReference(ref)}`;
  const layers = manifest.layers.map((d, j): LayerToLoad => {
    const mediaType = typeof d.mediaType === 'string' ? d.mediaType : '';
    const compression = layerCompressionOf(mediaType);
    if (compression === undefined) {
      throw new UnionctlError(
        'UNSUPPORTED',
        `${client.description}: layer ${j + 1} of ${label} has the media type ${JSON.stringify(d.mediaType)}`,
        {
          hint: 'layers must be tar, tar+gzip or tar+zstd (OCI or Docker media types)',
        },
      );
    }
    if (typeof d.digest !== 'string' || !SHA256_DIGEST.test(d.digest)) throw bad(`has no valid digest for layer ${j + 1}`);
    return {
      index: j + 1,
      member: `blob ${d.digest}`,
      blobDigest: d.digest,
      compression,
      mediaType,
      diffId: diffIds[j]!,
      ...(typeof d.size === 'number' && d.size >= 0 ? { size: d.size } : {}),
    };
  });
  return { id, names: name === undefined ? [] : [name], config: configText, label, layers };
}
