/**
 * overlay (v1) beyond the shared conformance suite: Docker's on-disk layout (root/ for image layers;
 * upper/, work/, lower-id for the others), the hardlink farm applyDiff builds — sharing the
 * parent's inodes and never writing into them —, a failed apply leaving the layer as it was, a
 * layer on a writable layer copying its upper (whiteout devices and opaque xattrs included), copy-up
 * through a writable mount, metadata and status pairs, branches, and the CLI; for containerd, the
 * mounts a runtime makes (mountSpec) and sealWritable turning a writable layer into a root/ farm
 * (whiteouts, opaque dirs, the parent's inodes kept) also after a seal killed half-way.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { OverlayDriver } from '../../src/drivers/overlay/index.js';
import { mountAt, mountsBelow } from '../helpers/mounts.js';
import { mountLikeContainerd, unmountLikeContainerd } from '../helpers/runtime-mount.js';
import { DriverFixture } from './fixture.js';
import { collect, exists, isOverlayWhiteout, tarNames, text, xattrOf } from './inspect.js';
import { dir, file, hardlink, tarOf, tarStream } from './tars.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function mode(path: string): number {
  return lstatSync(path).mode & 0o7777;
}

function ino(path: string): number {
  return lstatSync(path).ino;
}

describe('overlay (v1) specifics', () => {
  let fx: DriverFixture;
  let driver: OverlayDriver;
  let home = '';
  before(async () => {
    fx = await DriverFixture.open('overlay');
    driver = fx.driver as OverlayDriver;
    home = driver.home;
  });
  after(async () => {
    await fx?.close();
  });

  it("writes Docker's layout: root/ for a base layer, upper/work/lower-id on an image layer", async () => {
    const base = await fx.layer(undefined, [file('a', 'a')]);
    assert.equal(mode(home), 0o710);
    assert.equal(mode(join(home, base)), 0o710);
    assert.equal(mode(join(home, base, 'root')), 0o755);
    assert.deepEqual(readdirSync(join(home, base)), ['root']);
    const child = fx.id('child');
    await driver.createReadWrite(child, base);
    assert.deepEqual(readdirSync(join(home, child)).sort(), ['lower-id', 'upper', 'work']);
    assert.equal(readFileSync(join(home, child, 'lower-id'), 'utf8'), base, 'the parent id, no newline');
    assert.equal(mode(join(home, child, 'lower-id')), 0o600);
    assert.equal(mode(join(home, child, 'upper')), mode(join(home, base, 'root')), "upper has the mode of the parent's root");
    assert.equal(mode(join(home, child, 'work')), 0o700);
    assert.deepEqual(await driver.metadata(base), { RootDir: join(home, base, 'root') });
    assert.deepEqual(await driver.metadata(child), {
      LowerDir: join(home, base, 'root'),
      UpperDir: join(home, child, 'upper'),
      WorkDir: join(home, child, 'work'),
      MergedDir: join(home, child, 'merged'),
    });
  });

  it('applies onto an image layer as a hardlink farm, never writing into the shared inodes', async () => {
    const base = await fx.layer(undefined, [
      dir('etc/'),
      file('etc/same', 'same'),
      file('etc/changed', 'old', { mode: 0o644 }),
      file('etc/linked', 'L'),
      hardlink('etc/linked2', 'etc/linked'),
      file('etc/gone', 'g'),
    ]);
    const baseRoot = join(home, base, 'root');
    const before = { changed: ino(join(baseRoot, 'etc/changed')), linked: ino(join(baseRoot, 'etc/linked')) };
    const child = await fx.layer(base, [
      file('etc/changed', 'new content', { mode: 0o600 }),
      file('etc/linked', 'replaced'),
      { type: 'file', path: 'etc/.wh.gone', content: '' },
    ]);
    const root = join(home, child, 'root');
    assert.deepEqual(readdirSync(join(home, child)), ['root'], 'upper/, work/, lower-id are gone; no temporary dir is left');
    assert.equal(ino(join(root, 'etc/same')), ino(join(baseRoot, 'etc/same')), 'an unchanged file is a hardlink of the parent');
    assert.equal(ino(join(root, 'etc/linked2')), before.linked, "the other name of a replaced file still is the parent's inode");
    // The parent is untouched: same inodes, same content, same modes.
    assert.equal(ino(join(baseRoot, 'etc/changed')), before.changed);
    assert.equal(text(join(baseRoot, 'etc/changed')), 'old');
    assert.equal(mode(join(baseRoot, 'etc/changed')), 0o644);
    assert.equal(text(join(baseRoot, 'etc/linked')), 'L');
    assert.equal(text(join(baseRoot, 'etc/linked2')), 'L');
    assert.equal(text(join(baseRoot, 'etc/gone')), 'g');
    // The child has its own.
    assert.notEqual(ino(join(root, 'etc/changed')), before.changed);
    assert.equal(text(join(root, 'etc/changed')), 'new content');
    assert.equal(mode(join(root, 'etc/changed')), 0o600);
    assert.equal(text(join(root, 'etc/linked')), 'replaced');
    assert.equal(exists(join(root, 'etc/gone')), false, 'a whiteout is a real deletion in the farm');
    const status = new Map(await driver.status());
    const names = Number(status.get('Farm Names'));
    const inodes = Number((status.get('Farm Inodes') ?? '').split(' ')[0]);
    assert.ok(names > inodes, `hardlinks save inodes (${names} names, ${inodes} inodes)`);
  });

  it('leaves the layer as it was when an apply fails (no root/, no temporary farm)', async () => {
    const base = await fx.layer(undefined, [file('a', 'a')]);
    const child = fx.id('child');
    await driver.create(child, base);
    const bad = tarOf([file('ok', 'fine'), hardlink('evil', '../../outside')]);
    await assert.rejects(driver.applyDiff(child, base, tarStream(bad)), { code: 'UNSAFE_ENTRY' });
    assert.deepEqual(readdirSync(join(home, child)).sort(), ['lower-id', 'upper', 'work']);
    assert.equal(text(join(home, base, 'root', 'a')), 'a');
  });

  it('copy-up through a writable mount: overlay whiteouts in upper/, exported as .wh. entries', async () => {
    const base = await fx.layer(undefined, [dir('etc/'), file('etc/conf', 'v1'), file('etc/gone', 'g'), dir('opt/'), file('opt/old', 'o')]);
    const rw = fx.id('rw');
    await driver.createReadWrite(rw, base);
    const path = await driver.get(rw);
    try {
      assert.equal(mountAt(path)?.fsType, 'overlay');
      assert.deepEqual(await driver.branches(rw), [
        { path: join(home, rw, 'upper'), layer: rw, mode: 'rw' },
        { path: join(home, base, 'root'), layer: base, mode: 'ro' },
      ]);
      writeFileSync(join(path, 'etc/conf'), 'v2');
      rmSync(join(path, 'etc/gone'));
      rmSync(join(path, 'opt'), { recursive: true });
      mkdirSync(join(path, 'opt'));
      writeFileSync(join(path, 'opt/new'), 'n');
    } finally {
      await driver.put(rw);
    }
    assert.equal(exists(join(home, rw, 'merged')), false, 'merged/ is removed by the last put');
    const upper = join(home, rw, 'upper');
    assert.equal(text(join(upper, 'etc/conf')), 'v2');
    assert.ok(isOverlayWhiteout(join(upper, 'etc/gone')));
    assert.deepEqual(xattrOf(join(upper, 'opt'), 'trusted.overlay.opaque'), Buffer.from('y'));
    const names = tarNames(await collect(await driver.diff(rw, base)));
    for (const n of ['etc/conf', 'etc/.wh.gone', 'opt/new']) assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
    assert.ok(names.includes('opt/.wh.old') || names.includes('opt/.wh..wh..opq'), 'the replaced dir hides the old entry');

    // A layer on this writable layer copies its upper, whiteout device and opaque xattr included.
    const next = fx.id('next');
    await driver.createReadWrite(next, rw);
    assert.equal(readFileSync(join(home, next, 'lower-id'), 'utf8'), base, 'same lower as the writable parent');
    const nextUpper = join(home, next, 'upper');
    assert.ok(isOverlayWhiteout(join(nextUpper, 'etc/gone')));
    assert.deepEqual(xattrOf(join(nextUpper, 'opt'), 'trusted.overlay.opaque'), Buffer.from('y'));
    await fx.view(next, (p) => {
      assert.equal(text(join(p, 'etc/conf')), 'v2');
      assert.equal(exists(join(p, 'etc/gone')), false);
      assert.deepEqual(readdirSync(join(p, 'opt')), ['new']);
    });
  });

  /** A writable layer on `base` changed through the mount a runtime makes from its mountSpec. */
  async function changedWritable(base: string): Promise<string> {
    const rw = fx.id('rw');
    await driver.createReadWrite(rw, base);
    const target = join(fx.workDir(), `mnt-${rw}`);
    mkdirSync(target, { recursive: true });
    mountLikeContainerd((await driver.mountSpec(rw, { readonly: false }))[0]!, target);
    try {
      writeFileSync(join(target, 'etc/conf'), 'v2');
      rmSync(join(target, 'etc/gone'));
      rmSync(join(target, 'opt'), { recursive: true });
      mkdirSync(join(target, 'opt'));
      writeFileSync(join(target, 'opt/new'), 'n');
      writeFileSync(join(target, 'added'), 'a');
    } finally {
      await unmountLikeContainerd(target);
    }
    return rw;
  }
  const baseEntries = () => [
    dir('etc/'),
    file('etc/conf', 'v1'),
    file('etc/same', 's'),
    file('etc/gone', 'g'),
    dir('opt/'),
    file('opt/old', 'o'),
  ];

  it('mountSpec: binds of root/ for an image layer, the overlay get mounts for a writable layer', async () => {
    const base = await fx.layer(undefined, baseEntries());
    const root = join(home, base, 'root');
    assert.deepEqual(await driver.mountSpec(base, { readonly: true }), [{ type: 'bind', source: root, options: ['ro', 'rbind'] }]);
    assert.deepEqual(await driver.mountSpec(base, { readonly: false }), [{ type: 'bind', source: root, options: ['rw', 'rbind'] }]);
    const rw = fx.id('rw');
    await driver.createReadWrite(rw, base);
    const [spec] = await driver.mountSpec(rw, { readonly: false });
    assert.equal(spec!.type, 'overlay');
    assert.deepEqual(
      spec!.options.filter((o) => /^(lower|upper|work)dir=/.test(o)),
      [`workdir=${join(home, rw, 'work')}`, `upperdir=${join(home, rw, 'upper')}`, `lowerdir=${root}`],
    );
    const [ro] = await driver.mountSpec(rw, { readonly: true });
    assert.deepEqual(
      ro!.options.filter((o) => /dir=/.test(o)),
      [`lowerdir=${join(home, rw, 'upper')}:${root}`],
      'read-only: the upper over the lower root, both as lowers',
    );
    assert.deepEqual(mountsBelow(home), [], 'mountSpec mounts nothing');
    await assert.rejects(driver.mountSpec(fx.id('none'), { readonly: true }), { code: 'NOT_FOUND' });
  });

  it('sealWritable makes the writable layer a root/ farm: changes, whiteouts and the opaque dir applied, the parent untouched', async () => {
    const base = await fx.layer(undefined, baseEntries());
    const baseRoot = join(home, base, 'root');
    const before = { conf: ino(join(baseRoot, 'etc/conf')), same: ino(join(baseRoot, 'etc/same')) };
    const rw = await changedWritable(base);
    assert.ok(isOverlayWhiteout(join(home, rw, 'upper/etc/gone')), 'the runtime wrote an overlay whiteout');
    await driver.sealWritable(rw);
    assert.deepEqual(readdirSync(join(home, rw)), ['root'], 'upper/, work/, lower-id and any temporary farm are gone');
    const root = join(home, rw, 'root');
    assert.equal(text(join(root, 'etc/conf')), 'v2');
    assert.equal(exists(join(root, 'etc/gone')), false, 'the whiteout is a real deletion');
    assert.deepEqual(readdirSync(join(root, 'opt')), ['new'], 'the opaque dir hides what the lower had');
    assert.equal(xattrOf(join(root, 'opt'), 'trusted.overlay.opaque'), undefined, 'no overlay xattr in an image layer');
    assert.equal(text(join(root, 'added')), 'a');
    assert.equal(ino(join(root, 'etc/same')), before.same, 'an unchanged file is a hardlink of the parent');
    assert.equal(ino(join(baseRoot, 'etc/conf')), before.conf);
    assert.equal(text(join(baseRoot, 'etc/conf')), 'v1', 'the parent is untouched');
    assert.equal(text(join(baseRoot, 'etc/gone')), 'g');
    assert.deepEqual(readdirSync(join(baseRoot, 'opt')), ['old']);
    assert.deepEqual(await driver.branches(rw), [{ path: root, layer: rw, mode: 'ro' }], 'no longer writable');
    assert.deepEqual(await driver.mountSpec(rw, { readonly: true }), [{ type: 'bind', source: root, options: ['ro', 'rbind'] }]);
    assert.deepEqual(await driver.changes(rw, base), [
      { path: '/added', kind: 'A' },
      { path: '/etc', kind: 'C' },
      { path: '/etc/conf', kind: 'C' },
      { path: '/etc/gone', kind: 'D' },
      { path: '/opt', kind: 'C' },
      { path: '/opt/new', kind: 'A' },
      { path: '/opt/old', kind: 'D' },
    ]);
    await driver.sealWritable(rw); // idempotent
    assert.deepEqual(readdirSync(join(home, rw)), ['root']);
    // A child is built on it as on any image layer.
    const child = await fx.layer(rw, [file('etc/child', 'c')]);
    await fx.view(child, (p) => {
      assert.equal(text(join(p, 'etc/conf')), 'v2');
      assert.equal(text(join(p, 'etc/child')), 'c');
    });
    await assert.rejects(driver.sealWritable(fx.id('none')), { code: 'NOT_FOUND' });
  });

  it('sealWritable after a seal killed half-way: a farm left before the rename goes, leftovers after it are removed', async () => {
    const base = await fx.layer(undefined, baseEntries());
    // Killed before the rename: a temporary farm beside the intact upper.
    const early = await changedWritable(base);
    mkdirSync(join(home, early, 'tmproot123456/etc'), { recursive: true });
    writeFileSync(join(home, early, 'tmproot123456/etc/conf'), 'half');
    await driver.sealWritable(early);
    assert.deepEqual(readdirSync(join(home, early)), ['root']);
    assert.equal(text(join(home, early, 'root/etc/conf')), 'v2');
    // Killed after the rename: root/ is there, upper/, work/ and lower-id are not removed yet.
    const late = await changedWritable(base);
    await driver.sealWritable(late);
    mkdirSync(join(home, late, 'upper/etc'), { recursive: true });
    writeFileSync(join(home, late, 'upper/etc/conf'), 'stale');
    mkdirSync(join(home, late, 'work'));
    writeFileSync(join(home, late, 'lower-id'), base);
    assert.deepEqual(await driver.mountSpec(late, { readonly: true }), [
      { type: 'bind', source: join(home, late, 'root'), options: ['ro', 'rbind'] },
    ]);
    await driver.sealWritable(late);
    assert.deepEqual(readdirSync(join(home, late)), ['root']);
    assert.equal(text(join(home, late, 'root/etc/conf')), 'v2', 'the root/ made before the kill is what stays');
  });

  it('mountSpec and sealWritable refuse an upper/ that is a symlink (CORRUPT), touching nothing it points to', async () => {
    const base = await fx.layer(undefined, baseEntries());
    const rw = fx.id('rw');
    await driver.createReadWrite(rw, base);
    const victim = join(fx.workDir(), 'victim');
    mkdirSync(join(victim, 'etc'), { recursive: true });
    writeFileSync(join(victim, 'etc/conf'), 'outside');
    rmSync(join(home, rw, 'upper'), { recursive: true });
    symlinkSync(victim, join(home, rw, 'upper'));
    await assert.rejects(driver.mountSpec(rw, { readonly: false }), { code: 'CORRUPT' });
    await assert.rejects(driver.sealWritable(rw), { code: 'CORRUPT' });
    assert.equal(text(join(victim, 'etc/conf')), 'outside');
    assert.deepEqual(readdirSync(join(home, rw)).sort(), ['lower-id', 'upper', 'work'], 'no root/ made from it');
  });

  it("reports Docker's status pairs first, then the farms' inode use", async () => {
    const status = await driver.status();
    assert.deepEqual(
      status.slice(0, 2).map(([k]) => k),
      ['Backing Filesystem', 'Supports d_type'],
    );
    assert.deepEqual(status[0], ['Backing Filesystem', 'tmpfs']);
    assert.deepEqual(status[1], ['Supports d_type', 'true']);
    assert.ok(status.some(([k]) => k === 'Farm Inodes'));
  });

  it('works from the CLI: import, mount --rw, branches, umount with --driver overlay', () => {
    const cliRoot = join(fx.scratch.dir, 'cli');
    const cli = (args: string[]) => {
      const r = spawnSync(process.execPath, [MAIN, '--root', cliRoot, '--driver', 'overlay', ...args], { encoding: 'utf8' });
      assert.equal(r.status, 0, `unionctl ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    const src = join(fx.scratch.dir, 'cli-src');
    mkdirSync(join(src, 'etc'), { recursive: true });
    writeFileSync(join(src, 'etc', 'hello'), 'hi');
    const tarPath = join(fx.scratch.dir, 'cli.tar');
    spawnSync('tar', ['-cf', tarPath, '-C', src, '.']);
    const base = cli(['import', tarPath]).trim();
    const child = cli(['import', '--parent', base, tarPath]).trim();
    const { id: rw, path } = JSON.parse(cli(['--json', 'mount', '--rw', child])) as { id: string; path: string };
    try {
      assert.equal(text(join(path, 'etc/hello')), 'hi');
      const branches = JSON.parse(cli(['--json', 'branches', rw])) as Array<{ layer: string; mode: string }>;
      assert.deepEqual(
        branches.map((b) => `${b.layer} ${b.mode}`),
        [`${rw} rw`, `${child} ro`],
      );
    } finally {
      cli(['umount', rw]);
    }
    assert.deepEqual(mountsBelow(cliRoot), []);
  });
});
