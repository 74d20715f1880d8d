/**
 * The layout rules of `unionctl check` (src/drivers/overlay2/check.ts, aufs/check.ts) on homes
 * laid out by hand in a temp dir, no mounts: what each finding says, and that its fix, applied
 * through a RepairTx that writes straight to the disk, makes the next check clean. The real
 * stores, damaged and repaired through the store transaction, are test/integration/check.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { checkAufs } from '../../src/drivers/aufs/check.js';
import { AufsLayout } from '../../src/drivers/aufs/layout.js';
import { checkOverlay2 } from '../../src/drivers/overlay2/check.js';
import { Overlay2Layout } from '../../src/drivers/overlay2/layout.js';
import type { CheckedLayer, CheckFinding, DriverCheckContext, RepairTx } from '../../src/graph/driver.js';

const LID = { base: 'AAAAAAAAAAAAAAAAAAAAAAAAAA', mid: 'BBBBBBBBBBBBBBBBBBBBBBBBBB', top: 'CCCCCCCCCCCCCCCCCCCCCCCCCC' };

function context(root: string, layers: CheckedLayer[]): DriverCheckContext {
  return { root, layers: new Map(layers.map((l) => [l.id, l])), recorded: new Set(layers.map((l) => l.id)) };
}

const CHAIN: CheckedLayer[] = [
  { id: 'base', writable: false },
  { id: 'mid', parent: 'base', writable: false },
  { id: 'top', parent: 'mid', writable: true },
];

/** Applies each fix straight to the disk (paths relative to root), after-commit work last, as a commit would. */
async function applyFixes(root: string, findings: CheckFinding[]): Promise<void> {
  const after: Array<() => Promise<void>> = [];
  const tx: RepairTx = {
    write: (path, text) => {
      mkdirSync(dirname(join(root, path)), { recursive: true });
      writeFileSync(join(root, path), text);
    },
    delete: (path) => rmSync(join(root, path), { force: true }),
    afterCommit: (fn) => after.push(fn),
  };
  for (const f of findings) await f.fix?.(tx);
  for (const fn of after) await fn();
}

const codes = (fs: CheckFinding[]) => fs.map((f) => `${f.code} ${f.subject}`).sort();

describe('overlay2 layout check', () => {
  let root = '';
  let layout: Overlay2Layout;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'unionctl-check-'));
    layout = new Overlay2Layout(join(root, 'overlay2'));
    mkdirSync(layout.linksDir(), { recursive: true });
    const lowers: Record<string, string | undefined> = { base: undefined, mid: `l/${LID.base}`, top: `l/${LID.mid}:l/${LID.base}` };
    for (const [id, lid] of Object.entries(LID)) {
      mkdirSync(layout.diffDir(id), { recursive: true });
      writeFileSync(layout.linkFile(id), lid);
      symlinkSync(`../${id}/diff`, layout.linkPath(lid));
      if (lowers[id] !== undefined) {
        writeFileSync(layout.lowerFile(id), lowers[id]);
        mkdirSync(layout.workDir(id));
      }
    }
    writeFileSync(layout.committedFile('base'), '');
    writeFileSync(layout.committedFile('mid'), '');
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('a home as the driver makes it has no finding', () => {
    assert.deepEqual(checkOverlay2(layout, context(root, CHAIN), 'overlay2'), []);
  });

  it('a lost link file gets the id of the l/ link that still points to the layer, and the lower files stay', async () => {
    rmSync(layout.linkFile('mid'));
    const found = checkOverlay2(layout, context(root, CHAIN), 'overlay2');
    assert.deepEqual(codes(found), ['LINK_FILE_MISSING overlay2/mid/link']);
    await applyFixes(root, found);
    assert.equal(readFileSync(layout.linkFile('mid'), 'utf8'), LID.mid);
    assert.deepEqual(checkOverlay2(layout, context(root, CHAIN), 'overlay2'), []);
  });

  it('a lost link file and link: a new link id, then (next pass) the lower files that named the old one', async () => {
    rmSync(layout.linkFile('mid'));
    rmSync(layout.linkPath(LID.mid));
    const first = checkOverlay2(layout, context(root, CHAIN), 'overlay2');
    assert.deepEqual(codes(first), ['LINK_FILE_MISSING overlay2/mid/link']); // top's lower waits for mid's link id
    await applyFixes(root, first);
    const fresh = readFileSync(layout.linkFile('mid'), 'utf8');
    assert.match(fresh, /^[A-Z2-7]{26}$/);
    const second = checkOverlay2(layout, context(root, CHAIN), 'overlay2');
    assert.deepEqual(codes(second), ['LOWER_MISSING_LINK overlay2/top/lower']);
    await applyFixes(root, second);
    assert.equal(readFileSync(layout.lowerFile('top'), 'utf8'), `l/${fresh}:l/${LID.base}`);
    assert.deepEqual(checkOverlay2(layout, context(root, CHAIN), 'overlay2'), []);
  });

  it('a file in l/ is reported and left alone; a lower file on a base layer goes', async () => {
    writeFileSync(layout.linkPath('DDDDDDDDDDDDDDDDDDDDDDDDDD'), 'someone put this here');
    writeFileSync(layout.lowerFile('base'), `l/${LID.mid}`);
    const found = checkOverlay2(layout, context(root, CHAIN), 'overlay2');
    assert.deepEqual(codes(found), ['LINK_NOT_SYMLINK overlay2/l/DDDDDDDDDDDDDDDDDDDDDDDDDD', 'LOWER_UNEXPECTED overlay2/base/lower']);
    assert.equal(found.find((f) => f.code === 'LINK_NOT_SYMLINK')?.fix, undefined);
    await applyFixes(root, found);
    assert.equal(readFileSync(layout.linkPath('DDDDDDDDDDDDDDDDDDDDDDDDDD'), 'utf8'), 'someone put this here');
    assert.deepEqual(codes(checkOverlay2(layout, context(root, CHAIN), 'overlay2')), [
      'LINK_NOT_SYMLINK overlay2/l/DDDDDDDDDDDDDDDDDDDDDDDDDD',
    ]);
  });

  it("a committed mark stays while a layer dir's lower file names the layer (a child being created, no record yet)", () => {
    const found = checkOverlay2(layout, context(root, CHAIN.slice(0, 2)), 'overlay2');
    assert.deepEqual(codes(found), []); // top has no record, but its lower names mid
  });
});

describe('aufs layout check', () => {
  let root = '';
  let layout: AufsLayout;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'unionctl-check-'));
    layout = new AufsLayout(join(root, 'aufs'));
    layout.init();
    for (const l of CHAIN) mkdirSync(layout.diffDir(l.id));
    layout.writeLayersFile('base', []);
    layout.writeLayersFile('mid', ['base']);
    layout.writeLayersFile('top', ['mid', 'base']);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('layers files are rewritten from the records, nearest ancestor first', async () => {
    assert.deepEqual(checkAufs(layout, context(root, CHAIN), 'aufs'), []);
    layout.writeLayersFile('top', ['base']);
    const found = checkAufs(layout, context(root, CHAIN), 'aufs');
    assert.deepEqual(codes(found), ['LAYERS_FILE_WRONG aufs/layers/top']);
    await applyFixes(root, found);
    assert.equal(readFileSync(layout.layersFile('top'), 'utf8'), 'mid\nbase\n');
  });

  it('a layer whose diff dir is gone has no repair', () => {
    rmSync(layout.diffDir('mid'), { recursive: true });
    const found = checkAufs(layout, context(root, CHAIN), 'aufs');
    assert.deepEqual(codes(found), ['LAYER_INCOMPLETE mid']);
    assert.equal(found[0]!.when, 'never');
  });
});
