/**
 * `unionctl migrate --to DRIVER` (src/graph/migrate.ts) on real stores:
 * - every ordered pair among vfs, overlay2, overlay and aufs (fuse-overlayfs here): a store with
 *   the sample image and a writable layer on it (a file added, one deleted, a directory removed)
 *   moves to the other driver, and then its layer records (but the driver), image ids, `save`
 *   bytes and every layer's merged view are what they were; the old home and its state are gone,
 *   nothing is left mounted;
 * - SIGKILL at sampled syscalls of a migration (test/helpers/faults.ts): meanwhile other commands
 *   refuse the store naming the command to run; running the migration again finishes it, with
 *   the same result; `--abort` after a kill before the switch leaves the old store as it was;
 * - refusals (a layer mounted, the same driver, an unknown one, data in the new driver's home)
 *   change nothing.
 * devicemapper is not in the matrix: it runs only in the VM tests (test/vm/).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hashSeed, killPoints, prng, runKilledAt, samplePoints, testEnv, traceSyscalls } from '../helpers/faults.js';
import { mountsBelow } from '../helpers/mounts.js';
import { toolsMissing } from '../helpers/requires.js';
import { scratchMissing } from '../helpers/scratch.js';
import { fuseProcessesUnder } from '../helpers/store-state.js';
import { assertCleanFailure, flattenedTree, listing, ok, SAMPLE_DOCKER, scratchStores, sha256, show, unionctl } from './images-helpers.js';

const DRIVERS = ['vfs', 'overlay2', 'overlay', 'aufs'];
const IMAGE = 'sample-app:1';
const RW = 'rw-layer';
const CRASH_POINTS = Number(process.env.UNIONCTL_MIGRATE_CRASH_POINTS ?? 4);

const stores = scratchStores();
const roots: string[] = [];

/** What a migration keeps as it is: the layer records (but their driver) and the image records, times and all. */
interface StoreRecords {
  layers: unknown[];
  images: unknown[];
}

/** What a store of the sample shows, whatever its driver: the saved archive's bytes, the merged views of the image and the writable layer. */
interface StoreContent {
  saved: string;
  image: string;
  writable: string;
}

const templates = new Map<string, string>();

/**
 * A new store of `driver` with the sample image and a writable layer holding changes; its global
 * options. The store is made once per driver and copied (cp -a: hardlinks, xattrs, times kept).
 */
function sampleStore(driver: string): string[] {
  let template = templates.get(driver);
  if (template === undefined) templates.set(driver, (template = buildSampleStore(driver)));
  const g = stores.freshRoot(driver);
  execFileSync('cp', ['-a', template, g[1]!]);
  roots.push(g[1]!);
  return g;
}

function buildSampleStore(driver: string): string {
  const g = stores.freshRoot(driver);
  ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
  const top = (JSON.parse(ok(unionctl([...g, '--json', 'inspect', IMAGE]))) as Array<{ layers: Array<{ id: string }> }>)[0]!.layers.at(
    -1,
  )!.id;
  // mount prints the path on its last line.
  const path = ok(unionctl([...g, 'mount', '--rw', '--name', RW, top]))
    .trim()
    .split('\n')
    .at(-1)!;
  writeFileSync(join(path, 'added.txt'), 'written in a container\n');
  mkdirSync(join(path, 'srv', 'new-dir'));
  writeFileSync(join(path, 'srv', 'new-dir', 'file'), 'x');
  // Fixed times: every driver's sample store then shows the same files.
  for (const f of ['added.txt', 'srv/new-dir/file']) utimesSync(join(path, f), 1_700_000_000, 1_700_000_000);
  ok(unionctl([...g, 'umount', RW]));
  // Deleted through a mount of its own: the driver's writable-layer whiteouts.
  const again = ok(unionctl([...g, 'mount', RW])).trim();
  rmSync(join(again, 'etc', 'group'));
  rmSync(join(again, 'srv', 'app', 'plugins'), { recursive: true });
  ok(unionctl([...g, 'umount', RW]));
  return g[1]!;
}

function recordsOf(g: string[]): StoreRecords {
  const layers = (JSON.parse(ok(unionctl([...g, '--json', 'ls']))) as Array<{ driver: string }>).map(({ driver: _d, ...l }) => l);
  return { layers, images: JSON.parse(ok(unionctl([...g, '--json', 'images']))) as unknown[] };
}

/**
 * The saved archive's sha256 and the two merged views' tree listings. (Every layer's tar is
 * rebuilt from the driver's files by save and must have its diff ID for the bytes to be the same,
 * so the views of the layers below need no listing of their own.)
 */
function contentOf(g: string[]): StoreContent {
  const out = join(g[1]!, '..', `save-${sha256(g[1]!).slice(7, 19)}.tar`);
  ok(unionctl([...g, 'save', '-o', out, IMAGE]));
  const saved = sha256(readFileSync(out));
  rmSync(out);
  return { saved, image: flattenedTree(g, IMAGE), writable: flattenedTree(g, RW) };
}

function storeDriver(root: string): string {
  return (JSON.parse(readFileSync(join(root, 'store.json'), 'utf8')) as { driver: string }).driver;
}

/** The old driver's home and state are gone, no journal, nothing mounted, no FUSE process. */
function assertOnlyDriver(root: string, from: string, to: string): void {
  assert.equal(storeDriver(root), to);
  assert.ok(!existsSync(join(root, from)), `${from} home removed`);
  assert.ok(!existsSync(join(root, 'driver-state', from)), `${from} state removed`);
  assert.ok(!existsSync(join(root, 'migrate.json')), 'no migration journal left');
  assert.deepEqual(mountsBelow(root), [], 'nothing mounted');
  assert.deepEqual(fuseProcessesUnder(root), [], 'no fuse-overlayfs process');
}

/** Global options naming the root only: migrate takes the store's driver as it is. */
const rootOnly = (g: string[]) => g.slice(0, 2);

/** A test that failed half-way may leave a journal, which makes umount and cleanup refuse: finish or undo it. */
function finishLeftMigrations(): void {
  for (const root of roots) {
    if (!existsSync(join(root, 'migrate.json'))) continue;
    const j = JSON.parse(readFileSync(join(root, 'migrate.json'), 'utf8')) as { to: string; phase: string };
    unionctl(['--root', root, 'migrate', ...(j.phase === 'copying' ? ['--abort'] : ['--to', j.to])]);
  }
}

/** What every store of the sample shows, before and after each migration: a vfs store's. */
let reference: StoreContent;

before(() => {
  if (scratchMissing === undefined) reference = contentOf(sampleStore('vfs'));
});

describe('migrate', { skip: scratchMissing }, () => {
  after(finishLeftMigrations);

  for (const from of DRIVERS) {
    for (const to of DRIVERS) {
      if (from === to) continue;
      it(`${from} → ${to}: same records, image ids, save bytes and merged views; the old home gone`, () => {
        const g = sampleStore(from);
        const records = recordsOf(g);
        const r = unionctl([...rootOnly(g), '--json', 'migrate', '--to', to]);
        const result = JSON.parse(ok(r)) as unknown;
        assert.deepEqual(result, { root: g[1], from, to, aborted: false, layers: 5, copied: 5, resumed: false });
        assert.match(r.stderr, /migrating layer 5\/5 rw-layer \(writable\)/);
        assertOnlyDriver(g[1]!, from, to);
        const moved = ['--root', g[1]!, '--driver', to];
        assert.deepEqual(recordsOf(moved), records, 'the layer and image records are as they were');
        assert.deepEqual(contentOf(moved), reference, `the store moved from ${from} to ${to} shows what every sample store shows`);
      });
    }
  }
});

describe('migrate killed', { skip: scratchMissing ?? toolsMissing(['strace']) }, () => {
  after(finishLeftMigrations);
  for (const [from, to] of [
    ['vfs', 'overlay2'],
    ['overlay2', 'aufs'],
  ] as const) {
    it(`${from} → ${to}: SIGKILLed at ${CRASH_POINTS} sampled syscalls, run again it finishes with the same store`, async (t) => {
      const traced = sampleStore(from);
      const trace = await traceSyscalls([...rootOnly(traced), 'migrate', '--to', to], {
        env: testEnv(),
        storeRoot: traced[1]!,
        traceFile: join(stores.dir, `trace-${from}-${to}`),
      });
      assert.equal(trace.result.status, 0, trace.result.stderr);
      const all = killPoints(trace);
      // A seeded sample, and the middle one of the renames (the journal's and records' atomic
      // writes): a kill in the middle of the copying, whatever the sample.
      const renames = all.filter((p) => p.syscall === 'rename');
      const points = [...samplePoints(all, CRASH_POINTS - 1, prng(hashSeed(`migrate ${from} ${to}`))), renames[renames.length >> 1]!];
      let abortedOne = false;
      let leftHalfway = 0;
      for (const point of points) {
        const at = `killed at ${point.syscall} #${point.k}`;
        const g = sampleStore(from);
        const root = g[1]!;
        const records = recordsOf(g);
        const migrate = [...rootOnly(g), 'migrate', '--to', to];
        const r = await runKilledAt(migrate, point, { env: testEnv() });
        if (!r.killed) assert.equal(r.status, 0, `${at}: ran to its end\n${r.stderr}`);
        if (existsSync(join(root, 'migrate.json'))) {
          leftHalfway++;
          // Every other command refuses the store and says what to run.
          const ls = unionctl([...rootOnly(g), 'ls']);
          assertCleanFailure(ls, new RegExp(`being migrated from the ${from} driver to ${to}`));
          assert.match(ls.stderr, new RegExp(`unionctl migrate --to ${to}`), at);
          const phase = (JSON.parse(readFileSync(join(root, 'migrate.json'), 'utf8')) as { phase: string }).phase;
          if (phase === 'copying' && !abortedOne) {
            // Before the switch the migration can be undone: the old store is as it was.
            abortedOne = true;
            ok(unionctl([...rootOnly(g), 'migrate', '--abort']));
            assertOnlyDriver(root, to, from);
            assert.deepEqual(contentOf(rootOnly(g)), reference, `${at}, then --abort: the ${from} store as before`);
          }
        }
        if (storeDriver(root) !== to || existsSync(join(root, 'migrate.json')) || existsSync(join(root, from))) {
          const again = unionctl(migrate);
          assert.equal(again.status, 0, `${at}: running it again finishes it\n${show(again)}`);
        }
        assertOnlyDriver(root, from, to);
        const moved = ['--root', root, '--driver', to];
        assert.deepEqual(recordsOf(moved), records, `${at}, then run again: the records as they were`);
        assert.deepEqual(contentOf(moved), reference, `${at}, then run again`);
      }
      t.diagnostic(`${points.length} kill points, ${leftHalfway} left a migration half-way, ${abortedOne ? 'one' : 'none'} aborted`);
      assert.ok(leftHalfway > 0 && abortedOne, 'the sample reached kills in the middle of a migration, and one was aborted');
    });
  }
});

describe('migrate refuses, changing nothing', { skip: scratchMissing }, () => {
  /** The refusal `args` gets on store `g`, and the store root byte for byte as it was. */
  function refused(g: string[], args: string[], mention: RegExp): void {
    const before = listing(g[1]!);
    assertCleanFailure(unionctl([...rootOnly(g), 'migrate', ...args]), mention);
    assert.deepEqual(listing(g[1]!), before, 'the store root is unchanged');
  }

  it('while a layer is mounted, to the driver it uses, to an unknown driver, onto data in the new home', () => {
    const g = sampleStore('overlay2');
    ok(unionctl([...g, 'mount', RW]));
    refused(g, ['--to', 'vfs'], /cannot migrate the store .*: layer rw-layer is mounted/);
    ok(unionctl([...g, 'umount', RW]));
    refused(g, ['--to', 'overlay2'], /already uses the overlay2 driver/);
    refused(g, ['--to', 'zfs'], /unknown storage driver "zfs"/);
    refused(g, [], /migrate needs --to DRIVER/);
    refused(g, ['--abort'], /is not being migrated/);
    mkdirSync(join(g[1]!, 'vfs', 'dir', 'someone-elses'), { recursive: true });
    refused(g, ['--to', 'vfs'], /the vfs driver home .* already holds data/);
    rmSync(join(g[1]!, 'vfs'), { recursive: true });
    assert.deepEqual(contentOf(g), reference, 'the store still shows what it did');
  });
});
