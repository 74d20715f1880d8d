/**
 * containers/storage's metadata for a read-only image store (an `additionalimagestores` entry of
 * podman, buildah and CRI-O), built from unionctl's image and layer records. Pure: no I/O.
 *
 * What c/storage (v1.43, podman 4.3) reads from such a store, per driver prefix `overlay-`:
 *   overlay-layers/layers.json   a JSON list of layers: "id", "parent" (omitted for a base
 *                                layer), "created" (RFC 3339), "diff-digest" / "diff-size" (the
 *                                uncompressed tar's digest and length: -1 is "unknown"),
 *                                "compressed-diff-digest" / "compressed-size" (the blob as it came;
 *                                for an uncompressed blob, the same as the diff), "compression" (0:
 *                                none, omitted). Names, flags, uid/gid sets are optional.
 *   overlay-images/images.json   a JSON list of images: "id" (the config digest's hex), "digest"
 *                                (the manifest's), "names", "layer" (the top layer's id),
 *                                "big-data-names", "big-data-sizes", "big-data-digests", "created".
 *   overlay-images/<id>/<file>   the big-data items: the config under the key "sha256:<hex>" (byte
 *                                for byte: its digest is the image id), the manifest under
 *                                "manifest" and "manifest-<digest>". The file name is the key, or
 *                                "=" + base64(key) when the key holds other characters than
 *                                [.0-9a-z] (bigDataFileName: exactly c/storage's rule).
 * A name on two images makes c/storage refuse the whole read-only store (ErrDuplicateImageNames),
 * so each name is given to the first image only.
 */
import { MEDIA, sha256Digest } from '../manifest.js';
import type { ImageRecord } from '../records.js';

/** A layer as layers.json holds it (field names are c/storage's JSON keys). */
export interface StorageLayer {
  id: string;
  parent?: string;
  created: string;
  'compressed-diff-digest'?: string;
  'compressed-size'?: number;
  'diff-digest': string;
  'diff-size': number;
}

/** An image as images.json holds it. */
export interface StorageImage {
  id: string;
  digest: string;
  names?: string[];
  layer?: string;
  'big-data-names': string[];
  'big-data-sizes': Record<string, number>;
  'big-data-digests': Record<string, string>;
  created: string;
}

/** One big-data file of an image. */
export interface BigDataItem {
  key: string;
  /** The file name under overlay-images/<image id>/. */
  file: string;
  data: Buffer;
}

/** What the layer store knows of one layer of an image. */
export interface LayerFacts {
  id: string;
  parent?: string;
  /** ISO 8601. */
  created: string;
  diffId: string;
  /** Bytes of the uncompressed layer tar; -1 when unknown. */
  tarSize: number;
}

export interface StorageMetadata {
  /** Parents before children, each layer once. */
  layers: StorageLayer[];
  images: StorageImage[];
  /** Per image id (hex). */
  bigData: Map<string, BigDataItem[]>;
}

/**
 * The file name c/storage keeps the big-data item `key` under (store.go makeBigDataBaseName): the
 * key itself while every character read is one of [.0-9a-z], else "=" + base64(key). c/storage
 * stops at the first other character and encodes only when something is left after it: a key whose
 * only other character is its last one ("abC", "ab:") is taken as it is, as c/storage does.
 */
export function bigDataFileName(key: string): string {
  const bytes = Buffer.from(key, 'utf8');
  let i = 0;
  while (i < bytes.length) {
    const c = bytes[i]!;
    i += 1; // c/storage reads the character before it looks at it
    const plain = c === 0x2e || (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7a);
    if (!plain) {
      if (c >= 0x80) i += utf8Continuation(bytes, i); // a multi-byte character is read whole
      break;
    }
  }
  return i < bytes.length ? `=${bytes.toString('base64')}` : key;
}

/** How many continuation bytes (10xxxxxx) follow at `i`: the rest of a UTF-8 character. */
function utf8Continuation(bytes: Buffer, i: number): number {
  let n = 0;
  while (i + n < bytes.length && (bytes[i + n]! & 0xc0) === 0x80) n++;
  return n;
}

/**
 * The name podman gives the image: a name without a registry ("sample-app:1", "team/app:2") gets
 * "localhost/", as `podman load` of the same archive does (c/common's NormalizeName); a name whose
 * first component is a host ("docker.io/…", "localhost/…", "reg:5000/…") stays.
 */
export function storageImageName(name: string): string {
  const slash = name.indexOf('/');
  const first = slash < 0 ? '' : name.slice(0, slash);
  const isHost = first.includes('.') || first.includes(':') || first === 'localhost';
  return isHost ? name : `localhost/${name}`;
}

const hexOf = (id: string) => (id.startsWith('sha256:') ? id.slice('sha256:'.length) : id);

/**
 * A Docker schema2 manifest for the image: its config, and each layer as the uncompressed tar it
 * is in the store. A layer whose tar size is unknown (it has no tar-split record) says 0 here and
 * -1 ("unknown") in layers.json, which keeps c/image from copying it out without a fresh diff.
 */
export function synthesizeManifest(config: string, layers: readonly LayerFacts[]): string {
  return JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA.dockerManifest,
    config: { mediaType: MEDIA.dockerConfig, size: Buffer.byteLength(config), digest: sha256Digest(config) },
    layers: layers.map((l) => ({
      mediaType: MEDIA.dockerLayer,
      size: Math.max(l.tarSize, 0),
      digest: l.diffId,
    })),
  });
}

/** The image's creation time: the config's "created" when it has a valid one, else when it was loaded. */
function createdOf(rec: ImageRecord): string {
  try {
    const created = (JSON.parse(rec.config) as { created?: unknown } | null)?.created;
    if (typeof created === 'string' && !Number.isNaN(Date.parse(created))) return created;
  } catch {
    /* the config was checked when it was loaded; fall back all the same */
  }
  return rec.loaded;
}

function storageLayer(l: LayerFacts): StorageLayer {
  const known = l.tarSize >= 0;
  return {
    id: l.id,
    ...(l.parent === undefined ? {} : { parent: l.parent }),
    created: l.created,
    // The blob the synthesized manifest names is the uncompressed tar: "compressed" is the same.
    ...(known ? { 'compressed-diff-digest': l.diffId, 'compressed-size': l.tarSize } : {}),
    'diff-digest': l.diffId,
    'diff-size': l.tarSize,
  };
}

/**
 * The metadata for `images`. `facts(id)` tells about a layer of the store, undefined when the layer
 * is not complete (being created or removed): an image with such a layer is left out, and so are
 * layers no exported image uses.
 */
export function buildStorageMetadata(images: readonly ImageRecord[], facts: (id: string) => LayerFacts | undefined): StorageMetadata {
  const layers = new Map<string, StorageLayer>();
  const out: StorageImage[] = [];
  const bigData = new Map<string, BigDataItem[]>();
  const namesTaken = new Set<string>();
  for (const rec of images) {
    const chain = rec.layers.map((l) => facts(l.id));
    if (chain.some((f) => f === undefined)) continue;
    const known = chain as LayerFacts[];
    for (const f of known) if (!layers.has(f.id)) layers.set(f.id, storageLayer(f));
    const manifest = synthesizeManifest(rec.config, known);
    const manifestDigest = sha256Digest(manifest);
    const items: Array<[string, Buffer]> = [
      [sha256Digest(rec.config), Buffer.from(rec.config)],
      [`manifest-${manifestDigest}`, Buffer.from(manifest)],
      ['manifest', Buffer.from(manifest)],
    ];
    const names = rec.names.map(storageImageName).filter((n) => !namesTaken.has(n));
    for (const n of names) namesTaken.add(n);
    const id = hexOf(rec.id);
    bigData.set(
      id,
      items.map(([key, data]) => ({ key, file: bigDataFileName(key), data })),
    );
    out.push({
      id,
      digest: manifestDigest,
      ...(names.length > 0 ? { names } : {}),
      ...(known.length > 0 ? { layer: known[known.length - 1]!.id } : {}),
      'big-data-names': items.map(([key]) => key),
      'big-data-sizes': Object.fromEntries(items.map(([key, data]) => [key, data.length])),
      'big-data-digests': Object.fromEntries(items.map(([key, data]) => [key, sha256Digest(data)])),
      created: createdOf(rec),
    });
  }
  return { layers: [...layers.values()], images: out, bigData };
}
