/**
 * The overlay (v1) driver: Docker's original overlayfs driver and its on-disk format (layout.ts).
 * Image layers are full trees (hardlink farms sharing file inodes with their parent), so a union
 * never has more than one lowerdir: no depth limit from the mount, at the price of inodes and of
 * copying the parent's directory tree for every image layer.
 *
 * - get on an image layer returns its root/ (nothing mounted); on any other layer it mounts
 *   `lowerdir=<lower-id>/root,upperdir=upper,workdir=work` at merged/.
 * - applyDiff onto a child of an image layer builds a hardlink copy of the parent's root/ in a
 *   temporary dir, applies the tar there with real deletions, renames it to root/ and drops the
 *   upper/work/lower-id the layer had. The tar engine never writes into an existing file: it
 *   unlinks and creates (O_EXCL), so the parent's inodes, shared through the links, stay intact.
 * - Other applies (a base layer, a child of a writable layer) go through the layer's view, as
 *   Docker's naive ApplyDiff does. Diffs and changes are always naive (two views compared).
 * - sealWritable (containerd's Commit) makes a writable layer an image layer the same way: the
 *   upper's native export (overlay whiteouts and opaque dirs as `.wh.` entries) is applied onto a
 *   hardlink farm of the lower's root/, which becomes the layer's root/.
 */
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Readable } from 'node:stream';
import { applyLayer } from '../../archive/apply.js';
import { copyTree } from '../../archive/copytree.js';
import { exportLayerDir } from '../../archive/export.js';
import { assertValidId, isValidId, UnionctlError } from '../../errors.js';
import type {
  ApplyDiffOpts,
  ApplyResult,
  Branch,
  CheckFinding,
  CreateOpts,
  DriverCapabilities,
  DriverCheckContext,
  DriverInit,
  MountPlan,
  MountSpec,
  RemoveOpts,
} from '../../graph/driver.js';
import { layerIdsIn } from '../../graph/check.js';
import { GraphDriver } from '../../graph/graph-driver.js';
import { checkOverlay } from './check.js';
import type { LayerView, MountOptions } from '../../graph/mounts.js';
import { parseStorageOpts } from '../../graph/registry.js';
import {
  assertDirsInside,
  backingFs,
  ensureStoreDir,
  findMount,
  existingDirFor,
  mkdirWithMode,
  MNT_DETACH,
  parseOverlayOptions,
  removeStoreTree,
  storeDirExists,
  supportsDType,
  umount2,
  UMOUNT_NOFOLLOW,
  writeEmptyMark,
} from '../../sys/index.js';
import {
  decideOverlaySettings,
  mountUnion,
  overlayMountSpecs,
  planOverlayMount,
  type MountSettings,
  type UnionPaths,
} from '../overlayfs/mount.js';
import { overlayUnsupportedReason, probeOverlayKernel } from '../overlayfs/support.js';
import { countFarmInodes } from './farm.js';
import { isDir, MERGED, OverlayLayout, ROOT, TMP_ROOT_PREFIX, UPPER, WORK } from './layout.js';

/** Docker's overlay driver knows no storage options at all. */
export const OVERLAY_OPTION_KEYS: string[] = [];

/** Modes Docker (≥ 20.10.9) uses. */
const MODE = { home: 0o710, layer: 0o710, root: 0o755, work: 0o700, merged: 0o700 };

export class OverlayDriver extends GraphDriver {
  private readonly layout: OverlayLayout;
  /** Writable layers are marked here (Docker's overlay does not tell them apart; branches() does). */
  private readonly writableMarks: string;
  private readonly mountSettings: MountSettings;
  private readonly backing: string;
  private readonly dType: boolean;

  private constructor(init: DriverInit) {
    // Docker's put removes merged/, as overlay2's does.
    super('overlay', init, { mountPointMode: MODE.merged, removeMountPoint: true });
    this.layout = new OverlayLayout(init.home);
    this.writableMarks = join(init.stateDir, 'rw');
    ensureStoreDir(this.writableMarks, 0o700, 'overlay driver state directory');
    const dir = existingDirFor(init.home);
    this.backing = backingFs(dir);
    this.dType = supportsDType(dir);
    // Docker's overlay mounts with the plain lowerdir/upperdir/workdir string; index=off as overlay2
    // does where the module has the parameter (index=on would tie the shared lower root/ to one upper).
    // One lower per mount: never the new mount API.
    this.mountSettings = decideOverlaySettings(probeOverlayKernel(dir, false), false);
  }

  static open(init: DriverInit): OverlayDriver {
    parseStorageOpts(init.options, OVERLAY_OPTION_KEYS, 'overlay driver');
    const reason = overlayUnsupportedReason(init.home);
    if (reason !== undefined) {
      throw new UnionctlError('UNSUPPORTED', `overlay cannot be used for ${init.home}: ${reason}`, {
        hint: 'use the vfs driver, or put the store on ext4/xfs (with d_type) on a kernel with overlayfs',
      });
    }
    mkdirSync(init.home, { recursive: true });
    chmodSync(init.home, MODE.home);
    return new OverlayDriver(init);
  }

  capabilities(): DriverCapabilities {
    // One lowerdir per mount whatever the depth: every image layer is a full tree.
    // Image layers hold real deletions ('plain'); only writable uppers hold overlay whiteouts.
    return { whiteoutFormat: 'plain', nativeDiff: false, maxDepth: Number.MAX_SAFE_INTEGER };
  }

  // ---- create / remove ---------------------------------------------------------------------

  async create(id: string, parent?: string, opts: CreateOpts = {}): Promise<void> {
    this.refuseLayerOptions(opts);
    await this.createLayer(id, parent);
  }

  async createReadWrite(id: string, parent?: string, opts: CreateOpts = {}): Promise<void> {
    this.refuseLayerOptions(opts);
    await this.createLayer(id, parent);
    writeEmptyMark(join(this.writableMarks, id)); // never written through a symlink; no temp file to leave
  }

  private refuseLayerOptions(opts: CreateOpts): void {
    if (opts.storageOpt !== undefined && Object.keys(opts.storageOpt).length > 0) {
      throw new UnionctlError('BAD_OPTION', `overlay: --storage-opt is not supported (got ${Object.keys(opts.storageOpt).join(', ')})`, {
        hint: 'drop the option; overlay2 supports size= on xfs with project quotas',
      });
    }
  }

  /** Docker's Create: root/ for a base layer; upper/ + work/ + lower-id otherwise. */
  private async createLayer(id: string, parent: string | undefined): Promise<void> {
    assertValidId(id);
    if (parent !== undefined) {
      assertValidId(parent, 'parent layer id');
      if (!this.existsSync(parent)) {
        throw new UnionctlError('NOT_FOUND', `parent layer ${parent} does not exist in ${this.home}`, {
          hint: 'create or import the parent first',
        });
      }
    }
    const dir = this.layout.layerDir(id);
    try {
      mkdirWithMode(dir, MODE.layer);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST')
        throw new UnionctlError('EXISTS', `overlay layer ${id} already exists`, { hint: 'choose another id' });
      throw e;
    }
    try {
      if (parent === undefined) mkdirWithMode(this.layout.rootDir(id), MODE.root);
      else if (this.layout.hasRoot(parent)) this.createOnImageLayer(id, parent);
      else await this.createOnWritableLayer(id, parent);
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /** An empty upper (with the mode of the parent's root) over the parent's root/. */
  private createOnImageLayer(id: string, parent: string): void {
    mkdirWithMode(this.layout.upperDir(id), lstatSync(this.layout.rootDir(parent)).mode & 0o7777);
    mkdirWithMode(this.layout.workDir(id), MODE.work);
    this.layout.writeLowerId(id, parent);
  }

  /**
   * The parent is itself an upper over some image layer: same lower, and a copy of the parent's
   * upper (whiteout devices and opaque xattrs included), so the new layer starts where it was.
   */
  private async createOnWritableLayer(id: string, parent: string): Promise<void> {
    const lowerId = this.layout.readLowerId(parent);
    assertDirsInside(this.home, [join(parent, UPPER)], 'no-symlinks', 'overlay upper dir');
    const parentUpper = this.layout.upperDir(parent);
    mkdirWithMode(this.layout.upperDir(id), lstatSync(parentUpper).mode & 0o7777);
    mkdirWithMode(this.layout.workDir(id), MODE.work);
    await copyTree(parentUpper, this.layout.upperDir(id), { mode: 'copy' });
    this.layout.writeLowerId(id, lowerId);
  }

  /** Deletes what is at the layer's paths, never what they point to (a symlinked layer dir or work/ is unlinked). */
  async remove(id: string, opts: RemoveOpts = {}): Promise<void> {
    assertValidId(id);
    if (lstatSync(this.layout.layerDir(id), { throwIfNoEntry: false }) === undefined) return;
    await this.mounts.whileUnused(
      id,
      () => {
        removeStoreTree(this.home, id, 'overlay layer dir');
        rmSync(join(this.writableMarks, id), { force: true });
      },
      opts,
    );
  }

  // ---- the view and its mount ------------------------------------------------------------

  protected mountPointOf(id: string): string {
    return this.layout.mergedDir(id);
  }

  /** An image layer is its own root/ (nothing to mount); any other layer is the union at merged/. */
  protected viewOf(id: string): LayerView {
    this.assertExists(id);
    if (this.layout.hasRoot(id)) {
      this.assertRootInside(id);
      return { path: this.layout.rootDir(id), needsMount: false };
    }
    return { path: this.layout.mergedDir(id), needsMount: true };
  }

  /** CORRUPT unless the image layer's root/ is a real directory of the home (it is read, and applied into). */
  private assertRootInside(id: string): void {
    assertDirsInside(this.home, [join(id, ROOT)], 'no-symlinks', 'overlay root dir');
  }

  /** The one lower of a writable layer: its image layer's root/ (a full tree), under its own upper/. */
  private unionPaths(id: string): UnionPaths {
    const lowerId = this.layout.readLowerId(id);
    if (!this.layout.hasRoot(lowerId)) throw this.lowerWithoutRoot(id, lowerId);
    return { lowers: [join(lowerId, ROOT)], upper: join(id, UPPER), work: join(id, WORK) };
  }

  protected override planUnion(id: string, opts: MountOptions): MountPlan {
    return planOverlayMount(this.home, this.layout.mergedDir(id), this.unionPaths(id), {
      ...this.mountSettings,
      mountLabel: opts.mountLabel,
    });
  }

  /** planUnion's mount: the same paths and settings, through the one overlay mount code. */
  protected mountUnion(id: string, opts: MountOptions): void {
    mountUnion(this.home, this.layout.mergedDir(id), this.unionPaths(id), { ...this.mountSettings, mountLabel: opts.mountLabel });
  }

  protected override singleDirWhy(id: string): string {
    return `${id} is an image layer: its root/ is a full tree (Docker's overlay farm), never mounted`;
  }

  /** Lazy unmount, as Docker's Put (the lifecycle then removes merged/); never through a symlink. */
  protected unmountUnion(id: string): void {
    assertDirsInside(this.home, [join(id, MERGED)], 'no-symlinks', 'mount point');
    umount2(this.layout.mergedDir(id), MNT_DETACH | UMOUNT_NOFOLLOW);
  }

  private unionMount(id: string) {
    const m = findMount(this.layout.mergedDir(id));
    return m?.fsType === 'overlay' ? m : undefined;
  }

  // ---- queries -----------------------------------------------------------------------------

  async exists(id: string): Promise<boolean> {
    assertValidId(id);
    return this.existsSync(id);
  }

  storedLayerIds(): string[] {
    return layerIdsIn(this.home);
  }

  /** lower-id files and temporary farms against the records (check.ts). */
  async check(ctx: DriverCheckContext): Promise<CheckFinding[]> {
    return checkOverlay(this.layout, ctx, relative(ctx.root, this.home));
  }

  /** The layer dir is there; CORRUPT when what is there is not a real directory (a symlink is never followed). */
  private existsSync(id: string): boolean {
    return storeDirExists(this.layout.layerDir(id), 'overlay layer dir');
  }

  private assertExists(id: string): void {
    assertValidId(id);
    if (!this.existsSync(id))
      throw new UnionctlError('NOT_FOUND', `overlay layer ${id} does not exist in ${this.home}`, { hint: 'check the id with unionctl ls' });
  }

  private isWritable(id: string): boolean {
    return lstatSync(join(this.writableMarks, id), { throwIfNoEntry: false }) !== undefined;
  }

  /** Docker's two pairs, then what the hardlink farms cost in inodes. */
  async status(): Promise<Array<[string, string]>> {
    const farms = this.imageLayerIds();
    const inodes = countFarmInodes(farms.map((id) => this.layout.rootDir(id)));
    return [
      ['Backing Filesystem', this.backing],
      ['Supports d_type', String(this.dType)],
      ['Image Layers (hardlink farms)', String(farms.length)],
      ['Farm Names', String(inodes.names)],
      ['Farm Inodes', `${inodes.inodes} (${inodes.names - inodes.inodes} names saved by hardlinks)`],
    ];
  }

  private imageLayerIds(): string[] {
    let names: string[];
    try {
      names = readdirSync(this.home);
    } catch {
      return [];
    }
    return names.filter((n) => isDir(join(this.home, n, ROOT))).sort();
  }

  /** Docker's keys: RootDir for an image layer, else LowerDir/UpperDir/WorkDir/MergedDir. */
  async metadata(id: string): Promise<Record<string, string>> {
    this.assertExists(id);
    if (this.layout.hasRoot(id)) return { RootDir: this.layout.rootDir(id) };
    return {
      LowerDir: this.layout.rootDir(this.layout.readLowerId(id)),
      UpperDir: this.layout.upperDir(id),
      WorkDir: this.layout.workDir(id),
      MergedDir: this.layout.mergedDir(id),
    };
  }

  /**
   * An image layer is one branch, its root/ (rw only when created writable). A mounted layer: what
   * the kernel shows (upperdir rw, the one lowerdir ro); an unmounted one: what get would mount.
   */
  async branches(id: string): Promise<Branch[]> {
    this.assertExists(id);
    if (this.layout.hasRoot(id)) return [{ path: this.layout.rootDir(id), layer: id, mode: this.isWritable(id) ? 'rw' : 'ro' }];
    const mounted = this.unionMount(id);
    if (mounted === undefined) {
      const lowerId = this.layout.readLowerId(id);
      return [
        { path: this.layout.upperDir(id), layer: id, mode: 'rw' },
        { path: this.layout.rootDir(lowerId), layer: lowerId, mode: 'ro' },
      ];
    }
    const parsed = parseOverlayOptions(mounted.superOptions);
    const branches: Branch[] = [];
    const where = `the overlay mount at ${mounted.mountPoint}`;
    if (parsed.upperdir !== undefined) branches.push({ path: parsed.upperdir, layer: this.layerOf(parsed.upperdir, where), mode: 'rw' });
    for (const lower of parsed.lowerdirs) branches.push({ path: lower, layer: this.layerOf(lower, where), mode: 'ro' });
    return branches;
  }

  private layerOf(dir: string, where: string): string {
    const layer = this.layout.layerOfUpperDir(dir) ?? this.layout.layerOfRootDir(dir);
    if (layer === undefined) {
      throw new UnionctlError('CORRUPT', `${where} has branch ${JSON.stringify(dir)}, which is not a layer dir of ${this.home}`, {
        hint: 'something other than unionctl mounted over the layer; unmount it',
      });
    }
    return layer;
  }

  // ---- diffs -------------------------------------------------------------------------------

  override async applyDiff(id: string, parent: string | undefined, tar: Readable | string, opts: ApplyDiffOpts = {}): Promise<ApplyResult> {
    this.assertApplicable(id);
    if (parent !== undefined && !this.layout.hasRoot(id) && this.layout.hasRoot(parent)) return this.applyAsFarm(id, parent, tar, opts);
    // Docker's ErrApplyDiffFallback: a base layer (root/ itself) or a child of a writable layer
    // (through the mounted union, where overlayfs turns deletions into its own whiteouts).
    return this.naive.applyDiff(id, parent, tar, opts);
  }

  /**
   * Hardlink copy of the parent's root/ → apply the tar there → rename to root/, then drop what
   * the layer had as an overlay child (upper/, work/, merged/, lower-id), as Docker does.
   * A failed apply removes the temporary farm and leaves the layer as it was. (sealWritable
   * applies the upper's own export this way.)
   */
  private async applyAsFarm(
    id: string,
    parent: string,
    tar: Readable | string,
    opts: { onProgress?: (bytes: number) => void },
  ): Promise<ApplyResult> {
    const dir = this.layout.layerDir(id);
    this.assertRootInside(parent);
    const tmpRoot = mkdtempSync(join(dir, TMP_ROOT_PREFIX));
    let result: ApplyResult;
    try {
      await copyTree(this.layout.rootDir(parent), tmpRoot, { mode: 'hardlink' });
      result = await applyLayer(tar, tmpRoot, { ...opts, whiteoutFormat: 'plain' });
      renameSync(tmpRoot, this.layout.rootDir(id));
    } catch (e) {
      rmSync(tmpRoot, { recursive: true, force: true });
      throw e;
    }
    this.dropOverlayChildParts(id);
    return result;
  }

  /** What a layer with a root/ no longer needs of an overlay child (upper/, work/, merged/, lower-id). */
  private dropOverlayChildParts(id: string): void {
    for (const name of [UPPER, WORK, MERGED]) removeStoreTree(this.home, join(id, name), `overlay ${name} dir`);
    rmSync(this.layout.lowerIdFile(id), { force: true });
  }

  // ---- containerd: mounts a runtime makes, commit -----------------------------------------

  /**
   * An image layer (root/): a bind of root/ (read-only with `readonly`). Any other layer: the
   * overlay get mounts (lowerdir=<lower-id>/root, its upper and work), or with `readonly` an
   * overlay of the upper over the lower's root/, both as lowers.
   */
  async mountSpec(id: string, opts: { readonly: boolean }): Promise<MountSpec[]> {
    this.assertExists(id);
    if (this.layout.hasRoot(id)) {
      this.assertRootInside(id);
      return overlayMountSpecs(
        opts.readonly ? { lowers: [this.layout.rootDir(id)] } : { lowers: [], upper: this.layout.rootDir(id) },
        this.mountSettings,
      );
    }
    const lowerId = this.layout.readLowerId(id);
    if (!this.layout.hasRoot(lowerId)) throw this.lowerWithoutRoot(id, lowerId);
    this.assertRootInside(lowerId);
    assertDirsInside(this.home, [join(id, UPPER), join(id, WORK)], 'no-symlinks', 'overlay upper or work dir');
    const lower = this.layout.rootDir(lowerId);
    const upper = this.layout.upperDir(id);
    if (opts.readonly) return overlayMountSpecs({ lowers: [upper, lower] }, this.mountSettings);
    return overlayMountSpecs({ lowers: [lower], upper, work: this.layout.workDir(id) }, this.mountSettings);
  }

  /**
   * Writable layer → image layer in Docker's format: a hardlink farm of the lower's root/ with the
   * upper applied (its export, so whiteouts delete and an opaque dir drops what the lower had),
   * renamed to root/; then upper/, work/, lower-id and the writable mark go. Crash-safe and
   * idempotent: until the rename the layer is the writable layer it was (a farm a killed seal left
   * is removed first); after it the layer is an image layer, and a second call only finishes the
   * removals. The layer must not be mounted (the store checks that it is unused).
   */
  async sealWritable(id: string): Promise<void> {
    this.assertExists(id);
    const dir = this.layout.layerDir(id);
    for (const name of readdirSync(dir)) {
      if (name.startsWith(TMP_ROOT_PREFIX)) removeStoreTree(this.home, join(id, name), 'overlay temporary root dir');
    }
    if (!this.layout.hasRoot(id)) {
      const lowerId = this.layout.readLowerId(id);
      if (!this.layout.hasRoot(lowerId)) throw this.lowerWithoutRoot(id, lowerId);
      assertDirsInside(this.home, [join(id, UPPER)], 'no-symlinks', 'overlay upper dir');
      await this.applyAsFarm(id, lowerId, exportLayerDir(this.layout.upperDir(id), 'overlay'), {});
    } else {
      this.dropOverlayChildParts(id);
    }
    rmSync(join(this.writableMarks, id), { force: true });
  }

  private lowerWithoutRoot(id: string, lowerId: string): UnionctlError {
    return new UnionctlError('CORRUPT', `overlay layer ${id}: its lower layer ${lowerId} has no root/`, {
      hint: 'the lower layer was removed or never applied; the layer cannot be mounted',
    });
  }

  // ---- cleanup -----------------------------------------------------------------------------

  /** Unmounts every merged/ below the home (removing those mount points) and drops every reference. */
  async cleanup(): Promise<void> {
    const layers = readdirSync(this.home).filter((id) => isValidId(id) && this.mounts.isMounted(id));
    await this.mounts.resetAll(layers);
  }
}
