/**
 * sys/store-files: the path checks every driver runs before it hands a path to the kernel, the
 * O_NOFOLLOW reads of store files, and removals that never follow a symlink or cross a mount.
 * Both ways of checking a path (openat2, and the lstat/realpath fallback for old kernels and for
 * paths openat2 keeps answering EAGAIN for) must agree on every shape.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { UnionctlError } from '../../src/errors.js';
import {
  assertDirsInside,
  ensureStoreDir,
  pathProblem,
  readStoreFile,
  removeStoreTree,
  storeDirExists,
  writeEmptyMark,
} from '../../src/sys/index.js';
import { withScratchFs } from '../helpers/scratch.js';

/** A home with a layer dir, an l/ link to it, and the shapes a damaged store can have. */
function makeHome(scratch: string): { home: string; outside: string } {
  const home = join(scratch, 'home');
  const outside = join(scratch, 'outside');
  for (const d of [join(home, 'a', 'diff'), join(home, 'l'), join(home, 'b'), outside]) mkdirSync(d, { recursive: true });
  symlinkSync('../a/diff', join(home, 'l', 'GOOD'));
  symlinkSync(outside, join(home, 'l', 'ABSOLUTE'));
  symlinkSync('../../outside', join(home, 'l', 'DOTDOT'));
  symlinkSync('../missing/diff', join(home, 'l', 'DANGLING'));
  symlinkSync(outside, join(home, 'b', 'work'));
  symlinkSync('a', join(home, 'c')); // a layer dir that is a symlink to another one
  symlinkSync(join(home, 'a'), join(home, 'd')); // the same, absolute
  writeFileSync(join(home, 'b', 'file'), 'x');
  return { home, outside };
}

const SHAPES: Array<[string, 'no-symlinks' | 'beneath', string | undefined]> = [
  ['a/diff', 'no-symlinks', undefined],
  ['a', 'no-symlinks', undefined],
  ['b/work', 'no-symlinks', 'ELOOP'],
  ['c/diff', 'no-symlinks', 'ELOOP'],
  ['b/file', 'no-symlinks', 'ENOTDIR'],
  ['b/none', 'no-symlinks', 'ENOENT'],
  ['l/GOOD', 'beneath', undefined],
  ['c/diff', 'beneath', undefined],
  ['d/diff', 'beneath', 'EXDEV'], // openat2's BENEATH refuses every absolute symlink
  ['l/ABSOLUTE', 'beneath', 'EXDEV'],
  ['l/DOTDOT', 'beneath', 'EXDEV'],
  ['l/DANGLING', 'beneath', 'ENOENT'],
  ['../outside', 'beneath', 'EXDEV'],
];

describe('store path checks', () => {
  it('openat2 and the lstat/realpath fallback agree on every shape', async (t) => {
    const { home } = makeHome(await withScratchFs(t));
    for (const [rel, rule, expected] of SHAPES) {
      assert.equal(pathProblem(home, rel, rule), expected, `openat2: ${rel} (${rule})`);
      assert.equal(pathProblem(home, rel, rule, { openat2: false }), expected, `fallback: ${rel} (${rule})`);
    }
  });

  it('assertDirsInside names the path, the symlink in the way and where it points', async (t) => {
    const { home, outside } = makeHome(await withScratchFs(t));
    assert.throws(
      () => assertDirsInside(home, ['a/diff', 'b/work'], 'no-symlinks', 'work dir'),
      (e: unknown) =>
        e instanceof UnionctlError &&
        e.code === 'CORRUPT' &&
        e.message ===
          `work dir ${join(home, 'b', 'work')} is a symbolic link (to ${JSON.stringify(outside)}), which the store's layout never has there` &&
        /unionctl check/.test(e.hint ?? ''),
    );
    assert.throws(() => assertDirsInside(home, ['c/diff'], 'no-symlinks', 'diff dir'), {
      message: new RegExp(`passes through the symbolic link ${join(home, 'c')}`),
    });
    assert.throws(() => assertDirsInside(home, ['l/GOOD', 'l/DOTDOT'], 'beneath', (rel) => `lower ${rel}`), {
      code: 'CORRUPT',
      message: new RegExp(`^lower l/DOTDOT ${join(home, 'l', 'DOTDOT')} leads outside ${home}`),
    });
    assertDirsInside(home, ['a/diff', 'a'], 'no-symlinks', 'x');
    assertDirsInside(home, ['l/GOOD'], 'beneath', 'x');
  });

  it('readStoreFile: a regular file is read; a symlink, a directory or a FIFO is CORRUPT; a missing file is undefined', async (t) => {
    const scratch = await withScratchFs(t);
    writeFileSync(join(scratch, 'rec'), 'hello');
    symlinkSync(join(scratch, 'rec'), join(scratch, 'link'));
    mkdirSync(join(scratch, 'dir'));
    execFileSync('mkfifo', [join(scratch, 'fifo')]);
    assert.equal(readStoreFile(join(scratch, 'rec'), 'record'), 'hello');
    assert.equal(readStoreFile(join(scratch, 'none'), 'record'), undefined);
    assert.throws(() => readStoreFile(join(scratch, 'link'), 'record'), { code: 'CORRUPT', message: /is a symbolic link/ });
    assert.throws(() => readStoreFile(join(scratch, 'dir'), 'record'), { code: 'CORRUPT', message: /is a directory/ });
    assert.throws(() => readStoreFile(join(scratch, 'fifo'), 'record'), { code: 'CORRUPT', message: /is not a regular file/ });
  });

  it('ensureStoreDir and storeDirExists: a symlink or a file where a directory belongs is CORRUPT', async (t) => {
    const { home, outside } = makeHome(await withScratchFs(t));
    assert.equal(ensureStoreDir(join(home, 'new'), 0o710, 'dir'), true);
    assert.equal(lstatSync(join(home, 'new')).mode & 0o7777, 0o710);
    assert.equal(ensureStoreDir(join(home, 'new'), 0o710, 'dir'), false);
    assert.equal(storeDirExists(join(home, 'none'), 'dir'), false);
    assert.throws(() => ensureStoreDir(join(home, 'b', 'work'), 0o700, 'state dir'), {
      code: 'CORRUPT',
      message: new RegExp(JSON.stringify(outside)),
    });
    assert.throws(() => storeDirExists(join(home, 'b', 'file'), 'dir'), { code: 'CORRUPT', message: /is not a directory/ });
  });

  it('removeStoreTree unlinks a symlink instead of following it, refuses a symlinked parent and a tree with a mount inside', async (t) => {
    const { home, outside } = makeHome(await withScratchFs(t));
    writeFileSync(join(outside, 'keep'), 'k');
    removeStoreTree(home, 'b/work', 'work dir');
    assert.equal(existsSync(join(home, 'b', 'work')), false);
    assert.equal(readFileSync(join(outside, 'keep'), 'utf8'), 'k');
    assert.throws(() => removeStoreTree(home, 'c/diff', 'diff dir'), { code: 'CORRUPT', message: /is a symbolic link/ });
    assert.ok(existsSync(join(home, 'a', 'diff')), 'removed through the symlinked parent');
    removeStoreTree(home, 'gone/none', 'dir'); // nothing there: nothing to do

    mkdirSync(join(home, 'a', 'diff', 'sub'));
    execFileSync('mount', ['--bind', outside, join(home, 'a', 'diff', 'sub')]);
    try {
      assert.throws(() => removeStoreTree(home, 'a', 'layer dir'), { code: 'IN_USE', message: /is mounted inside it/ });
      assert.equal(readFileSync(join(outside, 'keep'), 'utf8'), 'k');
    } finally {
      execFileSync('umount', [join(home, 'a', 'diff', 'sub')]);
    }
    removeStoreTree(home, 'a', 'layer dir');
    assert.equal(existsSync(join(home, 'a')), false);
    assert.equal(readFileSync(join(outside, 'keep'), 'utf8'), 'k');
  });

  it('writeEmptyMark makes an empty mark in place: a symlink or FIFO there is replaced, not written through; a mark is kept', async (t) => {
    const { home, outside } = makeHome(await withScratchFs(t));
    const target = join(outside, 'target');
    writeFileSync(target, 'keep');
    symlinkSync(target, join(home, 'b', 'mark'));
    symlinkSync(join(outside, 'new'), join(home, 'b', 'dangling'));
    execFileSync('mkfifo', [join(home, 'b', 'fifo')]);
    for (const name of ['mark', 'dangling', 'fifo', 'fresh']) {
      writeEmptyMark(join(home, 'b', name), 0o600);
      const st = lstatSync(join(home, 'b', name));
      assert.ok(st.isFile() && st.size === 0 && (st.mode & 0o777) === 0o600, name);
    }
    assert.equal(readFileSync(target, 'utf8'), 'keep');
    assert.equal(existsSync(join(outside, 'new')), false, 'a dangling symlink did not create its target');
    writeFileSync(join(home, 'b', 'fresh'), 'x');
    writeEmptyMark(join(home, 'b', 'fresh'));
    assert.equal(readFileSync(join(home, 'b', 'fresh'), 'utf8'), 'x', 'an existing regular file is left as it is');
    assert.deepEqual(
      readdirSync(join(home, 'b')).filter((n) => n.startsWith('.')),
      [],
      'no temp file',
    );
  });
});
