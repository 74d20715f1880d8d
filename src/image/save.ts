/**
 * unionctl save: images from the store into a Docker (`docker load`) or OCI image archive.
 *
 * Each layer's tar is rebuilt byte for byte from its tar-split record and its files, so its sha256
 * is the diff ID the config names and the image id stays the same. A layer without a record (made
 * by writing through a mount) is exported deterministically instead; its new diff ID goes into a
 * rewritten config (a new image id), with a warning.
 *
 * Layer blobs are written (and compressed: gzip with zlib, zstd with the `zstd` program) to a temp
 * dir next to the output first, since the archive's headers need their sizes and digests. The
 * archive itself is an output file (src/sys/user-file.ts): written to a temp file beside OUTPUT and
 * renamed over it when complete; OUTPUT must be missing or a regular file, its directory must exist.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, createWriteStream, mkdirSync, openSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { layerRelativePath, rebuildTarStream, type TarSplitRecord } from '../archive/tar-split.js';
import { TarWriter } from '../archive/tar-writer.js';
import type { TarHeader } from '../archive/types.js';
import { WHITEOUT_OPAQUE, whiteoutPath } from '../archive/whiteout.js';
import { UnionctlError } from '../errors.js';
import type { LayerStore } from '../graph/store.js';
import { fileError, isErrnoError, removeIfInterrupted, writeOutputFile } from '../sys/user-file.js';
import { MEDIA, sha256Digest, type LayerCompression } from './manifest.js';
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

/** A layer blob written to the temp dir. */
interface Blob {
  path: string;
  size: number;
  /** sha256 of the blob as written (compressed or not). */
  digest: string;
  /** sha256 of the uncompressed tar. */
  diffId: string;
}

interface ImageToSave {
  record: ImageRecord;
  /** Names that go into the archive. */
  names: string[];
}

/** Writes the images REFS (names or ids) to `output`. */
export async function saveImages(store: LayerStore, refs: string[], output: string, opts: SaveOptions = {}): Promise<SavedImage[]> {
  const format = opts.format ?? 'docker';
  const compress = opts.compress ?? 'none';
  if (format !== 'docker' && format !== 'oci')
    throw new UnionctlError('USAGE', `unknown archive format ${format}`, { hint: 'use --format docker or --format oci' });
  if (!['none', 'gzip', 'zstd'].includes(compress))
    throw new UnionctlError('USAGE', `unknown compression ${compress}`, { hint: 'use --compress none, gzip or zstd' });
  if (refs.length === 0) throw new UnionctlError('USAGE', 'no image to save', { hint: 'name at least one image' });
  const images = pickImages(store, refs);

  const warn = opts.onWarning ?? ((m: string) => process.emitWarning(`unionctl: ${m}`));
  // PATH is checked and its temp file made before any work: a bad -o fails at once.
  return writeOutputFile(output, async (file) => {
    // The layer blobs are staged beside the output (on the filesystem that must hold them anyway).
    const tmpDir = join(dirname(output), `.${randomBytes(6).toString('hex')}.unionctl-save`);
    try {
      mkdirSync(tmpDir, { mode: 0o700 });
    } catch (e) {
      throw fileError(e, 'temp directory', tmpDir);
    }
    const forget = removeIfInterrupted(tmpDir);
    try {
      let blobs: Map<string, Blob>;
      try {
        blobs = await writeLayerBlobs(store, images, tmpDir, compress, warn, opts.onLayer);
      } catch (e) {
        // A full disk (or any fs error) while staging the blobs beside the output: about the output's filesystem.
        if (!isErrnoError(e)) throw e;
        throw fileError(e, 'output file', output, {
          spaceHint: `free space in ${dirname(output)} (the layers are staged there), then save again`,
        });
      }
      const tar = new TarWriter();
      const written = pipeline(tar.stream, file);
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
  });
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

// ---- layer blobs -----------------------------------------------------------------------------

async function writeLayerBlobs(
  store: LayerStore,
  images: ImageToSave[],
  tmpDir: string,
  compress: LayerCompression,
  warn: (m: string) => void,
  onLayer: SaveOptions['onLayer'],
): Promise<Map<string, Blob>> {
  const layerIds = [...new Set(images.flatMap((i) => i.record.layers.map((l) => l.id)))];
  const blobs = new Map<string, Blob>();
  for (const [i, id] of layerIds.entries()) {
    const expected = images.flatMap((im) => im.record.layers).find((l) => l.id === id)!.diffId;
    blobs.set(id, await writeLayerBlob(store, id, expected, join(tmpDir, `layer-${i}`), compress, warn));
    onLayer?.(i + 1, layerIds.length);
  }
  return blobs;
}

async function writeLayerBlob(
  store: LayerStore,
  id: string,
  diffId: string,
  path: string,
  compress: LayerCompression,
  warn: (m: string) => void,
): Promise<Blob> {
  const record = await store.tarSplit(id);
  if (record === undefined) {
    warn(`layer ${id} has no tar-split record (it was not imported from a tar): exported afresh, so its diff ID and the image id change`);
    return writeBlob(await store.diff(id), path, compress);
  }
  let why: string | undefined;
  try {
    const blob = await store.withLayerFiles(id, (dir) => writeBlob(Readable.from(rebuildTarStream(record, dir)), path, compress));
    if (blob.diffId !== diffId) why = `the rebuilt tar has sha256 ${blob.diffId}, not its diff ID ${diffId}`;
    else why = await fileNotInTar(store, id, record);
    if (why === undefined) return blob;
  } catch (e) {
    if (!(e instanceof UnionctlError) || e.code !== 'CORRUPT') throw e;
    why = e.message;
  }
  // Files of the layer were changed after it was loaded (written through a mount of it).
  warn(`layer ${id} changed since it was loaded (${why}): exported afresh, so its diff ID and the image id change`);
  return writeBlob(await store.diff(id), path, compress);
}

/** A Transform that hashes what passes through. */
function hasher(): { stream: Transform; hex: () => string; bytes: () => number } {
  const hash = createHash('sha256');
  let bytes = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      cb(null, chunk);
    },
  });
  let hex: string | undefined;
  return { stream, hex: () => (hex ??= hash.digest('hex')), bytes: () => bytes };
}

async function writeBlob(tar: Readable, path: string, compress: LayerCompression): Promise<Blob> {
  const plain = hasher();
  if (compress === 'none') {
    await pipeline(tar, plain.stream, createWriteStream(path));
    return { path, size: plain.bytes(), digest: `sha256:${plain.hex()}`, diffId: `sha256:${plain.hex()}` };
  }
  if (compress === 'gzip') {
    const packed = hasher();
    await pipeline(tar, plain.stream, createGzip(), packed.stream, createWriteStream(path));
    return { path, size: packed.bytes(), digest: `sha256:${packed.hex()}`, diffId: `sha256:${plain.hex()}` };
  }
  await zstdToFile(tar.pipe(plain.stream), path);
  return { path, size: statSync(path).size, digest: await sha256OfFile(path), diffId: `sha256:${plain.hex()}` };
}

/** Compresses with the `zstd` program (fzstd, our zstd library, only decompresses). */
async function zstdToFile(input: Readable, path: string): Promise<void> {
  const fd = openSync(path, 'w', 0o644);
  try {
    const child = spawn('zstd', ['-q', '-c', '-3', '-T0'], { stdio: ['pipe', fd, 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((resolveExit, reject) => {
      child.on('error', (e) =>
        reject(
          new UnionctlError('UNSUPPORTED', `cannot run zstd: ${e.message}`, { hint: 'install zstd (apt-get install zstd)', cause: e }),
        ),
      );
      child.on('close', (code) =>
        code === 0 ? resolveExit() : reject(new UnionctlError('SYSCALL', `zstd exited with code ${code}: ${stderr.trim()}`)),
      );
    });
    await Promise.all([pipeline(input, child.stdin!), exited]);
  } finally {
    closeSync(fd);
  }
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

/**
 * A file in the layer that its tar does not name (added by writing through a mount after the
 * load), or undefined. The rebuild reads only the files the tar named, so it cannot see one.
 *
 * This looks at the layer's own directory, which only drivers with an overlay-style upper dir
 * (overlay2's diff/: exactly what the apply wrote) have; a full-copy driver (vfs) cannot tell an
 * added file from an inherited one, and is not checked. Comparing the merged views instead
 * (store.changes) is no good: overlayfs shows the 0/0 whiteouts a layer keeps inside a dir it made
 * opaque when that layer is the top of a read-only mount, so its child would seem to delete them.
 */
async function fileNotInTar(store: LayerStore, id: string, record: TarSplitRecord): Promise<string | undefined> {
  if (store.driver.capabilities().whiteoutFormat !== 'overlay') return undefined;
  const upper = (await store.driver.metadata(id)).UpperDir;
  if (upper === undefined) return undefined;
  const named = new Set<string>();
  const implied = new Set<string>(); // parent dirs a tar may leave out
  for (const item of record.items) {
    if (item.kind === 'raw') continue;
    const path = layerRelativePath(item.name);
    named.add(path);
    for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) implied.add(path.slice(0, i));
  }
  const rootOpaque = named.has(WHITEOUT_OPAQUE);
  const stack = [''];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const entry of readdirSync(dir === '' ? upper : join(upper, dir), { withFileTypes: true })) {
      const path = dir === '' ? entry.name : `${dir}/${entry.name}`;
      if (entry.isDirectory()) stack.push(path);
      if (named.has(path) || implied.has(path)) continue;
      // A whiteout: the tar said ".wh.<name>" (or made the root opaque: apply then whites out the lower top-level names).
      if (entry.isCharacterDevice() && (named.has(whiteoutPath(path)) || (rootOpaque && dir === ''))) continue;
      return `/${path} was added`;
    }
  }
  return undefined;
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
function configFor(record: ImageRecord, blobs: Map<string, Blob>): string {
  const diffIds = record.layers.map((l) => blobs.get(l.id)!.diffId);
  if (diffIds.every((d, i) => d === record.layers[i]!.diffId)) return record.config;
  const config = JSON.parse(record.config) as { rootfs?: { diff_ids?: string[] } };
  config.rootfs = { ...(config.rootfs ?? {}), diff_ids: diffIds };
  return JSON.stringify(config);
}

function hexOf(digest: string): string {
  return digest.slice('sha256:'.length);
}

/** docker save layout (Docker 20.10's): <config hex>.json, <layer hex>/layer.tar, manifest.json, repositories. */
async function writeDockerArchive(tar: TarWriter, images: ImageToSave[], blobs: Map<string, Blob>): Promise<SavedImage[]> {
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

const LAYER_MEDIA: Record<LayerCompression, string> = { none: MEDIA.ociLayer, gzip: MEDIA.ociLayerGzip, zstd: MEDIA.ociLayerZstd };

/** OCI image layout: oci-layout, blobs/sha256/…, index.json naming each manifest once per name. */
async function writeOciArchive(
  tar: TarWriter,
  images: ImageToSave[],
  blobs: Map<string, Blob>,
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
      layers: layers.map((b) => ({ mediaType: LAYER_MEDIA[compress], digest: b.digest, size: b.size })),
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
