/**
 * What is special about devicemapper, on a real thin-pool (inside the test VM; skipped where the
 * kernel has no device-mapper): Docker's on-disk files and status pairs, branches from the
 * kernel's tables, crash recovery of device ids (a second process killed between the steps of a
 * create or delete), and pool exhaustion (dm.min_free_space refusal, ENOSPC to the writer, the
 * store usable again once space is freed).
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { closeSync, fsyncSync, openSync, readFileSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { devicemapperEntry } from '../../src/drivers/devicemapper/index.js';
import type { DevmapperDriver } from '../../src/drivers/devicemapper/driver.js';
import { humanSize } from '../../src/drivers/devicemapper/driver.js';
import { openStore, type LayerStore } from '../../src/index.js';
import { DM_TEST_OPTIONS } from '../helpers/devicemapper.js';
import { listMounts } from '../helpers/mounts.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';

const runFile = promisify(execFile);
const STORE_MODULE = fileURLToPath(new URL('../../src/index.js', import.meta.url));

function dmsetup(args: string[]): string {
  return execFileSync('dmsetup', args, {
    encoding: 'utf8',
    env: { ...process.env, DM_DISABLE_UDEV: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function activeDevices(): string[] {
  const out = dmsetup(['ls']);
  return /No devices found/.test(out)
    ? []
    : out
        .split('\n')
        .map((l) => l.split(/\s+/)[0])
        .filter(Boolean);
}

/** Whether the pool holds thin id `id`: activating it as a throw-away device works only then. */
function poolHasThinId(pool: string, id: number): boolean {
  const probe = `unionctl-probe-${process.pid}`;
  try {
    dmsetup(['create', probe, '--table', `0 8 thin /dev/mapper/${pool} ${id}`]);
  } catch {
    return false;
  }
  dmsetup(['remove', probe]);
  return true;
}

function poolTransactionId(pool: string): number {
  return Number(dmsetup(['status', pool]).trim().split(/\s+/)[3]);
}

/** get → fn(root) → put. */
async function view(d: DevmapperDriver, id: string, fn: (root: string) => void): Promise<void> {
  const root = await d.get(id);
  try {
    fn(root);
  } finally {
    await d.put(id);
  }
}

/** A store of its own on a fresh tmpfs; close() tears the pool down and checks nothing is left. */
class DmStore {
  private constructor(
    readonly scratch: Scratch,
    readonly root: string,
    public options: Record<string, string>,
    public store: LayerStore,
  ) {}

  static async open(options: Record<string, string> = DM_TEST_OPTIONS): Promise<DmStore> {
    const scratch = makeScratch({ size: '2g' });
    const root = join(scratch.dir, 'store');
    try {
      return new DmStore(scratch, root, options, await openStore({ root, driver: 'devicemapper', storageOpt: options }));
    } catch (e) {
      scratch.dispose();
      throw e;
    }
  }

  get driver(): DevmapperDriver {
    return this.store.driver as DevmapperDriver;
  }

  get home(): string {
    return join(this.root, 'devicemapper');
  }

  /** Drops this handle and opens the store again (a restart: recovery runs), with other options if given. */
  async reopen(options = this.options): Promise<void> {
    await this.store.close();
    this.store = await openStore({ root: this.root, driver: 'devicemapper', storageOpt: options });
    this.options = options;
  }

  async close(): Promise<void> {
    const { prefix, poolName, options } = this.driver.devices;
    try {
      await this.store.cleanup();
      await this.store.close();
      const left = activeDevices().filter((n) => n.startsWith(`${prefix}-`) || (n === poolName && options.thinPoolDev === undefined));
      assert.deepEqual(left, [], 'no dm device of the store is left');
      for (const file of ['data', 'metadata']) {
        const loops = execFileSync(
          'losetup',
          ['--list', '--noheadings', '--output', 'NAME', '--associated', join(this.home, 'devicemapper', file)],
          { encoding: 'utf8' },
        );
        assert.equal(loops.trim(), '', `no loop device is left on the ${file} file`);
      }
    } finally {
      this.scratch.dispose();
    }
  }
}

const missing = devicemapperEntry.unsupportedReason('/');
if (missing !== undefined) {
  it('devicemapper specifics', { skip: `${missing}; these tests run inside the VM (test/vm/devicemapper.test.ts)` }, () => {});
} else {
  describe('devicemapper: format, status, branches', () => {
    let s: DmStore;
    before(async () => {
      s = await DmStore.open();
    });
    after(async () => s?.close());

    it("keeps Docker's metadata files and mounts at mnt/<id>/rootfs with an id file", async () => {
      const d = s.driver;
      await d.create('fmt-base');
      const meta = JSON.parse(readFileSync(join(s.home, 'metadata', 'fmt-base'), 'utf8'));
      assert.deepEqual(Object.keys(meta).sort(), ['deleted', 'device_id', 'initialized', 'size', 'transaction_id']);
      assert.equal(meta.size, 256 * 1024 * 1024);
      assert.equal(meta.transaction_id, poolTransactionId(d.devices.poolName), 'the last transaction was this create');
      const set = JSON.parse(readFileSync(join(s.home, 'metadata', 'deviceset-metadata'), 'utf8'));
      assert.equal(set.BaseDeviceFilesystem, 'ext4');
      assert.match(set.BaseDeviceUUID, /^[0-9a-f-]{36}$/);
      assert.equal(set.next_device_id, meta.device_id);
      const base = JSON.parse(readFileSync(join(s.home, 'metadata', 'base'), 'utf8'));
      assert.equal(base.initialized, true);
      assert.deepEqual(await d.metadata('fmt-base'), {
        DeviceId: String(meta.device_id),
        DeviceSize: String(meta.size),
        DeviceName: d.devices.deviceName('fmt-base'),
      });

      const path = await d.get('fmt-base');
      try {
        assert.equal(path, join(s.home, 'mnt', 'fmt-base', 'rootfs'));
        assert.equal(readFileSync(join(s.home, 'mnt', 'fmt-base', 'id'), 'utf8'), 'fmt-base');
        assert.deepEqual(readdirSync(path), []);
        const mnt = listMounts().find((m) => m.mountPoint === join(s.home, 'mnt', 'fmt-base'));
        assert.equal(mnt?.fsType, 'ext4');
        const table = dmsetup(['table', d.devices.deviceName('fmt-base')])
          .trim()
          .split(/\s+/);
        assert.deepEqual([table[2], table[4]], ['thin', String(meta.device_id)]);
        assert.equal(Number(table[1]) * 512, meta.size);
      } finally {
        await d.put('fmt-base');
      }
      assert.equal(activeDevices().includes(d.devices.deviceName('fmt-base')), false, 'put deactivates the device');
    });

    it("reports Docker's status pairs, read from the pool", async () => {
      const status = new Map(await s.driver.status());
      for (const key of [
        'Pool Name',
        'Pool Blocksize',
        'Base Device Size',
        'Backing Filesystem',
        'Data file',
        'Metadata file',
        'Data Space Used',
        'Data Space Total',
        'Data Space Available',
        'Metadata Space Used',
        'Metadata Space Total',
        'Metadata Space Available',
        'Thin Pool Minimum Free Space',
      ]) {
        assert.ok(status.has(key), `status has ${key}`);
      }
      const pool = s.driver.devices.poolName;
      assert.equal(status.get('Pool Name'), pool);
      assert.ok(activeDevices().includes(pool));
      assert.equal(status.get('Pool Blocksize'), '65.54 kB');
      assert.equal(status.get('Base Device Size'), humanSize(256 * 1024 * 1024));
      assert.equal(status.get('Backing Filesystem'), 'ext4');
      assert.match(status.get('Data file') ?? '', /^\/dev\/loop\d+$/);
      assert.equal(status.get('Data loop file'), join(s.home, 'devicemapper', 'data'));
      assert.equal(status.get('Data Space Total'), humanSize(1024 ** 3));
      const [used, total] = dmsetup(['status', pool]).trim().split(/\s+/)[5].split('/').map(Number);
      assert.equal(status.get('Data Space Used'), humanSize(used * 65536));
      assert.equal(status.get('Thin Pool Minimum Free Space'), humanSize(Math.floor((total * 65536 * 10) / 100)));
    });

    it('branches: the thin device (rw), then the snapshot origins it shares blocks with (ro)', async () => {
      const d = s.driver;
      await d.create('br-1');
      await d.create('br-2', 'br-1');
      await d.createReadWrite('br-3', 'br-2');
      const path = await d.get('br-3');
      try {
        assert.deepEqual(await d.branches('br-3'), [
          { path: `/dev/mapper/${d.devices.deviceName('br-3')}`, layer: 'br-3', mode: 'rw' },
          { path: `/dev/mapper/${d.devices.deviceName('br-2')}`, layer: 'br-2', mode: 'ro' },
          { path: `/dev/mapper/${d.devices.deviceName('br-1')}`, layer: 'br-1', mode: 'ro' },
        ]);
        assert.ok(path.endsWith('/rootfs'));
      } finally {
        await d.put('br-3');
      }
    });

    it('grows a writable layer to its size option, leaving the parent at the base size', async () => {
      const d = s.driver;
      await d.create('size-parent');
      await d.createReadWrite('size-child', 'size-parent', { storageOpt: { size: '384M' } });
      assert.equal((await d.metadata('size-child')).DeviceSize, String(384 * 1024 * 1024));
      assert.equal((await d.metadata('size-parent')).DeviceSize, String(256 * 1024 * 1024));
      const root = await d.get('size-child');
      try {
        const df = execFileSync('df', ['-B1', '--output=size', root], { encoding: 'utf8' }).trim().split('\n')[1];
        assert.ok(Number(df) > 300 * 1024 * 1024, `the filesystem was grown (df says ${df} bytes)`);
      } finally {
        await d.put('size-child');
      }
      await assert.rejects(d.createReadWrite('size-bad', 'size-parent', { storageOpt: { nosuch: '1' } }), { code: 'BAD_OPTION' });
      assert.equal(await d.exists('size-bad'), false);
    });

    it('grows the base device when dm.basesize grows, and refuses to shrink it', async () => {
      await s.reopen({ ...s.options, 'dm.basesize': '320M' });
      const base = JSON.parse(readFileSync(join(s.home, 'metadata', 'base'), 'utf8'));
      assert.equal(base.size, 320 * 1024 * 1024);
      await s.driver.create('after-grow');
      assert.equal((await s.driver.metadata('after-grow')).DeviceSize, String(320 * 1024 * 1024));
      const root = await s.driver.get('after-grow');
      try {
        const df = Number(execFileSync('df', ['-B1', '--output=size', root], { encoding: 'utf8' }).trim().split('\n')[1]);
        assert.ok(df > 280 * 1024 * 1024, `the base filesystem was grown (df says ${df} bytes)`);
      } finally {
        await s.driver.put('after-grow');
      }
      // A second handle asking for less is refused before it changes anything.
      await assert.rejects(
        openStore({ root: s.root, driver: 'devicemapper', storageOpt: { ...s.options, 'dm.basesize': '128M' } }),
        /cannot shrink the base device/,
      );
      assert.equal(JSON.parse(readFileSync(join(s.home, 'metadata', 'base'), 'utf8')).size, 320 * 1024 * 1024);
    });

    it('refuses ids that name its own metadata files', async () => {
      await assert.rejects(s.driver.create('base'), { code: 'INVALID_ID' });
      await assert.rejects(s.driver.create('deviceset-metadata'), { code: 'INVALID_ID' });
    });
  });

  describe('devicemapper: crash recovery of device ids', () => {
    let s: DmStore;
    before(async () => {
      s = await DmStore.open();
    });
    after(async () => s?.close());

    /** A second process that opens the store and runs one driver call, killed at `step`. */
    const CHILD = `
const [storeModule, root, options, op, id, parent] = process.argv.slice(1);
const { openStore } = await import(storeModule);
const store = await openStore({ root, driver: 'devicemapper', storageOpt: JSON.parse(options) });
if (op === 'create') await store.driver.create(id, parent || undefined);
else await store.driver.remove(id);
process.stdout.write('finished');
`;

    async function crashAt(step: string, op: 'create' | 'remove', id: string, parent = ''): Promise<void> {
      const child = runFile(
        process.execPath,
        ['--input-type=module', '-e', CHILD, STORE_MODULE, s.root, JSON.stringify(s.options), op, id, parent],
        {
          env: { ...process.env, UNIONCTL_DM_CRASH_AT: step },
        },
      );
      await assert.rejects(child, (e: { signal?: string; stdout?: string }) => {
        assert.equal(e.signal, 'SIGKILL', `the child was killed at ${step}`);
        assert.equal(e.stdout, '');
        return true;
      });
    }

    function transaction(): { open_transaction_id: number; device_hash: string; device_id: number } {
      return JSON.parse(readFileSync(join(s.home, 'metadata', 'transaction-metadata'), 'utf8'));
    }

    for (const step of ['create:after-open', 'create:after-message', 'create:after-metadata']) {
      it(`rolls back a create killed at ${step}: no layer, no thin id left in the pool`, async () => {
        const parent = `crash-parent-${step.replace(/:/g, '-')}`;
        await s.driver.create(parent);
        const id = `crash-${step.replace(/:/g, '-')}`;
        await crashAt(step, 'create', id, parent);
        const tx = transaction();
        const pool = s.driver.devices.poolName;
        assert.equal(tx.device_hash, id);
        assert.equal(tx.open_transaction_id, poolTransactionId(pool) + 1, 'the transaction was left open');
        if (step !== 'create:after-open') assert.ok(poolHasThinId(pool, tx.device_id), 'the thin id reached the pool before the crash');

        await s.reopen();
        assert.equal(poolTransactionId(pool), tx.open_transaction_id, 'recovery closed the transaction');
        assert.equal(poolHasThinId(pool, tx.device_id), false, 'the thin id is deleted from the pool');
        assert.equal(await s.driver.exists(id), false);
        // The id can be created for real now, and it works.
        await s.driver.create(id, parent);
        await s.driver.get(id);
        await s.driver.put(id);
      });
    }

    for (const step of ['delete:after-open', 'delete:after-message', 'delete:after-metadata']) {
      it(`completes a delete killed at ${step}: layer and thin id gone`, async () => {
        const id = `crash-${step.replace(/:/g, '-')}`;
        await s.driver.create(id);
        const deviceId = Number((await s.driver.metadata(id)).DeviceId);
        const pool = s.driver.devices.poolName;
        await crashAt(step, 'remove', id);
        assert.equal(transaction().device_id, deviceId);

        await s.reopen();
        assert.equal(await s.driver.exists(id), false);
        assert.equal(poolHasThinId(pool, deviceId), false);
        assert.equal(transaction().open_transaction_id, poolTransactionId(pool));
        // A new layer does not reuse anything stale: it mounts clean.
        await s.driver.create(`${id}-again`);
        assert.deepEqual(readdirSync(await s.driver.get(`${id}-again`)), []);
        await s.driver.put(`${id}-again`);
      });
    }
  });

  describe('devicemapper: pool exhaustion', () => {
    let s: DmStore;
    before(async () => {
      // A 128M pool under a 256M filesystem: one layer's writes fill the pool before its fs.
      s = await DmStore.open({
        'dm.loopdatasize': '128M',
        'dm.loopmetadatasize': '16M',
        'dm.basesize': '256M',
        'dm.min_free_space': '10%',
      });
    });
    after(async () => s?.close());

    const poolFree = async () => {
      const st = await s.driver.devices.poolStatus();
      return { free: st.dataTotal - st.dataUsed, total: st.dataTotal };
    };

    /** Appends 1 MiB chunks with fsync until `stop` says so or a write fails; returns the error code. */
    async function fill(path: string, stop: () => Promise<boolean>): Promise<string | undefined> {
      const fd = openSync(path, 'a');
      const chunk = Buffer.alloc(1 << 20, 0x5a);
      try {
        for (let i = 0; i < 400; i++) {
          if (await stop()) return undefined;
          try {
            writeSync(fd, chunk);
            fsyncSync(fd);
          } catch (e) {
            return (e as NodeJS.ErrnoException).code;
          }
        }
        return 'never-full';
      } finally {
        try {
          closeSync(fd);
        } catch {
          // close may report the same write-back error again
        }
      }
    }

    it('refuses new layers below dm.min_free_space, gives ENOSPC to a writer that fills the pool, and recovers once space is freed', async () => {
      const d = s.driver;
      await d.createReadWrite('hog');
      const root = await d.get('hog');
      try {
        // Fill until less than 10% is free, but not all of it.
        const stopped = await fill(join(root, 'big'), async () => {
          const { free, total } = await poolFree();
          return free < total * 0.1;
        });
        assert.equal(stopped, undefined, 'the pool went below 10% free before any write failed');
        assert.ok((await poolFree()).free > 0, 'the pool is not full yet');
        await assert.rejects(d.create('refused'), (e: Error & { code?: string }) => {
          assert.match(e.message, /dm\.min_free_space=10%/);
          assert.match(e.message, /free data blocks/);
          return true;
        });
        assert.equal(await d.exists('refused'), false);
        // Now fill it up: the writer is told ENOSPC. dd writes with O_DIRECT, so the pool's answer
        // reaches write(2) as it is; buffered writes would only see it at fsync, and ext4 turns
        // every write-back error into EIO there.
        const dd = await runFile('dd', ['if=/dev/zero', `of=${join(root, 'more')}`, 'bs=1M', 'count=400', 'oflag=direct'], {
          encoding: 'utf8',
        }).then(
          () => 'dd finished without an error',
          (e: { stderr: string }) => e.stderr,
        );
        assert.match(dd, /No space left on device/);
        assert.equal((await poolFree()).free, 0, 'the pool is full');
      } finally {
        await d.put('hog');
      }
      await d.remove('hog');
      assert.ok((await poolFree()).free > (await poolFree()).total * 0.5, 'removing the layer gave its blocks back');
      await d.createReadWrite('after');
      const after = await d.get('after');
      try {
        const fd = openSync(join(after, 'data'), 'w');
        writeSync(fd, Buffer.alloc(8 << 20, 1));
        fsyncSync(fd);
        closeSync(fd);
        assert.equal(readFileSync(join(after, 'data')).length, 8 << 20);
      } finally {
        await d.put('after');
      }
    });
  });
}

if (missing === undefined) {
  describe('devicemapper: xfs, given devices, a given pool', () => {
    it('dm.fs=xfs: snapshots mount beside their origin (nouuid) and diff against it', async () => {
      // mkfs.xfs wants at least 300M.
      const s = await DmStore.open({ 'dm.loopdatasize': '1G', 'dm.loopmetadatasize': '32M', 'dm.basesize': '512M', 'dm.fs': 'xfs' });
      try {
        const d = s.driver;
        await d.create('x-parent');
        await view(d, 'x-parent', (root) => writeFileSync(join(root, 'from-parent'), 'p'));
        await d.createReadWrite('x-child', 'x-parent');
        await view(d, 'x-child', (root) => writeFileSync(join(root, 'from-child'), 'c'));
        assert.deepEqual(
          (await d.changes('x-child', 'x-parent')).map((c) => `${c.kind} ${c.path}`),
          ['A /from-child'],
        );
        assert.equal(new Map(await d.status()).get('Backing Filesystem'), 'xfs');
        const set = JSON.parse(readFileSync(join(s.home, 'metadata', 'deviceset-metadata'), 'utf8'));
        assert.equal(set.BaseDeviceFilesystem, 'xfs');
      } finally {
        await s.close();
      }
    });

    it('dm.datadev + dm.metadatadev build the pool on given block devices, and cleanup leaves them attached', async () => {
      const scratch = makeScratch({ size: '1g' });
      const loops: string[] = [];
      try {
        for (const [name, size] of [
          ['data', '512M'],
          ['meta', '32M'],
        ]) {
          const file = join(scratch.dir, name);
          execFileSync('truncate', ['-s', size, file]);
          loops.push(execFileSync('losetup', ['-f', '--show', file], { encoding: 'utf8' }).trim());
        }
        const s = await DmStore.open({ 'dm.datadev': loops[0], 'dm.metadatadev': loops[1], 'dm.basesize': '128M' });
        try {
          const status = new Map(await s.driver.status());
          assert.equal(status.get('Data file'), loops[0]);
          assert.equal(status.get('Metadata file'), loops[1]);
          assert.equal(status.has('Data loop file'), false);
          const table = dmsetup(['table', s.driver.devices.poolName]).trim().split(/\s+/);
          assert.equal(table[2], 'thin-pool');
          await s.driver.create('on-devices');
          await view(s.driver, 'on-devices', (root) => writeFileSync(join(root, 'f'), 'x'));
        } finally {
          await s.close();
        }
        for (const loop of loops)
          assert.match(execFileSync('losetup', [loop], { encoding: 'utf8' }), /\/data|\/meta/, `${loop} is still attached`);
      } finally {
        for (const loop of loops) execFileSync('losetup', ['-d', loop]);
        scratch.dispose();
      }
    });

    it('dm.thinpooldev uses an existing empty pool, refuses a used one, and leaves it in place', async () => {
      const scratch = makeScratch({ size: '1g' });
      const loops: string[] = [];
      const pool = `unionctl-test-pool-${process.pid}`;
      try {
        for (const [name, size] of [
          ['data', '512M'],
          ['meta', '32M'],
        ]) {
          const file = join(scratch.dir, name);
          execFileSync('truncate', ['-s', size, file]);
          loops.push(execFileSync('losetup', ['-f', '--show', file], { encoding: 'utf8' }).trim());
        }
        dmsetup(['create', pool, '--table', `0 ${512 * 2048} thin-pool ${loops[1]} ${loops[0]} 128 32768`]);
        const s = await DmStore.open({ 'dm.thinpooldev': `/dev/mapper/${pool}`, 'dm.basesize': '128M' });
        try {
          assert.equal(new Map(await s.driver.status()).get('Pool Name'), pool);
          await s.driver.create('on-given-pool');
          assert.equal(await s.driver.exists('on-given-pool'), true);
        } finally {
          await s.close();
        }
        assert.ok(activeDevices().includes(pool), 'cleanup left the given pool alone');
        // The pool now holds another store's devices: a fresh store refuses to take it over.
        const other = makeScratch({ size: '64m' });
        try {
          await assert.rejects(
            openStore({ root: join(other.dir, 'store'), driver: 'devicemapper', storageOpt: { 'dm.thinpooldev': pool } }),
            /already holds data/,
          );
        } finally {
          other.dispose();
        }
      } finally {
        if (activeDevices().includes(pool)) dmsetup(['remove', pool]);
        for (const loop of loops) execFileSync('losetup', ['-d', loop]);
        scratch.dispose();
      }
    });
  });
}
