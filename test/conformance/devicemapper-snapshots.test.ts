/**
 * The containerd snapshot service on a devicemapper store, on a real thin-pool (inside the test
 * VM: scripts/vm/dm-suite.sh; skipped where the kernel has no device-mapper). containerd is not in
 * the VM, so the service is driven directly and its mounts are made as containerd makes them
 * (test/helpers/runtime-mount.ts): Prepare and View hand out binds of the layer's rootfs/ in its
 * activated, mounted thin device; a Commit releases the device and seals the layer, whose diff then
 * holds what was written through the bind; a child and a View see the committed files, the View
 * read-only; a restart of the service (a new store handle) keeps the mounts; Remove deactivates
 * the devices, and nothing of the pool is left.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { devicemapperEntry } from '../../src/drivers/devicemapper/index.js';
import type { DevmapperDriver } from '../../src/drivers/devicemapper/driver.js';
import type { MountSpec } from '../../src/graph/driver.js';
import { openStore, type LayerStore } from '../../src/index.js';
import { SnapshotService } from '../../src/serve/containerd/snapshots.js';
import { DM_TEST_OPTIONS } from '../helpers/devicemapper.js';
import { withRuntimeMount } from '../helpers/runtime-mount.js';
import { makeScratch } from '../helpers/scratch.js';

const missing = devicemapperEntry.unsupportedReason('/');
const chain = (c: string) => `sha256:${c.repeat(64)}`;

describe(
  'SnapshotService on a devicemapper store',
  { skip: missing && `${missing}; runs inside the VM (test/vm/devicemapper.test.ts)` },
  () => {
    it('Prepare, Commit, View, Mounts: binds of the mounted thin devices; a restart keeps them; Remove deactivates', async () => {
      const scratch = makeScratch();
      const root = join(scratch.dir, 'root');
      const target = join(scratch.dir, 'mnt');
      mkdirSync(target);
      const open = () => openStore({ root, driver: 'devicemapper', storageOpt: DM_TEST_OPTIONS });
      let store: LayerStore = await open();
      const dm = () => store.driver as DevmapperDriver;
      const mounted = (mounts: MountSpec[], fn: () => void) => withRuntimeMount(mounts, target, fn);
      try {
        let s = new SnapshotService(store);
        const prepared = await s.prepare('ns/1/a', '', {});
        const [layerA] = await store.list();
        assert.deepEqual(prepared, [{ type: 'bind', source: join(dm().home, 'mnt', layerA!.id, 'rootfs'), options: ['rw', 'rbind'] }]);
        assert.equal(await dm().devices.isActive(layerA!.id), true, 'the thin device is active while the snapshot exists');
        await mounted(prepared, () => {
          mkdirSync(join(target, 'etc'));
          writeFileSync(join(target, 'etc/conf'), 'v1');
          writeFileSync(join(target, 'etc/gone'), 'g');
          mkdirSync(join(target, 'opt'));
          writeFileSync(join(target, 'opt/old'), 'o');
        });
        await s.commit(`ns/2/${chain('a')}`, 'ns/1/a', {});
        assert.equal(await dm().devices.isActive(layerA!.id), false, 'Commit releases the device');
        const a = await store.layer(layerA!.id);
        assert.equal(a.writable, false);
        assert.equal(a.chainId, chain('a'));
        assert.deepEqual(
          (await store.driver.changes(layerA!.id)).map((c) => `${c.kind} ${c.path}`),
          ['A /etc', 'A /etc/conf', 'A /etc/gone', 'A /opt', 'A /opt/old'],
          "what was written through the bind is the layer's content (rootfs/ of the device)",
        );

        const child = await s.prepare('ns/3/b', `ns/2/${chain('a')}`, {});
        await mounted(child, () => {
          assert.equal(readFileSync(join(target, 'etc/conf'), 'utf8'), 'v1', 'the parent shows through the thin snapshot');
          writeFileSync(join(target, 'etc/conf'), 'v2');
          rmSync(join(target, 'etc/gone'));
          rmSync(join(target, 'opt'), { recursive: true });
          mkdirSync(join(target, 'opt'));
          writeFileSync(join(target, 'opt/new'), 'n');
        });
        await s.commit(`ns/4/${chain('b')}`, 'ns/3/b', {});
        const layerB = (await store.list()).find((l) => l.chainId === chain('b'))!;
        assert.deepEqual(
          (await store.driver.changes(layerB.id, layerA!.id)).map((c) => `${c.kind} ${c.path}`),
          ['C /etc', 'C /etc/conf', 'D /etc/gone', 'C /opt', 'A /opt/new', 'D /opt/old'],
        );

        const check = () => {
          assert.equal(readFileSync(join(target, 'etc/conf'), 'utf8'), 'v2');
          assert.equal(existsSync(join(target, 'etc/gone')), false);
          assert.deepEqual(readdirSync(join(target, 'opt')), ['new']);
          assert.equal(existsSync(join(target, 'id')), false, "the device's own files (id, lost+found) are not in the view");
        };
        const view = await s.view('ns/5/v', `ns/4/${chain('b')}`, {});
        assert.deepEqual(view[0]!.options, ['ro', 'rbind']);
        await mounted(view, () => {
          check();
          assert.throws(() => writeFileSync(join(target, 'x'), 'x'), /EROFS/);
        });

        // A restart of the server: a new store handle and service; the device stays mounted and active.
        await store.close();
        store = await open();
        s = new SnapshotService(store);
        assert.equal(await dm().devices.isActive(layerB.id), true, 'the view keeps its device active across a restart');
        assert.deepEqual(await s.mounts('ns/5/v'), view);
        await mounted(await s.mounts('ns/5/v'), check);
        assert.equal(store.driver.references(layerB.id).persistent, 1, 'Mounts again takes no second reference');

        await s.remove('ns/5/v');
        assert.equal(await dm().devices.isActive(layerB.id), false, 'Remove of the last view deactivates the device');
        await s.remove(`ns/4/${chain('b')}`);
        await s.remove(`ns/2/${chain('a')}`);
        assert.deepEqual(await store.list(), []);
        assert.deepEqual(await s.list(), []);
        assert.deepEqual(dm().devices.layerHashes(), [], 'no thin device of a layer is left in the pool');
      } finally {
        await store.cleanup();
        await store.close();
        scratch.dispose();
      }
    });
  },
);
