/**
 * Reading what an image archive says it holds: Docker's `manifest.json` (docker save) or an OCI
 * layout's `index.json` → manifests → config and layer descriptors. Everything is checked here,
 * before the store changes: JSON that parses, known media types, blobs that exist and configs whose
 * digest matches, as many diff IDs as layers. Layer contents are checked while they are applied.
 */
import { createHash } from 'node:crypto';
import { UnionctlError } from '../errors.js';
import type { ArchiveFiles } from './archive.js';
import { normalizeName } from './records.js';

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

export type LayerCompression = 'none' | 'gzip' | 'zstd';

/** Layer media types we can apply, and what compression each promises. */
const LAYER_TYPES: Readonly<Record<string, LayerCompression>> = {
  [MEDIA.ociLayer]: 'none',
  [MEDIA.ociLayerGzip]: 'gzip',
  [MEDIA.ociLayerZstd]: 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  [MEDIA.dockerLayerGzip]: 'gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
  [MEDIA.dockerLayer]: 'none',
};

/**
 * The media type a layer of `compression` has in a manifest of `format` (what save and push
 * write); undefined where the format has none (Docker schema 2 knows no zstd).
 */
export function layerMediaType(format: 'docker' | 'oci', compression: LayerCompression): string | undefined {
  return LAYER_MEDIA_TYPES[format]?.[compression];
}

const LAYER_MEDIA_TYPES: Readonly<Record<string, Partial<Record<string, string>>>> = {
  oci: { none: MEDIA.ociLayer, gzip: MEDIA.ociLayerGzip, zstd: MEDIA.ociLayerZstd },
  docker: { none: MEDIA.dockerLayer, gzip: MEDIA.dockerLayerGzip },
};
const CONFIG_TYPES = new Set<string>([MEDIA.ociConfig, MEDIA.dockerConfig]);
const MANIFEST_TYPES = new Set<string>([MEDIA.ociManifest, MEDIA.dockerManifest]);
const INDEX_TYPES = new Set<string>([MEDIA.ociIndex, MEDIA.dockerManifestList]);

/** The compression a layer media type promises; undefined for a type that is not a layer we can apply. */
export function layerCompressionOf(mediaType: string): LayerCompression | undefined {
  return Object.hasOwn(LAYER_TYPES, mediaType) ? LAYER_TYPES[mediaType] : undefined;
}

/** Which kind of document a media type names: an image manifest, an index (manifest list), an image config. */
export function mediaKind(mediaType: string): 'manifest' | 'index' | 'config' | undefined {
  if (MANIFEST_TYPES.has(mediaType)) return 'manifest';
  if (INDEX_TYPES.has(mediaType)) return 'index';
  if (CONFIG_TYPES.has(mediaType)) return 'config';
  return undefined;
}

/** The rootfs.diff_ids of an image config's text; undefined when it is not JSON or has no valid list. */
export function configDiffIds(text: string): string[] | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  return diffIdsIn(parsed);
}

/** The rootfs.diff_ids of a parsed image config, if it is an object with a list of sha256 digests. */
export function diffIdsIn(parsed: unknown): string[] | undefined {
  const diffIds = (parsed as ImageConfigShape | null)?.rootfs?.diff_ids;
  if (typeof parsed !== 'object' || parsed === null || !Array.isArray(diffIds)) return undefined;
  return diffIds.every((d) => typeof d === 'string' && SHA256_DIGEST.test(d)) ? (diffIds as string[]) : undefined;
}

/** An OS, architecture and (for arm) variant, as image indexes name platforms. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** This host's platform in the OCI names (Node's x64 is amd64, ia32 is 386, …). */
export function hostPlatform(): Platform {
  const names: Record<string, string> = { x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x' };
  const arch = names[process.arch] ?? process.arch;
  return { os: 'linux', architecture: arch, ...(arch === 'arm' ? { variant: 'v7' } : {}) };
}

/** One layer of an image as the archive describes it. */
export interface LayerToLoad {
  /** 1-based, bottom first: "layer 2 of 4" in messages. */
  index: number;
  /** The archive member holding the blob ("blob sha256:…" for a registry's). */
  member: string;
  /** "sha256:…" of the blob (OCI only; docker save has none). */
  blobDigest?: string;
  /** The blob's size in bytes, when a descriptor gives it (a registry download knows then where it ends). */
  size?: number;
  /** Compression the media type promises; undefined for docker save, where the content is sniffed. */
  compression?: LayerCompression;
  mediaType?: string;
  /** From the config's rootfs.diff_ids. */
  diffId: string;
}

export interface ImageToLoad {
  /** "sha256:<hex>" of the config: the image id. */
  id: string;
  names: string[];
  /** The config JSON exactly as it is in the archive. */
  config: string;
  layers: LayerToLoad[];
  /** "image sample-app:1" or "image sha256:1cac91af1a92", for messages. */
  label: string;
}

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export const SHA256_DIGEST = /^sha256:[0-9a-f]{64}$/;

function bad(archive: ArchiveFiles, what: string, hint = 'the archive is damaged or was not written by an image tool'): UnionctlError {
  return new UnionctlError('CORRUPT', `${archive.description}: ${what}`, { hint });
}

/**
 * What is wrong with the JSON, without any of its text: JSON.parse's message quotes a piece of it
 * ("Unexpected token 'r', "root:x:0:0:…" is not valid JSON"), and messages name files, they do not
 * print them.
 */
function jsonError(e: unknown): string {
  const message = (e as Error).message;
  if (/end of JSON input/i.test(message)) return 'it ends in the middle of a value';
  const position = /at position (\d+)/.exec(message)?.[1];
  return position === undefined ? 'a syntax error' : `a syntax error at character ${position}`;
}

/** A value from the archive's JSON, for a message: as JSON, cut to a length that fits a line. */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function parseJson(archive: ArchiveFiles, member: string, what: string): unknown {
  const text = archive.read(member).toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw bad(archive, `${what} (${member}) is not valid JSON: ${jsonError(e)}`);
  }
}

/** "image sample-app:1", or "image sha256:1cac91af1a92" for an image without names: what messages call an image. */
export function labelOf(names: string[], id: string): string {
  return names.length > 0 ? `image ${names[0]}` : `image ${id.slice(0, 'sha256:'.length + 12)}`;
}

interface ImageConfigShape {
  rootfs?: { type?: string; diff_ids?: unknown };
}

/** The config text (must parse as a JSON object with rootfs.diff_ids) and its diff IDs. */
function readConfig(archive: ArchiveFiles, member: string, label: string): { text: string; diffIds: string[] } {
  const text = archive.read(member).toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw bad(archive, `the config of ${label} (${member}) is not valid JSON: ${jsonError(e)}`);
  }
  const diffIds = diffIdsIn(parsed);
  if (diffIds === undefined) throw bad(archive, `the config of ${label} (${member}) has no valid rootfs.diff_ids list`);
  return { text, diffIds };
}

// ---- docker save -----------------------------------------------------------------------------

interface DockerManifestEntry {
  Config?: unknown;
  RepoTags?: unknown;
  Layers?: unknown;
}

function readDockerImages(archive: ArchiveFiles): ImageToLoad[] {
  const manifest = parseJson(archive, 'manifest.json', 'the manifest');
  if (!Array.isArray(manifest)) throw bad(archive, 'manifest.json is not a list of images');
  return manifest.map((raw: DockerManifestEntry, i) => {
    if (
      typeof raw !== 'object' ||
      raw === null ||
      typeof raw.Config !== 'string' ||
      !Array.isArray(raw.Layers) ||
      !raw.Layers.every((l) => typeof l === 'string')
    ) {
      throw bad(archive, `entry ${i + 1} of manifest.json lacks Config or Layers`);
    }
    const names = Array.isArray(raw.RepoTags) ? raw.RepoTags.filter((t): t is string => typeof t === 'string').map(normalizeName) : [];
    const configMember = raw.Config;
    const label0 = names.length > 0 ? `image ${names[0]}` : `image ${i + 1} of manifest.json`;
    if (!archive.has(configMember))
      throw bad(archive, `manifest.json names the config ${shown(configMember)} of ${label0}, which is not in the archive`);
    const config = readConfig(archive, configMember, label0);
    const id = sha256Digest(config.text);
    const label = labelOf(names, id);
    const layers = raw.Layers as string[];
    if (layers.length !== config.diffIds.length) {
      throw bad(archive, `${label} lists ${layers.length} layers but its config has ${config.diffIds.length} diff IDs`);
    }
    return {
      id,
      names,
      config: config.text,
      label,
      layers: layers.map((member, j) => {
        if (!archive.has(member))
          throw bad(archive, `manifest.json names ${shown(member)} (layer ${j + 1} of ${label}), which is not in the archive`);
        return { index: j + 1, member, diffId: config.diffIds[j]! }; // as many diff IDs as layers: checked above
      }),
    };
  });
}

// ---- OCI layout ------------------------------------------------------------------------------

/** A content descriptor of an index or manifest, as parsed: every field still to be checked. */
export interface Descriptor {
  mediaType?: unknown;
  digest?: unknown;
  size?: unknown;
  annotations?: Record<string, unknown>;
  platform?: { os?: unknown; architecture?: unknown; variant?: unknown };
}

function blobMember(archive: ArchiveFiles, d: Descriptor, what: string): { member: string; digest: string } {
  if (typeof d.digest !== 'string' || !SHA256_DIGEST.test(d.digest))
    throw bad(archive, `${what} has a missing or unsupported digest ${shown(d.digest)}`);
  const member = `blobs/sha256/${d.digest.slice('sha256:'.length)}`;
  if (!archive.has(member)) throw bad(archive, `${what} names blob ${d.digest}, which is not in the archive`);
  if (typeof d.size === 'number' && archive.size(member) !== d.size) {
    throw bad(archive, `${what}: blob ${d.digest} is ${archive.size(member)} bytes, the descriptor says ${d.size}`);
  }
  return { member, digest: d.digest };
}

/** A small blob (manifest, index, config), checked against its digest. */
function readVerifiedBlob(archive: ArchiveFiles, d: Descriptor, what: string): { member: string; text: string } {
  const { member, digest } = blobMember(archive, d, what);
  const data = archive.read(member);
  const actual = sha256Digest(data);
  if (actual !== digest) throw bad(archive, `${what}: blob ${digest} has the digest ${actual}`);
  return { member, text: data.toString('utf8') };
}

function nameFromAnnotations(d: Descriptor): string | undefined {
  const a = d.annotations ?? {};
  const full = a['io.containerd.image.name'];
  if (typeof full === 'string' && full !== '') return normalizeName(full);
  const ref = a['org.opencontainers.image.ref.name'];
  if (typeof ref === 'string' && ref !== '') return normalizeName(ref);
  return undefined;
}

/** The manifests an index descriptor leads to: itself, or (nested index) the one for this platform. */
function manifestsOf(archive: ArchiveFiles, d: Descriptor, what: string, depth = 0): Descriptor[] {
  if (typeof d.mediaType === 'string' && MANIFEST_TYPES.has(d.mediaType)) return [d];
  if (typeof d.mediaType !== 'string' || !INDEX_TYPES.has(d.mediaType)) {
    throw new UnionctlError('UNSUPPORTED', `${archive.description}: ${what} has the unknown media type ${shown(d.mediaType)}`, {
      hint: 'unionctl loads OCI and Docker v2 image manifests and indexes',
    });
  }
  if (depth > 4) throw bad(archive, `${what}: image indexes nested too deep`);
  let index: { manifests?: Descriptor[] } | null;
  try {
    index = JSON.parse(readVerifiedBlob(archive, d, what).text) as typeof index;
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    throw bad(archive, `${what}: the image index is not valid JSON: ${jsonError(e)}`);
  }
  const children = (Array.isArray(index?.manifests) ? index.manifests : []).filter(
    (c: unknown): c is Descriptor => typeof c === 'object' && c !== null,
  );
  const arch = hostPlatform().architecture;
  const forUs = children.filter((c) => (c.platform?.os ?? 'linux') === 'linux' && (c.platform?.architecture ?? arch) === arch);
  const chosen = forUs.length > 0 ? forUs.slice(0, 1) : children.slice(0, 1);
  return chosen.flatMap((c) =>
    manifestsOf(
      archive,
      { ...c, annotations: { ...(d.annotations ?? {}), ...(c.annotations ?? {}) } },
      `${what} → ${shown(c.digest)}`,
      depth + 1,
    ),
  );
}

function readOciImages(archive: ArchiveFiles): ImageToLoad[] {
  const layout = parseJson(archive, 'oci-layout', 'oci-layout') as { imageLayoutVersion?: unknown };
  if (typeof layout?.imageLayoutVersion !== 'string') throw bad(archive, 'oci-layout has no imageLayoutVersion');
  const index = parseJson(archive, 'index.json', 'index.json') as { manifests?: unknown };
  if (!Array.isArray(index?.manifests)) throw bad(archive, 'index.json has no manifests list');
  // One image per manifest digest; several index entries (tags) may name the same one.
  const byDigest = new Map<string, ImageToLoad>();
  for (const [i, top] of (index.manifests as Descriptor[]).entries()) {
    const name = nameFromAnnotations(top);
    for (const d of manifestsOf(archive, top, `index.json entry ${i + 1}${name ? ` (${name})` : ''}`)) {
      const known = byDigest.get(String(d.digest));
      if (known !== undefined) {
        if (name !== undefined && !known.names.includes(name)) known.names.push(name);
        continue;
      }
      byDigest.set(String(d.digest), readOciManifest(archive, d, name));
    }
  }
  return [...byDigest.values()];
}

function readOciManifest(archive: ArchiveFiles, d: Descriptor, name: string | undefined): ImageToLoad {
  const what0 = `the manifest ${shown(d.digest)}${name ? ` of ${name}` : ''}`;
  const manifestText = readVerifiedBlob(archive, d, what0).text;
  let manifest: { config?: Descriptor; layers?: Descriptor[] } | null;
  try {
    manifest = JSON.parse(manifestText) as typeof manifest;
  } catch (e) {
    throw bad(archive, `${what0} is not valid JSON: ${jsonError(e)}`);
  }
  if (
    typeof manifest !== 'object' ||
    manifest === null ||
    typeof manifest.config !== 'object' ||
    manifest.config === null ||
    !Array.isArray(manifest.layers) ||
    !manifest.layers.every((l: unknown) => typeof l === 'object' && l !== null)
  )
    throw bad(archive, `${what0} lacks config or layers`);
  const names = name === undefined ? [] : [name];
  const label0 = name !== undefined ? `image ${name}` : `image with manifest ${String(d.digest).slice(0, 19)}`;
  if (typeof manifest.config.mediaType !== 'string' || !CONFIG_TYPES.has(manifest.config.mediaType)) {
    throw new UnionctlError(
      'UNSUPPORTED',
      `${archive.description}: the config of ${label0} has the unknown media type ${shown(manifest.config.mediaType)}`,
      {
        hint: 'unionctl loads container images (OCI or Docker image configs), not other OCI artifacts',
      },
    );
  }
  const configBlob = readVerifiedBlob(archive, manifest.config, `the config of ${label0}`);
  const config = readConfig(archive, configBlob.member, label0);
  const id = sha256Digest(config.text);
  const label = labelOf(names, id);
  if (manifest.layers.length !== config.diffIds.length) {
    throw bad(archive, `${label} has ${manifest.layers.length} layers but its config has ${config.diffIds.length} diff IDs`);
  }
  const layers = manifest.layers.map((ld, j): LayerToLoad => {
    const what = `layer ${j + 1} of ${label}`;
    const mediaType = typeof ld.mediaType === 'string' ? ld.mediaType : '';
    const compression = LAYER_TYPES[mediaType];
    if (compression === undefined) {
      throw new UnionctlError(
        'UNSUPPORTED',
        `${archive.description}: ${what} (${shown(ld.digest)}) has the unknown media type ${shown(ld.mediaType)}`,
        {
          hint: 'layers must be tar, tar+gzip or tar+zstd (OCI or Docker media types)',
        },
      );
    }
    const blob = blobMember(archive, ld, what);
    // As many diff IDs as layers: checked above.
    return { index: j + 1, member: blob.member, blobDigest: blob.digest, compression, mediaType, diffId: config.diffIds[j]! };
  });
  return { id, names, config: config.text, label, layers };
}

// ---- either ----------------------------------------------------------------------------------

/** The images in the archive, fully checked except for layer contents. */
export function readImages(archive: ArchiveFiles): ImageToLoad[] {
  if (archive.has('oci-layout') && archive.has('index.json')) return readOciImages(archive);
  if (archive.has('manifest.json')) return readDockerImages(archive);
  throw new UnionctlError(
    'USAGE',
    `${archive.description} is not an image archive: it has neither manifest.json (docker save) nor oci-layout and index.json (OCI)`,
    {
      hint: 'for a single layer tarball use unionctl import',
    },
  );
}
