/**
 * LayerStore.applyDiff: Docker's Create-then-ApplyDiff on the store (vfs and overlay2), against
 * the sample image's layers. The same records and tar-split as importLayer; every refusal leaves
 * the store as it was; a failed apply removes the layer; a process killed during the apply is
 * rolled back by the next openStore.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { UnionctlError } from '../../src/errors.js';
import { openStore, type LayerStore } from '../../src/index.js';
import { REPO } from '../conformance/inspect.js';
import { scratchMissing, withScratchFs } from '../helpers/scratch.js';
import { snapshotStore, stateDiff } from '../helpers/store-state.js';

/** diff_id and chainID of the sample's layers 1 and 2 (fixtures/SAMPLE-README.md). */
const L1 = 'sha256:9e721e9db1f84b04216fcb0f3fe271f3e9d48a5fe020252e82180d636f2a27b1';
const L2 = 'sha256:7058b3d776058fe84d8142c37271aa8d2890654562594c4b4a8cfcbe179d08c0';
const L2_CHAIN = 'sha256:f1c9c69d6813e225ecfb00eee0604359849e627f8ca17e661a8f4b4281d9871d';
const storeModule = new URL('../../src/index.js', import.meta.url).href;

function sampleLayers(dir: string): string[] {
  execFileSync('tar', ['-xf', join(REPO, 'fixtures', 'sample-docker.tar'), '-C', dir]);
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
  return manifest[0]!.Layers.map((l) => join(dir, l));
}

async function refusedUnchanged(store: LayerStore, driver: 'vfs' | 'overlay2', op: () => Promise<unknown>, code: string, message: RegExp) {
  const before = snapshotStore(store.root, driver).state;
  await assert.rejects(op, (e: unknown) => {
    assert.ok(e instanceof UnionctlError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
  const after = snapshotStore(store.root, driver).state;
  assert.deepEqual(after, before, stateDiff(before, after));
}

/** A fresh store on a scratch filesystem with the sample's layer tars beside it; closed after fn. */
async function withSampleStore(
  t: { after(fn: () => void | Promise<void>): void },
  driver: 'vfs' | 'overlay2',
  fn: (store: LayerStore, tars: string[]) => Promise<void>,
): Promise<void> {
  const dir = await withScratchFs(t);
  const tars = sampleLayers(dir);
  const store = await openStore({ root: join(dir, 'store'), driver });
  try {
    await fn(store, tars);
  } finally {
    await store.close();
  }
}

for (const driver of ['vfs', 'overlay2'] as const) {
  describe(`LayerStore.applyDiff (${driver})`, { skip: scratchMissing }, () => {
    it('records what importLayer records: diff ID, chain ID, size, tar-split', async (t) => {
      await withSampleStore(t, driver, async (store, [tar1, tar2]) => {
        await store.create({ id: 'base' });
        const base = await store.applyDiff('base', tar1!);
        assert.equal(base.diffId, L1);
        assert.equal(base.chainId, L1);
        await store.create({ id: 'app', parent: 'base' });
        const app = await store.applyDiff('app', Readable.from([readFileSync(tar2!)]), { parent: 'base' });
        assert.equal(app.diffId, L2);
        assert.equal(app.chainId, L2_CHAIN);

        const imported = await store.importLayer(tar2!, { id: 'app-imported', parent: 'base' });
        assert.deepEqual(
          { diffId: app.diffId, chainId: app.chainId, size: app.size, writable: app.writable },
          { diffId: imported.diffId, chainId: imported.chainId, size: imported.size, writable: imported.writable },
        );
        assert.deepEqual(await store.tarSplit('app'), await store.tarSplit('app-imported'));
        assert.deepEqual(await store.layer('app'), app);
        assert.deepEqual(await store.changes('app'), await store.changes('app-imported'));
      });
    });

    it('refuses, changing nothing: writable, applied already, wrong parent, children, mounted, unknown', async (t) => {
      await withSampleStore(t, driver, async (store, [tar1, tar2]) => {
        await store.create({ id: 'base' });
        await store.create({ id: 'rw', parent: 'base', writable: true });
        await refusedUnchanged(store, driver, () => store.applyDiff('rw', tar2!), 'USAGE', /writable layer/);
        await store.remove('rw');
        await store.applyDiff('base', tar1!);
        await refusedUnchanged(store, driver, () => store.applyDiff('base', tar1!), 'USAGE', /already holds a diff/);
        await store.create({ id: 'empty', parent: 'base' });
        await refusedUnchanged(store, driver, () => store.applyDiff('empty', tar2!, { parent: 'other' }), 'USAGE', /its parent is base/);
        await store.create({ id: 'child', parent: 'empty' });
        await refusedUnchanged(store, driver, () => store.applyDiff('empty', tar2!), 'HAS_CHILDREN', /child/);
        await store.remove('child');
        await store.mount('empty');
        await refusedUnchanged(store, driver, () => store.applyDiff('empty', tar2!), 'IN_USE', /mounted/);
        await store.unmount('empty');
        await refusedUnchanged(store, driver, () => store.applyDiff('nope', tar2!), 'NOT_FOUND', /nope/);
        await refusedUnchanged(store, driver, () => store.applyDiff('../x', tar2!), 'INVALID_ID', /invalid/);
        // After all that, the layer takes its diff.
        assert.equal((await store.applyDiff('empty', tar2!, { parent: 'base' })).chainId, L2_CHAIN);
      });
    });

    it('a failed apply removes the layer (files and record)', async (t) => {
      await withSampleStore(t, driver, async (store, _tars) => {
        await store.create({ id: 'bad' });
        await assert.rejects(
          () => store.applyDiff('bad', Readable.from([Buffer.alloc(1536, 7)])),
          (e: unknown) => (e as UnionctlError).code === 'BAD_TAR',
        );
        await assert.rejects(
          () => store.layer('bad'),
          (e: unknown) => (e as UnionctlError).code === 'NOT_FOUND',
        );
        assert.equal(await store.driver.exists('bad'), false);
        assert.deepEqual(snapshotStore(store.root, driver).problems, []);
      });
    });

    it('a process killed during the apply: the next openStore rolls the layer back', async (t) => {
      const dir = await withScratchFs(t);
      const [tar1] = sampleLayers(dir);
      const root = join(dir, 'store');
      const first = await openStore({ root, driver });
      await first.create({ id: 'victim' });
      await first.close();
      // The child applies from stdin; it gets the first 64 KiB and then nothing, and is killed mid-apply.
      const code = `
        import { openStore } from ${JSON.stringify(storeModule)};
        const store = await openStore({ root: ${JSON.stringify(root)}, driver: ${JSON.stringify(driver)} });
        await store.applyDiff('victim', process.stdin);`;
      const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['pipe', 'ignore', 'inherit'] });
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin.write(readFileSync(tar1!).subarray(0, 64 << 10));
      const record = join(root, 'layerdb', 'victim.json');
      while ((JSON.parse(readFileSync(record, 'utf8')) as { state: string }).state !== 'creating') {
        if (child.exitCode !== null) assert.fail(`the child exited (${child.exitCode}) before it started the apply`);
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill('SIGKILL');
      await exited;
      const said: string[] = [];
      const store = await openStore({ root, driver, log: (_level, message) => said.push(message) });
      try {
        assert.ok(
          said.some((m) => /rolled back the interrupted creation of layer victim/.test(m)),
          said.join('\n'),
        );
        await assert.rejects(
          () => store.layer('victim'),
          (e: unknown) => (e as UnionctlError).code === 'NOT_FOUND',
        );
        assert.equal(await store.driver.exists('victim'), false);
        assert.deepEqual(snapshotStore(root, driver).problems, []);
      } finally {
        await store.close();
      }
    });
  });
}
