/**
 * overlay (v1) beyond the shared conformance suite: Docker's on-disk layout (root/ for image layers;
 * upper/, work/, lower-id for the others), the hardlink farm applyDiff builds — sharing the
 * parent's inodes and never writing into them —, a failed apply leaving the layer as it was, a
 * layer on a writable layer copying its upper (whiteout devices and opaque xattrs included), copy-up
 * through a writable mount, metadata and status pairs, branches, and the CLI.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { OverlayDriver } from '../../src/drivers/overlay/index.js';
import { mountAt, mountsBelow } from '../helpers/mounts.js';
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
