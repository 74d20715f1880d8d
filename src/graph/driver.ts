import type { Readable } from 'node:stream';
import type { TarTap } from '../archive/tar-reader.js';
import type { ApplyResult, Change, ChangeKind, WhiteoutFormat } from '../archive/types.js';
import type { References } from './mounts.js';

export type { ApplyResult, Change, ChangeKind, References, WhiteoutFormat };

export type BranchMode = 'rw' | 'ro' | 'ro+wh';

/** One branch of a layer's union, as the kernel sees it. */
export interface Branch {
  path: string;
  /** The layer this branch belongs to. */
  layer: string;
  mode: BranchMode;
}

/** What applyDiff passes on to the tar engine (applyLayer), whatever the driver. */
export interface ApplyDiffOpts {
  /** Bytes of the uncompressed tar read so far. */
  onProgress?: (bytes: number) => void;
  /** Sees every byte of the stream that is not file content (the store's tar-split recorder). */
  tap?: TarTap;
  /** What the apply skipped or took as it is and the user may want to know (default: process.emitWarning). */
  onWarning?: (message: string) => void;
  /** The parent layers are still being applied: see ApplyLayerOptions.lowersReady (drivers whose layers hold only their diff). */
  lowersReady?: Promise<unknown>;
}

export interface CreateOpts {
  /** Per-layer storage options (only createReadWrite accepts any, e.g. size). */
  storageOpt?: Record<string, string>;
  mountLabel?: string;
}

export interface GetOpts {
  /** SELinux context label for the mount (context="…"). */
  mountLabel?: string;
  /** The reference outlives this process (`unionctl mount`): only a persistent put gives it back. */
  persistent?: boolean;
  /**
   * A named reference that outlives the process, at most one per name and layer: a get while it
   * is held counts nothing more, so a holder that was killed half-way can take it again, or find
   * it and give it back (the store's read-only views hold their layer so). Implies persistent.
   */
  heldBy?: string;
}

export interface RemoveOpts {
  /**
   * The layer's parent as the store records it. A removal killed half-way may have deleted the
   * driver's own note of it (overlay2's lower file) already; finishing it still puts the parent
   * back as it was (overlay2 drops the parent's committed mark with its last child).
   */
  parent?: string;
  /**
   * First unmount whatever of the layer is mounted and drop all its references: only for a layer
   * nobody can be using (rolling back a creation whose process died).
   */
  force?: boolean;
}

export interface PutOpts {
  /** Give back a persistent reference (`unionctl umount`) rather than one of this process. */
  persistent?: boolean;
  /** Give back the named reference (GetOpts.heldBy). */
  heldBy?: string;
}

/**
 * One mount as a runtime makes it itself (containerd's Mount message): `mount -t type source
 * target -o options`. Paths are host paths.
 */
export interface MountSpec {
  type: string;
  source: string;
  options: string[];
}

/**
 * When `unionctl check --repair` makes a finding's repair: 'default' (it loses nothing: a link, a
 * lower file, a marker rebuilt from what the store knows), 'remove-orphans' (it deletes something
 * nobody accounts for, which might still be someone's data: only with --remove-orphans), 'never'
 * (nothing the store knows can put it right; the repair text says what a person can do).
 */
export type RepairWhen = 'default' | 'remove-orphans' | 'never';

/**
 * Where a repair writes: the store transaction it runs in (graph/check.ts runs every repair of one
 * pass in one). Paths are relative to the store root; the files are replaced at the commit, all
 * or none (journaled). What is no file write (a symlink, a directory, an unmount) goes to
 * afterCommit, and must be atomic and idempotent on its own: a repair killed half-way is
 * finished by the next `check --repair`.
 */
export interface RepairTx {
  write(path: string, content: string, opts?: { mode?: number }): void;
  delete(path: string): void;
  afterCommit(fn: () => Promise<void>): void;
}

/** One problem `unionctl check` found (docs/json.md, CheckFinding). */
export interface CheckFinding {
  /** Stable, SCREAMING_SNAKE (LINK_DANGLING): scripts and tests match on it. */
  code: string;
  /** What it is about: a layer id, or a path relative to the store root. */
  subject: string;
  message: string;
  /** The repair --repair would make, or (when 'never') why there is none and what a person can do. */
  repair: string;
  when: RepairWhen;
  /** Makes the repair (absent when 'never'); returns what it did, for the log. */
  fix?: (tx: RepairTx) => string | Promise<string>;
}

/** One layer as the store's records know it (complete records only), for a driver's check. */
export interface CheckedLayer {
  id: string;
  parent?: string;
  writable: boolean;
}

/** What Driver.check is told. */
export interface DriverCheckContext {
  /** The store root: RepairTx paths are relative to it. */
  root: string;
  /** Every complete layer, by id. */
  layers: ReadonlyMap<string, CheckedLayer>;
  /** Ids with a record in any state (a layer being created or removed is not the driver's to judge). */
  recorded: ReadonlySet<string>;
}

/** One decision of a mount plan: what was chosen, and the fact that chose it. */
export interface MountDecision {
  /** What was decided: "method", "index", "userxattr", "redirect_dir", "metacopy", "mechanism", … */
  name: string;
  value: string;
  why: string;
}

/**
 * The mount get would make for a layer's view, decided by the same code get's mount runs (the
 * driver's mount carries out exactly this plan), found without mounting anything.
 */
export interface MountPlan {
  /**
   * single-dir: nothing is mounted, the view is a directory of the layer's; absolute, relative,
   * new-api: overlayfs by mount(2) with absolute paths, by mount(2) from inside the home with
   * paths relative to it (overlay2's l/ links), or by fsopen/fsconfig with one `lowerdir+` per
   * layer; aufs: kernel aufs, mount(2) and append remounts; fuse-overlayfs: that program.
   */
  method: 'single-dir' | 'absolute' | 'relative' | 'new-api' | 'aufs' | 'fuse-overlayfs';
  /** The view's path: the mount point, or the directory itself (single-dir). */
  path: string;
  /** The type the mount table will show; absent for single-dir. */
  fsType?: string;
  /**
   * What is handed over, in order: the mount(2) data (aufs: then each append remount's), the
   * fsconfig calls as key=value (new-api), fuse-overlayfs's arguments. Empty for single-dir.
   */
  data: string[];
  /** Bytes of the mount(2) data, its NUL included, and the page it must fit in (mount(2) methods). */
  dataBytes?: number;
  pageSize?: number;
  /** The directory the mount is made from: relative paths are resolved against it. */
  cwd?: string;
  decisions: MountDecision[];
}

/** What a driver can and cannot do, for the store and `unionctl info`. */
export interface DriverCapabilities {
  whiteoutFormat: WhiteoutFormat;
  /** The driver computes diffs from its own layer dirs instead of comparing two trees. */
  nativeDiff: boolean;
  /** Most ancestors a layer may have (Docker's meaning: overlay2 refuses a child past it). */
  maxDepth: number;
}

/**
 * A storage driver, modelled on Docker's graphdriver (DESIGN.md §2): it stores layers under its
 * home directory, in the on-disk format of the Docker driver of the same name, and mounts a
 * layer's merged view. Parents, digests, image records and the store's locking are the
 * LayerStore's business (store.ts), not the driver's.
 *
 * The contract, for every driver (test/conformance checks each sentence against each driver):
 * - Ids: every method that takes an id refuses one that is not 1–128 characters of
 *   [A-Za-z0-9_.-] starting with a letter or digit, or that the driver's format reserves
 *   (devicemapper's "base"), with INVALID_ID, before doing anything.
 * - Errors are UnionctlErrors with the codes named below; a refused call changes nothing.
 *   SYSCALL is the kernel refusing something (a mount, a mknod), with its errno.
 * - Concurrency: any method may run at the same time as any other, in this process and in
 *   others, on the same layer or on different ones. get, put and remove of one layer are
 *   serialised by that layer's lock (mounts.ts); different layers do not wait for each other.
 */
export interface Driver {
  readonly name: string;
  /** The driver's home directory, <root>/<name>. */
  readonly home: string;
  /** The driver's format and limits; the same on every call. */
  capabilities(): DriverCapabilities;
  /**
   * Makes an empty image layer on top of `parent` (whose files then show through it).
   * Refuses: EXISTS (the id already has storage here, even half-made), NOT_FOUND (`parent` has
   * none), BAD_OPTION (any per-layer storage option: those are for writable layers), UNSUPPORTED
   * (`parent` already has capabilities().maxDepth ancestors). A failed create leaves nothing.
   */
  create(id: string, parent?: string, opts?: CreateOpts): Promise<void>;
  /**
   * As create, for a writable layer (a container's, an `-init` layer). Per-layer storage options
   * the driver knows are accepted only here (overlay2 `size`, devicemapper `size`); an unknown
   * key is BAD_OPTION.
   */
  createReadWrite(id: string, parent?: string, opts?: CreateOpts): Promise<void>;
  /**
   * Deletes the layer's storage. Refuses IN_USE (naming the holders) while the layer has a
   * reference from any process or its union is mounted; nothing is deleted then. Idempotent: a
   * layer with no storage, or half-made storage (a create that crashed), is removed without
   * complaint. Children are not looked for: the store never removes a layer that has some.
   * With `force`, whatever is mounted or referenced is released first (see RemoveOpts).
   */
  remove(id: string, opts?: RemoveOpts): Promise<void>;
  /**
   * Returns the path of the layer's merged view (its files over its ancestors', whiteouts
   * applied) and takes one reference: of this process (dropped if the process dies), or
   * persistent with `persistent: true`. The first reference mounts the union; one already mounted
   * (by another process, or left by an earlier one) is adopted, never mounted twice, and every
   * caller gets the same path. Refuses: NOT_FOUND (no storage), SYSCALL (the mount failed:
   * nothing is counted and no mount point is left).
   */
  get(id: string, opts?: GetOpts): Promise<string>;
  /**
   * Gives back one reference of the kind given. The last one unmounts the union (overlay and
   * overlay2 also remove the mount point). Refuses USAGE when there is no reference of that kind
   * (this process's, or persistent) to give back; nothing changes then.
   */
  put(id: string, opts?: PutOpts): Promise<void>;
  /**
   * Marks the layer as being read by this process without mounting it (the store holds a layer for
   * the whole of a diff, changes or diffSize): IN_USE for remove, and for rm/rmi, until the returned
   * release runs or the process dies. NOT_FOUND for a layer without storage.
   */
  hold(id: string): Promise<() => Promise<void>>;
  /** The live references to the layer, a snapshot (all zero for a layer nobody holds or that does not exist). */
  references(id: string): References;
  /** Ids that may have references (those of dead processes included until they are pruned), sorted. */
  referencedIds(): string[];
  /** The path get returns (or would return) for the layer, found without mounting anything. NOT_FOUND for no storage. */
  viewPath(id: string): string;
  /**
   * Run when a store is opened: removes what a process killed while mounting or unmounting left
   * (reference files that count nothing, empty mount points); mounted unions stay. Optional.
   */
  recover?(): Promise<void>;
  /**
   * Ids of every layer with storage in the home, complete or half-made, sorted: what the store
   * compares with its records (a layer no record knows is LAYER_UNACCOUNTED). Optional: without it
   * the check cannot look for such layers.
   */
  storedLayerIds?(): string[];
  /**
   * The driver's own part of `unionctl check` (graph/check.ts): its layout files checked against
   * the records (overlay2's l/ links, link and lower files, committed marks; overlay's lower-id;
   * aufs's layers/ files) and leftovers of its own staging. Reads only; the findings' fixes
   * repair. Findings about layers not in ctx.layers are left to the store. Optional.
   */
  check?(ctx: DriverCheckContext): Promise<CheckFinding[]>;
  /** True when the driver has storage for `id`, complete or half-made. */
  exists(id: string): Promise<boolean>;
  /** Ordered [key, value] pairs as Docker names them, then the driver's own. */
  status(): Promise<Array<[string, string]>>;
  /** Where the layer's parts are (Docker's keys: LowerDir, UpperDir, WorkDir, MergedDir; DeviceId…). NOT_FOUND for no storage. */
  metadata(id: string): Promise<Record<string, string>>;
  /** rw/ro state of every branch of the layer's union, top first, read from the kernel where it says it. NOT_FOUND for no storage. */
  branches(id: string): Promise<Branch[]>;
  /**
   * Extracts a layer tar (plain, gzip or zstd: sniffed; a stream, or the path of a file — read
   * straight into the tar engine's buffers, the fast way in) into a layer just created on
   * `parent`, converting whiteouts to the driver's format. Refuses: NOT_FOUND, IN_USE (the layer
   * has references or is mounted), BAD_TAR and UNSAFE_ENTRY naming the entry — nothing is ever
   * written outside the layer. After a failure the layer's content is undefined: remove it.
   */
  applyDiff(id: string, parent: string | undefined, tar: Readable | string, opts?: ApplyDiffOpts): Promise<ApplyResult>;
  /**
   * The layer's changes against `parent` (any layer, or none: the whole view) as an OCI layer tar,
   * whiteouts as `.wh.` entries. The views it reads stay referenced until the stream has ended,
   * failed or been destroyed, and not after. NOT_FOUND for no storage.
   */
  diff(id: string, parent?: string): Promise<Readable>;
  /** The change list (Docker's rules, sorted by path) against `parent`; nothing stays referenced. NOT_FOUND. */
  changes(id: string, parent?: string): Promise<Change[]>;
  /** Bytes the layer adds against `parent` (Docker's DiffSize); nothing stays referenced. NOT_FOUND. */
  diffSize(id: string, parent?: string): Promise<number>;
  /**
   * The mounts that give the layer's view to a runtime that mounts it itself (containerd and its
   * shims): for a writable layer a writable view (its own dir as the upper), with `readonly` the
   * layer's content, its ancestors' under it, read-only. Host paths; the runtime's mounts are its
   * own. Per driver: overlay2 and overlay overlay mounts (or a bind of a single dir), vfs a bind,
   * aufs fuse-overlayfs through the mount helper (`fuse3.fuse-overlayfs`, containerd runs
   * mount.fuse3). Nothing is mounted or counted here, except by a driver whose layer's files no
   * mount of its own can show: devicemapper's are below rootfs/ of the device's filesystem, so it
   * mounts the device itself (one persistent reference per layer, which releaseMountSpec gives
   * back) and returns a bind of that rootfs/. Optional: a driver without it cannot serve
   * containerd. NOT_FOUND for no storage.
   */
  mountSpec?(id: string, opts: { readonly: boolean }): Promise<MountSpec[]>;
  /**
   * The mount get would make for the layer's view now, without mounting anything (the decision
   * code get's mount runs itself). NOT_FOUND for no storage; UNSUPPORTED for a driver that cannot
   * tell (devicemapper) or a union no method can mount. Optional.
   */
  explainMount?(id: string, opts?: { mountLabel?: string }): MountPlan;
  /**
   * Gives back what mountSpec holds for the layer (devicemapper: unmounts and deactivates its
   * device); the runtime's mounts of the view must be gone. Idempotent. Only a driver whose
   * mountSpec mounts has it; the snapshot service calls it before a Commit and when the last
   * snapshot showing the layer is removed.
   */
  releaseMountSpec?(id: string): Promise<void>;
  /**
   * Makes writable layer `id` an image layer (containerd's Commit): what marks it writable goes
   * and children may be built on it. Where writable layers have the image layers' format (overlay2,
   * vfs, aufs, devicemapper) the files stay where they are; overlay (v1) turns upper/ over its
   * lower into a root/ farm. Idempotent, also after a call killed half-way. Optional: a driver
   * without it cannot serve containerd. NOT_FOUND for no storage.
   */
  sealWritable?(id: string): Promise<void>;
  /**
   * Unmounts every union of this driver, drops every reference (persistent ones too) and
   * releases pools and loop devices. Idempotent; the driver stays usable after it.
   */
  cleanup(): Promise<void>;
}

/** What the store hands a driver constructor. */
export interface DriverInit {
  /** <root>/<driver name>: the Docker-identical home. */
  home: string;
  /** Store root. */
  root: string;
  /** <root>/driver-state/<driver name>: the driver's own bookkeeping (mount references, locks), outside the home. */
  stateDir: string;
  /** Driver-wide storage options (already split into key/value; unknown keys must be refused). */
  options: Record<string, string>;
}
