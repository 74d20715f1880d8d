/**
 * src/image/containers-storage/format.ts: c/storage's big-data file names (its exact rule,
 * quirks included), the names podman gives images, and the layers.json / images.json built from
 * image records. src/sys/record-lock.ts: a write lock excludes another taker until it is let go.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  bigDataFileName,
  buildStorageMetadata,
  storageImageName,
  synthesizeManifest,
  type LayerFacts,
} from '../../src/image/containers-storage/index.js';
import type { ImageRecord } from '../../src/image/records.js';
import { lockRecordFile, type HeldRecordLock } from '../../src/sys/record-lock.js';

const sha = (s: string | Buffer) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const b64 = (s: string) => `=${Buffer.from(s).toString('base64')}`;

describe('bigDataFileName (c/storage makeBigDataBaseName)', () => {
  it('keeps keys of [.0-9a-z] as they are', () => {
    for (const key of ['manifest', 'config.json', '0123', 'a.b.c', '']) assert.equal(bigDataFileName(key), key);
  });
  it('encodes a key with another character before its end as = + base64', () => {
    const digest = `sha256:${'ab'.repeat(32)}`;
    assert.equal(bigDataFileName(digest), b64(digest));
    assert.equal(bigDataFileName(`manifest-${digest}`), b64(`manifest-${digest}`));
    assert.equal(bigDataFileName('Manifest'), b64('Manifest'));
    assert.equal(bigDataFileName('a:b'), b64('a:b'));
    assert.equal(bigDataFileName('éa'), b64('éa'));
    assert.equal(bigDataFileName('a/b'), b64('a/b'));
  });
  it('keeps a key whose only other character is its last one, as c/storage does', () => {
    assert.equal(bigDataFileName('abC'), 'abC');
    assert.equal(bigDataFileName('ab:'), 'ab:');
    assert.equal(bigDataFileName('é'), 'é'); // one multi-byte character, read whole: nothing left after it
    assert.equal(bigDataFileName('aé'), 'aé');
  });
});

describe('storageImageName', () => {
  it('gives names without a registry "localhost/", as podman load does', () => {
    assert.equal(storageImageName('sample-app:1'), 'localhost/sample-app:1');
    assert.equal(storageImageName('team/app:2'), 'localhost/team/app:2');
    assert.equal(storageImageName('library/busybox:latest'), 'localhost/library/busybox:latest');
  });
  it('keeps names whose first component is a host', () => {
    for (const n of ['docker.io/library/busybox:latest', 'localhost/app:1', 'reg:5000/app:1', 'quay.io/a/b@sha256:00'])
      assert.equal(storageImageName(n), n);
  });
});

function layer(id: string, parent?: string, tarSize = 10240): LayerFacts {
  return { id, parent, created: '2026-12-01T00:00:00.000Z', diffId: sha(`diff ${id}`), tarSize };
}

function image(names: string[], layers: LayerFacts[], config: string): ImageRecord {
  return {
    id: sha(config),
    names,
    layers: layers.map((l) => ({ id: l.id, diffId: l.diffId, chainId: sha(`chain ${l.id}`) })),
    config,
    loaded: '2026-12-02T00:00:00.000Z',
  };
}

describe('buildStorageMetadata', () => {
  const base = layer('base');
  const mid = layer('mid', 'base');
  const top = layer('top', 'mid', -1);
  const other = layer('other', 'base');
  const broken = layer('broken', 'base');
  const facts = new Map([base, mid, top, other].map((l) => [l.id, l]));
  const configA = '{"created":"2026-11-28T02:04:59.421292919Z","rootfs":{"type":"layers","diff_ids":[]}}';
  const configB = '{"rootfs":{"type":"layers","diff_ids":[]}}';
  const configC = '{"rootfs":{"type":"layers","diff_ids":["x"]}}';
  const meta = buildStorageMetadata(
    [
      image(['sample-app:1', 'localhost/dup:1'], [base, mid, top], configA),
      image(['other:2', 'dup:1'], [base, other], configB),
      image(['gone:1'], [base, broken], configC), // "broken" is being removed: no facts
    ],
    (id) => facts.get(id),
  );

  it('lists each layer of an exported image once, parents first, with c/storage field names', () => {
    assert.deepEqual(
      meta.layers.map((l) => [l.id, l.parent]),
      [
        ['base', undefined],
        ['mid', 'base'],
        ['top', 'mid'],
        ['other', 'base'],
      ],
    );
    assert.deepEqual(meta.layers[0], {
      id: 'base',
      created: base.created,
      'compressed-diff-digest': base.diffId,
      'compressed-size': 10240,
      'diff-digest': base.diffId,
      'diff-size': 10240,
    });
    // An unknown tar size is c/storage's -1, and no blob is claimed for it.
    assert.deepEqual(meta.layers[2], { id: 'top', parent: 'mid', created: top.created, 'diff-digest': top.diffId, 'diff-size': -1 });
  });

  it('leaves out an image with a layer that is not complete, and its own layers', () => {
    assert.equal(meta.images.length, 2);
    assert.ok(!meta.layers.some((l) => l.id === 'broken'));
    assert.ok(!meta.images.some((i) => i.id === sha(configC).slice(7)));
  });

  it('gives each name to one image only (c/storage refuses a store with a name twice)', () => {
    assert.deepEqual(meta.images[0]!.names, ['localhost/sample-app:1', 'localhost/dup:1']);
    assert.deepEqual(meta.images[1]!.names, ['localhost/other:2']);
  });

  it('writes images with the config byte for byte and a manifest whose digest is the image digest', () => {
    const img = meta.images[0]!;
    const id = sha(configA).slice('sha256:'.length);
    assert.equal(img.id, id);
    assert.equal(img.layer, 'top');
    assert.equal(img.created, '2026-11-28T02:04:59.421292919Z');
    assert.equal(meta.images[1]!.created, '2026-12-02T00:00:00.000Z', 'no created in the config: when it was loaded');
    const items = meta.bigData.get(id)!;
    const byKey = new Map(items.map((i) => [i.key, i]));
    assert.deepEqual(img['big-data-names'], [`sha256:${id}`, `manifest-${img.digest}`, 'manifest']);
    assert.equal(byKey.get(`sha256:${id}`)!.data.toString(), configA);
    assert.equal(byKey.get(`sha256:${id}`)!.file, b64(`sha256:${id}`));
    assert.equal(byKey.get('manifest')!.file, 'manifest');
    assert.equal(sha(byKey.get('manifest')!.data), img.digest);
    for (const item of items) {
      assert.equal(img['big-data-sizes'][item.key], item.data.length);
      assert.equal(img['big-data-digests'][item.key], sha(item.data));
    }
    const manifest = JSON.parse(byKey.get('manifest')!.data.toString()) as {
      config: { digest: string; size: number };
      layers: Array<{ digest: string; size: number; mediaType: string }>;
    };
    assert.deepEqual(manifest.config, {
      mediaType: 'application/vnd.docker.container.image.v1+json',
      size: configA.length,
      digest: `sha256:${id}`,
    });
    assert.deepEqual(
      manifest.layers.map((l) => [l.digest, l.size, l.mediaType]),
      [
        [base.diffId, 10240, 'application/vnd.docker.image.rootfs.diff.tar'],
        [mid.diffId, 10240, 'application/vnd.docker.image.rootfs.diff.tar'],
        [top.diffId, 0, 'application/vnd.docker.image.rootfs.diff.tar'],
      ],
    );
    assert.equal(synthesizeManifest(configA, [base, mid, top]), byKey.get('manifest')!.data.toString(), 'deterministic');
  });
});

describe('lockRecordFile', () => {
  const dir = mkdtempSync('/tmp/unionctl-test-record-lock-');
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a write lock keeps a second taker waiting, even in the same process, until it is let go', async () => {
    const path = join(dir, 'sub', 'layers.lock');
    const first = await lockRecordFile(path, 'write');
    const seen: { waited?: string; got: boolean } = { got: false };
    const taking = lockRecordFile(path, 'read', { onWait: (h) => (seen.waited = h) }).then((l: HeldRecordLock) => {
      seen.got = true;
      return l;
    });
    // It must be told it waits before it can have the lock: wait for that, not for a time.
    while (seen.waited === undefined) await new Promise((r) => setImmediate(r));
    assert.equal(seen.got, false, 'it had the lock while the first one held it');
    first.release();
    (await taking).release();
    assert.equal(readFileSync(path).length, 0, 'taking a lock writes nothing');
  });

  it('times out with LOCKED while the lock stays taken', async () => {
    const path = join(dir, 'images.lock');
    const first = await lockRecordFile(path, 'read');
    try {
      await assert.rejects(lockRecordFile(path, 'write', { timeoutMs: 20 }), (e: Error & { code?: string }) => e.code === 'LOCKED');
    } finally {
      first.release();
    }
    (await lockRecordFile(path, 'write')).release();
  });
});
