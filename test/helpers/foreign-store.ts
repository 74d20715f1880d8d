/**
 * A tiny containers/storage graphroot (vfs driver) written by hand, for tests that need a store
 * `unionctl adopt podman` reads without starting podman: one image of one layer holding one
 * file. The files are those c/storage 1.43 (podman 4.3) writes, field for field (see
 * src/image/containers-storage/format.ts): vfs-layers/layers.json and the layer's tar-split
 * (vbatts/tar-split JSON lines, gzip'd), vfs/dir/<layer>/, vfs-images/images.json and the config
 * as the image's big-data item "sha256:<id>".
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

export interface TinyStore {
  /** The graphroot. */
  root: string;
  /** "localhost/tiny:1" */
  name: string;
  /** sha256 of the config: the image id. */
  imageId: string;
  /** sha256 of the layer tar. */
  diffId: string;
}

const sha256 = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Writes the store at `root` (made), using `work` for the layer tar. */
export function writeTinyStorageStore(root: string, work: string): TinyStore {
  const content = 'adopted\n';
  const src = join(work, 'tiny-src');
  mkdirSync(src, { recursive: true });
  writeFileSync(join(src, 'note.txt'), content);
  const tarFile = join(work, 'tiny.tar');
  execFileSync('tar', ['--format=ustar', '--numeric-owner', '-C', src, '-cf', tarFile, 'note.txt']);
  const tar = readFileSync(tarFile);
  // One regular file: the raw bytes up to its content (its header), the content (by name), the rest (padding, end blocks).
  const start = findContent(tar, content);
  const lines = [
    { type: 2, payload: tar.subarray(0, start).toString('base64'), position: 0 },
    { type: 1, name: 'note.txt', size: content.length, payload: null, position: 1 },
    { type: 2, payload: tar.subarray(start + content.length).toString('base64'), position: 2 },
  ];
  const layer = createHash('sha256').update('tiny layer').digest('hex');
  const diffId = sha256(tar);
  mkdirSync(join(root, 'vfs-layers'), { recursive: true });
  writeFileSync(join(root, 'vfs-layers', `${layer}.tar-split.gz`), gzipSync(lines.map((l) => `${JSON.stringify(l)}\n`).join('')));
  const created = '2026-01-01T00:00:00Z';
  const layerRecord = {
    id: layer,
    created,
    'compressed-diff-digest': diffId,
    'compressed-size': tar.length,
    'diff-digest': diffId,
    'diff-size': tar.length,
  };
  writeFileSync(join(root, 'vfs-layers', 'layers.json'), JSON.stringify([layerRecord]));
  mkdirSync(join(root, 'vfs', 'dir', layer), { recursive: true });
  writeFileSync(join(root, 'vfs', 'dir', layer, 'note.txt'), content);

  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: [diffId] },
    history: [{ created }],
  });
  const imageId = sha256(config);
  const hex = imageId.slice('sha256:'.length);
  const key = `sha256:${hex}`;
  mkdirSync(join(root, 'vfs-images', hex), { recursive: true });
  writeFileSync(join(root, 'vfs-images', hex, `=${Buffer.from(key).toString('base64')}`), config);
  const image = {
    id: hex,
    digest: imageId,
    names: ['localhost/tiny:1'],
    layer,
    'big-data-names': [key],
    'big-data-sizes': { [key]: config.length },
    'big-data-digests': { [key]: imageId },
    created,
  };
  writeFileSync(join(root, 'vfs-images', 'images.json'), JSON.stringify([image]));
  for (const lock of ['storage.lock', 'vfs-layers/layers.lock', 'vfs-images/images.lock']) writeFileSync(join(root, lock), '');
  return { root, name: 'localhost/tiny:1', imageId, diffId };
}

/** Where `content` starts in the tar: after the last header block before it (the content is the only non-header data). */
function findContent(tar: Buffer, content: string): number {
  const at = tar.indexOf(content);
  if (at < 0 || at % 512 !== 0) throw new Error('tiny store: the file content is not where a tar puts it');
  return at;
}
