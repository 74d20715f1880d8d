/**
 * LayerStack, the one union view of layer dirs: what a path resolves to (found in layer k, whited
 * out, hidden by an opaque / whited-out / non-directory ancestor, absent) and the names a dir
 * shows, in the overlay and aufs formats, and for a full-tree ('plain') stack.
 */
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LayerStack, type UnionEntry } from '../../src/archive/layer-stack.js';
import { lsetxattr, mknod } from '../../src/sys/index.js';
import { scratchMissing, withScratchFs } from '../helpers/scratch.js';

/** A compact form of a lookup: "found 2", "whiteout 0", "hidden 1 opaque a", "absent". */
function show(e: UnionEntry): string {
  if (e.kind === 'found') return `found ${e.layer}`;
  if (e.kind === 'whiteout') return `whiteout ${e.layer}`;
  if (e.kind === 'hidden') return `hidden ${e.layer} ${e.by} ${e.at}`;
  return 'absent';
}

/**
 * top (0), mid (1), bottom (2):
 * - bottom: a/b/f, w/f, n/f, o/old, o/keep, s/f, root, del, same
 * - mid:    a/ opaque with a/mine; w whited out; n a file; o/ with o/mid; s a symlink; del whited out
 * - top:    o/ opaque with o/keep; same; `del` again (a file); x/ (only here)
 */
function build(dir: string, format: 'overlay' | 'aufs'): string[] {
  const [top, mid, bottom] = ['top', 'mid', 'bottom'].map((n) => join(dir, n));
  const whiteout = (layer: string, rel: string) => {
    if (format === 'overlay') mknod(join(layer, rel), 0o020000, 0, 0);
    else writeFileSync(join(layer, rel.replace(/([^/]+)$/, '.wh.$1')), '');
  };
  const opaque = (path: string) => {
    if (format === 'overlay') lsetxattr(path, 'trusted.overlay.opaque', Buffer.from('y'));
    else writeFileSync(join(path, '.wh..wh..opq'), '');
  };
  for (const d of ['a/b', 'w', 'n', 'o', 's']) mkdirSync(join(bottom, d), { recursive: true });
  for (const f of ['a/b/f', 'w/f', 'n/f', 'o/old', 'o/keep', 's/f', 'root', 'del', 'same']) writeFileSync(join(bottom, f), 'bottom');
  for (const d of ['a', 'o']) mkdirSync(join(mid, d), { recursive: true });
  opaque(join(mid, 'a'));
  writeFileSync(join(mid, 'a/mine'), 'mid');
  whiteout(mid, 'w');
  writeFileSync(join(mid, 'n'), 'a file');
  writeFileSync(join(mid, 'o/mid'), 'mid');
  symlinkSync('/elsewhere', join(mid, 's'));
  whiteout(mid, 'del');
  mkdirSync(join(top, 'o'), { recursive: true });
  mkdirSync(join(top, 'x'));
  opaque(join(top, 'o'));
  writeFileSync(join(top, 'o/keep'), 'top');
  writeFileSync(join(top, 'same'), 'top');
  writeFileSync(join(top, 'del'), 'back');
  return [top, mid, bottom];
}

describe('LayerStack', { skip: scratchMissing }, () => {
  for (const format of ['overlay', 'aufs'] as const) {
    it(`${format}: resolves a path from the topmost layer that shows it`, async (t) => {
      const stack = new LayerStack(build(await withScratchFs(t, { size: '16m' }), format), format);
      const cases: Record<string, string> = {
        root: 'found 2',
        same: 'found 0',
        del: 'found 0', // whited out in mid, written again on top
        'a/mine': 'found 1',
        'a/b': 'hidden 1 opaque a',
        'a/b/f': 'hidden 1 opaque a', // under a dir whose opaque ancestor hides it, however deep
        w: 'whiteout 1',
        'w/f': 'hidden 1 whiteout w',
        n: 'found 1',
        'n/f': 'hidden 1 non-dir n',
        's/f': 'hidden 1 non-dir s',
        'o/keep': 'found 0',
        'o/mid': 'hidden 0 opaque o',
        'o/old': 'hidden 0 opaque o',
        x: 'found 0',
        'x/y': 'absent',
        nothing: 'absent',
        'nothing/deeper': 'absent',
      };
      for (const [rel, expected] of Object.entries(cases)) assert.equal(show(stack.lookup(rel)), expected, rel);
      const s = stack.lookup('s/f');
      assert.ok(s.kind === 'hidden' && s.st?.isSymbolicLink(), 'a hiding non-directory carries its stat');
      const found = stack.lookup('a/mine');
      assert.ok(found.kind === 'found' && found.path.endsWith('/mid/a/mine') && found.st.isFile());
    });

    it(`${format}: lists the names a dir shows, without whiteouts, markers or hidden names`, async (t) => {
      const stack = new LayerStack(build(await withScratchFs(t, { size: '16m' }), format), format);
      const names = (rel: string) => [...stack.children(rel)].sort();
      assert.deepEqual(names(''), ['a', 'del', 'n', 'o', 'root', 's', 'same', 'x']);
      assert.deepEqual(names('a'), ['mine']);
      assert.deepEqual(names('o'), ['keep']);
      assert.deepEqual(names('w'), [], 'a whited-out dir shows nothing');
      assert.deepEqual(names('n'), [], 'a file has no children');
      assert.deepEqual(names('a/b'), [], 'under an opaque ancestor');
      assert.deepEqual(names('missing'), []);
    });
  }

  it('overlay: ignores the opaque xattr on a layer root, aufs honours the root marker', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    const [top, bottom] = ['top', 'bottom'].map((n) => join(dir, n));
    for (const d of [top, bottom]) mkdirSync(d);
    writeFileSync(join(bottom, 'f'), '');
    lsetxattr(top, 'trusted.overlay.opaque', Buffer.from('y'));
    writeFileSync(join(top, '.wh..wh..opq'), '');
    assert.equal(show(new LayerStack([top, bottom], 'overlay').lookup('f')), 'found 1');
    assert.equal(show(new LayerStack([top, bottom], 'aufs').lookup('f')), 'hidden 0 opaque ');
    assert.deepEqual([...new LayerStack([top, bottom], 'aufs').children('')], []);
  });

  it('plain: the top layer is the whole view', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    const [top, bottom] = ['top', 'bottom'].map((n) => join(dir, n));
    for (const d of [top, bottom]) mkdirSync(d);
    writeFileSync(join(bottom, 'deleted-above'), '');
    writeFileSync(join(top, '.wh.x'), '');
    mknod(join(top, 'c'), 0o020000, 0, 0);
    const stack = new LayerStack([top, bottom], 'plain');
    assert.equal(show(stack.lookup('deleted-above')), 'absent');
    assert.equal(show(stack.lookup('c')), 'found 0', 'a char 0/0 is just a device');
    assert.deepEqual([...stack.children('')].sort(), ['.wh.x', 'c']);
  });

  it('an empty stack shows nothing', () => {
    const stack = new LayerStack([], 'overlay');
    assert.equal(show(stack.lookup('a/b')), 'absent');
    assert.equal(show(stack.lookup('')), 'absent');
    assert.deepEqual([...stack.children('')], []);
  });
});
