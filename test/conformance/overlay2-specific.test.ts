/**
 * overlay2 beyond the shared conformance suite: Docker's on-disk format byte for byte, copy-up
 * through a writable mount and the native diff of it, branches as the kernel reports them for all
 * three ways of mounting (absolute paths, relative l/ paths past a page, the new mount API),
 * committed layers mounting read-only, mount sharing across processes, cleanup, options, and
 * overlay2.size on a loop-mounted xfs with project quotas.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { overlay2Entry } from '../../src/drivers/overlay2/index.js';
import type { Overlay2Driver } from '../../src/drivers/overlay2/index.js';
import { openStore } from '../../src/index.js';
import { overlayLowerdirPlusSupported } from '../../src/sys/index.js';
import { listMounts, mountAt, mountsBelow } from '../helpers/mounts.js';
import { makeScratch, makeXfsScratch, xfsAvailable } from '../helpers/scratch.js';
import { DriverFixture } from './fixture.js';
import { collect, isOverlayWhiteout, text, xattrOf } from './inspect.js';
import { dir, file } from './tars.js';

const run = promisify(execFile);
const LINK_ID = /^[A-Z2-7]{26}$/;

function mode(path: string): number {
  return lstatSync(path).mode & 0o7777;
}

/** `tar -tv` lines of a tar (GNU tar reads it, not unionctl). */
async function tarListing(tar: Buffer): Promise<string[]> {
  const child = execFile('tar', ['--numeric-owner', '-tvf', '-'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  child.stdin?.end(tar);
  let out = '';
  child.stdout?.on('data', (d: string) => (out += d));
  await new Promise<void>((resolve, reject) =>
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`tar -tv exited ${code}`)))),
  );
  return out.split('\n').filter(Boolean);
}

function entryNames(listing: string[]): string[] {
  // "-rw-r--r-- 0/0  5 2024-01-01 00:00 etc/conf" → "etc/conf"
  return listing.map((l) => l.split(/\s+/).slice(5).join(' ').replace(/\/$/, ''));
}

describe('overlay2 specifics', () => {
  let fx: DriverFixture;
  let driver: Overlay2Driver;
  let home = '';
  before(async () => {
    fx = await DriverFixture.open('overlay2');
    driver = fx.driver as Overlay2Driver;
    home = driver.home;
  });
  after(async () => {
    await fx?.close();
  });

  it("writes Docker's on-disk format exactly", async () => {
    await driver.create('fmt-a');
    await driver.createReadWrite('fmt-b', 'fmt-a');
    await driver.create('fmt-c', 'fmt-b');
    assert.equal(mode(home), 0o710);
    assert.equal(mode(join(home, 'l')), 0o700);

    const lid: Record<string, string> = {};
    for (const id of ['fmt-a', 'fmt-b', 'fmt-c']) {
      const linkFile = join(home, id, 'link');
      lid[id] = readFileSync(linkFile, 'utf8');
      assert.match(lid[id], LINK_ID, 'link file: 26 base32 characters, no newline');
      assert.equal(mode(linkFile), 0o644);
      const link = join(home, 'l', lid[id]);
      assert.ok(lstatSync(link).isSymbolicLink());
      assert.equal(readlinkSync(link), `../${id}/diff`);
      assert.equal(mode(join(home, id)), 0o710);
      assert.equal(mode(join(home, id, 'diff')), 0o755);
    }
    assert.deepEqual(readdirSync(join(home, 'fmt-a')).sort(), ['committed', 'diff', 'link']);
    assert.deepEqual(readdirSync(join(home, 'fmt-b')).sort(), ['committed', 'diff', 'link', 'lower', 'work']);
    assert.deepEqual(readdirSync(join(home, 'fmt-c')).sort(), ['diff', 'link', 'lower', 'work']);
    assert.equal(readFileSync(join(home, 'fmt-b', 'lower'), 'utf8'), `l/${lid['fmt-a']}`);
    assert.equal(readFileSync(join(home, 'fmt-c', 'lower'), 'utf8'), `l/${lid['fmt-b']}:l/${lid['fmt-a']}`);
    assert.equal(mode(join(home, 'fmt-c', 'work')), 0o700);
    assert.equal(readFileSync(join(home, 'fmt-a', 'committed'), 'utf8'), '');
    assert.equal(mode(join(home, 'fmt-a', 'committed')), 0o600);

    const merged = await driver.get('fmt-c');
    assert.equal(merged, join(home, 'fmt-c', 'merged'));
    assert.equal(mode(merged) & 0o7000, 0);
    await driver.put('fmt-c');
    assert.deepEqual(readdirSync(join(home, 'fmt-c')).sort(), ['diff', 'link', 'lower', 'work'], 'merged/ is removed by the last put');
    assert.equal(await driver.get('fmt-a'), join(home, 'fmt-a', 'diff'), 'a layer without parent is its diff dir');
    await driver.put('fmt-a');

    assert.deepEqual(await driver.metadata('fmt-c'), {
      WorkDir: join(home, 'fmt-c', 'work'),
      MergedDir: join(home, 'fmt-c', 'merged'),
      UpperDir: join(home, 'fmt-c', 'diff'),
      LowerDir: `${join(home, 'fmt-b', 'diff')}:${join(home, 'fmt-a', 'diff')}`,
    });
    assert.equal((await driver.metadata('fmt-a')).LowerDir, undefined);
    assert.deepEqual(
      (await driver.status()).map(([k]) => k),
      ['Backing Filesystem', 'Supports d_type', 'Using metacopy', 'Native Overlay Diff', 'userxattr', 'Max Depth'],
    );

    await driver.remove('fmt-c');
    assert.throws(() => lstatSync(join(home, 'l', lid['fmt-c'])), { code: 'ENOENT' });
    assert.throws(() => lstatSync(join(home, 'fmt-c')), { code: 'ENOENT' });
  });

  it('copies up into diff/ in overlay format, and the native diff exports it as .wh. entries', async () => {
    const base = await fx.layer(undefined, [
      dir('etc/'),
      file('etc/conf', 'v1'),
      file('etc/remove-me', 'bye'),
      dir('opt/'),
      dir('opt/app/'),
      file('opt/app/old1', '1'),
      file('opt/app/old2', '2'),
      file('keep', 'untouched'),
    ]);
    const rw = fx.id('rw');
    await driver.createReadWrite(rw, base);
    await fx.view(rw, (p) => {
      writeFileSync(join(p, 'etc/conf'), 'v2');
      rmSync(join(p, 'etc/remove-me'));
      rmSync(join(p, 'opt/app'), { recursive: true });
      mkdirSync(join(p, 'opt/app'));
      writeFileSync(join(p, 'opt/app/new'), 'fresh');
    });
    const diffDir = join(home, rw, 'diff');
    assert.equal(text(join(diffDir, 'etc/conf')), 'v2', 'the modified file is copied up');
    assert.ok(isOverlayWhiteout(join(diffDir, 'etc/remove-me')), 'the deleted file is a 0/0 char device');
    assert.deepEqual(xattrOf(join(diffDir, 'opt/app'), 'trusted.overlay.opaque'), Buffer.from('y'), 'the replaced dir is opaque');
    assert.deepEqual(readdirSync(join(diffDir, 'opt/app')), ['new']);
    assert.deepEqual(readdirSync(diffDir).sort(), ['etc', 'opt'], 'untouched files stay below');

    assert.equal(driver.capabilities().nativeDiff, true, 'this kernel runs without redirect_dir/metacopy');
    const listing = await tarListing(await collect(await driver.diff(rw, base)));
    const names = entryNames(listing);
    for (const n of ['etc/conf', 'etc/.wh.remove-me', 'opt/app/.wh..wh..opq', 'opt/app/new'])
      assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
    assert.ok(!names.includes('keep'));
    assert.ok(!names.includes('etc/remove-me'), 'no char device in the exported tar');
    assert.ok(!listing.some((l) => l.startsWith('c')), 'no char device entries at all');

    // Against another parent the diff dir is no valid change set: the naive diff gives whole files.
    const naive = entryNames(await tarListing(await collect(await driver.diff(rw))));
    assert.ok(naive.includes('keep') && naive.includes('etc/conf') && !naive.some((n) => n.includes('.wh.')), naive.join(', '));
    assert.equal(await driver.diffSize(rw, base), 'v2'.length + 'fresh'.length);
  });

  it("drops the overlay xattrs a layer tar carries: a redirect cannot make a directory show a lower layer's other directory", async () => {
    const base = await fx.layer(undefined, [
      dir('secret/'),
      file('secret/key', 'private'),
      dir('public/'),
      file('public/readme', 'hello'),
      file('data', 'base data'),
    ]);
    const overlayXattrs = {
      'trusted.overlay.redirect': Buffer.from('/secret'),
      'trusted.overlay.opaque': Buffer.from('y'),
      'user.overlay.redirect': Buffer.from('/secret'),
      'user.fuseoverlayfs.opaque': Buffer.from('y'),
    };
    const evil = await fx.layer(base, [
      dir('public/', { xattrs: overlayXattrs }),
      dir('fresh/', { xattrs: { 'trusted.overlay.redirect': Buffer.from('/secret'), 'user.kept': Buffer.from('v') } }),
      file('data', 'evil data', { xattrs: { 'trusted.overlay.metacopy': Buffer.alloc(0), 'trusted.overlay.origin': Buffer.from('x') } }),
    ]);
    const diffDir = join(home, evil, 'diff');
    for (const [path, name] of [
      ['public', 'trusted.overlay.redirect'],
      ['public', 'trusted.overlay.opaque'],
      ['public', 'user.overlay.redirect'],
      ['public', 'user.fuseoverlayfs.opaque'],
      ['fresh', 'trusted.overlay.redirect'],
      ['data', 'trusted.overlay.metacopy'],
      ['data', 'trusted.overlay.origin'],
    ] as const) {
      const value = xattrOrUnsupported(join(diffDir, path), name);
      assert.ok(value === undefined || value === 'unsupported', `${name} on ${path} is not applied`);
    }
    // A filesystem without user.* xattrs (tmpfs before Linux 6.6, the VM's kernel) refuses user.kept: nothing to compare then.
    const kept = xattrOrUnsupported(join(diffDir, 'fresh'), 'user.kept');
    if (kept !== 'unsupported') assert.deepEqual(kept, Buffer.from('v'), 'other xattrs are');
    const child = fx.id('rw');
    await driver.createReadWrite(child, evil);
    for (const id of [evil, child]) {
      await fx.view(id, (p) => {
        assert.deepEqual(readdirSync(join(p, 'public')), ['readme'], `${id}: public/ shows its own files, not secret/`);
        assert.deepEqual(readdirSync(join(p, 'fresh')), [], `${id}: a new dir shows nothing of secret/`);
        assert.equal(text(join(p, 'data')), 'evil data');
      });
    }
    await driver.remove(child);
  });

  describe('branches from the kernel, for every way of mounting', () => {
    const chain: string[] = [];
    // Kernels before 6.8 have no lowerdir+ (the new mount API's way past one page of options) and
    // stop at 128 lowers (Debian 12's 6.1 in the test VM): there the deepest case is 120.
    const newApi = overlayLowerdirPlusSupported();
    const cases: Array<[number, string, RegExp]> = [
      [3, 'absolute paths', /(^|,)lowerdir=\//],
      [newApi ? 130 : 120, 'relative l/ paths (absolute ones are longer than a page)', /(^|,)lowerdir=l\//],
      ...(newApi ? [[210, 'the new mount API', /(^|,)lowerdir\+=\//] as [number, string, RegExp]] : []),
    ];
    before(async () => {
      const deepest = cases[cases.length - 1][0];
      for (let i = 0; i < deepest; i++) {
        const id = `br-${i}`;
        await driver.create(id, chain[i - 1]);
        chain.push(id);
      }
      // The top layers are writable containers: createReadWrite on top of the image chain.
      for (const [depth] of cases) await driver.createReadWrite(`br-rw-${depth}`, chain[depth - 1]);
    });

    for (const [depth, how, shape] of cases) {
      it(`reports upper rw + ${depth} lowers ro when mounted with ${how}`, async () => {
        const id = `br-rw-${depth}`;
        const unmounted = await driver.branches(id);
        const merged = await driver.get(id);
        try {
          const m = mountAt(merged);
          assert.ok(m && m.fsType === 'overlay', 'overlay mounted at merged/');
          assert.match(m.superOptions, shape);
          const branches = await driver.branches(id);
          assert.equal(branches.length, depth + 1);
          assert.deepEqual(branches[0], { path: join(home, id, 'diff'), layer: id, mode: 'rw' });
          assert.deepEqual(
            branches.slice(1).map((b) => [b.layer, b.mode, b.path]),
            chain
              .slice(0, depth)
              .reverse()
              .map((l) => [l, 'ro', join(home, l, 'diff')]),
          );
          assert.deepEqual(branches, unmounted, 'the same list is computed from the lower file when unmounted');
        } finally {
          await driver.put(id);
        }
      });
    }

    it('mounts a committed layer read-only: its own diff as the top lower, all branches ro', async () => {
      const id = chain[4]; // has children, so committed
      const merged = await driver.get(id);
      try {
        assert.ok(!/upperdir=/.test(mountAt(merged)?.superOptions ?? ''), 'no upperdir');
        assert.throws(() => writeFileSync(join(merged, 'nope'), 'x'), { code: 'EROFS' });
        const branches = await driver.branches(id);
        assert.deepEqual(
          branches.map((b) => `${b.layer} ${b.mode}`),
          chain
            .slice(0, 5)
            .reverse()
            .map((l) => `${l} ro`),
        );
      } finally {
        await driver.put(id);
      }
    });
  });

  it('counts persistent references across processes: an earlier process keeps its mount counted', async () => {
    const base = await fx.layer(undefined, [file('from-parent', 'p')]);
    const id = fx.id('xproc');
    await driver.createReadWrite(id, base);
    const storeModule = fileURLToPath(new URL('../../src/index.js', import.meta.url));
    const script = `const { openStore } = await import(process.argv[1]); const s = await openStore({ root: process.argv[2], driver: 'overlay2' }); process.stdout.write(await s.driver.get(process.argv[3], { persistent: true }));`;
    const { stdout: path } = await run(process.execPath, ['--input-type=module', '-e', script, storeModule, fx.root, id]);
    const countAt = () => listMounts().filter((m) => m.mountPoint === path).length;
    assert.equal(countAt(), 1, 'the child left its mount');
    // A fresh driver instance (as a new process would have) adopts it.
    const again = await overlay2Entry.create({ home, root: fx.root, stateDir: join(fx.root, 'driver-state', 'overlay2'), options: {} });
    assert.equal(await again.get(id), path);
    assert.equal(countAt(), 1, 'adopted, not mounted again');
    await again.put(id);
    assert.equal(countAt(), 1, "the child's persistent reference still holds the mount");
    assert.equal(again.references(id).persistent, 1);
    await again.put(id, { persistent: true });
    assert.equal(countAt(), 0);
  });

  it('cleanup unmounts everything below the home, removes merged/ and forgets the counts', async () => {
    const base = await fx.layer(undefined, [file('x', 'x')]);
    const ids = [fx.id('cl'), fx.id('cl')];
    for (const id of ids) await driver.createReadWrite(id, base);
    for (const id of ids) await driver.get(id);
    await driver.get(ids[0]);
    assert.equal(mountsBelow(home).length, 2);
    await driver.cleanup();
    assert.deepEqual(mountsBelow(home), []);
    for (const id of ids) assert.ok(!readdirSync(join(home, id)).includes('merged'));
    // Counts start over: one get, one put, unmounted.
    await driver.get(ids[0]);
    await driver.put(ids[0]);
    assert.deepEqual(mountsBelow(home), []);
    await driver.remove(ids[0]);
  });

  it('refuses unknown options and per-layer size on image layers; accepts override_kernel_check', async () => {
    await assert.rejects(
      async () =>
        overlay2Entry.create({
          home,
          root: fx.root,
          stateDir: join(fx.root, 'driver-state', 'overlay2'),
          options: { 'overlay2.bogus': '1' },
        }),
      {
        code: 'BAD_OPTION',
      },
    );
    await overlay2Entry.create({
      home,
      root: fx.root,
      stateDir: join(fx.root, 'driver-state', 'overlay2'),
      options: { 'overlay2.override_kernel_check': 'true' },
    });
    await assert.rejects(driver.create(fx.id('sized'), undefined, { storageOpt: { size: '10M' } }), { code: 'BAD_OPTION' });
    await assert.rejects(driver.createReadWrite(fx.id('sized'), undefined, { storageOpt: { colour: 'blue' } }), { code: 'BAD_OPTION' });
  });

  it('says why overlay2 cannot run on an overlay-backed directory', async () => {
    const base = await fx.layer(undefined, [dir('data/')]);
    const id = fx.id('ovl');
    await driver.createReadWrite(id, base);
    const merged = await driver.get(id);
    try {
      assert.match(overlay2Entry.unsupportedReason(join(merged, 'data', 'overlay2')) ?? '', /overlay/);
      assert.equal(overlay2Entry.unsupportedReason(join(fx.root, 'overlay2')), undefined);
    } finally {
      await driver.put(id);
    }
  });

  it('refuses overlay2.size where there is no project quota, naming the filesystem', async () => {
    await assert.rejects(driver.createReadWrite(fx.id('q'), undefined, { storageOpt: { size: '10M' } }), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'UNSUPPORTED');
      assert.match(e.message, /overlay2\.size needs xfs with the pquota mount option; .* is on tmpfs/);
      return true;
    });
    const scratch = makeScratch({ size: '64m' });
    try {
      await assert.rejects(
        openStore({ root: join(scratch.dir, 'root'), driver: 'overlay2', storageOpt: ['overlay2.size=1G'] }),
        (e: Error & { code?: string }) => {
          assert.equal(e.code, 'UNSUPPORTED');
          assert.match(e.message, /is on tmpfs/);
          return true;
        },
      );
    } finally {
      scratch.dispose();
    }
  });

  it('refuses overlay2.size on xfs mounted without project quota', async (t) => {
    if (!xfsAvailable()) {
      t.skip('mkfs.xfs / loop devices not available (apt-get install xfsprogs)');
      return;
    }
    const xfs = makeXfsScratch({ prjquota: false });
    try {
      const root = join(xfs.dir, 'root');
      await assert.rejects(openStore({ root, driver: 'overlay2', storageOpt: ['overlay2.size=4M'] }), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'UNSUPPORTED');
        assert.match(e.message, new RegExp(`overlay2\\.size needs xfs with the pquota mount option; ${root} is on xfs`));
        return true;
      });
    } finally {
      xfs.dispose();
    }
  });

  it('limits a writable layer with overlay2.size on xfs with prjquota', async (t) => {
    if (!xfsAvailable()) {
      t.skip('mkfs.xfs / xfs_quota / loop devices not available (apt-get install xfsprogs)');
      return;
    }
    let xfs: ReturnType<typeof makeXfsScratch>;
    try {
      xfs = makeXfsScratch({ prjquota: true });
    } catch (e) {
      // A kernel built without CONFIG_XFS_QUOTA refuses the prjquota mount option (this machine's
      // does). test/vm/overlay2-quota.test.ts runs this test in the VM, whose kernel has it, with
      // UNIONCTL_REQUIRE_PRJQUOTA=1: there a skip would hide a failure.
      const why = `this kernel cannot mount xfs with prjquota: ${(e as Error).message.split('\n')[0]}`;
      if (process.env.UNIONCTL_REQUIRE_PRJQUOTA === '1') throw new Error(why);
      t.skip(why);
      return;
    }
    const root = join(xfs.dir, 'root');
    try {
      const store = await openStore({ root, driver: 'overlay2', storageOpt: ['overlay2.size=4M'] });
      const base = await store.create({ id: 'q-base' });
      const sized = await store.create({ id: 'q-sized', parent: base.id, writable: true, storageOpt: { size: '2M' } });
      const byDefault = await store.create({ id: 'q-default', parent: base.id, writable: true });
      const writeBytes = async (id: string, bytes: number) => {
        const m = await store.mount(id);
        try {
          writeFileSync(join(m.path, 'big'), Buffer.alloc(bytes, 1));
          return 'ok';
        } catch (e) {
          return (e as NodeJS.ErrnoException).code;
        } finally {
          await store.unmount(m.id);
        }
      };
      // xfs reports a full project quota as ENOSPC (EDQUOT on some kernels).
      assert.match(String(await writeBytes(sized.id, 3 << 20)), /^(ENOSPC|EDQUOT)$/, 'size=2M stops a 3 MiB write');
      assert.equal(await writeBytes(sized.id, 1 << 20), 'ok', 'a 1 MiB write fits');
      assert.match(String(await writeBytes(byDefault.id, 5 << 20)), /^(ENOSPC|EDQUOT)$/, 'overlay2.size=4M applies by default');
      assert.equal(await writeBytes(byDefault.id, 3 << 20), 'ok', 'a 3 MiB write fits the default');
      await store.cleanup();
      await store.close();
    } finally {
      xfs.dispose();
    }
  });
});

/** xattrOf, or 'unsupported' when the filesystem has no such namespace at all (ENOTSUP: nothing of it can be there). */
function xattrOrUnsupported(path: string, name: string): Buffer | undefined | 'unsupported' {
  try {
    return xattrOf(path, name);
  } catch (e) {
    if (/Operation not supported/.test((e as Error).message)) return name.startsWith('user.') ? 'unsupported' : undefined;
    throw e;
  }
}
