/**
 * The store under concurrency, with real mounts (overlay2 on a tmpfs): many tasks of one process,
 * many processes, imports side by side, an import racing the removal of its parent, two loads of
 * one archive at once. Afterwards every count is exact, nothing is mounted, and every record is
 * consistent with the driver's storage (checkConsistent).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { listImages, loadImages, openStore, type LayerStore } from '../../src/index.js';
import { prng } from '../helpers/faults.js';
import { mountsBelow } from '../helpers/mounts.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { makeLayerTar, writeOciLayout } from './images-helpers.js';

const run = promisify(execFile);
const INDEX = fileURLToPath(new URL('../../src/index.js', import.meta.url));

/**
 * Every record complete with storage in the driver, every parent present, every driver layer known
 * to a record, every image's layers present, no reference left, nothing mounted below the root.
 */
async function checkConsistent(store: LayerStore): Promise<void> {
  const records = readdirSync(join(store.root, 'layerdb')).filter((f) => f.endsWith('.json') && !f.startsWith('.'));
  const layers = await store.list();
  assert.equal(layers.length, records.length, 'a record that is not complete (creating/removing) was left');
  const ids = new Set(layers.map((l) => l.id));
  for (const l of layers) {
    assert.ok(await store.driver.exists(l.id), `layer ${l.id} has a record but no storage`);
    if (l.parent !== undefined) assert.ok(ids.has(l.parent), `layer ${l.id} names a missing parent ${l.parent}`);
    assert.deepEqual(
      store.references(l.id),
      { persistent: 0, processes: [], readers: [], heldBy: [], total: 0, mounted: false },
      `layer ${l.id} still referenced`,
    );
  }
  const onDisk = readdirSync(store.driver.home).filter((n) => n !== 'l');
  assert.deepEqual(onDisk.sort(), [...ids].sort(), 'the driver home holds exactly the recorded layers');
  for (const image of await listImages(store))
    for (const l of image.layers) assert.ok(ids.has(l.id), `image ${image.id} names a missing layer ${l.id}`);
  assert.deepEqual(readdirSync(join(store.root, 'driver-state', store.driver.name, 'refs')), [], 'reference files left');
  assert.deepEqual(
    mountsBelow(store.root).map((m) => m.mountPoint),
    [],
    'mounts left',
  );
  assert.deepEqual(
    readdirSync(join(store.root, 'layerdb')).filter((f) => f.startsWith('.')),
    [],
    'temp files left in layerdb',
  );
}

describe('store concurrency (overlay2, real mounts)', () => {
  let scratch: Scratch;
  let n = 0;
  const freshRoot = () => join(scratch.dir, `store-${++n}`);
  const tar = (name: string, files: Record<string, string>) => makeLayerTar(join(scratch.dir, 'src'), `${name}-${++n}`, files);
  const tarFile = (name: string, files: Record<string, string>) => {
    const path = join(scratch.dir, `${name}-${++n}.tar`);
    writeFileSync(path, tar(name, files));
    return path;
  };

  before(() => {
    scratch = makeScratch({ size: '2g' });
  });
  after(() => scratch.dispose());

  /** base ← two image layers on it, each with two writable children: layers sharing parents. */
  async function family(store: LayerStore): Promise<string[]> {
    const base = await store.importLayer(tarFile('base', { 'etc/os': 'base\n' }));
    const out = [base.id];
    for (const side of ['a', 'b']) {
      const mid = await store.importLayer(tarFile(side, { [`srv/${side}`]: `${side}\n` }), { parent: base.id });
      out.push(mid.id);
      for (const k of [1, 2]) out.push((await store.create({ parent: mid.id, writable: true, id: `${side}-rw-${k}` })).id);
    }
    return out;
  }

  it('256 concurrent mounts and unmounts in one process on layers sharing parents', async () => {
    const store = await openStore({ root: freshRoot(), driver: 'overlay2' });
    const ids = await family(store);
    const random = prng(256);
    await Promise.all(
      Array.from({ length: 256 }, async (_, i) => {
        const id = ids[Math.floor(random() * ids.length)]!;
        const { path } = await store.mount(id);
        assert.ok(readdirSync(path).includes('etc'), `task ${i}: the view of ${id} shows its base`);
        await new Promise((r) => setTimeout(r, Math.floor(random() * 5)));
        await store.unmount(id);
      }),
    );
    for (const id of ids) assert.equal(store.mountCount(id), 0);
    await checkConsistent(store);
  });

  it('64 processes mounting and unmounting the same and sibling layers', async () => {
    const root = freshRoot();
    const store = await openStore({ root, driver: 'overlay2' });
    const ids = await family(store);
    // Each process: openStore, then mount/unmount cycles on one layer; half of them share one layer.
    const child = `
      const [index, root, id, cycles] = process.argv.slice(1);
      const { openStore } = await import(index);
      const store = await openStore({ root, driver: 'overlay2' });
      for (let i = 0; i < Number(cycles); i++) {
        await store.mount(id);
        await store.unmount(id);
      }
      await store.mount(id);
      process.stdout.write('mounted');`;
    const shared = ids[3]!;
    const siblings = ids.filter((id) => id.includes('-rw-'));
    const targets = Array.from({ length: 64 }, (_, i) => (i % 2 === 0 ? shared : siblings[i % siblings.length]!));
    const results = await Promise.all(
      targets.map((id) => run(process.execPath, ['--input-type=module', '-e', child, INDEX, root, id, '3'], { timeout: 600_000 })),
    );
    for (const r of results) assert.equal(r.stdout, 'mounted');
    // Each process left one persistent mount: the counts are exact.
    for (const id of new Set(targets)) assert.equal(store.mountCount(id), targets.filter((t) => t === id).length, `mount count of ${id}`);
    for (const id of targets) await store.unmount(id);
    await checkConsistent(store);
  });

  it('concurrent imports onto one parent', async () => {
    const store = await openStore({ root: freshRoot(), driver: 'overlay2' });
    const base = await store.importLayer(tarFile('base', { 'etc/os': 'base\n' }));
    const files = Array.from({ length: 16 }, (_, i) => tarFile(`imp${i}`, { [`data/${i}`]: `${i}\n`.repeat(1000) }));
    const made = await Promise.all(files.map((f) => store.importLayer(f, { parent: base.id })));
    assert.equal(new Set(made.map((l) => l.id)).size, 16);
    for (const l of made) assert.equal(l.parent, base.id);
    await checkConsistent(store);
  });

  it('an import racing the removal of its parent: exactly one of them wins, cleanly', async () => {
    const store = await openStore({ root: freshRoot(), driver: 'overlay2' });
    const outcomes = new Set<string>();
    for (let round = 0; round < 12; round++) {
      const parent = await store.importLayer(tarFile('p', { [`p/${round}`]: 'p\n' }));
      const child = tarFile('c', { [`c/${round}`]: 'c\n' });
      const delay = (round % 4) * 2;
      const [imported, removed] = await Promise.allSettled([
        store.importLayer(child, { parent: parent.id }),
        new Promise((r) => setTimeout(r, delay)).then(() => store.remove(parent.id)),
      ]);
      if (imported.status === 'fulfilled') {
        assert.equal(removed.status, 'rejected', 'the parent was removed under a child');
        assert.equal((removed as PromiseRejectedResult).reason.code, 'HAS_CHILDREN');
        outcomes.add('import won');
        await store.remove(imported.value.id);
        await store.remove(parent.id);
      } else {
        assert.equal(removed.status, 'fulfilled', `both failed: ${String(imported.reason)}`);
        assert.equal((imported as PromiseRejectedResult).reason.code, 'NOT_FOUND');
        outcomes.add('remove won');
      }
      await checkConsistent(store);
    }
    assert.ok(outcomes.size >= 1);
  });

  it('two loads of one archive at once (in two processes): one image, one set of layers', async () => {
    const root = freshRoot();
    const layers = [
      tar('l1', { 'etc/one': '1\n'.repeat(5000) }),
      tar('l2', { 'etc/two': '2\n'.repeat(5000) }),
      tar('l3', { 'etc/three': '3\n' }),
    ];
    const archive = writeOciLayout(join(scratch.dir, `oci-${++n}`), {
      name: 'same:1',
      layers: layers.map((t) => ({ tar: t, compression: 'gzip' as const })),
    });
    const child = `
      const [index, root, archive] = process.argv.slice(1);
      const { openStore, loadImages } = await import(index);
      const store = await openStore({ root, driver: 'overlay2' });
      const [image] = await loadImages(store, archive);
      process.stdout.write(JSON.stringify(image));`;
    await (await openStore({ root, driver: 'overlay2' })).close();
    for (let round = 0; round < 3; round++) {
      const results = await Promise.all(
        [0, 1].map(() => run(process.execPath, ['--input-type=module', '-e', child, INDEX, root, archive])),
      );
      const loaded = results.map((r) => JSON.parse(r.stdout) as { id: string });
      assert.equal(loaded[0]!.id, loaded[1]!.id);
      const store = await openStore({ root, driver: 'overlay2' });
      const images = await listImages(store);
      assert.equal(images.length, 1);
      assert.equal((await store.list()).length, 3, 'one set of layers: the losing load removed its copies');
      await checkConsistent(store);
    }
  });

  it('a load that fails while another load reuses its layers: the other keeps them', async () => {
    const root = freshRoot();
    const store = await openStore({ root, driver: 'overlay2' });
    for (let round = 0; round < 4; round++) {
      const shared = [tar('s1', { [`s/one-${round}`]: '1\n'.repeat(20000) }), tar('s2', { [`s/two-${round}`]: '2\n' })];
      const good = writeOciLayout(join(scratch.dir, `good-${++n}`), { name: `good:${round}`, layers: shared.map((t) => ({ tar: t })) });
      const bad = writeOciLayout(join(scratch.dir, `bad-${++n}`), {
        name: `bad:${round}`,
        layers: [
          ...shared.map((t) => ({ tar: t })),
          { tar: tar('s3', { x: 'x' }), tamperedBlob: (b: Buffer) => Buffer.concat([b.subarray(0, b.length - 1), Buffer.from('!')]) },
        ],
      });
      const [g, b] = await Promise.allSettled([loadImages(store, good), loadImages(store, bad)]);
      assert.equal(g.status, 'fulfilled', `the good load failed: ${g.status === 'rejected' ? String(g.reason) : ''}`);
      assert.equal(b.status, 'rejected');
      const image = (await listImages(store)).find((i) => i.names.includes(`good:${round}`));
      assert.ok(image, 'the good image is there');
      for (const l of image.layers) await store.layer(l.id);
      await checkConsistent(store);
    }
  });
});
