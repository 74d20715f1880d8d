/**
 * Docker's graphtest scenarios (daemon/graphdriver/graphtest): empty and populated base layers,
 * snapshots, reading through deep chains (and the depth limit), diff → apply round trips,
 * changes, diff sizes, removal.
 */
import assert from 'node:assert/strict';
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { Change } from '../../src/graph/driver.js';
import type { ConformanceOptions, DriverFixture } from './fixture.js';
import { collect, exists, text, treeList } from './inspect.js';
import { dir, file, tarStream } from './tars.js';

/** Docker's createBase: a sticky 0705 dir owned 1:2 and a setuid 0222 file, written through get. */
async function createBase(fx: DriverFixture, id: string, parent?: string): Promise<void> {
  await fx.driver.createReadWrite(id, parent);
  await fx.view(id, (root) => {
    const sub = join(root, 'a subdir');
    mkdirSync(sub);
    chmodSync(sub, 0o1705);
    chownSync(sub, 1, 2);
    const f = join(root, 'a file');
    writeFileSync(f, 'Some data');
    chmodSync(f, 0o4222);
  });
}

function verifyBase(root: string): void {
  const sub = lstatSync(join(root, 'a subdir'));
  assert.ok(sub.isDirectory());
  assert.equal(sub.mode & 0o7777, 0o1705, 'sticky 0705 subdir');
  assert.deepEqual([sub.uid, sub.gid], [1, 2]);
  const f = lstatSync(join(root, 'a file'));
  assert.equal(f.mode & 0o7777, 0o4222, 'setuid 0222 file');
  assert.deepEqual([f.uid, f.gid], [0, 0]);
  assert.equal(text(join(root, 'a file')), 'Some data');
}

function sortChanges(changes: Change[]): string[] {
  return changes.map((c) => `${c.kind} ${c.path}`).sort();
}

export function graphScenarios(fx: () => DriverFixture, opts: ConformanceOptions): void {
  describe('graph (Docker graphtest)', () => {
    it('creates an empty base layer: an empty 0755 dir through get', async () => {
      const id = fx().id('empty');
      await fx().driver.create(id);
      assert.equal(await fx().driver.exists(id), true);
      await fx().view(id, (root) => {
        assert.ok(lstatSync(root).isDirectory());
        assert.equal(lstatSync(root).mode & 0o7777, 0o755);
        assert.deepEqual(readdirSync(root), []);
      });
    });

    it('creates a base layer with files written through get and reads them back', async () => {
      const id = fx().id('base');
      await createBase(fx(), id);
      await fx().view(id, (root) => {
        verifyBase(root);
        assert.deepEqual(readdirSync(root).sort(), ['a file', 'a subdir']);
      });
    });

    it('snapshots: a child sees its parent, keeps its own writes, and leaves the parent alone', async () => {
      const base = fx().id('base');
      const snap = fx().id('snap');
      await createBase(fx(), base);
      await fx().driver.createReadWrite(snap, base);
      await fx().view(snap, (root) => {
        verifyBase(root);
        writeFileSync(join(root, 'a file'), 'changed in the snapshot');
        writeFileSync(join(root, 'new file'), 'only in the snapshot');
        rmSync(join(root, 'a subdir'), { recursive: true });
      });
      await fx().view(snap, (root) => {
        assert.equal(text(join(root, 'a file')), 'changed in the snapshot');
        assert.equal(text(join(root, 'new file')), 'only in the snapshot');
        assert.equal(exists(join(root, 'a subdir')), false);
      });
      await fx().view(base, (root) => {
        verifyBase(root);
        assert.equal(exists(join(root, 'new file')), false);
      });
    });

    it('round-trips diff → applyDiff: same changes, same tree, same sizes (DriverTestDiffApply)', async () => {
      const base = fx().id('base');
      await fx().driver.createReadWrite(base);
      await fx().view(base, (root) => {
        writeFileSync(join(root, 'keep'), 'unchanged');
        writeFileSync(join(root, 'modify'), 'old content');
        writeFileSync(join(root, 'file-remove.txt'), 'This file should get removed in upper!');
        mkdirSync(join(root, 'var/lib/data'), { recursive: true });
        writeFileSync(join(root, 'var/lib/data/db'), 'rows');
        mkdirSync(join(root, 'replaced/old'), { recursive: true });
        writeFileSync(join(root, 'replaced/old/x'), 'x');
      });
      const upper = fx().id('upper');
      await fx().driver.createReadWrite(upper, base);
      await fx().view(upper, (root) => {
        for (let i = 0; i < 3; i++) writeFileSync(join(root, `added-${i}`), `added file ${i}`.repeat(i + 1));
        writeFileSync(join(root, 'modify'), 'new content, longer than before');
        rmSync(join(root, 'file-remove.txt'));
        rmSync(join(root, 'var/lib'), { recursive: true });
        rmSync(join(root, 'replaced'), { recursive: true });
        mkdirSync(join(root, 'replaced'));
        writeFileSync(join(root, 'replaced/new'), 'new');
        chmodSync(join(root, 'keep'), 0o600);
      });
      const upperChanges = await fx().driver.changes(upper, base);
      const upperSize = await fx().driver.diffSize(upper, base);
      const tar = await collect(await fx().driver.diff(upper, base));

      const applied = fx().id('applied');
      await fx().driver.create(applied, base);
      await fx().view(applied, (root) => assert.equal(text(join(root, 'file-remove.txt')), 'This file should get removed in upper!'));
      const result = await fx().driver.applyDiff(applied, base, tarStream(tar));

      assert.deepEqual(sortChanges(await fx().driver.changes(applied, base)), sortChanges(upperChanges));
      assert.equal(result.size, upperSize, 'applyDiff size = diffSize of the layer the tar came from');
      assert.equal(await fx().driver.diffSize(applied, base), upperSize);
      assert.match(result.diffId, /^sha256:[0-9a-f]{64}$/);
      const [upperTree, appliedTree] = [await fx().view(upper, (p) => treeList(p)), await fx().view(applied, (p) => treeList(p))];
      assert.equal(appliedTree, upperTree);
      await fx().view(applied, (root) => {
        assert.equal(exists(join(root, 'file-remove.txt')), false);
        assert.equal(exists(join(root, 'var/lib')), false);
        assert.deepEqual(readdirSync(join(root, 'replaced')), ['new']);
      });
    });

    it('lists changes: exactly the additions of a fresh layer (DriverTestChanges)', async () => {
      const base = fx().id('base');
      await createBase(fx(), base);
      const upper = fx().id('upper');
      await fx().driver.createReadWrite(upper, base);
      const expected: string[] = [];
      await fx().view(upper, (root) => {
        for (let d = 0; d < 3; d++) {
          mkdirSync(join(root, `directory-${d}`));
          expected.push(`A /directory-${d}`);
          for (let f = 0; f < 4; f++) {
            writeFileSync(join(root, `directory-${d}`, `file-${f}`), `${d}/${f}`);
            expected.push(`A /directory-${d}/file-${f}`);
          }
        }
      });
      assert.deepEqual(sortChanges(await fx().driver.changes(upper, base)), expected.sort());
    });

    it('lists changes: modified, deleted and replaced entries, nothing for untouched ones', async () => {
      const base = await fx().layer(undefined, [
        dir('etc/'),
        file('etc/keep', 'k'),
        file('etc/modify', 'old'),
        file('etc/delete', 'd'),
        dir('opt/'),
        dir('opt/tree/'),
        file('opt/tree/leaf', 'l'),
      ]);
      const upper = fx().id('upper');
      await fx().driver.createReadWrite(upper, base);
      await fx().view(upper, (root) => {
        writeFileSync(join(root, 'etc/modify'), 'new content');
        rmSync(join(root, 'etc/delete'));
        rmSync(join(root, 'opt/tree'), { recursive: true });
        writeFileSync(join(root, 'etc/added'), 'a');
      });
      const changes = sortChanges(await fx().driver.changes(upper, base));
      for (const c of ['C /etc/modify', 'D /etc/delete', 'D /opt/tree', 'A /etc/added'])
        assert.ok(changes.includes(c), `${c} in ${changes.join(', ')}`);
      for (const p of ['/etc/keep', '/opt/tree/leaf'])
        assert.ok(!changes.some((c) => c.endsWith(` ${p}`)), `${p} is not a change: ${changes.join(', ')}`);
      const size = await fx().driver.diffSize(upper, base);
      assert.equal(size, 'new content'.length + 'a'.length);
    });

    it('removes a layer: gone from exists, get refuses it', async () => {
      const id = await fx().layer(undefined, [file('f', 'x')]);
      await fx().driver.remove(id);
      assert.equal(await fx().driver.exists(id), false);
      await assert.rejects(fx().driver.get(id), { code: 'NOT_FOUND' });
    });

    deepChainScenarios(fx, opts);
  });
}

/**
 * One chain, grown in steps: layer i adds file f<i> and has i ancestors. The top of each step is
 * read through get: every file of every layer below must be there.
 */
function deepChainScenarios(fx: () => DriverFixture, opts: ConformanceOptions): void {
  const chain: string[] = [];
  const grow = async (length: number) => {
    while (chain.length < length) {
      const i = chain.length;
      chain.push(await fx().layer(chain[i - 1], [file(`f${i}`, `layer ${i}`)], { id: `deep-${i}` }));
    }
  };
  const readTop = async (length: number) => {
    const top = chain[length - 1];
    await fx().view(top, (root) => {
      const names = new Set(readdirSync(root));
      for (let i = 0; i < length; i++) assert.ok(names.has(`f${i}`), `f${i} visible through ${length} layers`);
      assert.equal(names.size, length);
      assert.equal(text(join(root, 'f0')), 'layer 0');
    });
  };

  // A layer may have maxDepth ancestors: the longest chain is maxDepth + 1 layers. overlay2 on a
  // kernel before 6.8 (no lowerdir+) stops at 128 ancestors, below Docker's 130-layer read.
  const first = opts.deepChain ?? 130;
  it(`reads through a chain of ${first} layers (the driver's longest chain, if shorter)`, async () => {
    const length = Math.min(first, fx().caps.maxDepth + 1);
    await grow(length);
    await readTop(length);
  });

  for (const length of opts.deeperChains ?? []) {
    it(`reads through a chain of ${length} layers`, async (t) => {
      if (length > fx().caps.maxDepth + 1) {
        t.skip(`maxDepth here is ${fx().caps.maxDepth}`);
        return;
      }
      await grow(length);
      await readTop(length);
    });
  }

  it('refuses a layer deeper than maxDepth, naming the limit (skipped when the driver has none to reach)', async (t) => {
    const max = fx().caps.maxDepth;
    if (!Number.isFinite(max) || max > (opts.depthLimitUpTo ?? 600)) {
      t.skip(`maxDepth ${max}`);
      return;
    }
    // maxDepth counts the lower layers (ancestors) a layer may have, as Docker's overlay2 does.
    await grow(max + 1);
    await readTop(max + 1);
    const tooDeep = fx().id('too-deep');
    await assert.rejects(fx().driver.create(tooDeep, chain[max]), (e: Error) => {
      assert.match(e.message, new RegExp(`\\b${max}\\b`), 'the error names the limit');
      return true;
    });
    assert.equal(await fx().driver.exists(tooDeep), false, 'nothing is left of the refused layer');
  });
}
