/**
 * src/sys on filesystems made for the test in loop-mounted image files (run as root): ext2
 * without the filetype feature (readdir reports DT_UNKNOWN) and xfs (reflinks, project ids).
 * Each image lives in a temp dir; `after` unmounts it (mount -o loop sets autoclear, so the
 * loop device goes with it) and removes the dir.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as sys from '../../src/sys/index.js';
import { SysCallError } from '../../src/errors.js';
import { rootMissing, toolsMissing } from '../helpers/requires.js';

/** Why a loop-mounted `mkfs` filesystem cannot be made here. */
const loopFsMissing = (mkfs: string) => rootMissing('loop-mounts a filesystem image') ?? toolsMissing([mkfs]);

/** Makes an image with `mkfs`, loop-mounts it, and returns the mount point; cleaned up after the suite. */
function loopMount(mkfs: string[], sizeMiB: number, fsType: string): { mnt: string; cleanup: () => void } {
  const dir = mkdtempSync(`/tmp/unionctl-test-sys-${fsType}-`);
  const img = join(dir, 'img');
  const mnt = join(dir, 'mnt');
  const cleanup = () => {
    for (const m of sys.mountsUnder(dir).reverse()) sys.umount2(m.mountPoint, sys.MNT_DETACH);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    writeFileSync(img, '');
    truncateSync(img, sizeMiB * 1024 * 1024);
    execFileSync(mkfs[0], [...mkfs.slice(1), img], { stdio: 'ignore' });
    mkdirSync(mnt);
    execFileSync('mount', ['-t', fsType, '-o', 'loop', img, mnt], { stdio: 'ignore' });
  } catch (e) {
    cleanup();
    throw e;
  }
  return { mnt, cleanup };
}

describe('sys: a filesystem without d_type (ext2 -O ^filetype)', { skip: loopFsMissing('mkfs.ext2') }, () => {
  let fs: ReturnType<typeof loopMount>;
  before(() => {
    fs = loopMount(['mkfs.ext2', '-q', '-O', '^filetype'], 8, 'ext2');
  });
  after(() => fs.cleanup());

  it('readdirTypes reports DT_UNKNOWN where node reports the lstat type', () => {
    writeFileSync(join(fs.mnt, 'f'), '');
    assert.deepEqual(
      sys.readdirTypes(fs.mnt).find((e) => e.name === 'f'),
      { name: 'f', type: sys.DT.UNKNOWN },
    );
    // why the probe cannot use node: its Dirent lstat()s DT_UNKNOWN entries and looks typed
    assert.equal(
      readdirSync(fs.mnt, { withFileTypes: true })
        .find((e) => e.name === 'f')
        ?.isFile(),
      true,
    );
  });

  it('supportsDType is false there (and true on the root fs), and leaves no probe files', () => {
    sys.clearProbeCache();
    assert.equal(sys.supportsDType(fs.mnt), false);
    assert.equal(sys.supportsDType('/tmp'), true);
    assert.equal(sys.backingFs(fs.mnt), 'extfs');
    assert.deepEqual(readdirSync(fs.mnt).sort(), ['f', 'lost+found']);
  });
});

describe('sys: xfs (reflink, project ids)', { skip: loopFsMissing('mkfs.xfs') }, () => {
  let fs: ReturnType<typeof loopMount>;
  before(() => {
    fs = loopMount(['mkfs.xfs', '-q', '-m', 'reflink=1'], 300, 'xfs'); // 300 MiB: the smallest xfs mkfs makes
  });
  after(() => fs.cleanup());

  it('statfs and the probes see xfs with reflink', () => {
    sys.clearProbeCache();
    assert.equal(sys.statfs(fs.mnt).typeName, 'xfs');
    assert.equal(sys.backingFs(fs.mnt), 'xfs');
    assert.equal(sys.reflinkSupported(fs.mnt), true);
    assert.equal(sys.supportsDType(fs.mnt), true);
    assert.equal(sys.mountOf(join(fs.mnt, 'a/b'))?.fsType, 'xfs');
    // mounted without prjquota (this test kernel has no xfs quota support at all)
    assert.equal(sys.projectQuotaSupported(fs.mnt), false);
  });

  it('ficlone shares the data of a file; across filesystems it fails with EXDEV', () => {
    const data = Buffer.alloc(256 * 1024, 'abc');
    writeFileSync(join(fs.mnt, 'src'), data);
    const src = openSync(join(fs.mnt, 'src'), 'r');
    const dst = openSync(join(fs.mnt, 'dst'), 'w');
    const other = openSync(join(dirname(fs.mnt), 'on-ext4'), 'w'); // next to the image, removed with it
    try {
      sys.ficlone(dst, src);
      assert.throws(
        () => sys.ficlone(other, src),
        (e: unknown) => e instanceof SysCallError && e.errno === 'EXDEV',
      );
    } finally {
      closeSync(src);
      closeSync(dst);
      closeSync(other);
    }
    assert.deepEqual(readFileSync(join(fs.mnt, 'dst')), data);
  });

  it('setProjectQuota puts a dir in a project that new children inherit', () => {
    const dir = join(fs.mnt, 'layer');
    mkdirSync(dir);
    const fd = openSync(dir, 'r');
    try {
      assert.equal(sys.getProjectId(fd), 0);
      sys.setProjectQuota(fd, 4242);
      assert.equal(sys.getProjectId(fd), 4242);
    } finally {
      closeSync(fd);
    }
    mkdirSync(join(dir, 'child'));
    writeFileSync(join(dir, 'child/file'), '');
    for (const p of ['child', 'child/file']) {
      const childFd = openSync(join(dir, p), 'r');
      try {
        assert.equal(sys.getProjectId(childFd), 4242, `${p} inherits the project`);
      } finally {
        closeSync(childFd);
      }
    }
  });
});
