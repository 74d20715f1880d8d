/**
 * The overlay2 driver: Docker's overlay2 on-disk format (see layout.ts), mounted with the kernel's
 * overlayfs. Every layer's files live in its own diff/; a layer with parents is mounted as a union
 * of its diff/ (upperdir) over its ancestors' diff/ dirs (lowerdirs, nearest first).
 */
import { chmodSync, lstatSync, mkdirSync, readdirSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Readable } from 'node:stream';
import { applyLayer } from '../../archive/apply.js';
import { exportLayerDir } from '../../archive/export.js';
import { directorySize } from '../../archive/size.js';
import { assertValidId, isValidId, UnionctlError } from '../../errors.js';
import type {
  ApplyDiffOpts,
  ApplyResult,
  Branch,
  Change,
  CheckFinding,
  CreateOpts,
  DriverCapabilities,
  DriverCheckContext,
  DriverInit,
  MountDecision,
  MountPlan,
  MountSpec,
  RemoveOpts,
} from '../../graph/driver.js';
import { GraphDriver } from '../../graph/graph-driver.js';
import { removeHeldLockFile, withFileLock } from '../../graph/lock.js';
import type { LayerView, MountOptions } from '../../graph/mounts.js';
import {
  assertDirsInside,
  findMount,
  mkdirWithMode,
  MNT_DETACH,
  readMountInfo,
  readStoreFile,
  removeStoreTree,
  storeDirExists,
  umount2,
  UMOUNT_NOFOLLOW,
  writeEmptyMark,
  writeFileAtomic,
} from '../../sys/index.js';
import { branchesFromLayout, branchesFromMount } from './branches.js';
import { checkOverlay2, overlay2LayerIds } from './check.js';
import { probeOverlay2, type Overlay2Features } from './features.js';
import { isLinkId, LINK_DIR, newLinkId, Overlay2Layout } from './layout.js';
import { mountUnion, overlayMountSpecs, planOverlayMount, type UnionPaths } from '../overlayfs/mount.js';
import { parseDriverOptions, parseLayerOptions, type DriverOptions } from './options.js';
import { assertQuotaSupported, limitLayerDir } from './quota.js';

/** Modes Docker ≥ 20.10.9 uses (0710 since the CVE-2021-41091 fix). */
const MODE = {
  home: 0o710,
  links: 0o700,
  layer: 0o710,
  diff: 0o755,
  work: 0o700,
  merged: 0o700,
  link: 0o644,
  lower: 0o644,
  committed: 0o600,
};

export class Overlay2Driver extends GraphDriver {
  private readonly root: string;
  private readonly layout: Overlay2Layout;
  /** <root>/driver-state/overlay2: mount references and locks (graph/mounts.ts) and the quota lock. */
  private readonly stateDir: string;
  private readonly options: DriverOptions;
  private readonly features: Overlay2Features;

  private constructor(init: DriverInit, options: DriverOptions, features: Overlay2Features) {
    // Docker's put removes merged/: that also takes the mount out of other mount namespaces that
    // inherited it (Docker relies on this to avoid EBUSY on the next mount).
    super('overlay2', init, { mountPointMode: MODE.merged, removeMountPoint: true });
    this.root = init.root;
    this.options = options;
    this.features = features;
    this.layout = new Overlay2Layout(init.home);
    this.stateDir = init.stateDir;
  }

  /** Checks options and kernel, creates <home> and <home>/l. */
  static open(init: DriverInit): Overlay2Driver {
    const options = parseDriverOptions(init.options);
    const features = probeOverlay2(init.home);
    if (features.unsupportedReason !== undefined) {
      throw new UnionctlError('UNSUPPORTED', `overlay2 cannot be used for ${init.home}: ${features.unsupportedReason}`, {
        hint: 'use the vfs driver, or put the store on ext4/xfs (with d_type) on a kernel with overlayfs',
      });
    }
    mkdirSync(init.home, { recursive: true });
    chmodSync(init.home, MODE.home);
    if (!storeDirExists(join(init.home, LINK_DIR), 'overlay2 link directory')) mkdirSync(join(init.home, LINK_DIR));
    chmodSync(join(init.home, LINK_DIR), MODE.links);
    if (options.defaultSize > 0) assertQuotaSupported(init.home, init.root);
    return new Overlay2Driver(init, options, features);
  }

  capabilities(): DriverCapabilities {
    return { whiteoutFormat: 'overlay', nativeDiff: this.features.nativeDiff, maxDepth: this.features.maxDepth };
  }

  // ---- create / remove ---------------------------------------------------------------------

  async create(id: string, parent?: string, opts?: CreateOpts): Promise<void> {
    await this.createLayer(id, parent, parseLayerOptions(opts?.storageOpt, false).size ?? 0);
  }

  async createReadWrite(id: string, parent?: string, opts?: CreateOpts): Promise<void> {
    // The driver-wide overlay2.size applies unless the layer names its own size (0 = no limit).
    const { size } = parseLayerOptions(opts?.storageOpt, true);
    await this.createLayer(id, parent, size ?? this.options.defaultSize);
  }

  /**
   * Docker's create, in an order that leaves nothing half-made: the parent is checked (and the
   * depth limit applied) before anything is written, and the parent is marked committed last.
   */
  private async createLayer(id: string, parent: string | undefined, quotaBytes: number): Promise<void> {
    assertValidId(id);
    if (parent !== undefined) assertValidId(parent, 'parent layer id');
    if (quotaBytes > 0) assertQuotaSupported(this.home, this.root);
    const lower = parent === undefined ? undefined : this.lowerChainFor(id, parent);
    const dir = this.layout.layerDir(id);
    try {
      mkdirWithMode(dir, MODE.layer);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST')
        throw new UnionctlError('EXISTS', `overlay2 layer ${id} already exists`, { hint: 'choose another id' });
      throw e;
    }
    let linkId: string | undefined;
    try {
      if (quotaBytes > 0) await withFileLock(join(this.stateDir, 'quota.lock'), async () => limitLayerDir(this.home, dir, quotaBytes));
      mkdirWithMode(this.layout.diffDir(id), MODE.diff);
      linkId = this.makeLink(id);
      writeFileAtomic(this.layout.linkFile(id), linkId, { mode: MODE.link });
      if (parent === undefined || lower === undefined) return;
      mkdirWithMode(this.layout.workDir(id), MODE.work);
      // Together under the commit lock: a sibling being rolled back (uncommitIfUnused) sees this lower file or comes before the mark.
      await this.withCommitLock(async () => {
        writeFileAtomic(this.layout.lowerFile(id), lower, { mode: MODE.lower });
        writeEmptyMark(this.layout.committedFile(parent), MODE.committed);
      });
    } catch (e) {
      if (linkId !== undefined) rmSync(this.layout.linkPath(linkId), { force: true });
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /** The new layer's lower file: the parent's link, then the parent's own lowers. */
  private lowerChainFor(id: string, parent: string): string {
    if (!this.existsSync(parent)) {
      throw new UnionctlError('NOT_FOUND', `parent layer ${parent} does not exist in ${this.home}`, {
        hint: 'create or import the parent first',
      });
    }
    const lowers = [`${LINK_DIR}/${this.layout.readLinkId(parent)}`, ...(this.layout.readLowerEntries(parent) ?? [])];
    if (lowers.length > this.features.maxDepth) {
      throw new UnionctlError(
        'UNSUPPORTED',
        `overlay2 layer ${id} would have ${lowers.length} lower layers; the limit here is ${this.features.maxDepth}`,
        {
          hint: this.features.newMountApi
            ? 'overlayfs stacks at most that many lower layers; squash the image into fewer layers'
            : 'this kernel lacks the new mount API (Linux ≥ 6.8) that lifts the 128-layer limit; squash the image',
        },
      );
    }
    return lowers.join(':');
  }

  /** l/<LID> → ../<id>/diff, with a fresh LID on the (astronomically rare) collision. */
  private makeLink(id: string): string {
    for (;;) {
      const linkId = newLinkId();
      try {
        symlinkSync(join('..', id, 'diff'), this.layout.linkPath(linkId));
        return linkId;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
  }

  /** Deletes what is at the layer's paths, never what they point to: a symlinked layer dir or work/ is unlinked, not followed. */
  async remove(id: string, opts: RemoveOpts = {}): Promise<void> {
    assertValidId(id);
    // The parent's committed mark goes with its last child (a rolled-back create or load leaves the parent as it was).
    const parentEntry = this.lowerEntriesIfReadable(id)?.[0] ?? this.linkEntryIfReadable(opts.parent);
    if (lstatSync(this.layout.layerDir(id), { throwIfNoEntry: false }) === undefined) {
      // Gone already: a removal killed after deleting the dir still owes the parent its mark.
      if (parentEntry !== undefined) await this.uncommitIfUnused(parentEntry);
      return;
    }
    await this.mounts.whileUnused(
      id,
      () => {
        this.removeLinkOf(id);
        removeStoreTree(this.home, id, 'overlay2 layer dir');
      },
      opts,
    );
    if (parentEntry !== undefined) await this.uncommitIfUnused(parentEntry);
  }

  /** "l/<LID>" of layer `id`, if it has a readable link file. */
  private linkEntryIfReadable(id: string | undefined): string | undefined {
    if (id === undefined || !isValidId(id)) return undefined;
    try {
      return `${LINK_DIR}/${this.layout.readLinkId(id)}`;
    } catch {
      return undefined;
    }
  }

  private lowerEntriesIfReadable(id: string): string[] | undefined {
    try {
      return this.layout.readLowerEntries(id);
    } catch {
      return undefined; // a half-made layer's lower file: nothing to take back
    }
  }

  /**
   * Deletes the committed mark of the layer linked as `entry` ("l/<LID>") when no layer's lower
   * chain holds that link any more: the layer is then as it was before its first child was
   * created (its own diff the upper dir of its mount), so removing what a create, an import or a
   * load made (a rollback, or rm/rmi) leaves the parent as it was before. (Docker keeps the mark;
   * a layer without it and without children is just as valid a state to Docker's overlay2.)
   */
  private async uncommitIfUnused(entry: string): Promise<void> {
    const linkId = entry.slice(LINK_DIR.length + 1);
    if (!entry.startsWith(`${LINK_DIR}/`) || !isLinkId(linkId)) return;
    await this.withCommitLock(async () => {
      let parent: string;
      try {
        parent = this.layout.layerOfLink(linkId);
      } catch {
        return; // the parent is gone too
      }
      for (const name of readdirSync(this.home)) {
        if (name === LINK_DIR) continue;
        let lower: string | undefined;
        try {
          lower = readStoreFile(join(this.home, name, 'lower'), 'overlay2 lower file');
        } catch {
          continue; // not a layer dir, or a damaged one (its own operations report it)
        }
        if (lower?.split(':').includes(entry)) return;
      }
      rmSync(this.layout.committedFile(parent), { force: true });
    });
  }

  /**
   * Serialises marking a parent committed (with the child's lower file) and taking the mark back,
   * between processes. The lock file is deleted while held, so it leaves no trace in the store.
   */
  private withCommitLock(fn: () => Promise<void>): Promise<void> {
    const path = join(this.stateDir, 'commit.lock');
    return withFileLock(path, async () => {
      try {
        await fn();
      } finally {
        removeHeldLockFile(path);
      }
    });
  }

  /**
   * Removes l/<LID> when it is this layer's link (a corrupt link file must not delete another
   * layer's). Without a readable link file (a create that crashed before writing it, a layer dir
   * that is not a real directory) the links dir is searched for a link to ../<id>/diff instead.
   */
  private removeLinkOf(id: string): void {
    const target = join('..', id, 'diff');
    let linkId: string | undefined;
    try {
      linkId = this.existsSync(id) ? readStoreFile(this.layout.linkFile(id), 'overlay2 link file') : undefined;
    } catch {
      linkId = undefined; // damaged: search instead
    }
    const candidates = linkId !== undefined && isLinkId(linkId) ? [linkId] : readdirSync(this.layout.linksDir());
    for (const candidate of candidates) {
      const path = this.layout.linkPath(candidate);
      let points: string;
      try {
        points = readlinkSync(path);
      } catch {
        continue; // gone already, or not a symlink
      }
      if (points === target) rmSync(path, { force: true });
    }
  }

  // ---- the view and its mount ------------------------------------------------------------

  protected mountPointOf(id: string): string {
    return this.layout.mergedDir(id);
  }

  /** A layer without a parent is never mounted: its diff/ is the whole tree. Others: the union at merged/. */
  protected viewOf(id: string): LayerView {
    this.assertLayerDirs(id);
    if (this.layout.readLowerEntries(id) === undefined) return { path: this.layout.diffDir(id), needsMount: false };
    return { path: this.layout.mergedDir(id), needsMount: true };
  }

  /** NOT_FOUND without a layer dir; CORRUPT when the layer dir or its diff/ is not a real directory inside the home. */
  private assertLayerDirs(id: string): void {
    this.assertExists(id);
    assertDirsInside(this.home, [join(id, 'diff')], 'no-symlinks', 'overlay2 diff dir');
  }

  /** The ancestors' diff dirs (what an apply reads hardlinked and copied-up files from), each checked like the layer's own. */
  private checkedLowerDiffDirs(id: string): string[] {
    const ancestors = this.layout.ancestorIds(id);
    assertDirsInside(
      this.home,
      ancestors.map((a) => join(a, 'diff')),
      'no-symlinks',
      'overlay2 diff dir',
    );
    return ancestors.map((a) => this.layout.diffDir(a));
  }

  /** A committed layer has children built on it: it mounts read-only, its own diff as the top lower. */
  private unionPaths(id: string): UnionPaths {
    const lowers = this.layout.readLowerEntries(id) ?? [];
    return this.layout.isCommitted(id)
      ? { lowers: [join(id, 'diff'), ...lowers] }
      : { lowers, upper: join(id, 'diff'), work: join(id, 'work') };
  }

  protected override planUnion(id: string, opts: MountOptions): MountPlan {
    const paths = this.unionPaths(id);
    const plan = planOverlayMount(this.home, this.layout.mergedDir(id), paths, { ...this.features, mountLabel: opts.mountLabel });
    const shape: MountDecision = paths.upper
      ? {
          name: 'union',
          value: 'writable',
          why: `${id}/diff is the upper dir (the layer has no children yet), its ancestors' diffs the lowers`,
        }
      : { name: 'union', value: 'read-only', why: `${id} is committed (has children): its diff is the top lower, no upper dir` };
    return { ...plan, decisions: [shape, ...plan.decisions] };
  }

  /** planUnion's mount: the same paths and settings, through the one overlay mount code. */
  protected mountUnion(id: string, opts: MountOptions): void {
    mountUnion(this.home, this.layout.mergedDir(id), this.unionPaths(id), { ...this.features, mountLabel: opts.mountLabel });
  }

  protected override singleDirWhy(id: string): string {
    return `${id} has no parent: its diff/ is the whole tree, never mounted (Docker's rule)`;
  }

  /** Lazy unmount, as Docker's put (the lifecycle then removes merged/); never through a symlink. */
  protected unmountUnion(id: string): void {
    assertDirsInside(this.home, [join(id, 'merged')], 'no-symlinks', 'mount point');
    umount2(this.layout.mergedDir(id), MNT_DETACH | UMOUNT_NOFOLLOW);
  }

  /** The overlay mounted at the layer's merged dir, if any. */
  private unionMount(id: string): { mountPoint: string; superOptions: string[] } | undefined {
    const merged = this.layout.mergedDir(id);
    const m = findMount(merged);
    return m?.fsType === 'overlay' ? m : undefined;
  }

  // ---- queries -----------------------------------------------------------------------------

  async exists(id: string): Promise<boolean> {
    assertValidId(id);
    return this.existsSync(id);
  }

  storedLayerIds(): string[] {
    return overlay2LayerIds(this.home);
  }

  /** l/ links, link and lower files, work/ and committed marks against the records (check.ts). */
  async check(ctx: DriverCheckContext): Promise<CheckFinding[]> {
    return checkOverlay2(this.layout, ctx, relative(ctx.root, this.home));
  }

  /** The layer dir is there; CORRUPT when what is there is not a real directory (a symlink is never followed). */
  private existsSync(id: string): boolean {
    return storeDirExists(this.layout.layerDir(id), 'overlay2 layer dir');
  }

  private assertExists(id: string): void {
    assertValidId(id);
    if (!this.existsSync(id)) throw this.notFound(id);
  }

  /** Docker's names and order (23.0), then ours. */
  async status(): Promise<Array<[string, string]>> {
    const f = this.features;
    return [
      ['Backing Filesystem', f.backingFs],
      ['Supports d_type', String(f.dType)],
      ['Using metacopy', String(f.metacopy)],
      ['Native Overlay Diff', String(f.nativeDiff)],
      ['userxattr', String(f.userxattr)],
      ['Max Depth', String(f.maxDepth)],
    ];
  }

  async metadata(id: string): Promise<Record<string, string>> {
    this.assertExists(id);
    const meta: Record<string, string> = {
      WorkDir: this.layout.workDir(id),
      MergedDir: this.layout.mergedDir(id),
      UpperDir: this.layout.diffDir(id),
    };
    const lowers = this.layout.lowerDiffDirs(id);
    if (lowers.length > 0) meta.LowerDir = lowers.join(':');
    return meta;
  }

  /** Writable: diff/ over the ancestors' diffs (a bind of diff/ for a base layer); readonly: diff/ and the ancestors' diffs as lowers. */
  async mountSpec(id: string, opts: { readonly: boolean }): Promise<MountSpec[]> {
    this.assertLayerDirs(id);
    const lowers = this.layout.lowerDiffDirs(id);
    const own = this.layout.diffDir(id);
    if (opts.readonly) return overlayMountSpecs({ lowers: [own, ...lowers] }, this.features);
    return overlayMountSpecs({ lowers, upper: own, work: this.layout.workDir(id) }, this.features);
  }

  /** overlay2 keeps writable and image layers alike (a quota, if any, stays with the dir): nothing to change. */
  async sealWritable(id: string): Promise<void> {
    this.assertExists(id);
  }

  /** From mountinfo while the union is mounted; from the lower/committed files otherwise. */
  async branches(id: string): Promise<Branch[]> {
    this.assertExists(id);
    const mounted = this.unionMount(id);
    if (mounted !== undefined) return branchesFromMount(this.layout, mounted.mountPoint, mounted.superOptions);
    return branchesFromLayout(this.layout, id);
  }

  // ---- diffs -------------------------------------------------------------------------------

  override async applyDiff(
    id: string,
    _parent: string | undefined,
    tar: Readable | string,
    opts: ApplyDiffOpts = {},
  ): Promise<ApplyResult> {
    this.assertApplicable(id);
    const diff = this.layout.diffDir(id);
    const lowerDirs = this.checkedLowerDiffDirs(id);
    // Whiteouts become char 0/0 devices and opaque xattrs in diff/; hardlinks may point at files
    // of the ancestors, which apply copies up from their diff dirs.
    return applyLayer(tar, diff, { ...opts, whiteoutFormat: 'overlay', lowerDirs });
  }

  /**
   * diff/ holds exactly the layer's changes against its direct parent, unless the kernel writes
   * redirect or metacopy xattrs into it (then a renamed dir or a metadata-only copy-up would not be
   * a faithful change) — the same rule as Docker's isParent/useNaiveDiff.
   */
  private nativeDiffValid(id: string, parent: string | undefined): boolean {
    return this.features.nativeDiff && this.layout.ancestorIds(id)[0] === parent;
  }

  override async diff(id: string, parent?: string): Promise<Readable> {
    this.assertLayerDirs(id);
    if (this.nativeDiffValid(id, parent)) return exportLayerDir(this.layout.diffDir(id), 'overlay');
    return this.naive.diff(id, parent);
  }

  /** Always naive: walking the upper dir gets opaque dirs wrong (Docker learned this the hard way). */
  override async changes(id: string, parent?: string): Promise<Change[]> {
    this.assertExists(id);
    return this.naive.changes(id, parent);
  }

  override async diffSize(id: string, parent?: string): Promise<number> {
    this.assertLayerDirs(id);
    if (this.nativeDiffValid(id, parent)) return directorySize(this.layout.diffDir(id));
    return this.naive.diffSize(id, parent);
  }

  // ---- cleanup -----------------------------------------------------------------------------

  /**
   * Unmounts every layer's union and drops every reference, then anything else still mounted below
   * the home (deepest first: something mounted by hand must not keep the store busy).
   */
  async cleanup(): Promise<void> {
    const below = () =>
      readMountInfo()
        .map((m) => m.mountPoint)
        .filter((mp) => mp.startsWith(`${this.home}/`));
    const mergedOf = /\/([^/]+)\/merged$/;
    const mountedLayers = below().flatMap((mp) => mergedOf.exec(mp.slice(this.home.length))?.[1] ?? []);
    await this.mounts.resetAll(mountedLayers.filter(isValidId));
    for (const mp of [...new Set(below())].sort((a, b) => b.length - a.length)) {
      try {
        umount2(mp, MNT_DETACH | UMOUNT_NOFOLLOW);
      } catch (e) {
        if (findMount(mp) !== undefined) throw e; // still there: report it; gone meanwhile: fine
      }
    }
  }
}
