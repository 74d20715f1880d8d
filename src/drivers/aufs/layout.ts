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
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertValidId, UnionctlError } from '../../errors.js';

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
      mkdirSync(join(this.home, dir), { recursive: true });
      chmodSync(join(this.home, dir), MODE.top);
    }
  }

  exists(id: string): boolean {
    return lstatSync(this.layersFile(id), { throwIfNoEntry: false }) !== undefined;
  }

  /** The ancestors, nearest first, from layers/<id> (blank lines ignored, as Docker's scanner does). */
  parentIds(id: string): string[] {
    let text: string;
    try {
      text = readFileSync(this.layersFile(id), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT')
        throw new UnionctlError('NOT_FOUND', `aufs layer ${id} does not exist in ${this.home}`);
      throw e;
    }
    const ids = text.split('\n').filter((line) => line !== '');
    for (const parent of ids) {
      try {
        assertValidId(parent);
      } catch {
        throw new UnionctlError(
          'CORRUPT',
          `aufs layer ${id}: ${this.layersFile(id)} lists ${JSON.stringify(parent)}, which is not a layer id`,
        );
      }
    }
    return ids;
  }

  /** layers/<id>: one id per line, each followed by "\n" (Docker's fmt.Fprintln). */
  writeLayersFile(id: string, ancestors: string[]): void {
    writeFileSync(this.layersFile(id), ancestors.map((a) => `${a}\n`).join(''), { mode: MODE.layersFile });
  }

  /** Ids of every layer: the regular files in layers/ (Docker's loadIds, which Status counts as "Dirs"). */
  layerIds(): string[] {
    return readdirSync(join(this.home, LAYERS), { withFileTypes: true })
      .filter((e) => !e.isDirectory())
      .map((e) => e.name)
      .sort();
  }

  /**
   * Docker's atomicRemove: rename to <dir>-removing, then delete. A -removing dir left by a crash
   * whose source is gone is finished; one whose source is back is an error to look at by hand.
   */
  atomicRemove(dir: string): void {
    const target = `${dir}${REMOVING_SUFFIX}`;
    try {
      renameSync(dir, target);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' || code === 'ENOTEMPTY') {
        if (lstatSync(dir, { throwIfNoEntry: false }) !== undefined) {
          throw new UnionctlError('CORRUPT', `cannot remove ${dir}: ${target} exists too`, {
            hint: `remove ${target} by hand, then retry`,
          });
        }
      } else if (code !== 'ENOENT') throw e;
    }
    rmSync(target, { recursive: true, force: true });
  }

  /** Deletes the `-removing` dirs an interrupted removal left in diff/ and mnt/ (Docker's Init does the same). */
  removeStaleRemovals(): string[] {
    const removed: string[] = [];
    for (const top of [MNT, DIFF]) {
      const dir = join(this.home, top);
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        if (!entry.isDirectory() || !entry.name.endsWith(REMOVING_SUFFIX)) continue;
        rmSync(join(dir, entry.name), { recursive: true, force: true });
        removed.push(join(top, entry.name));
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
