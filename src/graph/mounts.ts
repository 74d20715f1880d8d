/**
 * The one mount lifecycle every driver uses: reference counts that work across processes, a lock
 * per layer, adopting a mount that is already there, unmounting (and removing the mount point) at
 * zero, and one rule for "in use". A driver only says where a layer's view is and how to mount and
 * unmount it (the Mounter); everything else is here.
 *
 * References. `get` takes one, `put` gives one back. There are two kinds:
 * - in-process references (the default): held by this process, recorded with its pid and start
 *   time; when the process dies they no longer count, so a crashed `unionctl diff` never pins a
 *   layer;
 * - persistent references (`{ persistent: true }`): `unionctl mount` in one process, `unionctl
 *   umount` in another; they outlive the process and are released only by a persistent put.
 * A layer is IN USE while it has a reference of either kind, or while its union is mounted (a mount
 * nobody counts, e.g. left by a process killed between mounting and counting, is still in use until
 * it is adopted and released, or cleaned up).
 *
 * On disk, under the driver's state dir (`<root>/driver-state/<driver>/`, outside the driver's
 * Docker-identical home):
 *   refs/<id>    {"boot": "<boot id>", "persistent": N, "holders": [{"pid", "start", "count"}],
 *                "readers": [{"pid", "start", "count"}]} replaced atomically; absent when there are
 *                no references. A file from an earlier boot counts nothing (a reboot unmounted
 *                everything). "readers" are holds without a mount (hold()); left out when none.
 *   locks/<id>   the layer's flock: every get, put, removal and reset of one layer is serialised
 *                here, between processes; other layers are not held up.
 *
 * Crash safety. get writes the new reference before it mounts, put unmounts before it writes: so a
 * crash leaves at worst a count for a union that is not mounted, which counts as nothing (a layer
 * that needs a mount and is not mounted has no live references) and is reset by the next get.
 * The one thing a crash can leave is a mount made by a get whose process died before returning;
 * its reference was written first, so a persistent get leaves a counted mount, an in-process one a
 * mount that the next get adopts and `cleanup` removes.
 */
import { lstatSync, mkdirSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { assertValidId, corruptError, isValidId, UnionctlError } from '../errors.js';
import {
  beforeStopSignal,
  bootId,
  currentProcess,
  describeProcess,
  ensureStoreDir,
  hasMountAt,
  mkdirWithMode,
  processAlive,
  readStoreFile,
  removeDeadTempFiles,
  writeFileAtomic,
  type ProcessIdentity,
} from '../sys/index.js';
import { removeHeldLockFile, withFileLock } from './lock.js';

/** What get needs to know about one layer. */
export interface LayerView {
  /** The path get returns. */
  path: string;
  /** False: the path is the layer's own directory and is its whole view (no parents): nothing is mounted. */
  needsMount: boolean;
}

/** The driver-specific part of the lifecycle: where a layer's view is and how to (un)mount it. */
export interface Mounter {
  /**
   * The directory the layer's union is (or would be) mounted on. Decided by the id alone, so it
   * also works for a half-made layer (a removal after a crashed create).
   */
  mountPoint(id: string): string;
  /** How get shows the layer. Throws NOT_FOUND when the layer has no storage in the driver. */
  view(id: string): LayerView;
  /** Mounts the union on mountPoint(id), which exists and is empty. Throws when it cannot: nothing is counted then. */
  mount(id: string, opts: MountOptions): void | Promise<void>;
  /** Unmounts what is mounted on mountPoint(id). */
  unmount(id: string, opts?: UnmountOptions): void | Promise<void>;
  /**
   * Whether the union is mounted now. Leave it out: the default (mountPoint's device differs from
   * its parent's) is right for every driver; unit tests give a fake.
   */
  isMounted?(id: string): boolean;
  /**
   * Removes what a mount of the layer keeps beside its mount point and an unmount deletes (aufs:
   * the FUSE work dir), for a process killed in between. Called by prune(), under the layer's
   * lock, while the union is not mounted.
   */
  tidyUnmounted?(id: string): void | Promise<void>;
}

export interface MountOptions {
  /** SELinux context label for the mount. */
  mountLabel?: string;
}

export interface UnmountOptions {
  /**
   * The calling process is about to end and may itself hold files of the union open (a command
   * stopped by a signal in the middle of a walk): detach the mount instead of waiting for its users,
   * and leave what needs a quiet union (aufs: the work dir) to the next mount or removal.
   */
  detach?: boolean;
}

export interface LifecycleOptions {
  /** Mode of a mount point the lifecycle creates (Docker: 0700 for overlay2's merged/). */
  mountPointMode: number;
  /** rmdir the mount point after the last unmount (overlay, overlay2: yes; aufs and devicemapper keep mnt/<id>). */
  removeMountPoint: boolean;
}

export interface ReferenceOptions {
  /** The reference outlives this process (a CLI mount); it is given back only by a persistent put. */
  persistent?: boolean;
  /** A named persistent reference, at most one per name: see GetOpts.heldBy. */
  heldBy?: string;
}

/** The live references to one layer. */
export interface References {
  /** References that outlive their process (`unionctl mount`). */
  persistent: number;
  /** Running processes that hold in-process references, and how many each. */
  processes: Array<{ pid: number; count: number }>;
  /** Running processes reading the layer's own directories without a mount (hold()), and how many reads each. */
  readers: Array<{ pid: number; count: number }>;
  /** The named references (GetOpts.heldBy), sorted. */
  heldBy: string[];
  /** persistent + named + every process's count + every reader's count. */
  total: number;
  /** The layer's union is mounted now (always false for a layer that needs no mount). */
  mounted: boolean;
}

interface Holder extends ProcessIdentity {
  count: number;
}

/** What refs/<id> holds. */
interface RefFile {
  boot: string;
  persistent: number;
  holders: Holder[];
  /** In the file only when there are any. */
  readers: Holder[];
  /** Named references (GetOpts.heldBy); in the file only when there are any. */
  held: string[];
}

const NO_REFS = (): RefFile => ({ boot: bootId(), persistent: 0, holders: [], readers: [], held: [] });

export class MountLifecycle {
  private readonly refsDir: string;
  private readonly locksDir: string;
  /** This process's in-process references, per layer: given back before a stop signal ends the process. */
  private readonly heldHere = new Map<string, number>();
  private stopWatch: (() => void) | undefined;

  constructor(
    /** For messages: "overlay2 layer <id> is in use". */
    private readonly driverName: string,
    /** <root>/driver-state/<driver> */
    stateDir: string,
    private readonly mounter: Mounter,
    private readonly options: LifecycleOptions,
  ) {
    this.refsDir = join(stateDir, 'refs');
    this.locksDir = join(stateDir, 'locks');
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    for (const dir of [this.refsDir, this.locksDir]) ensureStoreDir(dir, 0o700, `${driverName} driver state directory`);
    removeDeadTempFiles(this.refsDir); // reference files whose writer was killed before its rename
  }

  /**
   * Takes one reference and returns the path of the layer's view, mounting the union first when
   * this is the first reference (a union already mounted, by an earlier process, is adopted).
   * Throws NOT_FOUND (no such layer), SYSCALL (the mount failed; nothing is counted then).
   */
  async get(id: string, opts: MountOptions & ReferenceOptions = {}): Promise<string> {
    assertValidId(id);
    return this.locked(id, async () => {
      // Counted before anything is mounted: a stop signal meanwhile waits for this lock, then unmounts.
      if (ofThisProcess(opts)) this.countHeldHere(id, +1);
      try {
        return await this.takeReference(id, opts);
      } catch (e) {
        if (ofThisProcess(opts)) this.countHeldHere(id, -1);
        throw e;
      }
    });
  }

  private async takeReference(id: string, opts: MountOptions & ReferenceOptions): Promise<string> {
    const view = this.mounter.view(id);
    let refs = this.read(id);
    if (!view.needsMount || this.isMounted(id)) {
      this.write(id, addReference(refs, opts)); // a mount there is counted already, or adopted
      return view.path;
    }
    // Not mounted: whatever the file counts belongs to a mount that is gone (a crash, a umount by hand); readers need no mount.
    refs = { ...NO_REFS(), readers: refs.readers };
    this.write(id, addReference(refs, opts));
    try {
      await this.mountOnce(id, opts);
    } catch (e) {
      this.write(id, refs);
      throw e;
    }
    return view.path;
  }

  /**
   * Gives back one reference of the kind given; at zero, unmounts the union (and removes the mount
   * point where the format says so). A put without a reference of that kind is refused (USAGE) and
   * changes nothing. When the unmount fails the count stays, so a later put can try again.
   */
  async put(id: string, opts: ReferenceOptions = {}): Promise<void> {
    assertValidId(id);
    await this.locked(id, async () => {
      const refs = this.read(id);
      const left = removeReference(refs, opts);
      if (left === undefined) {
        const kind =
          opts.heldBy !== undefined
            ? `reference held by ${opts.heldBy}`
            : opts.persistent
              ? 'mount (unionctl mount)'
              : `reference of process ${process.pid}`;
        throw new UnionctlError('USAGE', `${this.driverName} layer ${id} has no ${kind} to release`, {
          hint: opts.persistent ? `unionctl mount ${id} mounts it` : 'every put must follow a get',
        });
      }
      if (totalOf(left) === 0 && this.isMounted(id)) await this.unmountOnce(id);
      this.write(id, left);
      if (ofThisProcess(opts)) this.countHeldHere(id, -1);
    });
  }

  /**
   * Marks the layer as read by this process without mounting anything (a native diff reading its
   * diff directory): the layer is IN_USE for removals until the returned release is called (once;
   * later calls do nothing) or this process dies. NOT_FOUND when the layer has no storage.
   */
  async hold(id: string): Promise<() => Promise<void>> {
    assertValidId(id);
    await this.locked(id, async () => {
      this.mounter.view(id); // NOT_FOUND
      const refs = this.read(id);
      this.write(id, { ...refs, readers: withOneMore(refs.readers) });
    });
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      await this.locked(id, async () => {
        const refs = this.read(id);
        this.write(id, { ...refs, readers: withOneLess(refs.readers) ?? [] });
      });
    };
  }

  /** The layer's live references, read without the lock (a snapshot). */
  references(id: string): References {
    assertValidId(id);
    return this.summarise(id, this.read(id));
  }

  /** Ids that have references (live or not yet pruned), sorted. */
  referencedIds(): string[] {
    try {
      return readdirSync(this.refsDir)
        .filter((n) => !n.startsWith('.'))
        .sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  /**
   * Runs `remove` under the layer's lock if the layer is not in use, then forgets its references
   * and its lock file. Throws IN_USE (naming the holders) and runs nothing when it is in use.
   * With `force`, unmounts the layer and drops its references first instead (see reset()).
   */
  async whileUnused<T>(id: string, remove: () => T | Promise<T>, opts: { force?: boolean } = {}): Promise<T> {
    assertValidId(id);
    return this.locked(id, async () => {
      if (opts.force && this.isMounted(id)) await this.unmountOnce(id);
      if (!opts.force) this.assertUnused(id);
      const result = await remove();
      this.forget(id);
      return result;
    });
  }

  /** Throws IN_USE when the layer has references or its union is mounted. Without the lock: a snapshot. */
  assertUnused(id: string): void {
    const refs = this.summarise(id, this.read(id));
    if (refs.total === 0 && !refs.mounted) return;
    throw new UnionctlError('IN_USE', `${this.driverName} layer ${id} is in use: ${describeUse(refs)}`, {
      hint: refs.persistent > 0 ? `unmount it first: unionctl umount ${id}` : 'wait for the process using it to finish, then retry',
    });
  }

  /**
   * Unmounts the layer whatever its references say and drops them all: for a layer nobody can be
   * using (rolling back a creation whose process died, cleanup). Idempotent.
   */
  async reset(id: string): Promise<void> {
    assertValidId(id);
    await this.locked(id, async () => {
      if (this.isMounted(id)) await this.unmountOnce(id);
      this.forget(id);
    });
  }

  /** reset() for every layer with references and every id given (mounted ones the driver found). */
  async resetAll(alsoIds: Iterable<string> = []): Promise<void> {
    for (const id of new Set([...this.referencedIds(), ...alsoIds])) await this.reset(id);
  }

  /**
   * Drops what processes killed in a get, put or reset left (run when a store is opened): for
   * every layer with a reference or lock file that nobody uses any more (no live reference, union
   * not mounted), the reference and lock files, the mount point if it is empty and removed at zero,
   * and what the driver tidies after an unmount. A union that is mounted stays as it is.
   */
  async prune(): Promise<void> {
    let locks: string[] = [];
    try {
      locks = readdirSync(this.locksDir);
    } catch {
      /* no lock dir: nothing to prune there */
    }
    const ids = new Set([...this.referencedIds(), ...locks.filter((n) => isValidId(n))]);
    for (const id of ids) {
      try {
        await this.locked(id, async () => {
          const refs = this.summarise(id, this.read(id));
          if (refs.total > 0 || refs.mounted) return;
          if (this.needsMount(id)) {
            await this.mounter.tidyUnmounted?.(id);
            if (this.options.removeMountPoint) removeEmptyDirIfThere(this.mounter.mountPoint(id));
          }
          this.forget(id);
        });
      } catch {
        // A damaged reference file (CORRUPT) or a stuck lock: left for the operations on that layer to report.
      }
    }
  }

  /** Something is mounted on the layer's mount point (one way for every driver: its device differs from its parent's). */
  isMounted(id: string): boolean {
    return this.mounter.isMounted?.(id) ?? hasMountAt(this.mounter.mountPoint(id));
  }

  // ---- references of this process, given back at a stop signal -------------------------------

  private countHeldHere(id: string, change: 1 | -1): void {
    const count = (this.heldHere.get(id) ?? 0) + change;
    if (count > 0) this.heldHere.set(id, count);
    else this.heldHere.delete(id);
    if (this.heldHere.size > 0) this.stopWatch ??= beforeStopSignal(() => this.releaseHeldHere());
    else {
      this.stopWatch?.();
      this.stopWatch = undefined;
    }
  }

  /**
   * Gives back every in-process reference this process holds and unmounts the unions nobody else
   * holds: a command stopped by SIGINT leaves no mount behind (its reference would not count once
   * it is dead, but the mount would stay until the next get adopted it or cleanup removed it).
   */
  private async releaseHeldHere(): Promise<void> {
    for (const id of [...this.heldHere.keys()]) {
      await this.locked(id, async () => {
        const refs = this.read(id);
        const me = currentProcess();
        const left = { ...refs, holders: refs.holders.filter((h) => h.pid !== me.pid || h.start !== me.start) };
        if (totalOf(left) === 0 && this.isMounted(id)) await this.unmountOnce(id, { detach: true });
        this.write(id, left);
        this.heldHere.delete(id);
      });
    }
  }

  // ---- mounting ------------------------------------------------------------------------------

  private async mountOnce(id: string, opts: MountOptions): Promise<void> {
    const dir = this.mounter.mountPoint(id);
    const made = this.makeMountPoint(id, dir);
    try {
      await this.mounter.mount(id, { mountLabel: opts.mountLabel });
    } catch (e) {
      if (made && this.options.removeMountPoint) removeDirIfThere(dir);
      throw e;
    }
  }

  private async unmountOnce(id: string, opts: UnmountOptions = {}): Promise<void> {
    await this.mounter.unmount(id, opts);
    if (this.options.removeMountPoint) removeDirIfThere(this.mounter.mountPoint(id));
  }

  /** Creates the mount point if missing (true when it did). A symlink there is refused: a mount must not land outside the store. */
  private makeMountPoint(id: string, dir: string): boolean {
    const st = lstatSync(dir, { throwIfNoEntry: false });
    if (st === undefined) {
      mkdirWithMode(dir, this.options.mountPointMode);
      return true;
    }
    if (!st.isDirectory()) {
      const what = st.isSymbolicLink() ? 'a symbolic link, which the layout never has there' : 'not a directory';
      throw corruptError(`the mount point of ${this.driverName} layer ${id}, ${dir}, is ${what}`, {
        repair: 'nothing was mounted; remove that entry (rm, not rm -r) and mount again',
      });
    }
    return false;
  }

  // ---- the reference file --------------------------------------------------------------------

  private locked<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return withFileLock(join(this.locksDir, id), fn);
  }

  private forget(id: string): void {
    rmSync(this.refFile(id), { force: true });
    removeHeldLockFile(join(this.locksDir, id));
  }

  private refFile(id: string): string {
    return join(this.refsDir, id);
  }

  /** The file's references with the dead holders left out (empty when there is no file, or it is from another boot). */
  private read(id: string): RefFile {
    const text = readStoreFile(this.refFile(id), 'mount reference file');
    if (text === undefined) return NO_REFS();
    const refs = parseRefFile(text, this.refFile(id));
    if (refs.boot !== bootId()) return NO_REFS();
    return { ...refs, holders: refs.holders.filter((h) => processAlive(h)), readers: refs.readers.filter((h) => processAlive(h)) };
  }

  /** Writes the references; with none left, deletes the file and the lock file (a layer nobody holds leaves no trace). Under the lock. */
  private write(id: string, refs: RefFile): void {
    if (totalOf(refs) === 0 && refs.readers.length === 0) {
      this.forget(id);
      return;
    }
    const { readers, held, ...mountRefs } = refs;
    const file = { ...mountRefs, ...(readers.length > 0 ? { readers } : {}), ...(held.length > 0 ? { held } : {}) };
    writeFileAtomic(this.refFile(id), JSON.stringify(file), { mode: 0o600 });
  }

  private summarise(id: string, refs: RefFile): References {
    const needsMount = this.needsMount(id);
    const mounted = needsMount && this.isMounted(id);
    // A union that needs a mount and has none has no live references, whatever the file says.
    const live = !needsMount || mounted ? refs : NO_REFS();
    const readers = refs.readers.map((h) => ({ pid: h.pid, count: h.count }));
    return {
      persistent: live.persistent,
      processes: live.holders.map((h) => ({ pid: h.pid, count: h.count })),
      readers,
      heldBy: [...live.held].sort(),
      total: totalOf(live) + readers.reduce((n, r) => n + r.count, 0),
      mounted,
    };
  }

  private needsMount(id: string): boolean {
    try {
      return this.mounter.view(id).needsMount;
    } catch {
      return this.isMounted(id); // a half-made layer: only a mount can hold it
    }
  }
}

// ---- reference arithmetic --------------------------------------------------------------------

/** An in-process reference (neither persistent nor named): given back when the process stops. */
function ofThisProcess(opts: ReferenceOptions): boolean {
  return !opts.persistent && opts.heldBy === undefined;
}

function totalOf(refs: RefFile): number {
  return refs.persistent + refs.held.length + refs.holders.reduce((n, h) => n + h.count, 0);
}

function addReference(refs: RefFile, opts: ReferenceOptions): RefFile {
  if (opts.heldBy !== undefined) return refs.held.includes(opts.heldBy) ? refs : { ...refs, held: [...refs.held, opts.heldBy] };
  if (opts.persistent) return { ...refs, persistent: refs.persistent + 1 };
  return { ...refs, holders: withOneMore(refs.holders) };
}

/** The references after giving one back; undefined when there is none of that kind. */
function removeReference(refs: RefFile, opts: ReferenceOptions): RefFile | undefined {
  const name = opts.heldBy;
  if (name !== undefined) return refs.held.includes(name) ? { ...refs, held: refs.held.filter((h) => h !== name) } : undefined;
  if (opts.persistent) return refs.persistent > 0 ? { ...refs, persistent: refs.persistent - 1 } : undefined;
  const holders = withOneLess(refs.holders);
  return holders === undefined ? undefined : { ...refs, holders };
}

/** `holders` with this process's count one higher (an entry added for it if it had none). */
function withOneMore(holders: Holder[]): Holder[] {
  const me = currentProcess();
  const mine = holders.find((h) => h.pid === me.pid && h.start === me.start);
  return [...holders.filter((h) => h !== mine), { ...me, count: (mine?.count ?? 0) + 1 }];
}

/** `holders` with this process's count one lower (its entry gone at zero); undefined when it holds nothing. */
function withOneLess(holders: Holder[]): Holder[] | undefined {
  const me = currentProcess();
  const mine = holders.find((h) => h.pid === me.pid && h.start === me.start);
  if (mine === undefined) return undefined;
  const others = holders.filter((h) => h !== mine);
  return mine.count > 1 ? [...others, { ...mine, count: mine.count - 1 }] : others;
}

function describeUse(refs: References): string {
  const parts: string[] = [];
  if (refs.persistent > 0) parts.push(`mounted by unionctl mount (${refs.persistent} mount${refs.persistent === 1 ? '' : 's'})`);
  for (const p of refs.processes) parts.push(`held by process ${describeProcess(p.pid)}`);
  for (const p of refs.readers) parts.push(`read by process ${describeProcess(p.pid)}`);
  for (const name of refs.heldBy) parts.push(`held by ${name}`);
  if (parts.length === 0 && refs.mounted) parts.push('its union is mounted (by no counted reference: unionctl cleanup unmounts it)');
  return parts.join('; ');
}

/** The file's content, checked: a damaged file is CORRUPT naming it, never an internal error. */
function parseRefFile(text: string, path: string): RefFile {
  const corrupt = (why: string) =>
    corruptError(`mount reference file ${path} ${why}`, {
      repair: 'make sure the layer is not mounted (unionctl cleanup), then delete the file',
    });
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw corrupt('is not valid JSON');
  }
  const v = value as Partial<RefFile> & { count?: unknown };
  // Written by unionctl before the per-process references: {"count": N, "boot": "…"}, every get
  // of any process counted alike. Read as that many persistent references, so a layer mounted
  // before an upgrade stays in use until it is unmounted (or cleaned up).
  if (typeof v === 'object' && v !== null && v.holders === undefined && isCount(v.count) && typeof v.boot === 'string') {
    return { boot: v.boot, persistent: v.count, holders: [], readers: [], held: [] };
  }
  if (typeof v !== 'object' || v === null || typeof v.boot !== 'string' || !isCount(v.persistent) || !Array.isArray(v.holders)) {
    throw corrupt('does not hold {boot, persistent, holders}');
  }
  if (v.readers !== undefined && !Array.isArray(v.readers)) throw corrupt('has "readers" that is not a list');
  if (v.held !== undefined && (!Array.isArray(v.held) || v.held.some((h) => typeof h !== 'string'))) {
    throw corrupt('has "held" that is not a list of names');
  }
  for (const h of [...v.holders, ...(v.readers ?? [])] as Partial<Holder>[]) {
    if (
      typeof h !== 'object' ||
      h === null ||
      !isCount(h.pid) ||
      typeof h.start !== 'string' ||
      typeof h.boot !== 'string' ||
      !isCount(h.count)
    ) {
      throw corrupt('has a holder that is not {pid, start, boot, count}');
    }
  }
  return { ...(v as RefFile), readers: (v.readers ?? []) as Holder[], held: (v.held ?? []) as string[] };
}

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0;
}

/** rmdir, when the dir is there and empty (a mount point something was written into stays). */
function removeEmptyDirIfThere(dir: string): void {
  try {
    rmdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOTDIR') throw e;
  }
}

function removeDirIfThere(dir: string): void {
  try {
    rmdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
