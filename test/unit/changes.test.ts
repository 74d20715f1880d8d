/**
 * Naive change detection (Docker's ChangesDirs rules): an old tree, a copy of it changed in every
 * way the rules tell apart, and the exact change list expected.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { changesBetween, compareBytes } from '../../src/archive/changes.js';
import type { Change } from '../../src/graph/driver.js';
import { lsetxattr, utimensat } from '../../src/sys/index.js';
import { scratchMissing, withScratchFs } from '../helpers/scratch.js';

const T = 1_700_000_000;

function setMtime(path: string, sec: number, nsec: number): void {
  utimensat(path, { sec, nsec }, { sec, nsec }, { nofollow: true });
}

function file(path: string, content: string, mtime?: [number, number]): void {
  writeFileSync(path, content);
  if (mtime) setMtime(path, mtime[0], mtime[1]);
}

function show(changes: Change[]): string[] {
  return changes.map((c) => `${c.kind} ${c.path}`);
}

/** The old tree: one entry per rule, most with fixed nanosecond mtimes. */
function buildOld(root: string): void {
  mkdirSync(join(root, 'a'));
  file(join(root, 'a/f1'), 'one', [T, 500]);
  mkdirSync(join(root, 'a.b'));
  mkdirSync(join(root, 'b/c'), { recursive: true });
  file(join(root, 'b/c/d'), 'deep');
  file(join(root, 'b/e'), 'e');
  mkdirSync(join(root, 'keep'));
  file(join(root, 'keep/same'), 'same', [T, 500]);
  for (const name of ['mode', 'owner', 'size', 'mtime', 'nsec0', 'nsec', 'cap']) file(join(root, name), 'content', [T, 500]);
  symlinkSync('target-1', join(root, 'link'));
  setMtime(join(root, 'link'), T, 500);
  mkdirSync(join(root, 'd2f'));
  file(join(root, 'd2f/child'), 'c');
  file(join(root, 'f2d'), 'file', [T, 500]);
  mkdirSync(join(root, 'dirtime'));
  mkdirSync(join(root, 'deep/x/y'), { recursive: true });
  file(join(root, 'deep/x/y/z'), 'z', [T, 500]);
  file(join(root, 'gone'), 'g');
}

/** Applies one change per rule to the copy. */
function changeNew(root: string): void {
  file(join(root, 'a/new'), 'new');
  rmSync(join(root, 'b'), { recursive: true });
  chmodSync(join(root, 'mode'), 0o600);
  chownSync(join(root, 'owner'), 1234, 0);
  file(join(root, 'size'), 'content, longer', [T, 500]);
  setMtime(join(root, 'mtime'), T + 1, 500);
  setMtime(join(root, 'nsec0'), T, 0); // one side without nanoseconds: not a change (Docker)
  setMtime(join(root, 'nsec'), T, 600); // both with nanoseconds, different: a change
  lsetxattr(join(root, 'cap'), 'security.capability', Buffer.from([1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  unlinkSync(join(root, 'link'));
  symlinkSync('target-2', join(root, 'link')); // same length, same mtime below: only the target differs
  setMtime(join(root, 'link'), T, 500);
  rmSync(join(root, 'd2f'), { recursive: true });
  file(join(root, 'd2f'), 'now a file');
  unlinkSync(join(root, 'f2d'));
  mkdirSync(join(root, 'f2d'));
  file(join(root, 'f2d/inside'), 'i');
  setMtime(join(root, 'dirtime'), T + 99, 0); // a directory's mtime alone is no change
  file(join(root, 'deep/x/y/z'), 'Z', [T, 501]);
  unlinkSync(join(root, 'gone'));
  mkdirSync(join(root, 'added/sub'), { recursive: true });
  file(join(root, 'added/sub/f'), 'f');
}

describe('changesBetween', () => {
  it('applies every Docker rule', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t, { size: '64m' });
    const oldRoot = join(dir, 'old');
    const newRoot = join(dir, 'new');
    mkdirSync(oldRoot);
    buildOld(oldRoot);
    execFileSync('cp', ['-a', oldRoot, newRoot]);
    assert.deepEqual(await changesBetween(newRoot, oldRoot), [], 'a copy has no changes');
    changeNew(newRoot);
    assert.deepEqual(show(await changesBetween(newRoot, oldRoot)), [
      'C /a', // unchanged itself, but holds a change
      'A /a/new',
      'A /added',
      'A /added/sub',
      'A /added/sub/f',
      'D /b', // only the topmost deleted path
      'C /cap',
      'C /d2f', // directory became a file: no D for its old children
      'C /deep',
      'C /deep/x',
      'C /deep/x/y',
      'C /deep/x/y/z',
      'C /f2d', // file became a directory: everything in it is new
      'A /f2d/inside',
      'D /gone',
      'C /link',
      'C /mode',
      'C /mtime',
      'C /nsec',
      'C /owner',
      'C /size',
    ]);
  });

  it('lists everything as added without an old tree, sorted by path bytes', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    mkdirSync(join(dir, 'a/b'), { recursive: true });
    mkdirSync(join(dir, 'a.b'));
    file(join(dir, 'a/b/c'), 'c');
    file(join(dir, 'é'), 'e');
    file(join(dir, 'z'), 'z');
    assert.deepEqual(show(await changesBetween(dir)), ['A /a', 'A /a.b', 'A /a/b', 'A /a/b/c', 'A /z', 'A /é']);
  });

  it('skips aufs bookkeeping names', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    mkdirSync(join(dir, 'old'));
    mkdirSync(join(dir, 'new/.wh..wh.plnk'), { recursive: true });
    file(join(dir, 'new/.wh..wh.aufs'), '');
    assert.deepEqual(await changesBetween(join(dir, 'new'), join(dir, 'old')), []);
  });

  it('refuses a root that is not a directory', async () => {
    await assert.rejects(changesBetween('/nonexistent-unionctl-root'), /is not a directory/);
  });
});

describe('compareBytes', () => {
  it('orders like UTF-8 bytes, also beyond the BMP', () => {
    const names = ['\u{1F642}', '\uFF21', 'a/b', 'a.b', 'a', 'é'];
    const byBuffers = [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    assert.deepEqual([...names].sort(compareBytes), byBuffers);
  });
});
