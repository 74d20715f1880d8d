/**
 * Layer blobs staged for export (save, push): each layer's tar rebuilt byte for byte from its
 * tar-split record and its files, so its sha256 is the diff ID the config names; compressed as
 * asked (gzip with zlib, deterministic for the same tar; zstd with the `zstd` program) and
 * written to a file in a temp dir, with its size and digest, since manifests and archive headers
 * need both before the blob goes out. A layer without a record (made by writing through a mount)
 * is exported deterministically instead; its new diff ID goes into a rewritten config (configFor:
 * a new image id), with a warning.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, createWriteStream, openSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { layerRelativePath, rebuildTarStream, type TarSplitRecord } from '../archive/tar-split.js';
import { WHITEOUT_OPAQUE, whiteoutPath } from '../archive/whiteout.js';
import { UnionctlError } from '../errors.js';
import type { LayerStore } from '../graph/store.js';
import type { LayerCompression } from './manifest.js';
import type { ImageRecord } from './records.js';

/** A layer blob staged in the temp dir. */
export interface LayerBlob {
  path: string;
  size: number;
  /** sha256 of the blob as written (compressed or not). */
  digest: string;
  /** sha256 of the uncompressed tar. */
  diffId: string;
}

/** Stages the blob of every layer of `images` (each once) in `tmpDir`; by layer id. */
export async function stageLayerBlobs(
  store: LayerStore,
  images: ImageRecord[],
  tmpDir: string,
  compress: LayerCompression,
  warn: (m: string) => void,
  onLayer: ((done: number, total: number) => void) | undefined,
): Promise<Map<string, LayerBlob>> {
  const layerIds = [...new Set(images.flatMap((i) => i.layers.map((l) => l.id)))];
  const blobs = new Map<string, LayerBlob>();
  for (const [i, id] of layerIds.entries()) {
    const expected = images.flatMap((im) => im.layers).find((l) => l.id === id)!.diffId;
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
): Promise<LayerBlob> {
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

/** Writes `tar` to `path`, compressed as asked, hashing the tar (its diff ID) and the blob as they go. */
export async function writeBlob(tar: Readable, path: string, compress: LayerCompression): Promise<LayerBlob> {
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

/** The config of `record` as exported: its own, or with the diff IDs of layers that had to be exported afresh. */
export function configFor(record: ImageRecord, blobs: Map<string, LayerBlob>): string {
  const diffIds = record.layers.map((l) => blobs.get(l.id)!.diffId);
  if (diffIds.every((d, i) => d === record.layers[i]!.diffId)) return record.config;
  const config = JSON.parse(record.config) as { rootfs?: { diff_ids?: string[] } };
  config.rootfs = { ...(config.rootfs ?? {}), diff_ids: diffIds };
  return JSON.stringify(config);
}
