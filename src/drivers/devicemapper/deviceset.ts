/**
 * The thin-pool and its devices (Docker's DeviceSet, same files under <home>/metadata):
 *
 *   metadata/<id>                 {"device_id","size","transaction_id","initialized","deleted"}
 *   metadata/base                 the same for the base device (formatted once, every layer's root)
 *   metadata/deviceset-metadata   {"next_device_id","BaseDeviceUUID","BaseDeviceFilesystem"}
 *   metadata/transaction-metadata {"open_transaction_id","device_hash","device_id"}
 *   devicemapper/data, /metadata  sparse loop files (loop-lvm mode)
 *
 * Transactions (how a crash is survived): every change to the pool's set of thin ids opens a
 * transaction first — transaction-metadata gets open_transaction_id = pool transaction id + 1 and
 * the device id and layer concerned — then sends the pool message (create_thin / create_snap /
 * delete), writes or removes metadata/<id>, and closes with `set_transaction_id old new` on the
 * pool. The pool's transaction id lives in the pool's own metadata, so on the next open an open id
 * above the pool's means the step was interrupted: the device id is deleted from the pool and
 * metadata/<id> dropped. An interrupted create is thereby rolled back, an interrupted delete
 * completed; either way no thin id is left that no metadata file names (which would leak pool
 * space and, worse, make a later create_thin of that id fail).
 *
 * Every method that touches the pool runs under one file lock shared by all processes.
 */
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, truncateSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { UnionctlError } from '../../errors.js';
import { withFileLock } from '../../graph/lock.js';
import { mount, umount2, writeFileAtomic } from '../../sys/index.js';
import {
  attachLoop,
  createDevice,
  DmCommandError,
  detachLoop,
  deviceExists,
  loopDeviceOf,
  poolMessage,
  poolStatus,
  removeDevice,
  resumeDevice,
  suspendDevice,
  tableOf,
  type PoolStatus,
} from './dmsetup.js';
import type { DmOptions } from './options.js';

const run = promisify(execFile);

/** Thin device ids are 24 bits (the pool's limit). */
const MAX_DEVICE_ID = 0xffffff;
/** Docker's low water mark (in pool blocks) for the pools it builds. */
const LOW_WATER_MARK = 32768;
/** dm names are at most 127 bytes (DM_NAME_LEN 128 with the NUL). */
const DM_NAME_MAX = 127;
/** The base device's "hash" in file and device names. */
export const BASE = 'base';
const DEVICESET_FILE = 'deviceset-metadata';
const TRANSACTION_FILE = 'transaction-metadata';
/** Names in metadata/ that are not devices; a layer may not take them as its id. */
export const RESERVED_IDS = new Set([BASE, DEVICESET_FILE, TRANSACTION_FILE]);

/** One thin device's record, Docker's JSON field names. */
export interface DevInfo {
  device_id: number;
  size: number;
  transaction_id: number;
  initialized: boolean;
  deleted: boolean;
}

interface DeviceSetMeta {
  next_device_id: number;
  BaseDeviceUUID: string;
  BaseDeviceFilesystem: string;
}

interface Transaction {
  open_transaction_id: number;
  device_hash: string;
  device_id: number;
}

/**
 * Fault injection for the crash-recovery tests: when UNIONCTL_DM_CRASH_AT names this step, the
 * process kills itself with SIGKILL right there (no cleanup runs, as in a real crash).
 */
function crashPoint(step: string): void {
  if (process.env.UNIONCTL_DM_CRASH_AT === step) process.kill(process.pid, 'SIGKILL');
}

function readJson<T>(path: string): T | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new UnionctlError('CORRUPT', `${path} is not valid JSON`, { hint: 'restore it from a backup, or remove the devicemapper store' });
  }
}

/** Is this dmsetup failure the pool saying the thin id is already taken? */
function isIdTaken(e: unknown): boolean {
  return e instanceof DmCommandError && /File exists|EEXIST/i.test(e.stderr);
}

export interface PoolDevices {
  /** The dm name of the pool. */
  pool: string;
  dataDevice?: string;
  metadataDevice?: string;
  dataLoopFile?: string;
  metadataLoopFile?: string;
}

export class DeviceSet {
  readonly home: string;
  readonly metadataDir: string;
  readonly loopDir: string;
  /** docker-<major>:<minor>-<inode of home>: Docker's prefix for every device name. */
  readonly prefix: string;
  readonly options: DmOptions;
  readonly poolName: string;
  private readonly lockPath: string;
  private readonly tmpMountDir: string;
  /** Filled in by open(). */
  devices: PoolDevices;
  /** releasePool() ran: the next locked operation builds the pool again. */
  private released = false;

  private constructor(home: string, stateDir: string, options: DmOptions) {
    this.home = home;
    this.metadataDir = join(home, 'metadata');
    this.loopDir = join(home, 'devicemapper');
    this.options = options;
    const st = statSync(home, { bigint: true });
    // major/minor of st_dev as the kernel encodes them (new_encode_dev).
    const dev = st.dev;
    const major = Number((dev >> 8n) & 0xfffn);
    const minor = Number((dev & 0xffn) | ((dev >> 12n) & 0xfff00n));
    this.prefix = `docker-${major}:${minor}-${st.ino}`;
    this.poolName = options.thinPoolDev ?? `${this.prefix}-pool`;
    this.lockPath = join(stateDir, 'pool.lock');
    this.tmpMountDir = join(stateDir, 'tmp-mnt');
    this.devices = { pool: this.poolName };
  }

  /** Builds or finds the pool, rolls back an interrupted transaction, makes the base device. */
  static async open(home: string, stateDir: string, options: DmOptions): Promise<DeviceSet> {
    mkdirSync(join(home, 'metadata'), { recursive: true, mode: 0o700 });
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const set = new DeviceSet(home, stateDir, options);
    await set.locked(async () => {
      await set.ensurePool();
      await set.processPendingTransaction();
      await set.ensureBaseDevice();
    });
    return set;
  }

  /**
   * Runs fn under the pool lock. After releasePool() (the driver's cleanup) the pool is built
   * again first, so a driver handle stays usable after cleanup.
   */
  locked<T>(fn: () => Promise<T>): Promise<T> {
    return withFileLock(
      this.lockPath,
      async () => {
        if (this.released) {
          await this.ensurePool();
          this.released = false;
        }
        return fn();
      },
      { timeoutMs: 300_000 },
    );
  }

  // ---- names -------------------------------------------------------------------------------

  deviceName(hash: string): string {
    return `${this.prefix}-${hash}`;
  }

  devicePath(hash: string): string {
    return `/dev/mapper/${this.deviceName(hash)}`;
  }

  /** Refuses ids whose device name would not fit the kernel's limit. */
  assertNameFits(hash: string): void {
    const name = this.deviceName(hash);
    if (Buffer.byteLength(name) > DM_NAME_MAX) {
      throw new UnionctlError(
        'INVALID_ID',
        `layer id ${JSON.stringify(hash)} is too long for devicemapper: its device name ${name} is over ${DM_NAME_MAX} bytes`,
        {
          hint: `use an id of at most ${DM_NAME_MAX - this.prefix.length - 1} characters`,
        },
      );
    }
  }

  // ---- metadata files ------------------------------------------------------------------------

  private metaFile(hash: string): string {
    return join(this.metadataDir, hash);
  }

  info(hash: string): DevInfo | undefined {
    return readJson<DevInfo>(this.metaFile(hash));
  }

  private saveInfo(hash: string, info: DevInfo): void {
    writeFileAtomic(this.metaFile(hash), JSON.stringify(info), { durable: true });
  }

  /** Ids of the layers that have a device (not the base). */
  layerHashes(): string[] {
    return readdirSync(this.metadataDir)
      .filter((n) => !n.startsWith('.') && !RESERVED_IDS.has(n))
      .sort();
  }

  private usedDeviceIds(): Set<number> {
    const used = new Set<number>();
    for (const name of readdirSync(this.metadataDir)) {
      if (name.startsWith('.') || name === DEVICESET_FILE || name === TRANSACTION_FILE) continue;
      const info = this.info(name);
      if (info !== undefined) used.add(info.device_id);
    }
    return used;
  }

  private setMeta(): DeviceSetMeta {
    return (
      readJson<DeviceSetMeta>(join(this.metadataDir, DEVICESET_FILE)) ?? { next_device_id: 0, BaseDeviceUUID: '', BaseDeviceFilesystem: '' }
    );
  }

  private saveSetMeta(meta: DeviceSetMeta): void {
    writeFileAtomic(join(this.metadataDir, DEVICESET_FILE), JSON.stringify(meta), { durable: true });
  }

  baseFilesystem(): string {
    return this.setMeta().BaseDeviceFilesystem || this.options.fs;
  }

  // ---- the pool ------------------------------------------------------------------------------

  async poolStatus(): Promise<PoolStatus> {
    return poolStatus(this.poolName);
  }

  /** A sparse file of at least `size` bytes (grown when the size was asked for, never shrunk — Docker's ensureImage). */
  private ensureImage(name: string, size: number): string {
    mkdirSync(this.loopDir, { recursive: true, mode: 0o700 });
    const file = join(this.loopDir, name);
    const fresh = !existsSync(file);
    if (fresh) closeSync(openSync(file, 'w', 0o600));
    if ((fresh || this.options.loopSizesGiven) && statSync(file).size < size) truncateSync(file, size);
    return file;
  }

  private async loopFor(file: string): Promise<string> {
    return (await loopDeviceOf(file)) ?? (await attachLoop(file));
  }

  private async ensurePool(): Promise<void> {
    const o = this.options;
    if (o.thinPoolDev !== undefined) {
      if (!(await deviceExists(o.thinPoolDev))) {
        throw new UnionctlError('NOT_FOUND', `dm.thinpooldev ${o.thinPoolDev}: no such device-mapper device`, {
          hint: 'create the thin-pool first (lvcreate --thinpool, or dmsetup create)',
        });
      }
      const table = await tableOf(o.thinPoolDev);
      if (table.split(/\s+/)[2] !== 'thin-pool') {
        throw new UnionctlError('BAD_OPTION', `dm.thinpooldev ${o.thinPoolDev} is not a thin-pool (its table: ${table})`, {
          hint: 'name a thin-pool device',
        });
      }
      // Like Docker: only take over a pool that is empty, unless this store already uses it.
      if (this.info(BASE) === undefined) {
        const st = await this.poolStatus();
        if (st.dataUsed !== 0 || st.transactionId !== 0) {
          throw new UnionctlError(
            'BAD_OPTION',
            `dm.thinpooldev ${o.thinPoolDev} already holds data (transaction id ${st.transactionId}, ${st.dataUsed} blocks used)`,
            {
              hint: 'give unionctl an empty thin-pool of its own',
            },
          );
        }
      }
      return;
    }

    let dataDevice: string;
    let metadataDevice: string;
    if (o.dataDev !== undefined && o.metadataDev !== undefined) {
      dataDevice = o.dataDev;
      metadataDevice = o.metadataDev;
    } else {
      const dataFile = this.ensureImage('data', o.loopDataSize);
      const metadataFile = this.ensureImage('metadata', o.loopMetadataSize);
      this.devices.dataLoopFile = dataFile;
      this.devices.metadataLoopFile = metadataFile;
      dataDevice = await this.loopFor(dataFile);
      metadataDevice = await this.loopFor(metadataFile);
    }
    this.devices.dataDevice = dataDevice;
    this.devices.metadataDevice = metadataDevice;
    if (await deviceExists(this.poolName)) return;

    const sectors = Number((await run('blockdev', ['--getsz', dataDevice])).stdout.trim());
    // error_if_no_space: a full pool fails the write with ENOSPC at once, instead of queueing it
    // for no_space_timeout (60 s) first — the writer learns about it, nothing hangs.
    const table = `0 ${sectors} thin-pool ${metadataDevice} ${dataDevice} ${o.blockSectors} ${LOW_WATER_MARK} 2 skip_block_zeroing error_if_no_space`;
    await createDevice(this.poolName, table);
  }

  /** Removes the pool and detaches the loop devices this store made (the pool is kept when it was given). */
  async releasePool(): Promise<void> {
    if (this.options.thinPoolDev !== undefined) return;
    this.released = true;
    if (await deviceExists(this.poolName)) await removeDevice(this.poolName);
    for (const file of [this.devices.dataLoopFile, this.devices.metadataLoopFile]) {
      if (file === undefined) continue;
      const loop = await loopDeviceOf(file);
      if (loop !== undefined) await detachLoop(loop);
    }
  }

  /**
   * Docker's poolHasFreeSpace: refuse new devices while less than dm.min_free_space is free.
   * Returns the pool status it read.
   */
  async assertFreeSpace(): Promise<PoolStatus> {
    const st = await this.poolStatus();
    const pct = this.options.minFreeSpacePercent;
    if (pct === 0) return st;
    const check = (what: string, used: number, total: number) => {
      const minFree = Math.max(1, Math.floor((total * pct) / 100));
      const free = total - used;
      if (free < minFree) {
        throw new UnionctlError(
          'UNSUPPORTED',
          `thin pool ${this.poolName} has ${free} free ${what} blocks, less than the minimum of ${minFree} (dm.min_free_space=${pct}%)`,
          {
            hint: `remove layers to free space in the pool, grow it (dm.loop${what === 'data' ? 'data' : 'metadata'}size), or lower dm.min_free_space`,
          },
        );
      }
    };
    check('data', st.dataUsed, st.dataTotal);
    check('metadata', st.metadataUsed, st.metadataTotal);
    return st;
  }

  // ---- transactions --------------------------------------------------------------------------

  private transaction(): Transaction | undefined {
    return readJson<Transaction>(join(this.metadataDir, TRANSACTION_FILE));
  }

  /** `poolTransactionId`: the pool's current id, read under the lock (one dmsetup call less). */
  private async openTransaction(hash: string, deviceId: number, poolTransactionId?: number): Promise<number> {
    const open = (poolTransactionId ?? (await this.poolStatus()).transactionId) + 1;
    writeFileAtomic(
      join(this.metadataDir, TRANSACTION_FILE),
      JSON.stringify({ open_transaction_id: open, device_hash: hash, device_id: deviceId } satisfies Transaction),
      { durable: true },
    );
    return open;
  }

  private async closeTransaction(open: number): Promise<void> {
    await poolMessage(this.poolName, `set_transaction_id ${open - 1} ${open}`);
  }

  /**
   * An open transaction the pool never closed: its device id is deleted from the pool (if the
   * message got there) and its metadata file dropped (if it was written) — Docker's rollback.
   */
  private async processPendingTransaction(): Promise<void> {
    const tx = this.transaction();
    if (tx === undefined) return;
    const { transactionId } = await this.poolStatus();
    if (tx.open_transaction_id <= transactionId) return;
    if (tx.open_transaction_id > transactionId + 1) {
      throw new UnionctlError(
        'CORRUPT',
        `transaction ${tx.open_transaction_id} in ${join(this.metadataDir, TRANSACTION_FILE)} is ahead of the pool's ${transactionId} by more than one`,
        {
          hint: 'the metadata belongs to another pool: restore the matching devicemapper/ files',
        },
      );
    }
    const name = this.deviceName(tx.device_hash || BASE);
    if (await deviceExists(name)) await removeDevice(name);
    try {
      await poolMessage(this.poolName, `delete ${tx.device_id}`);
    } catch (e) {
      if (!(e instanceof DmCommandError)) throw e; // the id never reached the pool
    }
    const info = this.info(tx.device_hash || BASE);
    if (info !== undefined && info.device_id === tx.device_id) rmSync(this.metaFile(tx.device_hash || BASE), { force: true });
    await this.closeTransaction(tx.open_transaction_id);
  }

  // ---- device ids ----------------------------------------------------------------------------

  /** The next id after next_device_id that no metadata file uses (24-bit, wrapping). */
  private nextFreeDeviceId(taken: Set<number>): number {
    const meta = this.setMeta();
    let id = meta.next_device_id;
    for (let i = 0; i <= MAX_DEVICE_ID; i++) {
      id = (id + 1) & MAX_DEVICE_ID;
      if (!taken.has(id)) {
        meta.next_device_id = id;
        this.saveSetMeta(meta);
        return id;
      }
    }
    throw new UnionctlError('UNSUPPORTED', `thin pool ${this.poolName} has no free device id left (all ${MAX_DEVICE_ID + 1} in use)`, {
      hint: 'remove layers',
    });
  }

  /**
   * Allocates an id, opens the transaction, sends `message(id)`; an id the pool already has (left
   * by something outside this store) is skipped for the next one. Returns the id and transaction.
   */
  private async createInPool(
    hash: string,
    message: (id: number) => string,
    poolTransactionId?: number,
  ): Promise<{ id: number; open: number }> {
    const taken = this.usedDeviceIds();
    for (;;) {
      const id = this.nextFreeDeviceId(taken);
      const open = await this.openTransaction(hash, id, poolTransactionId);
      crashPoint('create:after-open');
      try {
        await poolMessage(this.poolName, message(id));
        return { id, open };
      } catch (e) {
        if (!isIdTaken(e)) {
          rmSync(join(this.metadataDir, TRANSACTION_FILE), { force: true });
          throw e;
        }
        taken.add(id);
      }
    }
  }

  /** create_thin + register: a fresh thin device of `size` bytes. */
  private async createThin(hash: string, size: number): Promise<DevInfo> {
    const { id, open } = await this.createInPool(hash, (devId) => `create_thin ${devId}`);
    crashPoint('create:after-message');
    const info: DevInfo = { device_id: id, size, transaction_id: open, initialized: false, deleted: false };
    this.saveInfo(hash, info);
    crashPoint('create:after-metadata');
    await this.closeTransaction(open);
    return info;
  }

  /**
   * create_snap of the origin. An active origin is suspended around the message (the kernel's
   * rule: its in-flight writes must not race the snapshot); suspend freezes its fs by itself.
   */
  async createSnapshot(hash: string, originHash: string, size: number): Promise<DevInfo> {
    this.assertNameFits(hash);
    const origin = this.info(originHash);
    if (origin === undefined)
      throw new UnionctlError('NOT_FOUND', `device ${originHash} has no metadata in ${this.metadataDir}`, {
        hint: 'create the parent layer first',
      });
    if (this.info(hash) !== undefined)
      throw new UnionctlError('EXISTS', `devicemapper layer ${hash} already exists`, { hint: 'choose another id' });
    const pool = await this.assertFreeSpace();
    const originName = this.deviceName(originHash);
    const active = await deviceExists(originName);
    if (active) await suspendDevice(originName);
    let created: { id: number; open: number };
    try {
      created = await this.createInPool(hash, (devId) => `create_snap ${devId} ${origin.device_id}`, pool.transactionId);
    } finally {
      if (active) await resumeDevice(originName);
    }
    crashPoint('create:after-message');
    // Docker leaves "initialized" false on snapshots: it only marks the base device as formatted.
    const info: DevInfo = {
      device_id: created.id,
      size: Math.max(size, origin.size),
      transaction_id: created.open,
      initialized: false,
      deleted: false,
    };
    this.saveInfo(hash, info);
    crashPoint('create:after-metadata');
    await this.closeTransaction(created.open);
    return info;
  }

  /** Deactivates and deletes the thin device and its metadata (a missing one is fine). */
  async deleteDevice(hash: string): Promise<void> {
    const info = this.info(hash);
    if (info === undefined) return;
    await this.deactivate(hash);
    const open = await this.openTransaction(hash, info.device_id);
    crashPoint('delete:after-open');
    try {
      await poolMessage(this.poolName, `delete ${info.device_id}`);
    } catch (e) {
      // Already gone from the pool (an earlier delete got that far): finish the rest.
      if (!(e instanceof DmCommandError && /No data available|ENODATA|not found/i.test(e.stderr))) throw e;
    }
    crashPoint('delete:after-message');
    rmSync(this.metaFile(hash), { force: true });
    crashPoint('delete:after-metadata');
    await this.closeTransaction(open);
  }

  // ---- activation and filesystems ------------------------------------------------------------

  async isActive(hash: string): Promise<boolean> {
    return deviceExists(this.deviceName(hash));
  }

  /** `dmsetup create <name> --table "0 <sectors> thin <pool> <id>"` unless it is active. */
  async activate(hash: string): Promise<string> {
    const info = this.info(hash);
    if (info === undefined)
      throw new UnionctlError('NOT_FOUND', `devicemapper layer ${hash} does not exist`, { hint: 'check the id with unionctl ls' });
    const name = this.deviceName(hash);
    if (!(await deviceExists(name))) await createDevice(name, this.thinTable(info));
    return `/dev/mapper/${name}`;
  }

  /** The dm table of a recorded thin device: "0 <sectors> thin <pool> <device id>". */
  thinTable(info: DevInfo): string {
    return `0 ${Math.floor(info.size / 512)} thin /dev/mapper/${this.poolName} ${info.device_id}`;
  }

  async deactivate(hash: string): Promise<void> {
    const name = this.deviceName(hash);
    if (await deviceExists(name)) await removeDevice(name);
  }

  mountOptions(): string {
    // Every snapshot carries its origin's xfs UUID: without nouuid the second one refuses to mount.
    return [this.baseFilesystem() === 'xfs' ? 'nouuid' : '', this.options.mountOpt].filter(Boolean).join(',');
  }

  /** The base device: created, formatted and recorded once; grown when dm.basesize asks for more. */
  private async ensureBaseDevice(): Promise<void> {
    const existing = this.info(BASE);
    if (existing !== undefined && existing.initialized) {
      if (this.options.baseSizeGiven && this.options.baseSize < existing.size) {
        throw new UnionctlError('BAD_OPTION', `dm.basesize cannot shrink the base device (it is ${existing.size} bytes)`, {
          hint: 'give a size at least as large, or leave dm.basesize out',
        });
      }
      if (this.options.baseSizeGiven && this.options.baseSize > existing.size) await this.growFilesystem(BASE, this.options.baseSize);
      return;
    }
    if (existing !== undefined) await this.deleteDevice(BASE); // half-made: start over
    const info = await this.createThin(BASE, this.options.baseSize);
    const dev = await this.activate(BASE);
    try {
      await this.makeFilesystem(dev);
      const uuid = (await run('blkid', ['-s', 'UUID', '-o', 'value', dev])).stdout.trim();
      this.saveSetMeta({ ...this.setMeta(), BaseDeviceUUID: uuid, BaseDeviceFilesystem: this.options.fs });
    } finally {
      await this.deactivate(BASE);
    }
    this.saveInfo(BASE, { ...info, initialized: true });
  }

  private async makeFilesystem(dev: string): Promise<void> {
    const args = this.options.mkfsArgs;
    if (this.options.fs === 'xfs') {
      await run('mkfs.xfs', ['-q', ...args, dev]);
      return;
    }
    // Docker's flags: no discard pass, inode tables and journal written now (lazy init would keep
    // writing in the background and allocate pool blocks in every snapshot).
    await run('mkfs.ext4', ['-q', '-E', 'nodiscard,lazy_itable_init=0,lazy_journal_init=0', ...args, dev]);
    await run('tune2fs', ['-c', '-1', '-i', '0', dev]);
  }

  /**
   * Grows a device and its filesystem to `size` bytes: new size recorded, device (re)activated
   * with it, fs mounted on a private mount point and grown online (resize2fs / xfs_growfs).
   */
  async growFilesystem(hash: string, size: number): Promise<void> {
    const info = this.info(hash);
    if (info === undefined || size <= info.size) return;
    if (await this.isActive(hash)) {
      throw new UnionctlError('IN_USE', `cannot grow devicemapper layer ${hash} while it is mounted`, { hint: 'unmount it first' });
    }
    this.saveInfo(hash, { ...info, size });
    const dev = await this.activate(hash);
    const mnt = join(this.tmpMountDir, hash);
    mkdirSync(mnt, { recursive: true });
    try {
      mount(dev, mnt, this.baseFilesystem(), 0, this.mountOptions() || undefined);
      try {
        if (this.baseFilesystem() === 'xfs') await run('xfs_growfs', [mnt]);
        else await run('resize2fs', [dev]);
      } finally {
        umount2(mnt);
      }
    } finally {
      rmSync(mnt, { recursive: true, force: true });
      await this.deactivate(hash);
    }
  }
}
