/**
 * The aufs driver's kernel-aufs path on a faked kernel (this machine's kernel has no aufs): the
 * mount data planning across the one-page limit of mount(2) with `append:` remounts, the sysfs
 * branch reader, plus the pure helpers of the FUSE path and the branch normaliser.
 */
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fuseArgs, fuseMaxBranches, openFileLimit, unionFromArgv } from '../../src/drivers/aufs/fuse.js';
import {
  aufsSiOf,
  mountKernelAufs,
  planAufsMount,
  probeDirperm1,
  readSysfsBranches,
  type AufsMountPlan,
} from '../../src/drivers/aufs/kernel.js';
import { normaliseAufsBranch } from '../../src/drivers/aufs/normalise.js';
import { lgetxattr, lsetxattr, mknod, S_IFCHR } from '../../src/sys/index.js';
import { scratchMissing, withScratchFs } from '../helpers/scratch.js';

const PAGE = 4096;
const MS_REMOUNT = 0x20;

/**
 * A fake kernel with aufs: takes mount(2) calls, refuses data longer than a page (NUL included),
 * and keeps the branch list the way aufs would build it from `br:` and `append:` options.
 */
class FakeAufsKernel {
  branches: Array<{ path: string; perm: string }> = [];
  calls: Array<{ flags: number; data: string }> = [];
  mounted = false;
  failRemount = -1;

  mount = (source: string, _target: string, fstype: string, flags: number, data: string): void => {
    assert.equal(source, 'none');
    assert.equal(fstype, 'aufs');
    this.calls.push({ flags, data });
    if (Buffer.byteLength(data) + 1 > PAGE) throw Object.assign(new Error('E2BIG: mount data longer than a page'), { errno: 'E2BIG' });
    if (flags === MS_REMOUNT && this.calls.length - 2 === this.failRemount) throw Object.assign(new Error('EINVAL'), { errno: 'EINVAL' });
    for (const opt of data.split(',')) {
      if (opt.startsWith('br:')) {
        assert.equal(flags, 0, 'br: only on the first mount');
        for (const br of opt.slice(3).split(':')) this.branches.push(this.parse(br));
      } else if (opt.startsWith('append:')) {
        assert.equal(flags, MS_REMOUNT, 'append: only on a remount');
        this.branches.push(this.parse(opt.slice('append:'.length)));
      }
    }
    this.mounted = true;
  };

  unmount = (): void => {
    this.mounted = false;
  };

  private parse(br: string): { path: string; perm: string } {
    const eq = br.lastIndexOf('=');
    return { path: br.slice(0, eq), perm: br.slice(eq + 1) };
  }
}

/** Docker-like branch dirs: /var/lib/docker/aufs/diff/<64 hex>. */
function dockerBranches(n: number, prefix = '/var/lib/docker/aufs/diff'): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}/${i.toString(16).padStart(64, '0')}`);
}

function mountWithFake(rw: string, ro: string[], plan: AufsMountPlan): FakeAufsKernel {
  const kernel = new FakeAufsKernel();
  mountKernelAufs('/mnt/x', plan, kernel.mount, kernel.unmount);
  assert.deepEqual(
    kernel.branches.map((b) => b.path),
    [rw, ...ro],
    'every branch once, in order',
  );
  assert.deepEqual(
    kernel.branches.map((b) => b.perm),
    ['rw', ...ro.map(() => 'ro+wh')],
  );
  return kernel;
}

describe('kernel aufs mount planning (faked kernel)', () => {
  it("fits a short chain into one mount with Docker's options", () => {
    const plan = planAufsMount('/s/diff/top', ['/s/diff/a', '/s/diff/b'], { pageSize: PAGE, dirperm1: false });
    assert.equal(plan.data, 'br:/s/diff/top=rw:/s/diff/a=ro+wh:/s/diff/b=ro+wh,dio,xino=/dev/shm/aufs.xino');
    assert.deepEqual(plan.appends, []);
    const withLabel = planAufsMount('/s/diff/top', [], {
      pageSize: PAGE,
      dirperm1: true,
      mountLabel: 'system_u:object_r:svirt_sandbox_file_t:s0:c1,c2',
    });
    assert.equal(
      withLabel.data,
      'br:/s/diff/top=rw,dio,xino=/dev/shm/aufs.xino,dirperm1,context="system_u:object_r:svirt_sandbox_file_t:s0:c1,c2"',
    );
  });

  it('adds 126 Docker-sized branches with append remounts, every call within one page', () => {
    const ro = dockerBranches(126);
    const rw = '/var/lib/docker/aufs/diff/top';
    const plan = planAufsMount(rw, ro, { pageSize: PAGE, dirperm1: false });
    assert.ok(plan.appends.length >= 3, `${plan.appends.length} remounts for ~12 KiB of branches`);
    const kernel = mountWithFake(rw, ro, plan);
    for (const call of kernel.calls) assert.ok(Buffer.byteLength(call.data) < PAGE);
    assert.equal(kernel.calls[0].flags, 0);
    assert.ok(kernel.calls.slice(1).every((c) => c.flags === MS_REMOUNT));
  });

  it('never cuts a branch path where the page boundary falls inside it', () => {
    // Budget of the first mount: page − 54 (Docker's room for the options). Build branches so the
    // boundary falls in the middle of the 10th one.
    const budget = PAGE - 54;
    const rw = '/r/top';
    const head = `br:${rw}=rw`;
    const pieceLen = 400; // ":<path>=ro+wh" = 400 bytes → path of 393
    const path = (i: number) => `/r/${String(i).padStart(2, '0')}${'p'.repeat(pieceLen - ':=ro+wh'.length - 5)}`;
    const ro = Array.from({ length: 12 }, (_, i) => path(i));
    assert.equal(`:${ro[0]}=ro+wh`.length, pieceLen);
    const fitting = Math.floor((budget - head.length) / pieceLen);
    const boundaryOffset = budget - head.length - fitting * pieceLen; // where in branch #fitting the budget ends
    assert.ok(boundaryOffset > 10 && boundaryOffset < pieceLen - 10, 'the boundary is inside a path, not at its edge');

    const plan = planAufsMount(rw, ro, { pageSize: PAGE, dirperm1: false });
    assert.ok(plan.data.includes(`:${ro[fitting - 1]}=ro+wh,dio`), 'the first mount ends with the last whole branch');
    assert.equal(plan.data.includes(ro[fitting].slice(0, 20)), false, 'nothing of the cut branch in the first mount');
    assert.ok(plan.appends[0].startsWith(`append:${ro[fitting]}=ro+wh,`), 'the cut branch opens the first append, whole');
    mountWithFake(rw, ro, plan);
  });

  it('refuses a single branch longer than a mount call may carry, instead of looping', () => {
    const huge = `/r/${'x'.repeat(PAGE)}`;
    assert.throws(
      () => planAufsMount('/r/top', [huge], { pageSize: PAGE, dirperm1: false }),
      (e: Error) => {
        assert.match(e.message, /alone is longer than the \d+ bytes/);
        return true;
      },
    );
  });

  it('takes the half-built mount down when an append remount fails, naming the step', () => {
    const ro = dockerBranches(126);
    const plan = planAufsMount('/r/top', ro, { pageSize: PAGE, dirperm1: false });
    const kernel = new FakeAufsKernel();
    kernel.failRemount = 1; // the second remount
    assert.throws(
      () => mountKernelAufs('/mnt/x', plan, kernel.mount, kernel.unmount),
      (e: Error) => {
        assert.match(e.message, new RegExp(`append remount 2 of ${plan.appends.length}`));
        return true;
      },
    );
    assert.equal(kernel.mounted, false);
  });
});

describe('dirperm1 probe (faked kernel)', () => {
  it('is true when a test mount with dirperm1 works (and unmounts it), false when refused', () => {
    const calls: string[] = [];
    const accepting = probeDirperm1(
      (_s, target, _t, _f, data) => calls.push(`mount ${target} ${data}`),
      (target) => calls.push(`umount ${target}`),
    );
    assert.equal(accepting, true);
    assert.match(calls[0], /^mount \S+ br:\S+,dirperm1,xino=\/dev\/shm\/aufs.xino$/);
    assert.equal(calls[1], `umount ${calls[0].split(' ')[1]}`);
    const refusing = probeDirperm1(
      () => {
        throw new Error('EINVAL');
      },
      () => assert.fail('nothing to unmount'),
    );
    assert.equal(refusing, false);
  });
});

describe('kernel aufs branch state (faked sysfs)', () => {
  it('reads /sys/fs/aufs/si_<si>/br<N> in numeric order, perm after the last =', { skip: scratchMissing }, async (t) => {
    const sys = await withScratchFs(t, { size: '1m' });
    const si = 'a1b2c3d4';
    mkdirSync(join(sys, `si_${si}`));
    const lines = ['/d/diff/top=rw', '/d/diff/p=1=ro+wh', '/d/diff/q=ro+wh'];
    for (const [i, line] of lines.entries()) writeFileSync(join(sys, `si_${si}`, `br${i === 2 ? 10 : i}`), `${line}\n`);
    writeFileSync(join(sys, `si_${si}`, 'brid0'), '64\n');
    writeFileSync(join(sys, `si_${si}`, 'xi_path'), '/dev/shm/aufs.xino\n');
    assert.deepEqual(readSysfsBranches(si, sys), [
      { index: 0, path: '/d/diff/top', perm: 'rw' },
      { index: 1, path: '/d/diff/p=1', perm: 'ro+wh' },
      { index: 10, path: '/d/diff/q', perm: 'ro+wh' },
    ]);
    assert.equal(aufsSiOf(['rw', 'relatime', `si=${si}`, 'dio']), si);
    assert.throws(() => readSysfsBranches('ffff', sys), /cannot be read/);
  });
});

describe('fuse-overlayfs helpers', () => {
  it('builds the command line and reads the branches back from it', () => {
    const args = fuseArgs({ lowers: ['b', 'a'], upper: '/h/diff/c', work: '/s/work/c' }, '/h/mnt/c');
    assert.deepEqual(args, ['-o', 'lowerdir=b:a', '-o', 'upperdir=/h/diff/c,workdir=/s/work/c', '/h/mnt/c']);
    assert.deepEqual(unionFromArgv(['/usr/bin/fuse-overlayfs', ...args]), { lowers: ['b', 'a'], upper: '/h/diff/c' });
    assert.deepEqual(fuseArgs({ lowers: ['c', 'b'] }, '/h/mnt/c'), ['-o', 'lowerdir=c:b', '/h/mnt/c']);
    assert.throws(() => fuseArgs({ lowers: ['a'], upper: '/h,x/diff/c', work: '/w' }, '/m'), /holds ',' or ':'/);
  });

  it('limits the branches by the 128 KiB argument and by open files', () => {
    assert.equal(fuseMaxBranches(4096, Infinity), 1015); // (131072 − "lowerdir=" − NUL) / 129
    assert.equal(fuseMaxBranches(4096, 1024), 1024 - 16);
    assert.equal(
      openFileLimit('Limit  Soft Limit  Hard Limit  Units\nMax open files            1048576              1048576              files\n'),
      1048576,
    );
    assert.equal(openFileLimit('Max open files            unlimited            unlimited            files\n'), Infinity);
  });
});

describe('normalising a branch fuse-overlayfs wrote', () => {
  it(
    'turns the opaque xattr into .wh..wh..opq, char 0/0 into .wh. files, drops bookkeeping xattrs',
    { skip: scratchMissing },
    async (t) => {
      const dir = await withScratchFs(t, { size: '1m' });
      mkdirSync(join(dir, 'opq'));
      lsetxattr(join(dir, 'opq'), 'trusted.overlay.opaque', Buffer.from('y'));
      mkdirSync(join(dir, 'sub'));
      mknod(join(dir, 'sub', 'deleted'), S_IFCHR, 0, 0);
      writeFileSync(join(dir, 'copied'), 'c');
      lsetxattr(join(dir, 'copied'), 'user.fuseoverlayfs.origin', Buffer.from('copied'));
      lsetxattr(join(dir, 'copied'), 'user.keep', Buffer.from('mine'));
      const report = normaliseAufsBranch(dir);
      assert.deepEqual(report.opaqueDirs, ['opq']);
      assert.deepEqual(report.whiteouts, ['sub/deleted']);
      assert.ok(lstatSync(join(dir, 'opq', '.wh..wh..opq')).isFile());
      assert.equal(lgetxattr(join(dir, 'opq'), 'trusted.overlay.opaque'), undefined);
      assert.deepEqual(readdirSync(join(dir, 'sub')), ['.wh.deleted']);
      assert.equal(lgetxattr(join(dir, 'copied'), 'user.fuseoverlayfs.origin'), undefined);
      assert.deepEqual(lgetxattr(join(dir, 'copied'), 'user.keep'), Buffer.from('mine'), "the layer's own xattrs stay");
      assert.deepEqual(normaliseAufsBranch(dir), { opaqueDirs: [], whiteouts: [], xattrsRemoved: 0 }, 'a second pass finds nothing');
    },
  );
});
