/**
 * copyTree: a tree with every inode kind, owners, special mode bits, xattrs (user, trusted, binary
 * security.capability), nanosecond times and hardlinks is copied in each mode, and
 * test/treelist.py must print the same listing for the source and the copy.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, lstatSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { copyTree } from '../../src/archive/copytree.js';
import { lchown, lgetxattr, lsetxattr, mknod, utimensat } from '../../src/sys/index.js';
import { makeXfsScratch, scratchMissing, withScratchFs, xfsAvailable } from '../helpers/scratch.js';

const TREELIST = join(process.env.UNIONCTL_REPO ?? process.cwd(), 'test', 'treelist.py');
const CAPABILITY = Buffer.from([1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

function treelist(root: string): string {
  return execFileSync('python3', [TREELIST, root, '--dir-mtime'], { encoding: 'utf8' });
}

function times(path: string, sec: number, nsec: number): void {
  utimensat(path, { sec: sec - 1000, nsec: 1 }, { sec, nsec }, { nofollow: true });
}

/** Builds the source tree; directory times are set last so writing inside does not move them. */
function buildSource(src: string): void {
  mkdirSync(join(src, 'etc/deep/er'), { recursive: true });
  mkdirSync(join(src, 'tmp'));
  mkdirSync(join(src, 'empty'));
  writeFileSync(join(src, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
  writeFileSync(join(src, 'etc/deep/er/big'), Buffer.alloc(300_000, 7));
  writeFileSync(join(src, 'suid'), '#!/bin/sh\n');
  chownSync(join(src, 'suid'), 1000, 1000);
  chmodSync(join(src, 'suid'), 0o6755);
  chmodSync(join(src, 'tmp'), 0o1777);
  writeFileSync(join(src, 'ping'), 'binary');
  lsetxattr(join(src, 'ping'), 'security.capability', CAPABILITY);
  lsetxattr(join(src, 'ping'), 'user.note', Buffer.from([0, 1, 2, 0]));
  lsetxattr(join(src, 'etc'), 'trusted.overlay.opaque', Buffer.from('y'));
  writeFileSync(join(src, 'hard1'), 'shared');
  linkSync(join(src, 'hard1'), join(src, 'etc/hard2'));
  linkSync(join(src, 'hard1'), join(src, 'etc/deep/hard3'));
  symlinkSync('../etc/passwd', join(src, 'tmp/link'));
  lchown(join(src, 'tmp/link'), 7, 8);
  lsetxattr(join(src, 'tmp/link'), 'trusted.sym', Buffer.from('on the link'));
  mknod(join(src, 'null'), 0o020000 | 0o666, 1, 3);
  mknod(join(src, 'sda'), 0o060000 | 0o640, 8, 0);
  mknod(join(src, 'whiteout'), 0o020000, 0, 0);
  mknod(join(src, 'fifo'), 0o010000 | 0o620, 0, 0);
  mknod(join(src, 'sock'), 0o140000 | 0o755, 0, 0);
  lchown(join(src, 'sock'), 5, 6);
  for (const p of ['etc/passwd', 'etc/deep/er/big', 'suid', 'ping', 'hard1', 'tmp/link', 'null', 'sda', 'whiteout', 'fifo', 'sock']) {
    times(join(src, p), 1_600_000_000, 123_456_789);
  }
  for (const d of ['etc/deep/er', 'etc/deep', 'etc', 'tmp', 'empty', '.']) times(join(src, d), 1_500_000_000, 987_654_321);
}

async function copyAndCompare(src: string, dest: string, mode: 'copy' | 'reflink' | 'hardlink'): Promise<void> {
  await copyTree(src, dest, { mode });
  assert.equal(treelist(dest), treelist(src));
  for (const p of ['.', 'etc', 'etc/passwd', 'tmp/link', 'sock']) {
    const a = lstatSync(join(src, p), { bigint: true });
    const b = lstatSync(join(dest, p), { bigint: true });
    assert.equal(b.mtimeNs, a.mtimeNs, `mtime of ${p} to the nanosecond`);
    assert.equal(b.mode, a.mode, `mode of ${p}`);
  }
  // atime too, where reading the source (copy, treelist) has not moved it: on inodes never read
  assert.equal(lstatSync(join(dest, 'sock'), { bigint: true }).atimeNs, 1_599_999_000_000_000_001n);
  assert.deepEqual(lgetxattr(join(dest, 'ping'), 'security.capability'), CAPABILITY);
  assert.deepEqual(lgetxattr(join(dest, 'tmp/link'), 'trusted.sym'), Buffer.from('on the link'));
}

describe('copyTree', { skip: scratchMissing }, () => {
  for (const mode of ['copy', 'reflink', 'hardlink'] as const) {
    it(`keeps every inode kind, owner, mode, xattr, time and hardlink (${mode})`, async (t) => {
      const dir = await withScratchFs(t, { size: '64m' });
      const src = join(dir, 'src');
      mkdirSync(src);
      buildSource(src);
      const listingBefore = treelist(src);
      await copyAndCompare(src, join(dir, 'dest'), mode);
      const sameInode = lstatSync(join(src, 'etc/passwd')).ino === lstatSync(join(dir, 'dest/etc/passwd')).ino;
      assert.equal(sameInode, mode === 'hardlink', 'only hardlink mode shares the file inodes');
      assert.equal(lstatSync(join(dir, 'dest/hard1')).ino, lstatSync(join(dir, 'dest/etc/deep/hard3')).ino);
      if (mode !== 'hardlink') assert.equal(treelist(src), listingBefore, 'the source is left as it was');
    });
  }

  it('copies into an existing empty directory and refuses a non-empty one', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    mkdirSync(join(dir, 'src/sub'), { recursive: true });
    writeFileSync(join(dir, 'src/sub/f'), 'f');
    mkdirSync(join(dir, 'empty'));
    await copyTree(join(dir, 'src'), join(dir, 'empty'));
    assert.equal(treelist(join(dir, 'empty')), treelist(join(dir, 'src')));
    await assert.rejects(copyTree(join(dir, 'src'), join(dir, 'empty')), /not an empty directory/);
    await assert.rejects(copyTree(join(dir, 'missing'), join(dir, 'x')), /not a directory/);
  });

  it('shares data extents in reflink mode on xfs', { skip: !xfsAvailable() && 'no mkfs.xfs / loop devices' }, async (t) => {
    const xfs = makeXfsScratch({ prjquota: false });
    t.after(() => xfs.dispose());
    const src = join(xfs.dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'data'), Buffer.alloc(1024 * 1024, 1));
    await copyTree(src, join(xfs.dir, 'dest'), { mode: 'reflink' });
    assert.match(execFileSync('filefrag', ['-v', join(xfs.dir, 'dest/data')], { encoding: 'utf8' }), /shared/);
    assert.equal(treelist(join(xfs.dir, 'dest')), treelist(src));
  });
});
