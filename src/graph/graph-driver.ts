/**
 * What every driver shares, written once: the mount lifecycle (get, put, references: mounts.ts)
 * and the naive diff (naive-diff.ts, containers/storage's NaiveDiffDriver idea) for applyDiff,
 * diff, changes and diffSize. A driver extends GraphDriver and says only what is special about it:
 * how it stores a layer (create, remove), where a layer's view is and how to mount and unmount it
 * (the four protected Mounter methods), and, where it has one, its native diff (by overriding the
 * diff methods and falling back to `this.naive` where the native one is not valid).
 */
import type { Readable } from 'node:stream';
import { UnionctlError } from '../errors.js';
import type {
  ApplyDiffOpts,
  ApplyResult,
  Branch,
  Change,
  CreateOpts,
  Driver,
  DriverCapabilities,
  DriverInit,
  GetOpts,
  MountPlan,
  PutOpts,
} from './driver.js';
import {
  MountLifecycle,
  type LayerView,
  type LifecycleOptions,
  type MountOptions,
  type References,
  type UnmountOptions,
} from './mounts.js';
import { NaiveDiff } from './naive-diff.js';

export abstract class GraphDriver implements Driver {
  readonly name: string;
  readonly home: string;
  /** Reference counts, per-layer locks and (un)mounting at the right moments, for this driver's layers. */
  protected readonly mounts: MountLifecycle;
  /** Diffs computed by comparing two views; the default for every diff method. */
  protected readonly naive: NaiveDiff;

  protected constructor(name: string, init: DriverInit, lifecycle: LifecycleOptions) {
    this.name = name;
    this.home = init.home;
    this.mounts = new MountLifecycle(
      name,
      init.stateDir,
      {
        mountPoint: (id) => this.mountPointOf(id),
        view: (id) => this.viewOf(id),
        mount: (id, opts) => this.mountUnion(id, opts),
        unmount: (id, opts) => this.unmountUnion(id, opts),
        tidyUnmounted: (id) => this.tidyUnmounted(id),
      },
      lifecycle,
    );
    this.naive = new NaiveDiff(this);
  }

  // ---- what each driver says ---------------------------------------------------------------

  abstract capabilities(): DriverCapabilities;
  abstract create(id: string, parent?: string, opts?: CreateOpts): Promise<void>;
  abstract createReadWrite(id: string, parent?: string, opts?: CreateOpts): Promise<void>;
  /** Implementations delete the layer inside `this.mounts.whileUnused(id, …)`: that is the IN_USE rule. */
  abstract remove(id: string): Promise<void>;
  abstract exists(id: string): Promise<boolean>;
  abstract status(): Promise<Array<[string, string]>>;
  abstract metadata(id: string): Promise<Record<string, string>>;
  abstract branches(id: string): Promise<Branch[]>;
  abstract cleanup(): Promise<void>;

  /** The directory the layer's union is (or would be) mounted on, from the id alone. */
  protected abstract mountPointOf(id: string): string;
  /** The path get returns and whether a mount is needed for it; NOT_FOUND when the layer has no storage. */
  protected abstract viewOf(id: string): LayerView;
  /** Mounts the layer's union on mountPointOf(id) (it exists and is empty). */
  protected abstract mountUnion(id: string, opts: MountOptions): void | Promise<void>;
  /** Unmounts the union mounted on mountPointOf(id); see UnmountOptions for `detach`. */
  protected abstract unmountUnion(id: string, opts?: UnmountOptions): void | Promise<void>;
  /**
   * The plan mountUnion carries out for the layer (pure: nothing is touched), which mountUnion
   * itself runs, so `mount --explain` shows what the mount does. Default: UNSUPPORTED (a driver
   * whose mount no plan describes yet).
   */
  protected planUnion(_id: string, _opts: MountOptions): MountPlan {
    throw new UnionctlError('UNSUPPORTED', `the ${this.name} driver cannot explain its mounts`, {
      hint: 'mount the layer and look at /proc/self/mountinfo',
    });
  }
  /** Why the layer's view needs no mount (its view is a directory of its own); drivers say it in their terms. */
  protected singleDirWhy(id: string): string {
    return `layer ${id}'s view is a directory of its own: nothing is mounted`;
  }
  /** What unmountUnion deletes besides the mount, for an unmount that was killed (see Mounter.tidyUnmounted). Default: nothing. */
  protected tidyUnmounted(_id: string): void {}

  // ---- shared ------------------------------------------------------------------------------

  get(id: string, opts: GetOpts = {}): Promise<string> {
    return this.mounts.get(id, opts);
  }

  put(id: string, opts: PutOpts = {}): Promise<void> {
    return this.mounts.put(id, opts);
  }

  hold(id: string): Promise<() => Promise<void>> {
    return this.mounts.hold(id);
  }

  references(id: string): References {
    return this.mounts.references(id);
  }

  referencedIds(): string[] {
    return this.mounts.referencedIds();
  }

  /** See Driver.explainMount: a single dir when the view needs no mount, else the driver's union plan. */
  explainMount(id: string, opts: { mountLabel?: string } = {}): MountPlan {
    const view = this.viewOf(id);
    if (!view.needsMount) {
      return {
        method: 'single-dir',
        path: view.path,
        data: [],
        decisions: [{ name: 'method', value: 'single-dir', why: this.singleDirWhy(id) }],
      };
    }
    return this.planUnion(id, { mountLabel: opts.mountLabel });
  }

  viewPath(id: string): string {
    return this.viewOf(id).path;
  }

  /** Drops the reference files, lock files and empty mount points that killed processes left (MountLifecycle.prune). */
  recover(): Promise<void> {
    return this.mounts.prune();
  }

  /** Naive apply: through the layer's own view, with real deletions (whiteout format 'plain'). */
  async applyDiff(id: string, parent: string | undefined, tar: Readable | string, opts: ApplyDiffOpts = {}): Promise<ApplyResult> {
    this.assertApplicable(id);
    return this.naive.applyDiff(id, parent, tar, opts);
  }

  diff(id: string, parent?: string): Promise<Readable> {
    return this.naive.diff(id, parent);
  }

  changes(id: string, parent?: string): Promise<Change[]> {
    return this.naive.changes(id, parent);
  }

  diffSize(id: string, parent?: string): Promise<number> {
    return this.naive.diffSize(id, parent);
  }

  /** applyDiff's refusals: NOT_FOUND without storage, IN_USE while referenced or mounted. */
  protected assertApplicable(id: string): void {
    this.viewOf(id); // NOT_FOUND
    this.mounts.assertUnused(id);
  }

  /** NOT_FOUND for a layer this driver has no storage for. */
  protected notFound(id: string): UnionctlError {
    return new UnionctlError('NOT_FOUND', `${this.name} layer ${id} does not exist in ${this.home}`, {
      hint: 'check the id with unionctl ls',
    });
  }
}
