/**
 * The containerd snapshot model (src/serve/containerd/) without containerd: its filter syntax,
 * the refusal of a driver that cannot serve containerd, and SnapshotService on a real vfs store
 * (binds as mounts, Commit sealing the layer, the rules on parents and children, adoption of a
 * loaded layer, a removal that keeps an image's layer, the rollback of a Prepare whose process
 * died). containerd itself is in
 * test/integration/containerd-snapshotter.test.ts.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { UnionctlError } from '../../src/errors.js';
import { loadImages, openStore, removeImage, type LayerStore } from '../../src/index.js';
import { compileFilters, parseFilter } from '../../src/serve/containerd/filters.js';
import { SnapshotService } from '../../src/serve/containerd/snapshots.js';
import { REPO } from '../conformance/inspect.js';
import { scratchMissing, withScratchFs } from '../helpers/scratch.js';

const fields = (o: Partial<{ name: string; parent: string; kind: string; labels: Record<string, string> }>) => ({
  name: 'a',
  parent: '',
  kind: 'Committed',
  labels: {},
  ...o,
});

/** The diff ID of the tar the driver exports for layer `id`. */
async function exportDigest(store: LayerStore, id: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of await store.driver.diff(id, (await store.layer(id)).parent)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

const code = (c: string) => (e: unknown) => e instanceof UnionctlError && e.code === c;

describe("containerd's filter syntax", () => {
  it('parses selectors, quoted field names and values', () => {
    assert.deepEqual(parseFilter('labels."containerd.io/snapshot.ref"==sha256:ab,parent==""'), [
      { path: ['labels', 'containerd.io/snapshot.ref'], op: '==', value: 'sha256:ab' },
      { path: ['parent'], op: '==', value: '' },
    ]);
    assert.deepEqual(parseFilter('labels.x'), [{ path: ['labels', 'x'] }]);
  });

  it('matches: all selectors of a filter, any filter of the list', () => {
    const m = compileFilters(['kind==active,labels.a==1', 'name~=^k8s']);
    assert.equal(m(fields({ kind: 'Active', labels: { a: '1' } })), true, 'kind is compared without case');
    assert.equal(m(fields({ kind: 'Active', labels: { a: '2' } })), false);
    assert.equal(m(fields({ name: 'k8s.io/1/x' })), true);
    assert.equal(compileFilters([])(fields({})), true);
    assert.equal(compileFilters(['labels.a!=1'])(fields({ labels: {} })), true);
    assert.equal(compileFilters(['labels.a'])(fields({ labels: { a: '' } })), false, 'present means not empty');
  });

  it('refuses what does not parse, naming where', () => {
    for (const bad of ['labels.=="x', 'name==', '"unterminated', 'name==a b', 'name~=(']) {
      assert.throws(
        () => parseFilter(bad),
        (e: unknown) => code('USAGE')(e) && /bad filter/.test((e as Error).message),
        bad,
      );
    }
  });
});

describe('SnapshotService and the drivers', () => {
  it('refuses a driver that yields no mounts or cannot seal a writable layer, naming it', () => {
    for (const driver of [
      { name: 'nomounts', sealWritable: async () => {} },
      { name: 'noseal', mountSpec: async () => [] },
    ]) {
      const store = { driver } as unknown as ConstructorParameters<typeof SnapshotService>[0];
      assert.throws(
        () => new SnapshotService(store),
        (e: unknown) => code('UNSUPPORTED')(e) && (e as Error).message.includes(driver.name),
      );
    }
  });
});

describe('SnapshotService on a vfs store', { skip: scratchMissing }, () => {
  it('Prepare, Commit, View, Remove: binds of the layer dirs, the rules on parents and children', async (t) => {
    const dir = await withScratchFs(t);
    const store = await openStore({ root: join(dir, 'root'), driver: 'vfs' });
    const s = new SnapshotService(store);
    const [m] = await s.prepare('ns/1/a', '', {});
    assert.equal(m!.type, 'bind');
    assert.deepEqual(m!.options, ['rw', 'rbind']);
    await assert.rejects(s.prepare('ns/1/a', '', {}), code('EXISTS'));
    await assert.rejects(s.prepare('ns/2/b', 'ns/1/a', {}), code('WRONG_STATE'));
    await s.commit('ns/3/sha256:' + 'a'.repeat(64), 'ns/1/a', {});
    await assert.rejects(s.stat('ns/1/a'), code('NOT_FOUND'));
    const committed = 'ns/3/sha256:' + 'a'.repeat(64);
    const [layer] = await store.list();
    assert.equal(layer!.writable, false, 'Commit made it an image layer');
    assert.equal(layer!.chainId, 'sha256:' + 'a'.repeat(64), 'with the chain ID the name ends with');
    await s.diffIdsRecorded(); // a big layer's is hashed after the Commit answered; a small one's in it
    assert.equal((await store.layer(layer!.id)).diffId, await exportDigest(store, layer!.id), 'the diff ID of its export');
    const [view] = await s.view('ns/4/v', committed, {});
    assert.deepEqual(view!.options, ['ro', 'rbind']);
    await assert.rejects(s.remove(committed), code('HAS_CHILDREN'));
    await assert.rejects(store.remove(layer!.id), code('IN_USE'), 'unionctl rm keeps what a snapshot holds');
    await s.remove('ns/4/v');
    await s.remove(committed);
    assert.deepEqual(await store.list(), []);
    assert.deepEqual(await s.list(), []);
    await s.close();
    await store.close();
  });

  it('a committed layer left without a diff ID (a server stopped before hashing it) gets one when the service starts', async (t) => {
    const dir = await withScratchFs(t);
    const root = join(dir, 'root');
    const store = await openStore({ root, driver: 'vfs' });
    const first = new SnapshotService(store);
    await first.prepare('ns/1/a', '', {});
    await first.commit('ns/2/b', 'ns/1/a', {});
    await first.close();
    // What a big layer's Commit leaves when the server stops before the background hash: no diff ID.
    const [layer] = await store.list();
    await store.transaction(async (tx) => {
      const { diffId: _hashed, ...unhashed } = tx.record(layer!.id)!;
      tx.putRecord(unhashed);
    });
    assert.equal((await store.layer(layer!.id)).diffId, undefined);
    const second = new SnapshotService(store);
    await second.diffIdsRecorded();
    assert.equal((await store.layer(layer!.id)).diffId, await exportDigest(store, layer!.id));
    await second.close();
    await store.close();
  });

  it('adopts a loaded layer by chain ID, and the GC leaves the image its layers', async (t) => {
    const dir = await withScratchFs(t);
    const store = await openStore({ root: join(dir, 'root'), driver: 'vfs' });
    const [image] = await loadImages(store, join(REPO, 'fixtures', 'sample-docker.tar'));
    const chain = image!.layers[0]!.chainId;
    const s = new SnapshotService(store);
    await assert.rejects(s.prepare('k8s.io/1/extract', '', { 'containerd.io/snapshot.ref': chain }), code('EXISTS'));
    const [adopted] = await s.list([`labels."containerd.io/snapshot.ref"==${chain},parent==""`]);
    assert.equal(adopted!.kind, 'committed');
    const layersBefore = (await store.list()).map((l) => l.id);
    await s.remove(adopted!.name);
    assert.deepEqual(
      (await store.list()).map((l) => l.id),
      layersBefore,
      'an adopted layer is not the snapshot’s to remove',
    );
    // Adopted again, then the image goes first: rmi keeps the snapshot's layer, and the snapshot takes it over.
    await assert.rejects(s.prepare('k8s.io/2/extract', '', { 'containerd.io/snapshot.ref': chain }), code('EXISTS'));
    const [again] = await s.list([`labels."containerd.io/snapshot.ref"==${chain}`]);
    const removed = await removeImage(store, 'sample-app:1');
    assert.ok(!removed.layers.includes(image!.layers[0]!.id), 'rmi keeps the layer a snapshot holds');
    assert.deepEqual(
      (await store.list()).map((l) => l.id),
      [image!.layers[0]!.id],
    );
    await s.remove(again!.name);
    assert.deepEqual(await store.list(), [], 'the snapshot owned it then: nothing is left owned by nobody');
    await s.close();
    await store.close();
  });

  it('a Prepare whose process died is rolled back when the store opens', async (t) => {
    const dir = await withScratchFs(t);
    const root = join(dir, 'root');
    const store = await openStore({ root, driver: 'vfs' });
    // What a killed Prepare leaves: the record marked as being prepared by a process that is gone.
    await store.transaction(async (tx) =>
      tx.writeDocument(
        `snapshots/${createHash('sha256').update('ns/9/x').digest('hex')}.json`, // named as the server names it
        JSON.stringify({
          name: 'ns/9/x',
          parent: '',
          kind: 'active',
          labels: {},
          created: '',
          updated: '',
          ownsLayer: true,
          layer: 'x'.repeat(64),
          preparing: { pid: 999999999, start: '0', boot: 'gone' },
        }),
      ),
    );
    await store.close();
    const reopened = await openStore({ root, driver: 'vfs' });
    assert.deepEqual(await new SnapshotService(reopened).list(), []);
    assert.deepEqual(await reopened.transaction(async (tx) => tx.listDocuments('snapshots')), []);
    await reopened.close();
  });

  it('a Remove cut short after its layer began to go (the record deletion undone): the next open drops the snapshot', async (t) => {
    const dir = await withScratchFs(t);
    const root = join(dir, 'root');
    const store = await openStore({ root, driver: 'vfs' });
    const s = new SnapshotService(store);
    await s.prepare('ns/1/a', '', {});
    await s.prepare('ns/2/kept', '', {});
    const [gone] = (await store.list()).filter((l) => l.writable);
    // What a crash can leave of Remove (dropSnapshot): the layer's "removing" record made durable,
    // the snapshot record's deletion, which need not be, undone.
    const victim = (await s.list()).find((i) => i.name === 'ns/1/a')!;
    assert.ok(victim !== undefined && gone !== undefined);
    const owner = await store.transaction(async (tx) => {
      const holder = tx
        .listDocuments('snapshots')
        .map((f) => JSON.parse(tx.readDocument(`snapshots/${f}`)!) as { name: string; layer: string })
        .find((d) => d.name === 'ns/1/a')!;
      tx.putRecord({ ...tx.record(holder.layer)!, state: 'removing' });
      return holder.layer;
    });
    await s.close();
    await store.close();
    const reopened = await openStore({ root, driver: 'vfs' });
    const again = new SnapshotService(reopened);
    assert.deepEqual(
      (await again.list()).map((i) => i.name),
      ['ns/2/kept'],
      'the dangling snapshot is dropped, the other kept',
    );
    assert.ok(!(await reopened.list()).some((l) => l.id === owner), 'its layer is gone');
    assert.equal((await reopened.list()).length, 1);
    await again.close();
    await reopened.close();
  });
});
