/**
 * vfs: the simplest driver and the reference for the others. Docker's layout, `<home>/dir/<id>/`
 * holding the layer's whole tree: a new layer starts as a copy of its parent (reflinked where the
 * filesystem can, so it costs no data blocks), and a layer tar is applied with real deletions.
 * Nothing is ever mounted: every layer is its own merged view. References (get/put, in use) are
 * the shared mount lifecycle's, as for every driver; diffs are the shared naive ones.
 *
 * Writable layers: vfs dirs are plain directories, so "writable" only tells branches() what to
 * report; it is kept as an empty marker file <home>/rw/<id> (Docker's vfs has no such file and
 * ignores it).
 */
import { chmodSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { copyTree } from '../../archive/copytree.js';
import { assertValidId, UnionctlError } from '../../errors.js';
import type { Branch, CreateOpts, DriverCapabilities, DriverInit, MountSpec, RemoveOpts } from '../../graph/driver.js';
import { layerIdsIn } from '../../graph/check.js';
import { GraphDriver } from '../../graph/graph-driver.js';
import type { LayerView } from '../../graph/mounts.js';
import { parseStorageOpts } from '../../graph/registry.js';
import {
  assertDirsInside,
  backingFs,
  ensureStoreDir,
  reflinkSupported,
  removeStoreTree,
  storeDirExists,
  writeEmptyMark,
} from '../../sys/index.js';

/** Driver-wide options vfs understands: none (Docker's vfs.size needs quota support we do not offer). */
export const VFS_OPTION_KEYS: string[] = [];
/** Per-layer options createReadWrite understands: none, for the same reason. */
const VFS_LAYER_OPTION_KEYS: string[] = [];

/**
 * Docker's vfs modes (≥ 20.10.9, the CVE-2021-41091 fix): home and dir/ 0710, set again on every
 * open (an older store's 0755 home let any user reach, and run, a layer's setuid binaries).
 */
const MODE = { home: 0o710, layers: 0o710, marks: 0o700, layer: 0o755 };

export class VfsDriver extends GraphDriver {
  private readonly layersDir: string;
  private readonly writableMarks: string;
  private readonly copyMode: 'reflink' | 'copy';

  constructor(init: DriverInit) {
    parseStorageOpts(init.options, VFS_OPTION_KEYS, 'vfs driver');
    // Nothing is mounted: a layer's "mount point" is its own directory, which is never a mount.
    super('vfs', init, { mountPointMode: 0o755, removeMountPoint: false });
    this.layersDir = join(init.home, 'dir');
    this.writableMarks = join(init.home, 'rw');
    mkdirSync(init.home, { recursive: true, mode: MODE.home });
    chmodSync(init.home, MODE.home);
    ensureStoreDir(this.layersDir, MODE.layers, 'vfs layer directory');
    chmodSync(this.layersDir, MODE.layers);
    ensureStoreDir(this.writableMarks, MODE.marks, 'vfs writable-marks directory');
    this.copyMode = reflinkSupported(this.layersDir) ? 'reflink' : 'copy';
  }

  capabilities(): DriverCapabilities {
    // Every layer is a full tree: a chain of any depth is one directory, so there is no limit.
    // (A finite number, because JSON has no Infinity.)
    return { whiteoutFormat: 'plain', nativeDiff: false, maxDepth: Number.MAX_SAFE_INTEGER };
  }

  /** <home>/dir/<id>: the layer's files. */
  layerDir(id: string): string {
    assertValidId(id);
    return join(this.layersDir, id);
  }

  // ---- create / remove -----------------------------------------------------------------------

  async create(id: string, parent?: string, opts: CreateOpts = {}): Promise<void> {
    if (opts.storageOpt !== undefined && Object.keys(opts.storageOpt).length > 0) {
      throw new UnionctlError(
        'BAD_OPTION',
        `vfs: per-layer storage options are only accepted for writable layers (got ${Object.keys(opts.storageOpt).join(', ')})`,
        {
          hint: 'drop the option, or create a writable layer',
        },
      );
    }
    await this.makeLayer(id, parent);
  }

  async createReadWrite(id: string, parent?: string, opts: CreateOpts = {}): Promise<void> {
    parseStorageOpts(opts.storageOpt, VFS_LAYER_OPTION_KEYS, 'vfs layer');
    await this.makeLayer(id, parent);
    writeEmptyMark(join(this.writableMarks, id)); // never written through a symlink; no temp file to leave
  }

  /** A copy of the parent's tree, or an empty 0755 directory for a base layer. */
  private async makeLayer(id: string, parent: string | undefined): Promise<void> {
    const dir = this.layerDir(id);
    if (this.existsSync(id)) throw new UnionctlError('EXISTS', `vfs layer ${id} already exists`, { hint: 'choose another id' });
    if (parent === undefined) {
      mkdirSync(dir, { mode: MODE.layer });
      return;
    }
    if (!this.existsSync(parent)) {
      throw new UnionctlError('NOT_FOUND', `parent layer ${parent} does not exist in ${this.layersDir}`, {
        hint: 'create or import the parent first',
      });
    }
    this.assertInside(parent);
    try {
      await copyTree(this.layerDir(parent), dir, { mode: this.copyMode });
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /** Deletes the layer's tree (a half-made or already removed one too) unless it is in use; a symlink there is unlinked, not followed. */
  async remove(id: string, opts: RemoveOpts = {}): Promise<void> {
    assertValidId(id);
    await this.mounts.whileUnused(
      id,
      () => {
        removeStoreTree(this.home, join('dir', id), 'vfs layer dir');
        rmSync(join(this.writableMarks, id), { force: true });
      },
      opts,
    );
  }

  /** CORRUPT unless dir/<id> is a real directory of the home (it is read, written and applied into). */
  private assertInside(id: string): void {
    assertDirsInside(this.home, [join('dir', id)], 'no-symlinks', 'vfs layer dir');
  }

  // ---- views (nothing is mounted) ------------------------------------------------------------

  protected mountPointOf(id: string): string {
    return this.layerDir(id);
  }

  protected viewOf(id: string): LayerView {
    this.assertExists(id);
    this.assertInside(id);
    return { path: this.layerDir(id), needsMount: false };
  }

  protected override singleDirWhy(id: string): string {
    return `vfs keeps every layer as a full copy of its tree: ${id}'s dir is its view, nothing is mounted`;
  }

  protected mountUnion(id: string): never {
    throw new Error(`vfs layer ${id}: nothing to mount (a bug: viewOf says no mount is needed)`);
  }

  protected unmountUnion(): void {
    /* never mounted */
  }

  // ---- queries -------------------------------------------------------------------------------

  /** dir/<id> is there; CORRUPT when what is there is not a real directory (a symlink is never followed). */
  private existsSync(id: string): boolean {
    return storeDirExists(this.layerDir(id), 'vfs layer dir');
  }

  async exists(id: string): Promise<boolean> {
    return this.existsSync(id);
  }

  storedLayerIds(): string[] {
    return layerIdsIn(this.layersDir);
  }

  private isWritable(id: string): boolean {
    try {
      lstatSync(join(this.writableMarks, id));
      return true;
    } catch {
      return false;
    }
  }

  async status(): Promise<Array<[string, string]>> {
    return [
      ['Backing Filesystem', backingFs(this.layersDir)],
      ['Layer Copies', this.copyMode === 'reflink' ? 'reflink (copy-on-write clones)' : 'full copies (no reflink on this filesystem)'],
    ];
  }

  /** Docker's vfs reports nothing; the layer's directory is the one useful fact. */
  async metadata(id: string): Promise<Record<string, string>> {
    this.assertExists(id);
    return { Dir: this.layerDir(id) };
  }

  /** A bind of the layer's directory: it is the whole view. */
  async mountSpec(id: string, opts: { readonly: boolean }): Promise<MountSpec[]> {
    this.assertExists(id);
    this.assertInside(id);
    return [{ type: 'bind', source: this.layerDir(id), options: [opts.readonly ? 'ro' : 'rw', 'rbind'] }];
  }

  /** The writable mark goes: branches() then reports the layer read-only. */
  async sealWritable(id: string): Promise<void> {
    this.assertExists(id);
    rmSync(join(this.writableMarks, id), { force: true });
  }

  /** One branch: the layer's own directory. */
  async branches(id: string): Promise<Branch[]> {
    this.assertExists(id);
    return [{ path: this.layerDir(id), layer: id, mode: this.isWritable(id) ? 'rw' : 'ro' }];
  }

  private assertExists(id: string): void {
    if (!this.existsSync(id)) throw this.notFound(id);
  }

  /** Nothing is mounted; drops every reference. */
  async cleanup(): Promise<void> {
    await this.mounts.resetAll();
  }
}
