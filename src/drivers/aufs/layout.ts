/**
 * Docker's aufs on-disk layout, `<home>/`:
 *
 *   diff/<id>/    the layer's files; deletions as `.wh.<name>` files, opaque dirs as `.wh..wh..opq`
 *   layers/<id>   a text file: every ancestor id, one per line, nearest first (empty for a base layer)
 *   mnt/<id>/     the mount point of the layer's union
 *
 * A layer exists when layers/<id> does (Docker's Exists). Removal renames diff/<id> and mnt/<id>
 * to `<id>-removing` before deleting them, so a crash leaves only names the next open cleans up.
 */
import { chmodSync, lstatSync, mkdirSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { assertValidId, corruptError, isValidId, UnionctlError } from '../../errors.js';
import { assertNoMountsInside, readStoreFile, removeStoreTree, storeDirExists, writeFileAtomic } from '../../sys/index.js';

export const DIFF = 'diff';
export const LAYERS = 'layers';
export const MNT = 'mnt';
export const REMOVING_SUFFIX = '-removing';

/** Docker's modes: 0710 for the home and its three dirs, 0755 for a layer's diff and mnt dirs. */
export const MODE = { home: 0o710, top: 0o710, layerDir: 0o755, layersFile: 0o644 };

export class AufsLayout {
  constructor(readonly home: string) {}

  diffRoot(): string {
    return join(this.home, DIFF);
  }

  diffDir(id: string): string {
    assertValidId(id);
    return join(this.home, DIFF, id);
  }

  layersFile(id: string): string {
    assertValidId(id);
    return join(this.home, LAYERS, id);
  }

  mntDir(id: string): string {
    assertValidId(id);
    return join(this.home, MNT, id);
  }

  /** Creates the home and diff/, layers/, mnt/ with Docker's modes. */
  init(): void {
    mkdirSync(this.home, { recursive: true });
    chmodSync(this.home, MODE.home);
    for (const dir of [DIFF, LAYERS, MNT]) {
      // chmod follows a symlink: one planted here would have its target's mode changed.
      if (!storeDirExists(join(this.home, dir), `aufs ${dir} directory`)) mkdirSync(join(this.home, dir));
      chmodSync(join(this.home, dir), MODE.top);
    }
  }

  /** The layer exists: layers/<id> does (Docker's Exists). */
  exists(id: string): boolean {
    return lstatSync(this.layersFile(id), { throwIfNoEntry: false }) !== undefined;
  }

  /**
   * Any of the layer's three entries is there (layers/<id>, diff/<id>, mnt/<id>): the id is taken,
   * by a complete layer, by the leftover of a create that was killed (which the store's recovery
   * removes), or by directories someone else made (which are never deleted).
   */
  hasAnyPart(id: string): boolean {
    return [this.layersFile(id), this.diffDir(id), this.mntDir(id)].some((p) => lstatSync(p, { throwIfNoEntry: false }) !== undefined);
  }

  /** The ancestors, nearest first, from layers/<id> (blank lines ignored, as Docker's scanner does). */
  parentIds(id: string): string[] {
    const file = this.layersFile(id);
    const text = readStoreFile(file, 'aufs layers file');
    if (text === undefined) throw new UnionctlError('NOT_FOUND', `aufs layer ${id} does not exist in ${this.home}`);
    const ids = text.split('\n').filter((line) => line !== '');
    // The ids become branch paths in the mount data: anything else (',' '=' ':' '/' '..') is damage.
    const bad = ids.find((parent): boolean => !isValidId(parent));
    if (bad !== undefined)
      throw corruptError(`aufs layers file ${file} lists ${JSON.stringify(bad.slice(0, 80))}, which is not a layer id`);
    return ids;
  }

  /** layers/<id>: one id per line, each followed by "\n" (Docker's fmt.Fprintln). */
  writeLayersFile(id: string, ancestors: string[]): void {
    writeFileAtomic(this.layersFile(id), ancestors.map((a) => `${a}\n`).join(''), { mode: MODE.layersFile });
  }

  /** Ids of every layer: the regular files in layers/ (Docker's loadIds, which Status counts as "Dirs"). */
  layerIds(): string[] {
    return readdirSync(join(this.home, LAYERS), { withFileTypes: true })
      .filter((e) => !e.isDirectory() && isValidId(e.name)) // not the temp file of a layers/<id> being written
      .map((e) => e.name)
      .sort();
  }

  /**
   * Docker's atomicRemove of `<top>/<id>`: rename to <id>-removing, then delete. A -removing dir
   * left by a crash whose source is gone is finished; one whose source is back is an error to look
   * at by hand. Nothing is deleted through a symlink or across a mount (IN_USE then, before the rename).
   */
  atomicRemove(top: typeof DIFF | typeof MNT, id: string): void {
    const dir = join(this.home, top, id);
    const target = `${dir}${REMOVING_SUFFIX}`;
    if (lstatSync(dir, { throwIfNoEntry: false })?.isDirectory()) assertNoMountsInside(dir, `aufs ${top} dir`);
    try {
      renameSync(dir, target);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' || code === 'ENOTEMPTY') {
        if (lstatSync(dir, { throwIfNoEntry: false }) !== undefined) {
          throw corruptError(`cannot remove ${dir}: ${target} exists too`, { repair: `remove ${target} by hand, then retry` });
        }
      } else if (code !== 'ENOENT') throw e;
    }
    removeStoreTree(this.home, join(top, `${id}${REMOVING_SUFFIX}`), `aufs ${top} dir`);
  }

  /**
   * Deletes the `-removing` dirs an interrupted removal left in diff/ and mnt/ (Docker's Init does
   * the same). One that cannot go (something is mounted inside it) stays for the next open.
   */
  removeStaleRemovals(): string[] {
    const removed: string[] = [];
    for (const top of [MNT, DIFF]) {
      const dir = join(this.home, top);
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        if (!entry.name.endsWith(REMOVING_SUFFIX) || !(entry.isDirectory() || entry.isSymbolicLink())) continue;
        try {
          removeStoreTree(this.home, join(top, entry.name), `aufs ${top} dir`);
          removed.push(join(top, entry.name));
        } catch (e) {
          if ((e as UnionctlError).code !== 'IN_USE') throw e;
        }
      }
    }
    return removed;
  }

  /** The layer a branch dir belongs to: `<home>/diff/<id>`, or `<id>` relative to diff/ (how the FUSE mount is given its lowers). */
  layerOfBranchDir(dir: string): string | undefined {
    const prefix = `${this.diffRoot()}/`;
    const rel = dir.startsWith(prefix) ? dir.slice(prefix.length) : dir.startsWith('/') ? undefined : dir;
    if (rel === undefined || rel === '' || rel.includes('/')) return undefined;
    try {
      assertValidId(rel);
    } catch {
      return undefined;
    }
    return rel;
  }
}
