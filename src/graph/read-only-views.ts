/**
 * Read-only views of image layers: what `unionctl mount IMAGE` (without --rw) gives, as podman's
 * image mount and ctr's view do. An image layer's own view is writable in most drivers' formats
 * (overlay2 mounts it with the layer's diff/ as the upper dir; a vfs layer's view, or a base
 * layer's, is its very directory): writing there would change the image under its digests. So a
 * mount of an image layer is a read-only bind of the layer's view, on a mount point of its own:
 *
 *   <root>/driver-state/<driver>/read-only/mnt/<id>      the read-only bind (mode 0700 above it)
 *   <root>/driver-state/<driver>/read-only/{refs,locks}/  its references, as for any mount
 *
 * The references are counted by the one mount lifecycle (MountLifecycle): the first mount takes
 * the named reference "read-only view" on the layer's own view (the driver mounts its union if it
 * needs one), binds that view on the mount point and makes the bind read-only
 * (MS_REMOUNT|MS_BIND|MS_RDONLY, which changes this mount only); the last unmount detaches the
 * bind and gives the named reference back. The layer is in use (not removable) meanwhile.
 *
 * Crash safety: the lifecycle writes a view's count before it mounts and unmounts before it
 * writes, as for every mount, so a process killed half-way leaves a count for a view that is not
 * mounted, and perhaps the named reference on the layer. A named reference is one per name, so a
 * later mount takes it again without counting twice; prune() (run when the store is opened) gives
 * back the named reference of every view that is not mounted, under that view's lock.
 */
import { dirname, join } from 'node:path';
import { ensureStoreDir, isMountPoint, MNT_DETACH, MS, mount, UMOUNT_NOFOLLOW, umount2 } from '../sys/index.js';
import type { Driver } from './driver.js';
import { MountLifecycle, type References } from './mounts.js';

/** The name of the reference a view holds on its layer's own view (GetOpts.heldBy). */
const HOLDER = 'read-only view';

/** Where the read-only view of layer `id` is (or would be) mounted; `stateDir` as for ReadOnlyViews. */
export function readOnlyViewPath(stateDir: string, id: string): string {
  return join(stateDir, 'read-only', 'mnt', id);
}

export class ReadOnlyViews {
  private readonly lifecycle: MountLifecycle;
  private readonly mountRoot: string;

  /** `stateDir`: the driver's state dir, <root>/driver-state/<driver>. Creates read-only/ in it. */
  constructor(
    private readonly driver: Driver,
    stateDir: string,
  ) {
    const dir = join(stateDir, 'read-only');
    this.mountRoot = dirname(readOnlyViewPath(stateDir, 'x'));
    this.lifecycle = new MountLifecycle(
      `${driver.name} read-only view of`,
      dir,
      {
        mountPoint: (id) => join(this.mountRoot, id),
        view: (id) => ({ path: join(this.mountRoot, id), needsMount: true }),
        mount: (id, opts) => this.bindReadOnly(id, opts.mountLabel),
        unmount: (id) => this.unbind(id),
        // A bind of a vfs dir is on the same device as its mount point's parent: ask the mount table.
        isMounted: (id) => isMountPoint(join(this.mountRoot, id)),
        tidyUnmounted: (id) => this.giveBackHold(id),
      },
      { mountPointMode: 0o755, removeMountPoint: true },
    );
    ensureStoreDir(this.mountRoot, 0o700, 'read-only view directory');
  }

  /** Mounts (or counts one more mount of) the layer's read-only view; returns its path. The layer must be complete. */
  get(id: string, opts: { mountLabel?: string } = {}): Promise<string> {
    return this.lifecycle.get(id, { persistent: true, mountLabel: opts.mountLabel });
  }

  /** Gives back one mount made by get; the last one unmounts the view. USAGE when there is none. */
  put(id: string): Promise<void> {
    return this.lifecycle.put(id, { persistent: true });
  }

  references(id: string): References {
    return this.lifecycle.references(id);
  }

  /** Layers whose view may be mounted (counts of dead processes included until pruned), sorted. */
  referencedIds(): string[] {
    return this.lifecycle.referencedIds();
  }

  /** Where the layer's view is mounted. */
  path(id: string): string {
    return join(this.mountRoot, id);
  }

  /** Unmounts every view, whatever its count (cleanup). */
  resetAll(): Promise<void> {
    return this.lifecycle.resetAll();
  }

  /** Drops what killed processes left (run when the store is opened): see the crash safety note. */
  prune(): Promise<void> {
    return this.lifecycle.prune();
  }

  /** Under the view's lock, the view not mounted: its layer's named reference, if it is still there, goes back. */
  private async giveBackHold(id: string): Promise<void> {
    if (this.driver.references(id).heldBy.includes(HOLDER)) await this.driver.put(id, { heldBy: HOLDER });
  }

  private async bindReadOnly(id: string, mountLabel: string | undefined): Promise<void> {
    const source = await this.driver.get(id, { heldBy: HOLDER, mountLabel });
    const target = join(this.mountRoot, id);
    try {
      mount(source, target, '', MS.BIND);
      try {
        mount('', target, '', MS.REMOUNT | MS.BIND | MS.RDONLY);
      } catch (e) {
        umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW);
        throw e;
      }
    } catch (e) {
      await this.driver.put(id, { heldBy: HOLDER });
      throw e;
    }
  }

  private async unbind(id: string): Promise<void> {
    umount2(join(this.mountRoot, id), MNT_DETACH | UMOUNT_NOFOLLOW);
    await this.driver.put(id, { heldBy: HOLDER });
  }
}
