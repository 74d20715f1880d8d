/**
 * unionctl save: images from the store into a Docker (`docker load`) or OCI image archive.
 *
 * Each layer's tar is rebuilt byte for byte from its tar-split record and its files (layer-blobs.ts),
 * so its sha256 is the diff ID the config names and the image id stays the same.
 *
 * Layer blobs are staged (and compressed) in a temp dir next to the output first, since the
 * archive's headers need their sizes and digests. The
 * archive itself is an output file (src/sys/user-file.ts): written to a temp file beside OUTPUT and
 * renamed over it when complete; OUTPUT must be missing or a regular file, its directory must exist.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { TarWriter } from '../archive/tar-writer.js';
import type { TarHeader } from '../archive/types.js';
import { UnionctlError } from '../errors.js';
import type { LayerStore } from '../graph/store.js';
import { fileError, isErrnoError, removeIfInterrupted, writeOutputFile } from '../sys/user-file.js';
import { configFor, stageLayerBlobs, type LayerBlob } from './layer-blobs.js';
import { layerMediaType, MEDIA, sha256Digest, type LayerCompression } from './manifest.js';
import { diskDocuments, normalizeName, requireImage, type ImageRecord } from './records.js';

export type SaveFormat = 'docker' | 'oci';

export interface SaveOptions {
  format?: SaveFormat;
  compress?: LayerCompression;
  /** Called for each layer written. */
  onLayer?: (done: number, total: number) => void;
  /** A layer exported without its tar-split record (default: process.emitWarning). */
  onWarning?: (message: string) => void;
}

export interface SavedImage {
  id: string;
  names: string[];
  /** Same as id unless a layer had to be re-exported (its diff ID changed). */
  savedId: string;
}

interface ImageToSave {
  record: ImageRecord;
  /** Names that go into the archive. */
  names: string[];
}

/**
 * Writes the images REFS (names or ids) as one archive to `output`: a file path (written through a
 * temp file beside it, renamed when complete: see the module doc), or a stream such as stdout,
 * which is written to and left open (the caller ends it). Layers are staged beside a file output,
 * in the store's tmp/ for a stream. Refuses USAGE (bad format, compression, no refs) and
 * NOT_FOUND (an image that does not exist) before anything is written.
 */
export async function saveImages(
  store: LayerStore,
  refs: string[],
  output: string | NodeJS.WritableStream,
  opts: SaveOptions = {},
): Promise<SavedImage[]> {
  const format = opts.format ?? 'docker';
  const compress = opts.compress ?? 'none';
  if (format !== 'docker' && format !== 'oci')
    throw new UnionctlError('USAGE', `unknown archive format ${format}`, { hint: 'use --format docker or --format oci' });
  if (!['none', 'gzip', 'zstd'].includes(compress))
    throw new UnionctlError('USAGE', `unknown compression ${compress}`, { hint: 'use --compress none, gzip or zstd' });
  if (refs.length === 0) throw new UnionctlError('USAGE', 'no image to save', { hint: 'name at least one image' });
  const images = pickImages(store, refs);
  const archive: ArchiveToWrite = { store, images, format, compress, opts };
  if (typeof output !== 'string') {
    const staging = join(store.root, 'tmp');
    mkdirSync(staging, { recursive: true, mode: 0o700 });
    return writeArchive(archive, output, { staging, end: false, what: 'the output stream' });
  }
  // PATH is checked and its temp file made before any work: a bad -o fails at once.
  // The layer blobs are staged beside the output (on the filesystem that must hold them anyway).
  return writeOutputFile(output, (file) => writeArchive(archive, file, { staging: dirname(output), end: true, what: output }));
}

interface ArchiveToWrite {
  store: LayerStore;
  images: ImageToSave[];
  format: SaveFormat;
  compress: LayerCompression;
  opts: SaveOptions;
}

/** Stages the layer blobs in a new dir under `where.staging`, then writes the archive to `sink`. */
async function writeArchive(
  archive: ArchiveToWrite,
  sink: NodeJS.WritableStream,
  where: { staging: string; end: boolean; what: string },
): Promise<SavedImage[]> {
  const { store, images, format, compress, opts } = archive;
  const warn = opts.onWarning ?? ((m: string) => process.emitWarning(`unionctl: ${m}`));
  const tmpDir = join(where.staging, `.${randomBytes(6).toString('hex')}.unionctl-save`);
  try {
    mkdirSync(tmpDir, { mode: 0o700 });
  } catch (e) {
    throw fileError(e, 'temp directory', tmpDir);
  }
  const forget = removeIfInterrupted(tmpDir);
  try {
    let blobs: Map<string, LayerBlob>;
    try {
      blobs = await stageLayerBlobs(
        store,
        images.map((i) => i.record),
        tmpDir,
        compress,
        warn,
        opts.onLayer,
      );
    } catch (e) {
      // A full disk (or any fs error) while staging the blobs: about the filesystem they are staged on.
      if (!isErrnoError(e)) throw e;
      throw fileError(e, 'output file', where.what, {
        spaceHint: `free space in ${where.staging} (the layers are staged there), then save again`,
      });
    }
    const tar = new TarWriter();
    const written = pipeline(tar.stream, sink, { end: where.end });
    try {
      const saved =
        format === 'docker' ? await writeDockerArchive(tar, images, blobs) : await writeOciArchive(tar, images, blobs, compress);
      await tar.finish();
      await written;
      return saved;
    } catch (e) {
      tar.stream.destroy();
      await written.catch(() => {});
      throw e;
    }
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
    forget();
  }
}

function pickImages(store: LayerStore, refs: string[]): ImageToSave[] {
  const byId = new Map<string, ImageToSave>();
  for (const ref of refs) {
    const record = requireImage(diskDocuments(store), ref);
    const entry = byId.get(record.id) ?? { record, names: [] };
    // Saved by name: that name. Saved by id: every name the image has.
    const name = record.names.find((n) => n === ref || n === normalizeName(ref));
    for (const n of name !== undefined ? [name] : record.names) if (!entry.names.includes(n)) entry.names.push(n);
    byId.set(record.id, entry);
  }
  return [...byId.values()];
}

// ---- archive entries -------------------------------------------------------------------------

function header(path: string, size: number, type: 'file' | 'dir' = 'file'): TarHeader {
  return {
    path,
    type,
    mode: type === 'dir' ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    size,
    mtime: { sec: 0, nsec: 0 },
    linkname: '',
    devmajor: 0,
    devminor: 0,
    xattrs: new Map(),
  };
}

async function addText(tar: TarWriter, path: string, text: string): Promise<void> {
  const data = Buffer.from(text);
  await tar.addEntry(header(path, data.length), data);
}

/** The config to write: as loaded, unless a layer's diff ID changed on re-export. */

function hexOf(digest: string): string {
  return digest.slice('sha256:'.length);
}

/** docker save layout (Docker 20.10's): <config hex>.json, <layer hex>/layer.tar, manifest.json, repositories. */
async function writeDockerArchive(tar: TarWriter, images: ImageToSave[], blobs: Map<string, LayerBlob>): Promise<SavedImage[]> {
  const written = new Set<string>();
  const manifest: Array<{ Config: string; RepoTags: string[] | null; Layers: string[] }> = [];
  const repositories: Record<string, Record<string, string>> = {};
  const saved: SavedImage[] = [];
  for (const image of images) {
    const layers: string[] = [];
    for (const l of image.record.layers) {
      const blob = blobs.get(l.id)!;
      const dir = hexOf(blob.digest);
      layers.push(`${dir}/layer.tar`);
      if (written.has(dir)) continue;
      written.add(dir);
      await tar.addEntry(header(`${dir}/`, 0, 'dir'));
      await addText(tar, `${dir}/VERSION`, '1.0');
      await tar.addFile(header(`${dir}/layer.tar`, blob.size), blob.path);
    }
    const config = configFor(image.record, blobs);
    const configId = sha256Digest(config);
    if (!written.has(configId)) {
      written.add(configId);
      await addText(tar, `${hexOf(configId)}.json`, config);
    }
    manifest.push({ Config: `${hexOf(configId)}.json`, RepoTags: image.names.length > 0 ? image.names : null, Layers: layers });
    const top = layers.at(-1)?.split('/')[0] ?? '';
    for (const name of image.names) {
      const at = name.lastIndexOf(':');
      (repositories[name.slice(0, at)] ??= {})[name.slice(at + 1)] = top;
    }
    saved.push({ id: image.record.id, names: image.names, savedId: configId });
  }
  await addText(tar, 'manifest.json', `${JSON.stringify(manifest)}\n`);
  if (Object.keys(repositories).length > 0) await addText(tar, 'repositories', `${JSON.stringify(repositories)}\n`);
  return saved;
}

/** OCI image layout: oci-layout, blobs/sha256/…, index.json naming each manifest once per name. */
async function writeOciArchive(
  tar: TarWriter,
  images: ImageToSave[],
  blobs: Map<string, LayerBlob>,
  compress: LayerCompression,
): Promise<SavedImage[]> {
  const written = new Set<string>();
  const addBlob = async (digest: string, write: () => Promise<void>) => {
    if (written.has(digest)) return;
    written.add(digest);
    await write();
  };
  await addText(tar, 'oci-layout', `${JSON.stringify({ imageLayoutVersion: '1.0.0' })}`);
  await tar.addEntry(header('blobs/', 0, 'dir'));
  await tar.addEntry(header('blobs/sha256/', 0, 'dir'));
  const index: Array<Record<string, unknown>> = [];
  const saved: SavedImage[] = [];
  for (const image of images) {
    const layers = image.record.layers.map((l) => blobs.get(l.id)!);
    for (const blob of layers)
      await addBlob(blob.digest, () => tar.addFile(header(`blobs/sha256/${hexOf(blob.digest)}`, blob.size), blob.path));
    const config = configFor(image.record, blobs);
    const configId = sha256Digest(config);
    await addBlob(configId, () => addText(tar, `blobs/sha256/${hexOf(configId)}`, config));
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: MEDIA.ociConfig, digest: configId, size: Buffer.byteLength(config) },
      layers: layers.map((b) => ({ mediaType: layerMediaType('oci', compress), digest: b.digest, size: b.size })),
    });
    const manifestId = sha256Digest(manifest);
    await addBlob(manifestId, () => addText(tar, `blobs/sha256/${hexOf(manifestId)}`, manifest));
    const descriptor = { mediaType: MEDIA.ociManifest, digest: manifestId, size: Buffer.byteLength(manifest) };
    if (image.names.length === 0) index.push(descriptor);
    for (const name of image.names) {
      index.push({ ...descriptor, annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': name } });
    }
    saved.push({ id: image.record.id, names: image.names, savedId: configId });
  }
  await addText(tar, 'index.json', `${JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: index })}\n`);
  return saved;
}
