/**
 * The aufs driver: Docker's aufs on-disk format (layout.ts), mounted with the kernel's aufs where
 * the kernel has it (kernel.ts) and with fuse-overlayfs everywhere else (fuse.ts) — mainline
 * kernels never had aufs, so on this project's machines it is always FUSE.
 *
 * - A layer's files are diff/<id>, whiteouts as `.wh.` files. A diff is applied straight into that
 *   dir with the `.wh.` entries kept verbatim, diff/ *is* the layer tar's content (native diff), and
 *   changes are read from it (`.wh.X` = X deleted).
 * - get on a layer without parents returns diff/<id> (nothing to mount, as Docker does); otherwise
 *   the union of diff/<id> over the ancestors' diff dirs is mounted at mnt/<id>.
 *   Kernel aufs: Docker's mount, own branch rw, ancestors ro+wh. FUSE: a layer made writable
 *   (createReadWrite) gets its diff dir as the upper; an image layer is mounted read-only (its own
 *   diff dir becomes the top lower), so reading an image never writes into it.
 * - When a writable FUSE union is unmounted, its diff dir is normalised to pure aufs format
 *   (normalise.ts): fuse-overlayfs (with FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT=1) already writes `.wh.`
 *   files and `.wh..wh..opq` markers; what aufs does not know are its bookkeeping xattrs.
 */
import { chmodSync, lstatSync, mkdirSync, rmdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Readable } from 'node:stream';
import { applyLayer } from '../../archive/apply.js';
import { changesFromLayerDir, exportLayerDir } from '../../archive/export.js';
import { directorySize } from '../../archive/size.js';
import { assertValidId, UnionctlError } from '../../errors.js';
import type {
  ApplyDiffOpts,
  ApplyResult,
  Branch,
  BranchMode,
  Change,
  CheckFinding,
  CreateOpts,
  DriverCapabilities,
  DriverCheckContext,
  DriverInit,
  MountPlan,
  MountSpec,
  RemoveOpts,
} from '../../graph/driver.js';
import { GraphDriver } from '../../graph/graph-driver.js';
import { aufsLayerIds, checkAufs } from './check.js';
import type { LayerView, MountOptions, UnmountOptions } from '../../graph/mounts.js';
import { parseStorageOpts } from '../../graph/registry.js';
import {
  assertDirsInside,
  backingFs,
  ensureStoreDir,
  existingDirFor,
  findMount,
  hasFilesystem,
  mount,
  pageSize,
  removeDeadTempFiles,
  removeStoreTree,
  umount2,
  UMOUNT_NOFOLLOW,
  MNT_DETACH,
  writeEmptyMark,
  type MountInfo,
} from '../../sys/index.js';
import {
  findFuseProcess,
  FUSE_FSTYPE,
  fuseArgs,
  fuseHelperMountSpec,
  fuseHelperUnsupportedReason,
  fuseMaxBranches,
  fuseUnsupportedReason,
  mountFuse,
  type FuseUnion,
  openFileLimit,
  unionFromArgv,
  unmountFuse,
} from './fuse.js';
import {
  aufsSiOf,
  flushPseudoLinks,
  KERNEL_AUFS_MAX_BRANCHES,
  mountKernelAufs,
  planAufsMount,
  type AufsMountPlan,
  probeDirperm1,
  readSysfsBranches,
} from './kernel.js';
import { AufsLayout, DIFF, LAYERS, MNT, MODE, REMOVING_SUFFIX } from './layout.js';
import { normaliseAufsBranch } from './normalise.js';

/** Docker's aufs knows no storage options. */
export const AUFS_OPTION_KEYS: string[] = [];

export type MountMechanism = 'kernel' | 'fuse';

/** Filesystems Docker refuses to put an aufs store on (aufs on aufs, btrfs, ecryptfs). */
const KERNEL_AUFS_BAD_BACKING = new Set(['aufs', 'btrfs', 'ecryptfs']);

/**
 * Which mechanism serves the aufs layout here and why, or why none can. Kernel aufs wins when
 * /proc/filesystems lists it (Docker's check); else fuse-overlayfs.
 */
export function chooseMechanism(home: string): { mechanism?: MountMechanism; why: string } {
  const fs = backingFs(existingDirFor(home));
  if (hasFilesystem('aufs')) {
    if (KERNEL_AUFS_BAD_BACKING.has(fs)) return { why: `aufs cannot be used over ${fs} (${existingDirFor(home)})` };
    return { mechanism: 'kernel', why: 'the kernel has aufs (/proc/filesystems)' };
  }
  const fuseReason = fuseUnsupportedReason();
  if (fuseReason !== undefined) return { why: `the kernel has no aufs (not in /proc/filesystems) and ${fuseReason}` };
  if (fs === 'aufs' || fs === 'fuse') return { why: `the store cannot sit on ${fs} (${existingDirFor(home)})` };
  return { mechanism: 'fuse', why: 'the kernel has no aufs (not in /proc/filesystems): fuse-overlayfs mounts the same layout' };
}

export function aufsUnsupportedReason(home: string): string | undefined {
  const choice = chooseMechanism(home);
  return choice.mechanism === undefined ? choice.why : undefined;
}

export class AufsDriver extends GraphDriver {
  readonly mechanism: MountMechanism;
  private readonly mechanismWhy: string;
  private readonly layout: AufsLayout;
  /** Writable layers (containers, -init layers): Docker's aufs makes no difference, the FUSE mounts do. */
  private readonly writableMarks: string;
  /** fuse-overlayfs workdirs, <root>/driver-state/aufs/work/<id>: same filesystem as diff/, outside Docker's layout. */
  private readonly workRoot: string;
  /** The workdirs of the writable unions a runtime mounts itself (mountSpec), <root>/driver-state/aufs/spec-work/<id>. */
  private readonly specWorkRoot: string;
  private readonly maxDepth: number;
  /** Kernel aufs understands dirperm1 (probed once, as Docker does); never with fuse-overlayfs. */
  private readonly dirperm1: boolean;

  private constructor(init: DriverInit, mechanism: MountMechanism, why: string) {
    // Docker's aufs makes mnt/<id> at create and keeps it after an unmount.
    super('aufs', init, { mountPointMode: MODE.layerDir, removeMountPoint: false });
    this.mechanism = mechanism;
    this.mechanismWhy = why;
    this.layout = new AufsLayout(init.home);
    this.writableMarks = join(init.stateDir, 'rw');
    this.workRoot = join(init.stateDir, 'work');
    this.specWorkRoot = join(init.stateDir, 'spec-work');
    ensureStoreDir(this.writableMarks, 0o700, 'aufs driver state directory');
    ensureStoreDir(this.workRoot, 0o700, 'aufs driver state directory');
    this.dirperm1 = mechanism === 'kernel' && probeDirperm1(mount, (t) => umount2(t));
    // maxDepth counts ancestors. Kernel: 127 branches = the layer's own + 126. FUSE: a read-only
    // image mount lists the layer itself among the lowers, so one branch less than the FUSE limit.
    this.maxDepth = mechanism === 'kernel' ? KERNEL_AUFS_MAX_BRANCHES - 1 : fuseMaxBranches(pageSize(), openFileLimit()) - 1;
  }

  static open(init: DriverInit): AufsDriver {
    parseStorageOpts(init.options, AUFS_OPTION_KEYS, 'aufs driver');
    const choice = chooseMechanism(init.home);
    if (choice.mechanism === undefined) {
      throw new UnionctlError('UNSUPPORTED', `aufs cannot be used for ${init.home}: ${choice.why}`, {
        hint: 'install fuse-overlayfs (apt-get install fuse-overlayfs), or use overlay2 or vfs',
      });
    }
    const layout = new AufsLayout(init.home);
    layout.init();
    layout.removeStaleRemovals();
    return new AufsDriver(init, choice.mechanism, choice.why);
  }

  capabilities(): DriverCapabilities {
    return { whiteoutFormat: 'aufs', nativeDiff: true, maxDepth: this.maxDepth };
  }

  // ---- create / remove ---------------------------------------------------------------------

  async create(id: string, parent?: string, opts: CreateOpts = {}): Promise<void> {
    this.refuseLayerOptions(opts);
    this.createLayer(id, parent);
  }

  async createReadWrite(id: string, parent?: string, opts: CreateOpts = {}): Promise<void> {
    this.refuseLayerOptions(opts);
    this.createLayer(id, parent);
    writeEmptyMark(join(this.writableMarks, id)); // never written through a symlink; no temp file to leave
  }

  private refuseLayerOptions(opts: CreateOpts): void {
    if (opts.storageOpt !== undefined && Object.keys(opts.storageOpt).length > 0) {
      throw new UnionctlError('BAD_OPTION', `aufs: --storage-opt is not supported (got ${Object.keys(opts.storageOpt).join(', ')})`, {
        hint: 'drop the option; overlay2 supports size= on xfs with project quotas',
      });
    }
  }

  /**
   * Docker's Create: mnt/<id>, diff/<id> (0755), then layers/<id> (which makes the layer exist).
   * EXISTS when any of the three is there already — and then nothing is deleted: only what this
   * call made is taken back when it fails (a directory someone else made under the id stays).
   */
  private createLayer(id: string, parent: string | undefined): void {
    assertValidId(id);
    if (id.endsWith(REMOVING_SUFFIX)) {
      // Such a dir would be deleted as the leftover of an interrupted removal the next time the store opens.
      throw new UnionctlError(
        'INVALID_ID',
        `aufs layer id ${JSON.stringify(id)} ends with ${REMOVING_SUFFIX}, which aufs keeps for layers being removed`,
        { hint: 'choose another id' },
      );
    }
    if (this.layout.exists(id)) throw new UnionctlError('EXISTS', `aufs layer ${id} already exists`, { hint: 'choose another id' });
    const ancestors = parent === undefined ? [] : this.ancestorsFor(id, parent);
    const made: string[] = [];
    try {
      for (const dir of [this.layout.mntDir(id), this.layout.diffDir(id)]) {
        mkdirSync(dir, { mode: MODE.layerDir });
        made.push(dir);
        chmodSync(dir, MODE.layerDir);
      }
      this.layout.writeLayersFile(id, ancestors);
    } catch (e) {
      rmSync(this.layout.layersFile(id), { force: true });
      for (const dir of made) rmdirSync(dir); // empty: this call made them a moment ago
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new UnionctlError('EXISTS', `aufs layer ${id} already has directories in ${this.home} that it did not make`, {
          hint: 'choose another id; those directories were left as they are',
        });
      }
      throw e;
    }
  }

  /** The new layer's layers/ lines: the parent, then the parent's own ancestors; refused past maxDepth. */
  private ancestorsFor(id: string, parent: string): string[] {
    assertValidId(parent, 'parent layer id');
    if (!this.layout.exists(parent)) {
      throw new UnionctlError('NOT_FOUND', `parent layer ${parent} does not exist in ${this.home}`, {
        hint: 'create or import the parent first',
      });
    }
    const ancestors = [parent, ...this.layout.parentIds(parent)];
    if (ancestors.length > this.maxDepth) {
      const mechanism =
        this.mechanism === 'kernel'
          ? `kernel aufs mounts at most ${KERNEL_AUFS_MAX_BRANCHES} branches`
          : 'fuse-overlayfs takes that many lower layers at most here (one argument of 128 KiB, one open file each)';
      throw new UnionctlError(
        'UNSUPPORTED',
        `aufs layer ${id} would have ${ancestors.length} ancestors; the limit here is ${this.maxDepth} (${mechanism})`,
        {
          hint: 'squash the image into fewer layers',
        },
      );
    }
    return ancestors;
  }

  /**
   * Whatever of the layer is there (a killed create may have left only mnt/<id>) is deleted, never
   * through a symlink or across a mount. The store calls this only for ids whose record it holds:
   * directories under an id nobody recorded are never removed (create refuses them with EXISTS).
   */
  async remove(id: string, opts: RemoveOpts = {}): Promise<void> {
    assertValidId(id);
    // Anything of the layer still there: a removal killed after layers/<id> and diff/<id> went still has mnt/<id> (and the rest) to delete.
    const traces = [join(this.writableMarks, id), this.workDirOf(id), join(this.specWorkRoot, id)];
    if (!this.layout.hasAnyPart(id) && !traces.some((p) => lstatSync(p, { throwIfNoEntry: false }) !== undefined)) return;
    await this.mounts.whileUnused(
      id,
      () => {
        rmSync(this.layout.layersFile(id), { force: true });
        this.layout.atomicRemove(DIFF, id);
        this.layout.atomicRemove(MNT, id);
        rmSync(join(this.writableMarks, id), { force: true });
        removeStoreTree(this.workRoot, id, 'fuse-overlayfs work dir');
        removeStoreTree(this.specWorkRoot, id, 'fuse-overlayfs work dir');
      },
      opts,
    );
  }

  // ---- the view and its mount ------------------------------------------------------------

  protected mountPointOf(id: string): string {
    return this.layout.mntDir(id);
  }

  /** A layer without parents is its own diff/<id> (nothing to mount, as Docker does); others: the union at mnt/<id>. */
  protected viewOf(id: string): LayerView {
    const parents = this.parentsOf(id);
    this.assertBranchesInside([id]);
    if (parents.length === 0) return { path: this.layout.diffDir(id), needsMount: false };
    return { path: this.layout.mntDir(id), needsMount: true };
  }

  /** CORRUPT unless diff/<id> of every layer given is a real directory of the home (no symlink on the way). */
  private assertBranchesInside(ids: readonly string[]): void {
    assertDirsInside(
      this.home,
      ids.map((i) => join(DIFF, i)),
      'no-symlinks',
      'aufs diff dir',
    );
  }

  private parentsOf(id: string): string[] {
    assertValidId(id);
    return this.layout.parentIds(id); // NOT_FOUND for a layer that does not exist
  }

  private isWritable(id: string): boolean {
    return lstatSync(join(this.writableMarks, id), { throwIfNoEntry: false }) !== undefined;
  }

  /**
   * What mountUnion mounts, decided without touching anything: with kernel aufs the mount(2) data
   * and append remounts (the page arithmetic of planAufsMount), with fuse-overlayfs the union
   * (a writable layer's diff as the upper, over its parents; an image layer read-only over them).
   */
  private aufsUnion(id: string, mountLabel: string | undefined): { kernel: AufsMountPlan } | { fuse: FuseUnion } {
    const parents = this.parentsOf(id);
    if (this.mechanism === 'kernel') {
      const ro = parents.map((p) => this.layout.diffDir(p));
      return { kernel: planAufsMount(this.layout.diffDir(id), ro, { pageSize: pageSize(), mountLabel, dirperm1: this.dirperm1 }) };
    }
    if (this.isWritable(id)) return { fuse: { lowers: parents, upper: this.layout.diffDir(id), work: this.workDirOf(id), mountLabel } };
    return { fuse: { lowers: [id, ...parents], mountLabel } };
  }

  protected override planUnion(id: string, opts: MountOptions): MountPlan {
    const union = this.aufsUnion(id, opts.mountLabel);
    const path = this.layout.mntDir(id);
    const mechanism = { name: 'mechanism', value: this.mechanism === 'kernel' ? 'kernel aufs' : 'fuse-overlayfs', why: this.mechanismWhy };
    if ('kernel' in union) {
      const data = [union.kernel.data, ...union.kernel.appends];
      const remounts = union.kernel.appends.length;
      const split = {
        name: 'remounts',
        value: String(remounts),
        why:
          remounts === 0 ? 'every branch fits the first mount call' : 'branches past the first page are added by MS_REMOUNT append calls',
      };
      const dataBytes = Math.max(...data.map((d) => Buffer.byteLength(d) + 1));
      return { method: 'aufs', path, fsType: 'aufs', data, dataBytes, pageSize: pageSize(), decisions: [mechanism, split] };
    }
    const shape = union.fuse.upper
      ? { name: 'union', value: 'writable', why: `diff/${id} is the upper dir over its parents` }
      : { name: 'union', value: 'read-only', why: `${id} is an image layer: its diff and its parents' are all lowers` };
    const args = fuseArgs(union.fuse, path);
    return { method: 'fuse-overlayfs', path, fsType: FUSE_FSTYPE, cwd: this.layout.diffRoot(), data: args, decisions: [mechanism, shape] };
  }

  protected async mountUnion(id: string, opts: MountOptions): Promise<void> {
    const target = this.layout.mntDir(id);
    // Every branch and the mount point: the kernel (or fuse-overlayfs) follows symlinks in all of them.
    this.assertBranchesInside([id, ...this.parentsOf(id)]);
    assertDirsInside(this.home, [join(MNT, id)], 'no-symlinks', 'mount point');
    const union = this.aufsUnion(id, opts.mountLabel);
    if ('kernel' in union) return mountKernelAufs(target, union.kernel, mount, (t) => umount2(t));
    const work = union.fuse.work;
    if (work === undefined) return mountFuse(this.layout.diffRoot(), target, union.fuse);
    removeStoreTree(this.workRoot, id, 'fuse-overlayfs work dir'); // a crashed mount may have left files in it
    mkdirSync(work, { mode: 0o700 });
    try {
      await mountFuse(this.layout.diffRoot(), target, union.fuse);
    } catch (e) {
      rmSync(work, { recursive: true, force: true });
      throw e;
    }
  }

  protected async unmountUnion(id: string, opts: UnmountOptions = {}): Promise<void> {
    const target = this.layout.mntDir(id);
    assertDirsInside(this.home, [join(MNT, id)], 'no-symlinks', 'mount point');
    const mounted = this.unionMount(id);
    if (mounted?.fsType === FUSE_FSTYPE) {
      const proc = findFuseProcess(target);
      const upper = proc === undefined ? undefined : unionFromArgv(proc.argv).upper;
      if (opts.detach) {
        // fuse-overlayfs exits once this ending process's files are closed; its work dir is emptied by the next mount.
        umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW);
        return;
      }
      await unmountFuse(target);
      removeStoreTree(this.workRoot, id, 'fuse-overlayfs work dir');
      // The branch is quiet now: bring it back to pure aufs format (only ever the layer's own dir).
      if (upper === this.layout.diffDir(id) || this.isWritable(id)) this.normalise(id);
    } else if (mounted !== undefined) {
      flushPseudoLinks(target);
      umount2(target, UMOUNT_NOFOLLOW);
    }
  }

  /** normaliseAufsBranch on diff/<id>, once it is known to be the layer's own directory. */
  private normalise(id: string): void {
    this.assertBranchesInside([id]);
    normaliseAufsBranch(this.layout.diffDir(id));
  }

  /** Also the temp files of layers/<id> writes that were killed before their rename (a create's). */
  override async recover(): Promise<void> {
    removeDeadTempFiles(join(this.home, LAYERS));
    await super.recover();
  }

  /** An unmount killed before it removed the work dir or normalised the branch: both done now. */
  protected override tidyUnmounted(id: string): void {
    if (this.mechanism === 'kernel') return;
    removeStoreTree(this.workRoot, id, 'fuse-overlayfs work dir');
    if (this.isWritable(id) && lstatSync(this.layout.diffDir(id), { throwIfNoEntry: false })?.isDirectory()) this.normalise(id);
  }

  /** fuse-overlayfs's workdir for the layer: emptied before a mount, removed after the unmount. */
  private workDirOf(id: string): string {
    return join(this.workRoot, id);
  }

  /** The union mounted at mnt/<id> (kernel aufs or fuse-overlayfs), if any. */
  private unionMount(id: string): MountInfo | undefined {
    const m = findMount(this.layout.mntDir(id));
    return m !== undefined && (m.fsType === 'aufs' || m.fsType === FUSE_FSTYPE) ? m : undefined;
  }

  // ---- queries -----------------------------------------------------------------------------

  /** True for a complete layer and for any part of one (Driver.exists: half-made storage counts). */
  async exists(id: string): Promise<boolean> {
    assertValidId(id);
    return this.layout.hasAnyPart(id);
  }

  storedLayerIds(): string[] {
    return aufsLayerIds(this.layout);
  }

  /** layers/ files, diff/ dirs and -removing leftovers against the records (check.ts). */
  async check(ctx: DriverCheckContext): Promise<CheckFinding[]> {
    return checkAufs(this.layout, ctx, relative(ctx.root, this.home));
  }

  /** Docker's four pairs, then the mount mechanism and its limit. */
  async status(): Promise<Array<[string, string]>> {
    return [
      ['Root Dir', this.home],
      ['Backing Filesystem', backingFs(this.home)],
      ['Dirs', String(this.layout.layerIds().length)],
      ['Dirperm1 Supported', String(this.dirperm1)],
      ['Mount Mechanism', this.mechanism === 'kernel' ? `kernel aufs — ${this.mechanismWhy}` : `fuse-overlayfs — ${this.mechanismWhy}`],
      ['Max Branches', String(this.maxDepth + 1)],
    ];
  }

  /** Docker's aufs has no metadata; these name the same dirs overlay2's keys do. */
  async metadata(id: string): Promise<Record<string, string>> {
    const parents = this.parentsOf(id);
    const meta: Record<string, string> = { UpperDir: this.layout.diffDir(id), MergedDir: this.layout.mntDir(id) };
    if (parents.length > 0) meta.LowerDir = parents.map((p) => this.layout.diffDir(p)).join(':');
    return meta;
  }

  /**
   * Top first. Kernel aufs: /sys/fs/aufs/si_<si>/br<N>. FUSE: the branches the fuse-overlayfs
   * process serving mnt/<id> was given (its command line), checked against mountinfo. Not mounted:
   * what get would mount.
   */
  async branches(id: string): Promise<Branch[]> {
    const parents = this.parentsOf(id);
    const mounted = this.unionMount(id);
    if (mounted?.fsType === 'aufs') return this.kernelBranches(mounted);
    if (mounted?.fsType === FUSE_FSTYPE) return this.fuseBranches(id, mounted);
    const own: BranchMode = this.mechanism === 'kernel' || this.isWritable(id) ? 'rw' : parents.length === 0 ? 'ro' : 'ro+wh';
    return [
      { path: this.layout.diffDir(id), layer: id, mode: own },
      ...parents.map((p): Branch => ({ path: this.layout.diffDir(p), layer: p, mode: 'ro+wh' })),
    ];
  }

  private kernelBranches(mounted: MountInfo): Branch[] {
    const si = aufsSiOf(mounted.superOptions);
    if (si === undefined)
      throw new UnionctlError('CORRUPT', `the aufs mount at ${mounted.mountPoint} shows no si= option`, {
        hint: 'is sysfs mounted? is this aufs?',
      });
    return readSysfsBranches(si).map((b) => ({
      path: b.path,
      layer: this.branchLayer(b.path, mounted.mountPoint),
      mode: b.perm === 'rw' ? 'rw' : b.perm === 'ro+wh' ? 'ro+wh' : 'ro',
    }));
  }

  private fuseBranches(id: string, mounted: MountInfo): Branch[] {
    const proc = findFuseProcess(mounted.mountPoint);
    if (proc === undefined) {
      throw new UnionctlError('CORRUPT', `${mounted.mountPoint} is a fuse-overlayfs mount, but no fuse-overlayfs process serves it`, {
        hint: `unmount it (unionctl umount ${id}) and mount it again`,
      });
    }
    const union = unionFromArgv(proc.argv);
    const branches: Branch[] = [];
    if (union.upper !== undefined)
      branches.push({ path: union.upper, layer: this.branchLayer(union.upper, mounted.mountPoint), mode: 'rw' });
    for (const lower of union.lowers) {
      const layer = this.branchLayer(lower, mounted.mountPoint);
      branches.push({ path: this.layout.diffDir(layer), layer, mode: 'ro+wh' });
    }
    return branches;
  }

  private branchLayer(dir: string, mountPoint: string): string {
    const layer = this.layout.layerOfBranchDir(dir);
    if (layer === undefined) {
      throw new UnionctlError(
        'CORRUPT',
        `the union at ${mountPoint} has branch ${JSON.stringify(dir)}, which is not a layer of ${this.home}`,
        {
          hint: 'something other than unionctl mounted over the layer; unmount it',
        },
      );
    }
    return layer;
  }

  // ---- diffs -------------------------------------------------------------------------------

  /** Docker's isParent: `parent` is the layer's direct parent (or both have none). */
  private isParent(id: string, parent: string | undefined): boolean {
    const parents = this.parentsOf(id);
    return parent === undefined ? parents.length === 0 : parents[0] === parent;
  }

  /**
   * Straight into diff/<id> with `.wh.` entries kept (aufs format). A hardlink to a file of an
   * ancestor is resolved through the ancestors' diff dirs (the file is copied up first).
   */
  override async applyDiff(id: string, parent: string | undefined, tar: Readable | string, opts: ApplyDiffOpts = {}): Promise<ApplyResult> {
    if (!this.isParent(id, parent)) {
      throw new UnionctlError(
        'USAGE',
        `aufs layer ${id} is not a child of ${parent ?? '(no parent)'}; a diff is applied onto the layer's own parent`,
        {
          hint: `its parent is ${this.parentsOf(id)[0] ?? '(none)'}`,
        },
      );
    }
    this.assertApplicable(id);
    const parents = this.parentsOf(id);
    this.assertBranchesInside(parents);
    const lowerDirs = parents.map((p) => this.layout.diffDir(p));
    return applyLayer(tar, this.layout.diffDir(id), { ...opts, whiteoutFormat: 'aufs', lowerDirs });
  }

  /** diff/<id> is already the layer tar's content (`.wh..wh.*` bookkeeping skipped, the opaque marker kept). */
  override async diff(id: string, parent?: string): Promise<Readable> {
    if (!this.isParent(id, parent)) return this.naive.diff(id, parent);
    this.assertBranchesInside([id]);
    this.normaliseIfQuiet(id);
    return exportLayerDir(this.layout.diffDir(id), 'aufs');
  }

  override async changes(id: string, parent?: string): Promise<Change[]> {
    if (!this.isParent(id, parent)) return this.naive.changes(id, parent);
    const parents = this.parentsOf(id);
    this.assertBranchesInside([id, ...parents]);
    return changesFromLayerDir(
      this.layout.diffDir(id),
      'aufs',
      parents.map((p) => this.layout.diffDir(p)),
    );
  }

  override async diffSize(id: string, parent?: string): Promise<number> {
    if (!this.isParent(id, parent)) return this.naive.diffSize(id, parent);
    this.assertBranchesInside([id]);
    return directorySize(this.layout.diffDir(id));
  }

  /** A writable layer left from an older mount may still carry fuse-overlayfs xattrs; never touch a mounted one. */
  private normaliseIfQuiet(id: string): void {
    if (this.mechanism === 'fuse' && this.isWritable(id) && !this.mounts.isMounted(id)) this.normalise(id);
  }

  // ---- containerd: mounts a runtime makes, commit -----------------------------------------

  /**
   * What get shows, as mounts a runtime makes itself: fuse-overlayfs through the mount helper
   * (fuseHelperMountSpec; kernel aufs or not, fuse-overlayfs reads the format). Writable: the
   * ancestors' diff dirs as lowers, diff/<id> as the upper, a workdir of its own in the driver's
   * state (made here, removed with the layer); readonly: diff/<id> and the ancestors' as lowers.
   * A layer without ancestors is a bind of diff/<id>, as get returns it. UNSUPPORTED when
   * mount.fuse3 or fuse-overlayfs is missing. Deletions the runtime makes through the mount are
   * char 0/0 devices (no FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT in its environment): diff, changes
   * and sealWritable normalise them to `.wh.` files first.
   */
  async mountSpec(id: string, opts: { readonly: boolean }): Promise<MountSpec[]> {
    const parents = this.parentsOf(id);
    this.assertBranchesInside([id, ...parents]);
    const own = this.layout.diffDir(id);
    if (parents.length === 0) return [{ type: 'bind', source: own, options: [opts.readonly ? 'ro' : 'rw', 'rbind'] }];
    const why = fuseHelperUnsupportedReason();
    if (why !== undefined) {
      throw new UnionctlError('UNSUPPORTED', `a runtime cannot mount aufs layer ${id} here: ${why}`, {
        hint: 'install fuse3 and fuse-overlayfs (apt-get install fuse3 fuse-overlayfs)',
      });
    }
    const lowers = parents.map((p) => this.layout.diffDir(p));
    if (opts.readonly) return [fuseHelperMountSpec({ lowers: [own, ...lowers] }, pageSize())];
    ensureStoreDir(this.specWorkRoot, 0o700, 'aufs driver state directory'); // made by the first mountSpec, not at every open
    const work = join(this.specWorkRoot, id);
    mkdirSync(work, { recursive: true, mode: 0o700 });
    assertDirsInside(this.specWorkRoot, [id], 'no-symlinks', 'fuse-overlayfs work dir');
    return [fuseHelperMountSpec({ lowers, upper: own, work }, pageSize())];
  }

  /**
   * Writable and image layers are both diff/<id> in aufs format: the branch is normalised (what a
   * runtime's fuse-overlayfs left: char 0/0 whiteouts, opaque xattrs) and the writable mark goes,
   * so later mounts of the layer are read-only. Idempotent. The layer must not be mounted.
   */
  async sealWritable(id: string): Promise<void> {
    this.parentsOf(id); // NOT_FOUND
    if (!this.mounts.isMounted(id)) this.normalise(id);
    rmSync(join(this.writableMarks, id), { force: true });
    removeStoreTree(this.specWorkRoot, id, 'fuse-overlayfs work dir');
  }

  // ---- cleanup -----------------------------------------------------------------------------

  /** Unmounts every union under mnt/ (waiting for the FUSE processes) and drops every reference. */
  async cleanup(): Promise<void> {
    await this.mounts.resetAll(this.layout.layerIds().filter((id) => this.mounts.isMounted(id)));
  }
}
