/**
 * `unionctl serve` as containerd's snapshotter, against Debian's containerd 1.6 started privately
 * (bench/peers/containerd.ts) with `[proxy_plugins.unionctl]`: images unpack into store layers
 * named by chain ID, containers run on them, ctr's snapshot commands work, the GC removes what it
 * should and keeps what a unionctl image holds, a restart loses nothing, a killed server leaks
 * nothing, and bad requests get the status codes containerd's errdefs expect (a direct gRPC client,
 * since containerd's metadata layer refuses some of them before asking the snapshotter).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { containerdAvailable } from '../../bench/peers/containerd.js';
import { scratchMissing } from '../helpers/scratch.js';
import { type WireMount } from '../helpers/snapshots-client.js';
import { toolsMissing } from '../helpers/requires.js';
import { eventually } from '../helpers/wait.js';
import { CHAIN_IDS, IMAGE, SnapshotterRig } from './containerd-rig.js';
import { ok, SAMPLE_DOCKER, unionctl } from './images-helpers.js';

const skip = scratchMissing ?? (containerdAvailable() ? toolsMissing(['strace']) : 'containerd, ctr or runc is not installed');

describe('unionctl serve: a containerd snapshotter', { skip }, () => {
  let rig: SnapshotterRig;
  let root = '';
  const g = () => rig.g();
  const layers = () => rig.layers();
  const snapshotDocs = () => rig.snapshotDocs();
  const snapshots = () => rig.snapshots();
  const startServer = (wrapper?: string[]) => rig.startServer(wrapper);

  /** containerd's connection backs off after the server went away (calls fail fast meanwhile): waits until a backend call gets through. */
  const reconnected = () =>
    eventually('containerd reaches the restarted server', () => {
      try {
        snapshots(); // a Stat of each snapshot: backend calls
        return true;
      } catch (e) {
        if (/unavailable/.test((e as Error).message)) return false;
        throw e;
      }
    });

  before(async () => {
    rig = await SnapshotterRig.start('overlay2');
    root = rig.root;
  });

  after(async () => {
    await rig?.stop();
  });

  it('ctr images import unpacks the image into store layers carrying its chain IDs', () => {
    rig.importSample();
    assert.ok(snapshots().every((line) => line.endsWith('Committed')));
  });

  it('ctr run starts the container on the store layers; whiteouts and the opaque dir hold inside', () => {
    const rootMount = rig.runSample();
    for (const l of layers())
      assert.ok(rootMount!.includes(join(root, 'overlay2', l.id, 'diff')), `layer ${l.id} is a lower of the root: ${rootMount}`);
  });

  it('ctr snapshots usage, label, info, view and mounts work', async () => {
    const top = CHAIN_IDS[3]!;
    const usage = rig.cd!.ctr(['snapshots', '--snapshotter', 'unionctl', 'usage', top]);
    assert.match(usage, /\d+(\.\d+)? ?[KMG]?i?B\s+\d+/);
    rig.cd!.ctr(['snapshots', '--snapshotter', 'unionctl', 'label', top, 'containerd.io/snapshot/test=yes']);
    const info = JSON.parse(rig.cd!.ctr(['snapshots', '--snapshotter', 'unionctl', 'info', top])) as { Labels: Record<string, string> };
    assert.equal(info.Labels['containerd.io/snapshot/test'], 'yes');
    const labelled = await rig.client.list([`labels."containerd.io/snapshot/test"==yes`]);
    assert.equal(labelled.length, 1, 'the label reached the snapshotter');
    const records = snapshotDocs().length;
    rig.cd!.ctr(['snapshots', '--snapshotter', 'unionctl', 'view', 'v1', top]);
    const view = rig.cd!.ctr(['snapshots', '--snapshotter', 'unionctl', 'mounts', join(rig.scratch.dir, 'v1'), 'v1']);
    assert.match(view, /mount -t overlay overlay .* -o (index=off,)?lowerdir=/);
    assert.ok(!view.includes('upperdir='), 'a view is read-only');
    rig.cd!.ctr(['snapshots', '--snapshotter', 'unionctl', 'rm', 'v1']);
    // `ctr snapshots rm` deletes containerd's record; its GC removes the snapshot from the server
    // later and, while it runs, removes every snapshot its metadata does not know, such as the
    // ones the next tests make directly. Wait for that GC so it cannot take them mid-test.
    await eventually("containerd's GC removed v1 from the store", () => snapshotDocs().length === records);
  });

  it('bad requests get the status codes containerd expects', async () => {
    const top = (await rig.client.list([`labels."containerd.io/snapshot/test"==yes`]))[0]!.name;
    assert.equal((await rig.client.failure('Stat', { key: 'no/such' })).code, grpc.status.NOT_FOUND);
    assert.equal((await rig.client.failure('Mounts', { key: 'no/such' })).code, grpc.status.NOT_FOUND);
    assert.equal((await rig.client.failure('Remove', { key: 'no/such' })).code, grpc.status.NOT_FOUND);
    assert.equal((await rig.client.failure('Prepare', { key: '', parent: top })).code, grpc.status.INVALID_ARGUMENT);
    assert.equal((await rig.client.failure('Prepare', { key: 't/1', parent: 'no/such' })).code, grpc.status.NOT_FOUND);
    await rig.client.call('Prepare', { key: 't/1', parent: top });
    assert.equal((await rig.client.failure('Prepare', { key: 't/1', parent: top })).code, grpc.status.ALREADY_EXISTS);
    assert.equal((await rig.client.failure('Prepare', { key: 't/2', parent: 't/1' })).code, grpc.status.FAILED_PRECONDITION);
    assert.equal((await rig.client.failure('Commit', { name: top, key: 't/1' })).code, grpc.status.ALREADY_EXISTS);
    assert.equal((await rig.client.failure('Commit', { name: 't/c', key: top })).code, grpc.status.FAILED_PRECONDITION);
    assert.equal((await rig.client.failure('Remove', { key: top })).code, grpc.status.FAILED_PRECONDITION, 'a parent with children');
    const bad = await rig.client.failure('Update', { info: { name: 't/1', labels: {} }, update_mask: { paths: ['parent'] } });
    assert.equal(bad.code, grpc.status.INVALID_ARGUMENT);
    assert.equal((await rig.client.failure('Usage', { key: 'no/such' })).code, grpc.status.NOT_FOUND);
    await assert.rejects(rig.client.list(['labels.=="x']), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT);
    const mounts = (await rig.client.call<{ mounts: WireMount[] }>('Mounts', { key: 't/1' })).mounts;
    assert.equal(mounts.length, 1);
    assert.equal(mounts[0]!.type, 'overlay');
    assert.ok(mounts[0]!.options.some((o) => o.startsWith('upperdir=')));
    await rig.client.call('Remove', { key: 't/1' });
  });

  it('Update follows the field-mask rules; List filters by name, parent, kind and labels', async () => {
    const [base] = await rig.client.list([`name~=${CHAIN_IDS[0]!.slice(7)}$`]);
    assert.ok(base !== undefined);
    await rig.client.call('Prepare', { key: 'u/1', parent: base.name, labels: { a: '1', b: '2' } });
    const masked = await rig.client.call<{ info: { labels: Record<string, string> } }>('Update', {
      info: { name: 'u/1', labels: { a: '9', c: '3' } },
      update_mask: { paths: ['labels.a', 'labels.b'] },
    });
    assert.deepEqual(masked.info.labels, { a: '9' }, 'labels.b not in info: deleted; c not in the mask: ignored');
    const all = await rig.client.call<{ info: { labels: Record<string, string> } }>('Update', {
      info: { name: 'u/1', labels: { z: '1' } },
      update_mask: null,
    });
    assert.deepEqual(all.info.labels, { z: '1' });
    assert.deepEqual(
      (await rig.client.list(['kind==active', 'labels.z==1'])).map((i) => i.name),
      ['u/1'],
    );
    assert.deepEqual(
      (await rig.client.list([`parent==${base.name},labels.z`])).map((i) => i.name),
      ['u/1'],
    );
    assert.deepEqual(await rig.client.list(['labels.z!=1,kind==active']), []);
    await rig.client.call('Remove', { key: 'u/1' });
  });

  it('a restart of the server keeps a running container and every snapshot', async () => {
    rig.cd!.ctr(['run', '-d', '--snapshotter', 'unionctl', IMAGE, 'long', '/bin/sleep', '600']);
    try {
      const before = snapshots();
      assert.equal(await rig.serve!.stop('SIGTERM'), 0, 'a clean exit on SIGTERM');
      assert.match(readFileSync('/proc/self/mountinfo', 'utf8'), new RegExp(`${root}/overlay2/[0-9a-f]+/diff`), 'the rootfs stays mounted');
      assert.match(rig.cd!.ctr(['tasks', 'ls']), /long\s+\d+\s+RUNNING/);
      await startServer();
      await reconnected();
      assert.deepEqual(snapshots(), before);
    } finally {
      rig.cd!.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'long']);
      await eventually('the task has stopped', () => !/long\s+\d+\s+RUNNING/.test(rig.cd!.ctr(['tasks', 'ls'])));
      rig.cd!.ctr(['tasks', 'rm', 'long']);
      rig.cd!.ctr(['containers', 'rm', 'long']);
    }
    await eventually('the GC removed the container snapshot', () => snapshots().length === 4);
  });

  it('removing the image lets the GC remove its snapshots and their layers', async () => {
    rig.cd!.ctr(['images', 'rm', '--sync', IMAGE]); // --sync: the GC runs now (a slow earlier run would delay a scheduled one by 50×)
    await eventually('no snapshots left', () => snapshots().length === 0);
    await eventually('no layers and no snapshot records left', () => layers().length === 0 && snapshotDocs().length === 0);
  });

  it('a layer a unionctl image holds outlives the GC', async () => {
    rig.cd!.ctr(['images', 'import', '--snapshotter', 'unionctl', SAMPLE_DOCKER]);
    ok(unionctl([...g(), 'load', SAMPLE_DOCKER])); // reuses the four layers by chain ID
    assert.equal(layers().length, 4);
    rig.cd!.ctr(['images', 'rm', '--sync', IMAGE]); // --sync: the GC runs now (a slow earlier run would delay a scheduled one by 50×)
    await eventually('no snapshots left', () => snapshots().length === 0 && snapshotDocs().length === 0);
    assert.deepEqual(
      layers().map((l) => l.chainId),
      CHAIN_IDS,
      'the image keeps its layers',
    );
    ok(unionctl([...g(), 'rmi', 'sample-app:1']));
    assert.equal(layers().length, 0);
  });

  it('a Prepare for a chain ID the store holds adopts the layer (the remote-snapshotter path): nothing is applied', async () => {
    ok(unionctl([...g(), 'load', SAMPLE_DOCKER]));
    const imageLayers = layers();
    let parent = '';
    for (const [i, chainId] of CHAIN_IDS.entries()) {
      const labels = { 'containerd.io/snapshot.ref': chainId };
      const refused = await rig.client.failure('Prepare', { key: `k8s.io/${i}/extract-${i} ${chainId}`, parent, labels });
      assert.equal(refused.code, grpc.status.ALREADY_EXISTS);
      // What containerd's metadata layer does next: Walk with this filter, take the committed one.
      const found = await rig.client.list([`labels."containerd.io/snapshot.ref"==${chainId},parent=="${parent}"`]);
      assert.equal(found.length, 1);
      assert.equal(found[0]!.kind, 'COMMITTED');
      parent = found[0]!.name;
    }
    const mounts = await rig.client.call<{ mounts: WireMount[] }>('Prepare', { key: 'k8s.io/9/ctr', parent });
    const lowerdir = mounts.mounts[0]!.options.find((o) => o.startsWith('lowerdir='))!;
    assert.equal(
      lowerdir,
      `lowerdir=${[...imageLayers]
        .reverse()
        .map((l) => join(root, 'overlay2', l.id, 'diff'))
        .join(':')}`,
    );
    assert.equal(layers().length, 5, "one new layer: the container's; the image layers were adopted");
    // The GC's order: leaf first. The adopted snapshots go; the image's layers stay.
    await rig.client.call('Remove', { key: 'k8s.io/9/ctr' });
    let left = await rig.client.list();
    while (left.length > 0) {
      const leaf = left.find((s) => !left.some((o) => o.parent === s.name))!;
      await rig.client.call('Remove', { key: leaf.name });
      left = await rig.client.list();
    }
    assert.deepEqual(
      layers().map((l) => l.id),
      imageLayers.map((l) => l.id),
    );
    ok(unionctl([...g(), 'rmi', 'sample-app:1']));
  });

  for (const when of [4, 9, 15]) {
    it(`a server killed at its rename no. ${when} (mid-Prepare or mid-Commit) leaks nothing: restarted, the import is redone`, async () => {
      await rig.killedImportRedone(when);
      assert.deepEqual(
        readdirSync(join(root, 'overlay2')).filter((n) => n !== 'l'),
        [],
      );
    });
  }
});
