/**
 * Docker's overlay (v1) on-disk layout, `<home>/<id>/`:
 *
 * - an image layer (a base layer, or a layer whose diff was applied onto an image layer) holds its
 *   whole tree in `root/`: a hardlink farm sharing the file inodes of its parent's `root/`;
 * - any other layer (containers, `-init` layers, an image layer whose diff is not applied yet) has
 *   `upper/`, `work/`, `merged/` (only while mounted) and `lower-id`, the id of the image layer
 *   whose `root/` is its single lowerdir. A layer on such a layer copies its `lower-id` and the
 *   content of its `upper/`.
 */
import { lstatSync } from 'node:fs';
import { join } from 'node:path';
import { assertValidId, corruptError, isValidId } from '../../errors.js';
import { readStoreFile, storeDirExists, writeFileAtomic } from '../../sys/index.js';

export const ROOT = 'root';
export const UPPER = 'upper';
export const WORK = 'work';
export const MERGED = 'merged';
export const LOWER_ID = 'lower-id';
/** Prefix of the temporary farm applyDiff builds inside the layer dir (Docker's os.MkdirTemp(dir, "tmproot")). */
export const TMP_ROOT_PREFIX = 'tmproot';

export function isDir(path: string): boolean {
  try {
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}

export class OverlayLayout {
  constructor(readonly home: string) {}

  layerDir(id: string): string {
    assertValidId(id);
    return join(this.home, id);
  }

  rootDir(id: string): string {
    return join(this.layerDir(id), ROOT);
  }

  upperDir(id: string): string {
    return join(this.layerDir(id), UPPER);
  }

  workDir(id: string): string {
    return join(this.layerDir(id), WORK);
  }

  mergedDir(id: string): string {
    return join(this.layerDir(id), MERGED);
  }

  lowerIdFile(id: string): string {
    return join(this.layerDir(id), LOWER_ID);
  }

  /** An image layer: its whole tree is in root/, nothing is mounted for it. CORRUPT when root/ is there but is not a real directory. */
  hasRoot(id: string): boolean {
    return storeDirExists(this.rootDir(id), 'overlay root dir');
  }

  /**
   * The image layer whose root/ is this layer's lowerdir (Docker writes the id without a newline).
   * The id goes into the mount data: anything but a layer id (a comma, an '=', a '/', '..') is
   * CORRUPT naming the file.
   */
  readLowerId(id: string): string {
    const file = this.lowerIdFile(id);
    const text = readStoreFile(file, 'overlay lower-id file');
    if (text === undefined) {
      throw corruptError(`overlay layer ${id} has neither root/ nor a lower-id file ${file}`, {
        repair: 'the layer was not created completely; remove it and create it again',
      });
    }
    const lower = text.trim();
    if (!isValidId(lower)) throw corruptError(`overlay lower-id file ${file} holds ${JSON.stringify(text.slice(0, 80))}, not a layer id`);
    return lower;
  }

  writeLowerId(id: string, lowerId: string): void {
    // Docker: os.WriteFile(…, 0600), no newline; atomic so a reader never sees half.
    writeFileAtomic(this.lowerIdFile(id), lowerId, { mode: 0o600 });
  }

  /** The layer whose root/ is `dir` (an absolute <home>/<id>/root), if it is one. */
  layerOfRootDir(dir: string): string | undefined {
    const prefix = `${this.home}/`;
    if (!dir.startsWith(prefix)) return undefined;
    const parts = dir.slice(prefix.length).split('/');
    return parts.length === 2 && parts[1] === ROOT ? parts[0] : undefined;
  }

  /** The layer whose upper/ is `dir`, if it is one. */
  layerOfUpperDir(dir: string): string | undefined {
    const prefix = `${this.home}/`;
    if (!dir.startsWith(prefix)) return undefined;
    const parts = dir.slice(prefix.length).split('/');
    return parts.length === 2 && parts[1] === UPPER ? parts[0] : undefined;
  }
}
