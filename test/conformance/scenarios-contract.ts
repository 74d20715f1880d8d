/**
 * The Driver interface's contract (src/graph/driver.ts), sentence by sentence: each `it` names the
 * sentence it checks. What other scenario files already check is named there, not repeated:
 * UNSUPPORTED past maxDepth (scenarios-graph), adoption and cross-process sharing
 * (scenarios-mounts), BAD_TAR/UNSAFE_ENTRY (scenarios-breakout).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { listMounts } from '../helpers/mounts.js';
import type { DriverFixture } from './fixture.js';
import { file, tarOf, tarStream } from './tars.js';

const code = (expected: string) => (e: unknown) => {
  assert.equal((e as { code?: string }).code, expected, (e as Error).message);
  return true;
};

const NO_REFERENCES = { persistent: 0, processes: [], readers: [], heldBy: [], total: 0, mounted: false };

export function contractScenarios(fx: () => DriverFixture): void {
  describe('the Driver contract (src/graph/driver.ts)', () => {
    const mountsAt = (path: string) => listMounts().filter((m) => m.mountPoint === path).length;
    const writableOnBase = async () => {
      const base = await fx().layer(undefined, [file('base-file', 'base')]);
      const id = fx().id('rw');
      await fx().driver.createReadWrite(id, base);
      return { base, id };
    };

    it('ids: every method that takes an id refuses an invalid one with INVALID_ID, before doing anything', async () => {
      const d = fx().driver;
      const tar = () => tarStream(tarOf([file('x', 'x')]));
      for (const bad of ['', '../escape', 'a/b', '.hidden', '-dash', 'x'.repeat(129), 'sp ace']) {
        const calls: Array<[string, () => Promise<unknown>]> = [
          ['create', () => d.create(bad)],
          ['createReadWrite', () => d.createReadWrite(bad)],
          ['remove', () => d.remove(bad)],
          ['get', () => d.get(bad)],
          ['put', () => d.put(bad)],
          ['exists', () => d.exists(bad)],
          ['metadata', () => d.metadata(bad)],
          ['branches', () => d.branches(bad)],
          ['applyDiff', () => d.applyDiff(bad, undefined, tar())],
          ['diff', () => d.diff(bad)],
          ['changes', () => d.changes(bad)],
          ['diffSize', () => d.diffSize(bad)],
          ['references', async () => d.references(bad)],
        ];
        for (const [name, call] of calls) await assert.rejects(call, code('INVALID_ID'), `${name}(${JSON.stringify(bad)})`);
      }
      // A valid parent id is checked as well.
      await assert.rejects(d.create(fx().id(), '../parent'), code('INVALID_ID'));
    });

    it('create: EXISTS for an id that already has storage (image or writable); the layer is left as it was', async () => {
      const { base, id } = await writableOnBase();
      await assert.rejects(fx().driver.create(base), code('EXISTS'));
      await assert.rejects(fx().driver.createReadWrite(id, base), code('EXISTS'));
      assert.deepEqual(await fx().treeOf(base), ['base-file']);
    });

    it('create: NOT_FOUND for a parent without storage, and a failed create leaves nothing', async () => {
      const id = fx().id();
      await assert.rejects(fx().driver.create(id, fx().id('missing-parent')), code('NOT_FOUND'));
      await assert.rejects(fx().driver.createReadWrite(id, fx().id('missing-parent')), code('NOT_FOUND'));
      assert.equal(await fx().driver.exists(id), false);
      await fx().driver.create(id); // the id is free
      await fx().driver.remove(id);
    });

    it('create: BAD_OPTION for any per-layer storage option on an image layer, an unknown key on a writable one', async () => {
      const id = fx().id();
      await assert.rejects(fx().driver.create(id, undefined, { storageOpt: { size: '10M' } }), code('BAD_OPTION'));
      await assert.rejects(fx().driver.createReadWrite(id, undefined, { storageOpt: { 'no-such-option': '1' } }), code('BAD_OPTION'));
      assert.equal(await fx().driver.exists(id), false);
    });

    it('remove: IN_USE while another reference or a persistent one is held; nothing is deleted', async () => {
      const { id } = await writableOnBase();
      await fx().driver.get(id, { persistent: true });
      await assert.rejects(fx().driver.remove(id), (e: unknown) => code('IN_USE')(e) && /mount/.test((e as Error).message));
      assert.equal(await fx().driver.exists(id), true);
      await fx().driver.put(id, { persistent: true });
      await fx().driver.get(id);
      await assert.rejects(
        fx().driver.remove(id),
        (e: unknown) => code('IN_USE')(e) && new RegExp(String(process.pid)).test((e as Error).message),
      );
      await fx().driver.put(id);
      await fx().driver.remove(id);
      assert.equal(await fx().driver.exists(id), false);
    });

    it('remove: idempotent — a removed layer and an id that never had storage are removed without complaint', async () => {
      const id = await fx().layer(undefined, [file('f', 'f')]);
      await fx().driver.remove(id);
      await fx().driver.remove(id);
      await fx().driver.remove(fx().id('never-made'));
      assert.equal(await fx().driver.exists(id), false);
    });

    it('remove with force: releases what is mounted and referenced first', async () => {
      const { id } = await writableOnBase();
      const path = await fx().driver.get(id, { persistent: true });
      await fx().driver.get(id);
      await fx().driver.remove(id, { force: true });
      assert.equal(await fx().driver.exists(id), false);
      assert.equal(mountsAt(path), 0);
      assert.deepEqual(fx().driver.references(id), NO_REFERENCES);
    });

    it('get: NOT_FOUND for no storage; every caller gets the same path; the kinds of reference are counted apart', async () => {
      await assert.rejects(fx().driver.get(fx().id('missing')), code('NOT_FOUND'));
      const { id } = await writableOnBase();
      const p1 = await fx().driver.get(id);
      const p2 = await fx().driver.get(id, { persistent: true });
      assert.equal(p1, p2);
      const refs = fx().driver.references(id);
      assert.equal(refs.persistent, 1);
      assert.deepEqual(refs.processes, [{ pid: process.pid, count: 1 }]);
      assert.equal(refs.total, 2);
      await fx().driver.put(id, { persistent: true });
      assert.equal(fx().driver.references(id).total, 1);
      await fx().driver.put(id);
      assert.deepEqual(fx().driver.references(id), NO_REFERENCES);
    });

    it('put: USAGE without a reference of that kind, and nothing changes', async () => {
      const { id } = await writableOnBase();
      await assert.rejects(fx().driver.put(id), code('USAGE'));
      const path = await fx().driver.get(id);
      const mounted = mountsAt(path);
      await assert.rejects(fx().driver.put(id, { persistent: true }), code('USAGE'));
      assert.equal(mountsAt(path), mounted);
      assert.equal(fx().driver.references(id).total, 1);
      await fx().driver.put(id);
      await assert.rejects(fx().driver.put(id), code('USAGE'));
    });

    it('references: all zero for a layer nobody holds and for one that does not exist', async () => {
      const { id } = await writableOnBase();
      assert.deepEqual(fx().driver.references(id), NO_REFERENCES);
      assert.deepEqual(fx().driver.references(fx().id('missing')), NO_REFERENCES);
    });

    it('exists: true for a layer with storage, false after remove and for an unknown id', async () => {
      const { id } = await writableOnBase();
      assert.equal(await fx().driver.exists(id), true);
      assert.equal(await fx().driver.exists(fx().id('missing')), false);
    });

    it('metadata, branches, diff, changes, diffSize: NOT_FOUND for a layer without storage', async () => {
      const missing = fx().id('missing');
      for (const [name, call] of [
        ['metadata', () => fx().driver.metadata(missing)],
        ['branches', () => fx().driver.branches(missing)],
        ['diff', () => fx().driver.diff(missing)],
        ['changes', () => fx().driver.changes(missing)],
        ['diffSize', () => fx().driver.diffSize(missing)],
      ] as const) {
        await assert.rejects(call, code('NOT_FOUND'), name);
      }
      assert.deepEqual(fx().driver.references(missing), NO_REFERENCES, 'a refused call took no reference');
    });

    it('applyDiff: NOT_FOUND for no storage, IN_USE while the layer is referenced', async () => {
      const tar = () => tarStream(tarOf([file('applied', 'x')]));
      await assert.rejects(fx().driver.applyDiff(fx().id('missing'), undefined, tar()), code('NOT_FOUND'));
      const id = fx().id();
      await fx().driver.create(id);
      await fx().driver.get(id);
      try {
        await assert.rejects(fx().driver.applyDiff(id, undefined, tar()), code('IN_USE'));
      } finally {
        await fx().driver.put(id);
      }
      await fx().driver.applyDiff(id, undefined, tar());
      assert.deepEqual(await fx().treeOf(id), ['applied']);
    });

    it('diff: the views are referenced while the tar is read and given back before it ends, or when it is destroyed', async () => {
      const { base, id } = await writableOnBase();
      await fx().view(id, () => undefined);
      const stream = await fx().driver.diff(id, base);
      let bytes = 0;
      for await (const chunk of stream) bytes += (chunk as Buffer).length;
      assert.ok(bytes >= 1024, 'a tar');
      assert.deepEqual(fx().driver.references(id), NO_REFERENCES, 'references left after the end');
      assert.deepEqual(fx().driver.references(base), NO_REFERENCES);
      const abandoned = await fx().driver.diff(id);
      abandoned.destroy();
      await new Promise((r) => abandoned.once('close', r));
      // Giving back happens after 'close'; it is done when the layer can be removed.
      for (let i = 0; i < 100 && fx().driver.references(id).total > 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(fx().driver.references(id), NO_REFERENCES, 'references left after destroy');
    });

    it('changes and diffSize: nothing stays referenced', async () => {
      const { base, id } = await writableOnBase();
      await fx().driver.changes(id, base);
      await fx().driver.diffSize(id, base);
      assert.deepEqual(fx().driver.references(id), NO_REFERENCES);
      assert.deepEqual(fx().driver.references(base), NO_REFERENCES);
    });

    it('cleanup: unmounts everything and drops every reference, persistent ones too; idempotent; the driver stays usable', async () => {
      const { id } = await writableOnBase();
      const path = await fx().driver.get(id, { persistent: true });
      await fx().driver.get(id);
      await fx().driver.cleanup();
      await fx().driver.cleanup();
      assert.equal(mountsAt(path), 0);
      assert.deepEqual(fx().driver.references(id), NO_REFERENCES);
      await fx().view(id, (p) => assert.equal(p, path));
      await fx().driver.remove(id);
    });
  });
}
