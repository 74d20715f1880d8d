/**
 * Mount lifecycle scenarios, after containerd's snapshotter test suite: reference counts, mounting
 * again after an unmount, sharing a mount with a second process, refusing to remove what is in use
 * or has children, and many concurrent get/put calls on siblings of one parent.
 *
 * A driver either mounts something at the path get returns (overlay2 with a parent) or hands out a
 * plain directory (vfs, overlay2 base layers); the checks on mount state apply to the former.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { listMounts, mountsBelow } from '../helpers/mounts.js';
import type { ConformanceOptions, DriverFixture } from './fixture.js';
import { text } from './inspect.js';
import { file } from './tars.js';

const run = promisify(execFile);
const STORE_MODULE = fileURLToPath(new URL('../../src/index.js', import.meta.url));

function mountsAt(path: string): number {
  return listMounts().filter((m) => m.mountPoint === path).length;
}

/**
 * A second process: opens the same store, calls driver.get(id), reports the path and how many
 * mounts it sees there, then calls put (mode 'get-put') or exits holding its reference ('get').
 */
const CHILD = `
const [storeModule, root, driver, id, mode] = process.argv.slice(1);
const { readFileSync } = await import('node:fs');
const { openStore } = await import(storeModule);
const store = await openStore({ root, driver });
const path = await store.driver.get(id);
const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\\n').filter((l) => l.split(' ')[4] === path).length;
const content = readFileSync(path + '/from-parent', 'utf8');
if (mode === 'get-put') await store.driver.put(id);
process.stdout.write(JSON.stringify({ path, mounts, content }));
`;

async function inSecondProcess(
  fx: DriverFixture,
  id: string,
  mode: 'get' | 'get-put',
): Promise<{ path: string; mounts: number; content: string }> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', CHILD, STORE_MODULE, fx.root, fx.driverName, id, mode]);
  return JSON.parse(stdout) as { path: string; mounts: number; content: string };
}

export function mountScenarios(fx: () => DriverFixture, opts: ConformanceOptions = {}): void {
  describe('mounts (containerd snapshotter suite)', () => {
    /** A parent with one file and a writable child on it: the child is what gets mounted. */
    const parentAndChild = async () => {
      const parent = await fx().layer(undefined, [file('from-parent', 'parent data')]);
      const child = fx().id('child');
      await fx().driver.createReadWrite(child, parent);
      return { parent, child };
    };

    it('counts references: get twice, put once → still there; put again → unmounted', async () => {
      const { child } = await parentAndChild();
      const path = await fx().driver.get(child);
      const mounted = mountsAt(path) > 0;
      assert.equal(await fx().driver.get(child), path, 'the second get returns the same path');
      assert.equal(mountsAt(path), mounted ? 1 : 0, 'the second get does not mount again');
      await fx().driver.put(child);
      assert.equal(mountsAt(path), mounted ? 1 : 0, 'one reference left: still mounted');
      assert.equal(text(join(path, 'from-parent')), 'parent data');
      await fx().driver.put(child);
      assert.equal(mountsAt(path), 0, 'last put unmounts');
    });

    it('mounts again after an unmount, with the writes of the first mount', async () => {
      const { child } = await parentAndChild();
      await fx().view(child, (p) => writeFileSync(join(p, 'written'), 'first mount'));
      await fx().view(child, (p) => {
        assert.equal(text(join(p, 'written')), 'first mount');
        assert.equal(text(join(p, 'from-parent')), 'parent data');
      });
      await fx().view(child, (p) => assert.deepEqual(readdirSync(p).sort(), ['from-parent', 'written']));
    });

    it('shares a mount with a second process instead of mounting twice', async () => {
      const { child } = await parentAndChild();
      const path = await fx().driver.get(child);
      const mounted = mountsAt(path) > 0;
      try {
        const other = await inSecondProcess(fx(), child, 'get-put');
        assert.equal(other.path, path);
        assert.equal(other.content, 'parent data');
        assert.equal(other.mounts, mounted ? 1 : 0, 'the second process saw exactly one mount');
        assert.equal(mountsAt(path), mounted ? 1 : 0, "the second process's put left our mount alone");
      } finally {
        await fx().driver.put(child);
      }
      assert.equal(mountsAt(path), 0);
    });

    it('adopts a mount an earlier process left behind', async () => {
      const { child } = await parentAndChild();
      const earlier = await inSecondProcess(fx(), child, 'get'); // exits without put
      const path = await fx().driver.get(child);
      assert.equal(path, earlier.path);
      assert.equal(mountsAt(path), earlier.mounts, 'adopted, not mounted a second time');
      assert.equal(text(join(path, 'from-parent')), 'parent data');
      // The earlier process died: its in-process reference died with it, so this put is the last.
      await fx().driver.put(child);
      assert.equal(mountsAt(path), 0, 'unmounted once every live reference is released');
      await assert.rejects(fx().driver.put(child), { code: 'USAGE' });
    });

    it('refuses to remove a layer in use (IN_USE), removes it after put', async () => {
      const { child } = await parentAndChild();
      await fx().driver.get(child);
      try {
        await assert.rejects(fx().driver.remove(child), { code: 'IN_USE' });
        assert.equal(await fx().driver.exists(child), true);
      } finally {
        await fx().driver.put(child);
      }
      await fx().driver.remove(child);
      assert.equal(await fx().driver.exists(child), false);
    });

    it('store: refuses to remove a parent (HAS_CHILDREN) or a mounted layer (IN_USE)', async () => {
      const store = fx().store;
      const parent = await store.create({ id: fx().id('store-parent') });
      const child = await store.create({ id: fx().id('store-child'), parent: parent.id, writable: true });
      await assert.rejects(store.remove(parent.id), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'HAS_CHILDREN');
        assert.match(e.message, new RegExp(child.id));
        return true;
      });
      const mounted = await store.mount(child.id);
      try {
        await assert.rejects(store.remove(child.id), { code: 'IN_USE' });
      } finally {
        await store.unmount(mounted.id);
      }
      await store.remove(child.id);
      await store.remove(parent.id);
      assert.deepEqual(
        (await store.list()).filter((l) => l.id === parent.id || l.id === child.id),
        [],
      );
    });

    it('survives concurrent get/put on many siblings of one parent', async () => {
      const parent = await fx().layer(undefined, [file('from-parent', 'parent data')]);
      const children: string[] = [];
      for (let i = 0; i < (opts.siblings ?? 12); i++) {
        const c = fx().id('sibling');
        await fx().driver.createReadWrite(c, parent);
        children.push(c);
      }
      // Two gets per child, all at once, then both puts at once.
      const paths = await Promise.all(children.flatMap((c) => [fx().driver.get(c), fx().driver.get(c)]));
      for (const p of paths) assert.equal(text(join(p, 'from-parent')), 'parent data');
      await Promise.all(children.flatMap((c) => [fx().driver.put(c), fx().driver.put(c)]));
      // Interleaved get/put cycles per child, all children at once.
      await Promise.all(
        children.map(async (c, i) => {
          for (let round = 0; round < 3; round++) {
            const p = await fx().driver.get(c);
            writeFileSync(join(p, `round-${round}`), `${i}`);
            await fx().driver.put(c);
          }
        }),
      );
      assert.deepEqual(
        mountsBelow(fx().root).map((m) => m.mountPoint),
        [],
        'every sibling is unmounted',
      );
      for (const [i, c] of children.entries()) {
        await fx().view(c, (p) => assert.equal(text(join(p, 'round-2')), `${i}`));
      }
    });
  });
}
