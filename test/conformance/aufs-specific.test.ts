/**
 * aufs beyond the shared conformance suite: Docker's on-disk layout, copy-up through a writable
 * FUSE mount checked in the real diff/ dir (aufs `.wh.` format, no fuse-overlayfs bookkeeping left)
 * and exported as `.wh.` entries, branches as the FUSE process and mountinfo show them, no FUSE
 * process outliving its mount, stale `-removing` dirs, status pairs, the fuse-overlayfs depth
 * limit measured on the real binary, and the CLI; for containerd, the fuse-overlayfs mounts a
 * runtime makes through mount.fuse3 (mountSpec) and sealWritable normalising what they wrote.
 *
 * The kernel-aufs mount planning and sysfs parsing run on a faked kernel in
 * test/unit/aufs-kernel.test.ts (this kernel has no aufs).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { AufsDriver } from '../../src/drivers/aufs/index.js';
import { findFuseProcess, fuseMaxBranches, mountFuse, openFileLimit, unmountFuse } from '../../src/drivers/aufs/fuse.js';
import { openStore } from '../../src/index.js';
import { mountAt, mountsBelow } from '../helpers/mounts.js';
import { mountLikeContainerd, unmountLikeContainerd } from '../helpers/runtime-mount.js';
import { makeScratch } from '../helpers/scratch.js';
import { DriverFixture } from './fixture.js';
import { collect, exists, tarNames, text, xattrOf } from './inspect.js';
import { dir, file } from './tars.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function mode(path: string): number {
  return lstatSync(path).mode & 0o7777;
}

/** pids of fuse-overlayfs processes (not zombies) whose command line mentions `dir`. */
function fuseProcessesMentioning(dir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (argv.includes('fuse-overlayfs') && argv.includes(dir) && state !== 'Z') pids.push(Number(name));
    } catch {
      /* exited meanwhile */
    }
  }
  return pids;
}

/** Every xattr name on every inode below dir (getfattr, not unionctl's syscall layer). */
function xattrNamesBelow(dir: string): string[] {
  const r = spawnSync('getfattr', ['--absolute-names', '-R', '-h', '-d', '-m', '-', dir], { encoding: 'utf8' });
  return r.stdout
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.split('=')[0]);
}

describe('aufs specifics', () => {
  let fx: DriverFixture;
  let driver: AufsDriver;
  let home = '';
  before(async () => {
    fx = await DriverFixture.open('aufs');
    driver = fx.driver as AufsDriver;
    home = driver.home;
  });
  after(async () => {
    await fx?.close();
  });

  it('runs on fuse-overlayfs here (no aufs in /proc/filesystems) and says so in status', async () => {
    assert.equal(readFileSync('/proc/filesystems', 'utf8').includes('aufs'), false, 'this test expects a kernel without aufs');
    assert.equal(driver.mechanism, 'fuse');
    const status = new Map(await driver.status());
    assert.deepEqual([...status.keys()].slice(0, 4), ['Root Dir', 'Backing Filesystem', 'Dirs', 'Dirperm1 Supported']);
    assert.equal(status.get('Root Dir'), home);
    assert.equal(status.get('Backing Filesystem'), 'tmpfs');
    assert.match(status.get('Mount Mechanism') ?? '', /^fuse-overlayfs — the kernel has no aufs/);
    const before = Number(status.get('Dirs'));
    await fx.layer(undefined, [file('x', 'x')]);
    assert.equal(Number(new Map(await driver.status()).get('Dirs')), before + 1, 'Dirs counts layers/ entries');
  });

  it("writes Docker's layout: diff/, layers/ (ancestors nearest first), mnt/, modes 0710/0755", async () => {
    const a = await fx.layer(undefined, [file('a', 'a')]);
    const b = await fx.layer(a, [file('b', 'b')]);
    const c = fx.id('c');
    await driver.createReadWrite(c, b);
    for (const d of ['', 'diff', 'layers', 'mnt']) assert.equal(mode(join(home, d)), 0o710, `${d || 'home'} is 0710`);
    for (const d of [`diff/${c}`, `mnt/${c}`]) assert.equal(mode(join(home, d)), 0o755);
    assert.equal(readFileSync(join(home, 'layers', a), 'utf8'), '');
    assert.equal(readFileSync(join(home, 'layers', c), 'utf8'), `${b}\n${a}\n`);
    assert.equal(text(join(home, 'diff', b, 'b')), 'b');
  });

  it('copy-up through a writable mount lands in diff/ as aufs whiteouts, without fuse-overlayfs bookkeeping', async () => {
    const base = await fx.layer(undefined, [
      dir('etc/'),
      file('etc/conf', 'v1'),
      file('etc/gone', 'g'),
      dir('opt/'),
      file('opt/old', 'o'),
      dir('keep/'),
      file('keep/k', 'k'),
    ]);
    const rw = fx.id('rw');
    await driver.createReadWrite(rw, base);
    await fx.view(rw, (p) => {
      writeFileSync(join(p, 'etc/conf'), 'v2'); // copy-up of a lower file
      rmSync(join(p, 'etc/gone')); // deletion of a lower file
      rmSync(join(p, 'opt'), { recursive: true }); // a lower dir replaced by a new one
      mkdirSync(join(p, 'opt'));
      writeFileSync(join(p, 'opt/new'), 'n');
    });
    const own = join(home, 'diff', rw);
    assert.equal(text(join(own, 'etc/conf')), 'v2');
    assert.ok(lstatSync(join(own, 'etc/.wh.gone')).isFile(), '.wh.gone is a regular file');
    assert.ok(lstatSync(join(own, 'opt/.wh..wh..opq')).isFile(), 'opt is opaque by the aufs marker');
    assert.equal(xattrOf(join(own, 'opt'), 'trusted.overlay.opaque'), undefined, 'the overlay opaque xattr is normalised away');
    const leftovers = xattrNamesBelow(own).filter((n) => n.startsWith('trusted.overlay.') || n.startsWith('user.fuseoverlayfs.'));
    assert.deepEqual(leftovers, []);
    const devices = (readdirSync(own, { recursive: true }) as string[]).filter((n) => lstatSync(join(own, n)).isCharacterDevice());
    assert.deepEqual(devices, [], 'no char 0/0 whiteouts');
    assert.equal(exists(join(own, 'keep')), false, 'an untouched dir is not copied up');

    // Mounted again from the normalised dir: the same view.
    await fx.view(rw, (p) => {
      assert.equal(text(join(p, 'etc/conf')), 'v2');
      assert.equal(exists(join(p, 'etc/gone')), false);
      assert.deepEqual(readdirSync(join(p, 'opt')), ['new']);
      assert.equal(text(join(p, 'keep/k')), 'k');
    });

    const names = tarNames(await collect(await driver.diff(rw, base)));
    for (const n of ['etc/conf', 'etc/.wh.gone', 'opt/.wh..wh..opq', 'opt/new'])
      assert.ok(names.includes(n), `${n} in the diff: ${names.join(', ')}`);
    assert.equal(names.includes('opt/old'), false);
    const changes = (await driver.changes(rw, base)).map((c) => `${c.kind} ${c.path}`);
    for (const c of ['C /etc/conf', 'D /etc/gone', 'A /opt/new', 'D /opt/old'])
      assert.ok(changes.includes(c), `${c} in ${changes.join(', ')}`);
  });

  it('ignores kernel aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph) in diff/: not in the view, the diff or the changes', async () => {
    const base = await fx.layer(undefined, [file('a', 'a'), file('b', 'b')]);
    const top = await fx.layer(base, [file('c', 'c'), { type: 'file', path: '.wh.b', content: '' }]);
    // What a layer written by kernel aufs also holds (Docker's aufs driver leaves them in diff/).
    const own = join(home, 'diff', top);
    mkdirSync(join(own, '.wh..wh.plnk'));
    writeFileSync(join(own, '.wh..wh.plnk', '1234.5678'), 'pseudo-link');
    mkdirSync(join(own, '.wh..wh.orph'));
    writeFileSync(join(own, '.wh..wh.aufs'), '');
    assert.deepEqual(await fx.treeOf(top), ['a', 'c']);
    const names = tarNames(await collect(await driver.diff(top, base)));
    assert.deepEqual(names.sort(), ['.wh.b', 'c']);
    assert.deepEqual(
      (await driver.changes(top, base)).map((c) => `${c.kind} ${c.path}`),
      ['D /b', 'A /c'],
    );
  });

  it('reports branches from the FUSE process and mountinfo: rw top for a writable layer, ro+wh below', async () => {
    const a = await fx.layer(undefined, [file('a', 'a')]);
    const b = await fx.layer(a, [file('b', 'b')]);
    const rw = fx.id('rw');
    await driver.createReadWrite(rw, b);
    const path = await driver.get(rw);
    try {
      assert.equal(mountAt(path)?.fsType, 'fuse.fuse-overlayfs');
      assert.deepEqual(await driver.branches(rw), [
        { path: join(home, 'diff', rw), layer: rw, mode: 'rw' },
        { path: join(home, 'diff', b), layer: b, mode: 'ro+wh' },
        { path: join(home, 'diff', a), layer: a, mode: 'ro+wh' },
      ]);
    } finally {
      await driver.put(rw);
    }
    // An image layer is mounted read-only: its own dir is the top lower.
    const imgPath = await driver.get(b);
    try {
      assert.deepEqual(
        (await driver.branches(b)).map((x) => `${x.layer} ${x.mode}`),
        [`${b} ro+wh`, `${a} ro+wh`],
      );
      assert.throws(() => writeFileSync(join(imgPath, 'nope'), 'x'), { code: 'EROFS' });
    } finally {
      await driver.put(b);
    }
  });

  it('mountSpec: a bind for a layer without parents, fuse-overlayfs through mount.fuse3 otherwise; sealWritable normalises what it wrote', async () => {
    const base = await fx.layer(undefined, [dir('etc/'), file('etc/conf', 'v1'), file('etc/gone', 'g'), dir('opt/'), file('opt/old', 'o')]);
    const diff = (id: string) => join(home, 'diff', id);
    assert.deepEqual(await driver.mountSpec(base, { readonly: true }), [{ type: 'bind', source: diff(base), options: ['ro', 'rbind'] }]);
    const rw = fx.id('rw');
    await driver.createReadWrite(rw, base);
    const specWork = join(fx.root, 'driver-state', 'aufs', 'spec-work', rw);
    assert.deepEqual(await driver.mountSpec(rw, { readonly: false }), [
      {
        type: 'fuse3.fuse-overlayfs',
        source: 'overlay',
        options: [`lowerdir=${diff(base)}`, `upperdir=${diff(rw)}`, `workdir=${specWork}`],
      },
    ]);
    assert.ok(lstatSync(specWork).isDirectory(), 'the workdir is made for the runtime');
    assert.deepEqual(await driver.mountSpec(rw, { readonly: true }), [
      { type: 'fuse3.fuse-overlayfs', source: 'overlay', options: [`lowerdir=${diff(rw)}:${diff(base)}`] },
    ]);
    assert.deepEqual(mountsBelow(home), [], 'mountSpec mounts nothing');
    const target = join(fx.workDir(), 'mnt-aufs-spec');
    mkdirSync(target, { recursive: true });
    // What containerd does: mount.fuse3 without FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT in the environment.
    mountLikeContainerd((await driver.mountSpec(rw, { readonly: false }))[0]!, target);
    try {
      assert.equal(mountAt(target)?.fsType, 'fuse.fuse-overlayfs');
      writeFileSync(join(target, 'etc/conf'), 'v2');
      rmSync(join(target, 'etc/gone'));
      rmSync(join(target, 'opt'), { recursive: true });
      mkdirSync(join(target, 'opt'));
      writeFileSync(join(target, 'opt/new'), 'n');
    } finally {
      await unmountLikeContainerd(target);
    }
    assert.ok(lstatSync(join(diff(rw), 'etc/gone')).isCharacterDevice(), 'fuse-overlayfs wrote an overlay whiteout');
    await driver.sealWritable(rw);
    assert.ok(lstatSync(join(diff(rw), 'etc/.wh.gone')).isFile(), 'an aufs whiteout now');
    assert.equal(exists(join(diff(rw), 'etc/gone')), false);
    assert.ok(exists(join(diff(rw), 'opt/.wh..wh..opq')), 'the replaced dir is opaque the aufs way');
    assert.deepEqual(
      xattrNamesBelow(diff(rw)).filter((x) => /overlay/.test(x)),
      [],
    );
    assert.equal(exists(specWork), false, 'the runtime workdir goes with the writable mark');
    assert.equal((await driver.branches(rw))[0]!.mode, 'ro+wh', 'no longer writable');
    await fx.view(rw, (p) => {
      assert.equal(text(join(p, 'etc/conf')), 'v2');
      assert.equal(exists(join(p, 'etc/gone')), false);
      assert.deepEqual(readdirSync(join(p, 'opt')), ['new']);
    });
    await driver.sealWritable(rw); // idempotent
    assert.deepEqual(fuseProcessesMentioning(fx.root), []);
    await assert.rejects(driver.mountSpec(fx.id('none'), { readonly: true }), { code: 'NOT_FOUND' });
  });

  it('leaves no fuse-overlayfs process behind after put and after cleanup', async () => {
    const a = await fx.layer(undefined, [file('a', 'a')]);
    const rw = fx.id('rw');
    await driver.createReadWrite(rw, a);
    const path = await driver.get(rw);
    const proc = findFuseProcess(path);
    assert.ok(proc !== undefined, 'a fuse-overlayfs process serves the mount');
    await driver.put(rw);
    assert.deepEqual(fuseProcessesMentioning(path), [], 'its process exited with the unmount');
    await driver.get(rw);
    await driver.get(rw);
    await driver.cleanup();
    assert.equal(mountAt(path), undefined);
    assert.deepEqual(fuseProcessesMentioning(fx.root), []);
  });

  it('removes through -removing renames, and a new store handle cleans up stale ones', async () => {
    const id = await fx.layer(undefined, [file('f', 'f')]);
    mkdirSync(join(home, 'diff', 'stale-removing'));
    writeFileSync(join(home, 'diff', 'stale-removing', 'junk'), 'j');
    mkdirSync(join(home, 'mnt', 'stale-removing'));
    await driver.remove(id);
    for (const d of ['diff', 'mnt']) assert.equal(exists(join(home, d, id)), false);
    assert.equal(exists(join(home, 'layers', id)), false);
    const again = await openStore({ root: fx.root, driver: 'aufs' });
    await again.close();
    for (const d of ['diff', 'mnt']) assert.equal(exists(join(home, d, 'stale-removing')), false, `stale ${d}/…-removing is gone`);
  });

  it("finds fuse-overlayfs's real depth limit: the longest ids fill the 128 KiB lowerdir argument at the reported branch count", async () => {
    const max = fuseMaxBranches(4096, Infinity); // the argument-size limit alone
    assert.equal(
      driver.capabilities().maxDepth,
      Math.min(max, fuseMaxBranches(4096, openFileLimit())) - 1,
      'maxDepth: one branch less (a read-only image mount lists the layer itself)',
    );
    const scratch = makeScratch({ size: '256m' });
    try {
      const diffRoot = join(scratch.dir, 'diff');
      mkdirSync(diffRoot);
      const ids: string[] = [];
      for (let i = 0; i <= max; i++) {
        const id = `${String(i).padStart(6, '0')}${'x'.repeat(122)}`; // 128 bytes, the longest id allowed
        mkdirSync(join(diffRoot, id));
        writeFileSync(join(diffRoot, id, `f${i}`), '');
        ids.push(id);
      }
      const target = join(scratch.dir, 'mnt');
      mkdirSync(target);
      await mountFuse(diffRoot, target, { lowers: ids.slice(0, max) });
      try {
        assert.equal(readdirSync(target).length, max, `${max} layers of 128-byte ids mount`);
      } finally {
        await unmountFuse(target);
      }
      await assert.rejects(mountFuse(diffRoot, target, { lowers: ids }), (e: Error) => {
        assert.match(e.message, /128 KiB|E2BIG|too long/i);
        return true;
      });
      assert.equal(mountAt(target), undefined);
    } finally {
      scratch.dispose();
    }
  });

  it('works from the CLI: import, mount --rw, branches, umount with --driver aufs', () => {
    const cli = (args: string[]) => {
      const r = spawnSync(process.execPath, [MAIN, '--root', join(fx.scratch.dir, 'cli'), '--driver', 'aufs', ...args], {
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, `unionctl ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    const tarDir = join(fx.scratch.dir, 'cli-src');
    mkdirSync(join(tarDir, 'etc'), { recursive: true });
    writeFileSync(join(tarDir, 'etc', 'hello'), 'hi');
    const tarPath = join(fx.scratch.dir, 'cli.tar');
    spawnSync('tar', ['-cf', tarPath, '-C', tarDir, '.']);
    const id = cli(['import', tarPath]).trim();
    assert.match(cli(['info']), /Mount Mechanism: fuse-overlayfs/);
    const lines = cli(['mount', '--rw', id, '--json']);
    const { id: rw, path } = JSON.parse(lines) as { id: string; path: string };
    try {
      assert.equal(text(join(path, 'etc/hello')), 'hi');
      const branches = JSON.parse(cli(['branches', rw, '--json'])) as Array<{ layer: string; mode: string }>;
      assert.deepEqual(
        branches.map((b) => `${b.layer} ${b.mode}`),
        [`${rw} rw`, `${id} ro+wh`],
      );
    } finally {
      cli(['umount', rw]);
    }
    assert.equal(mountAt(path), undefined);
    assert.deepEqual(mountsBelow(join(fx.scratch.dir, 'cli')), []);
  });
});
