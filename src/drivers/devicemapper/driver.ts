/**
 * The devicemapper driver: every layer is a thin snapshot of its parent's device in one
 * thin-pool (the base device — formatted once — for a layer without a parent), so a layer holds
 * its parent's whole filesystem and shares the unchanged blocks with it. A layer's files are only
 * reachable while its device is active and mounted: get activates the device, mounts it at
 * <home>/mnt/<id> and returns <home>/mnt/<id>/rootfs (the fs root also holds an `id` file and
 * ext4's lost+found, which must not show in the layer); put unmounts and deactivates when the last
 * reference is given back (the mount lifecycle, graph/mounts.ts). Deletions in a layer tar are real deletions (whiteout format 'plain').
 *
 * The pool and device bookkeeping (ids, transactions, crash rollback) is deviceset.ts; our own
 * state that Docker's format has no place for — the mount reference counts and each layer's parent
 * (for branches) — lives in <root>/driver-state/devicemapper/, outside the home.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertValidId, UnionctlError } from '../../errors.js';
import type {
  Branch,
  CheckFinding,
  CreateOpts,
  DriverCapabilities,
  DriverCheckContext,
  DriverInit,
  MountSpec,
  RemoveOpts,
} from '../../graph/driver.js';
import { GraphDriver } from '../../graph/graph-driver.js';
import type { LayerView, MountOptions } from '../../graph/mounts.js';
import { mount, statfs, umount2 } from '../../sys/index.js';
import { dmFindings, dmRepairs, gatherDmFacts } from './check.js';
import { BASE, DeviceSet, RESERVED_IDS } from './deviceset.js';
import { tableOf } from './dmsetup.js';
import { DM_OPTION_KEYS, parseDmOptions, parseLayerSize } from './options.js';

export { DM_OPTION_KEYS };

/** Docker's units.HumanSize: decimal units, four significant digits ("10.74 GB"). */
export function humanSize(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${Number(v.toPrecision(4))} ${units[i]}`;
}

export class DevmapperDriver extends GraphDriver {
  readonly devices: DeviceSet;
  private readonly mntDir: string;
  private readonly parentsDir: string;

  private constructor(init: DriverInit, devices: DeviceSet) {
    // mnt/<id> stays after an unmount (its rootfs/ and id file are inside the device's filesystem).
    super('devicemapper', init, { mountPointMode: 0o755, removeMountPoint: false });
    this.devices = devices;
    this.mntDir = join(init.home, 'mnt');
    this.parentsDir = join(init.stateDir, 'parents');
    mkdirSync(this.mntDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.parentsDir, { recursive: true, mode: 0o700 });
  }

  static async open(init: DriverInit): Promise<DevmapperDriver> {
    const options = parseDmOptions(init.options);
    mkdirSync(init.home, { recursive: true, mode: 0o700 });
    const devices = await DeviceSet.open(init.home, init.stateDir, options);
    return new DevmapperDriver(init, devices);
  }

  capabilities(): DriverCapabilities {
    // A snapshot of a snapshot costs the same as a snapshot of the base: no depth limit.
    return { whiteoutFormat: 'plain', nativeDiff: false, maxDepth: Number.MAX_SAFE_INTEGER };
  }

  private checkId(id: string): void {
    assertValidId(id);
    if (RESERVED_IDS.has(id)) {
      throw new UnionctlError(
        'INVALID_ID',
        `layer id ${JSON.stringify(id)} is reserved by the devicemapper format (it names a file in metadata/)`,
        { hint: 'choose another id' },
      );
    }
  }

  // ---- create / remove ---------------------------------------------------------------------

  async create(id: string, parent?: string, opts: CreateOpts = {}): Promise<void> {
    if (opts.storageOpt !== undefined && Object.keys(opts.storageOpt).length > 0) {
      throw new UnionctlError(
        'BAD_OPTION',
        `devicemapper: per-layer storage options are only accepted for writable layers (got ${Object.keys(opts.storageOpt).join(', ')})`,
        {
          hint: 'drop the option, or create a writable layer',
        },
      );
    }
    await this.makeLayer(id, parent, undefined);
  }

  /** `size` grows this layer's filesystem beyond its parent's (never shrinks it). */
  async createReadWrite(id: string, parent?: string, opts: CreateOpts = {}): Promise<void> {
    await this.makeLayer(id, parent, parseLayerSize(opts.storageOpt));
  }

  private async makeLayer(id: string, parent: string | undefined, size: number | undefined): Promise<void> {
    this.checkId(id);
    if (parent !== undefined) this.checkId(parent);
    await this.devices.locked(async () => {
      if (this.devices.info(id) !== undefined)
        throw new UnionctlError('EXISTS', `devicemapper layer ${id} already exists`, { hint: 'choose another id' });
      if (parent !== undefined && this.devices.info(parent) === undefined) {
        throw new UnionctlError('NOT_FOUND', `parent layer ${parent} does not exist in ${this.devices.metadataDir}`, {
          hint: 'create or import the parent first',
        });
      }
      const info = await this.devices.createSnapshot(id, parent ?? BASE, 0);
      // The parent link is written before the size is grown, so a failure below leaves a layer
      // that remove() can take away whole.
      if (parent !== undefined) writeFileSync(join(this.parentsDir, id), parent);
      if (size !== undefined && size > info.size) {
        try {
          await this.devices.growFilesystem(id, size);
        } catch (e) {
          await this.devices.deleteDevice(id);
          rmSync(join(this.parentsDir, id), { force: true });
          throw e;
        }
      }
    });
  }

  /** Deactivates the device and deletes the thin id; refuses while the layer is in use. */
  async remove(id: string, opts: RemoveOpts = {}): Promise<void> {
    this.checkId(id);
    await this.mounts.whileUnused(
      id,
      () =>
        this.devices.locked(async () => {
          await this.devices.deleteDevice(id);
          rmSync(this.mountPointOf(id), { recursive: true, force: true });
          rmSync(join(this.parentsDir, id), { force: true });
        }),
      opts,
    );
  }

  // ---- the view and its mount ----------------------------------------------------------------

  protected mountPointOf(id: string): string {
    return join(this.mntDir, id);
  }

  /** Always a mount: a layer's files are only reachable through its activated device, at mnt/<id>/rootfs. */
  protected viewOf(id: string): LayerView {
    this.checkId(id);
    if (this.devices.info(id) === undefined) throw this.notFound(id);
    return { path: join(this.mountPointOf(id), 'rootfs'), needsMount: true };
  }

  protected mountUnion(id: string, opts: MountOptions): Promise<void> {
    return this.devices.locked(() => this.mountDevice(id, opts.mountLabel));
  }

  private async mountDevice(id: string, mountLabel: string | undefined): Promise<void> {
    const dev = await this.devices.activate(id);
    const mnt = this.mountPointOf(id);
    const label = mountLabel ? `context="${mountLabel}"` : '';
    const data = [this.devices.mountOptions(), label].filter(Boolean).join(',');
    try {
      mount(dev, mnt, this.devices.baseFilesystem(), 0, data || undefined);
    } catch (e) {
      await this.devices.deactivate(id);
      throw e;
    }
    // Docker's layout inside the fs: the layer's files under rootfs/, its id beside them.
    const rootfs = join(mnt, 'rootfs');
    if (!existsSync(rootfs)) mkdirSync(rootfs, { mode: 0o755 });
    const idFile = join(mnt, 'id');
    if (!existsSync(idFile) || readFileSync(idFile, 'utf8') !== id) writeFileSync(idFile, id, { mode: 0o600 });
  }

  protected unmountUnion(id: string): Promise<void> {
    return this.devices.locked(async () => {
      umount2(this.mountPointOf(id));
      await this.devices.deactivate(id);
    });
  }

  // ---- containerd: mounts a runtime makes, commit -------------------------------------------

  /**
   * A layer's files are mnt/<id>/rootfs inside its device's filesystem (Docker's format), which a
   * mount of the device alone cannot show: the device is activated and mounted here, held by one
   * persistent reference (it outlives a restart of the server; releaseMountSpec gives it back),
   * and the runtime gets a bind of rootfs/ (read-only with `readonly`).
   */
  async mountSpec(id: string, opts: { readonly: boolean }): Promise<MountSpec[]> {
    this.viewOf(id); // INVALID_ID, NOT_FOUND
    if (this.references(id).persistent === 0) await this.get(id, { persistent: true });
    return [{ type: 'bind', source: join(this.mountPointOf(id), 'rootfs'), options: [opts.readonly ? 'ro' : 'rw', 'rbind'] }];
  }

  /** Every persistent reference goes: the last one unmounts mnt/<id> and deactivates the device. */
  async releaseMountSpec(id: string): Promise<void> {
    this.checkId(id);
    while (this.references(id).persistent > 0) await this.put(id, { persistent: true });
  }

  /** A writable layer is a thin snapshot like an image layer: nothing to change. */
  async sealWritable(id: string): Promise<void> {
    this.viewOf(id); // INVALID_ID, NOT_FOUND
  }

  // ---- queries -------------------------------------------------------------------------------

  async exists(id: string): Promise<boolean> {
    this.checkId(id);
    return this.devices.info(id) !== undefined;
  }

  /** Ids of every layer device, for the store's orphan sweep. */
  async layerIds(): Promise<string[]> {
    return this.devices.layerHashes();
  }

  /** Ids with a metadata file: the store's check compares them with its records. */
  storedLayerIds(): string[] {
    return this.devices.layerHashes();
  }

  /** The metadata files against the pool, leaked devices and loop devices (check.ts). */
  async check(ctx: DriverCheckContext): Promise<CheckFinding[]> {
    return dmFindings(await gatherDmFacts(this.devices, ctx), ctx, dmRepairs(this.devices));
  }

  /** Docker's status pairs, in Docker's order and names. */
  async status(): Promise<Array<[string, string]>> {
    const d = this.devices;
    const st = await d.poolStatus();
    const blockBytes = d.options.blockSectors * 512;
    // Metadata blocks are 4 KiB whatever the data block size is.
    const metaBlock = 4096;
    let dataAvailable = (st.dataTotal - st.dataUsed) * blockBytes;
    // A loop file cannot hold more than its filesystem has free (Docker caps it the same way).
    if (d.devices.dataLoopFile !== undefined) {
      const fs = statfs(d.loopDir);
      dataAvailable = Math.min(dataAvailable, Number(fs.bavail) * fs.bsize);
    }
    const pairs: Array<[string, string]> = [
      ['Pool Name', d.poolName],
      ['Pool Blocksize', humanSize(blockBytes)],
      ['Base Device Size', humanSize(d.info(BASE)?.size ?? d.options.baseSize)],
      ['Backing Filesystem', d.baseFilesystem()],
      ['Data file', d.devices.dataDevice ?? ''],
      ['Metadata file', d.devices.metadataDevice ?? ''],
      ['Data Space Used', humanSize(st.dataUsed * blockBytes)],
      ['Data Space Total', humanSize(st.dataTotal * blockBytes)],
      ['Data Space Available', humanSize(dataAvailable)],
      ['Metadata Space Used', humanSize(st.metadataUsed * metaBlock)],
      ['Metadata Space Total', humanSize(st.metadataTotal * metaBlock)],
      ['Metadata Space Available', humanSize((st.metadataTotal - st.metadataUsed) * metaBlock)],
      ['Thin Pool Minimum Free Space', humanSize(Math.floor((st.dataTotal * blockBytes * d.options.minFreeSpacePercent) / 100))],
    ];
    if (d.devices.dataLoopFile !== undefined) pairs.push(['Data loop file', d.devices.dataLoopFile]);
    if (d.devices.metadataLoopFile !== undefined) pairs.push(['Metadata loop file', d.devices.metadataLoopFile]);
    return pairs;
  }

  /** Docker's GetMetadata keys. */
  async metadata(id: string): Promise<Record<string, string>> {
    this.checkId(id);
    const info = this.devices.info(id);
    if (info === undefined)
      throw new UnionctlError('NOT_FOUND', `devicemapper layer ${id} does not exist`, { hint: 'check the id with unionctl ls' });
    return { DeviceId: String(info.device_id), DeviceSize: String(info.size), DeviceName: this.devices.deviceName(id) };
  }

  private parentOf(id: string): string | undefined {
    try {
      return readFileSync(join(this.parentsDir, id), 'utf8');
    } catch {
      return undefined;
    }
  }

  /**
   * The layer's thin device (rw), then every snapshot origin it shares blocks with, nearest first
   * (ro). For an active device, the kernel's table must name this pool and the recorded thin id.
   */
  async branches(id: string): Promise<Branch[]> {
    this.checkId(id);
    const info = this.devices.info(id);
    if (info === undefined)
      throw new UnionctlError('NOT_FOUND', `devicemapper layer ${id} does not exist`, { hint: 'check the id with unionctl ls' });
    if (await this.devices.isActive(id)) {
      const table = (await tableOf(this.devices.deviceName(id))).split(/\s+/);
      if (table[2] !== 'thin' || Number(table[4]) !== info.device_id) {
        throw new UnionctlError(
          'CORRUPT',
          `device ${this.devices.deviceName(id)} has table "${table.join(' ')}", not thin device ${info.device_id}`,
          {
            hint: 'deactivate it (dmsetup remove) and mount the layer again',
          },
        );
      }
    }
    const out: Branch[] = [{ path: this.devices.devicePath(id), layer: id, mode: 'rw' }];
    const seen = new Set([id]);
    for (let p = this.parentOf(id); p !== undefined && !seen.has(p); p = this.parentOf(p)) {
      seen.add(p);
      if (this.devices.info(p) === undefined) break;
      out.push({ path: this.devices.devicePath(p), layer: p, mode: 'ro' });
    }
    return out;
  }

  // ---- cleanup -------------------------------------------------------------------------------

  /** Unmounts and deactivates every layer, drops every reference, then removes the pool and detaches its loop devices. */
  async cleanup(): Promise<void> {
    const layers = this.devices.layerHashes();
    await this.mounts.resetAll(layers.filter((id) => this.mounts.isMounted(id)));
    await this.devices.locked(async () => {
      for (const id of layers) await this.devices.deactivate(id);
      await this.devices.deactivate(BASE);
      await this.devices.releasePool();
    });
  }
}
