/**
 * Crash consistency as a tested property: every mutating CLI operation, on vfs, overlay2 and aufs
 * (fuse-overlayfs here), is SIGKILLed at the K-th call of each syscall it makes
 * (test/helpers/faults.ts), and then:
 * - the next commands (`ls`, `images`: they open the store and run its recovery) succeed;
 * - the store is exactly as before the operation or exactly as after it (test/helpers/store-state.ts:
 *   records, image records, every file of the driver's home and the merged views, the mount
 *   counts, the kernel's mounts);
 * - nothing that must never be left is there: temp files, probe dirs (in the store or in TMPDIR),
 *   journals, spools, half-made or half-removed layers, uncounted mounts, FUSE processes;
 * - `cleanup` then leaves nothing mounted and no FUSE process.
 *
 * Which kill points: first an unkilled run under strace counts the calls (and gives the "after"
 * state), then every (syscall, K) it reached is a kill point.
 *   UNIONCTL_CRASH=sample (default: the normal test run): a seeded sample of each case's points,
 *     UNIONCTL_CRASH_SAMPLE of them (default 4; at most one from before the store is touched)
 *   UNIONCTL_CRASH=full (`npm run test:crash`): every point
 *   UNIONCTL_CRASH=store: every point from the first call that names a path in the store on, and
 *     one point before it (the ones before are all alike: module loading, option parsing)
 *   UNIONCTL_CRASH_SEED (default 11), UNIONCTL_CRASH_OPS / _DRIVERS / _SYSCALLS (comma lists)
 *     narrow the sweep, UNIONCTL_CRASH_JOBS (default 2) kill runs side by side,
 *   UNIONCTL_CRASH_REPORT=FILE appends one JSON line per case (points, killed, before/after).
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { loadImages, openStore, type LayerStore } from '../../src/index.js';
import {
  FAULT_SYSCALLS,
  hashSeed,
  killPoints,
  prng,
  runKilledAt,
  samplePoints,
  testEnv,
  traceSyscalls,
  unionctl,
  type KillPoint,
} from '../helpers/faults.js';
import { unmountAllBelow } from '../helpers/mounts.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { fuseProcessesUnder, snapshotStore, stateDiff, type DriverName, type StoreSnapshot } from '../helpers/store-state.js';
import { makeLayerTar, tarDir, writeOciLayout } from '../integration/images-helpers.js';

const csv = (v: string | undefined) => (v === undefined || v === '' ? undefined : v.split(',').map((s) => s.trim()));
const MODE = process.env.UNIONCTL_CRASH === 'full' || process.env.UNIONCTL_CRASH === 'store' ? process.env.UNIONCTL_CRASH : 'sample';
const PER_CASE = Number(process.env.UNIONCTL_CRASH_SAMPLE ?? 4);
const SEED = Number(process.env.UNIONCTL_CRASH_SEED ?? 11);
const JOBS = Math.max(1, Number(process.env.UNIONCTL_CRASH_JOBS ?? 2));
const ONLY_OPS = csv(process.env.UNIONCTL_CRASH_OPS);
const ONLY_DRIVERS = csv(process.env.UNIONCTL_CRASH_DRIVERS);
const ONLY_SYSCALLS = csv(process.env.UNIONCTL_CRASH_SYSCALLS);
const REPORT = process.env.UNIONCTL_CRASH_REPORT;

const DRIVERS: DriverName[] = ['vfs', 'overlay2', 'aufs'];

/** What the operations work with: layer tars and image archives, made once. */
interface Fixtures {
  base: string;
  top: string;
  extra: string;
  /** OCI layout dir of image a:1 (layer L1). */
  imageA: string;
  /** gzip-compressed OCI archive of image b:1 (L1, L2, L3): load shares L1 with a:1. */
  imageB: string;
}

interface Op {
  name: string;
  /** The store before the operation (a fresh root, through the library). */
  setup(store: LayerStore, f: Fixtures): Promise<void>;
  args(f: Fixtures): string[];
}

const layers = async (store: LayerStore, f: Fixtures) => {
  await store.importLayer(f.base, { id: 'base' });
  await store.importLayer(f.top, { id: 'top', parent: 'base' });
};

const OPS: Op[] = [
  { name: 'import', setup: layers, args: (f) => ['import', '--parent', 'top', '--id', 'new', f.extra] },
  {
    name: 'load',
    setup: async (store, f) => void (await loadImages(store, f.imageA)),
    args: (f) => ['load', f.imageB],
  },
  { name: 'create', setup: layers, args: () => ['create', '--parent', 'top', '--id', 'new'] },
  { name: 'create --rw', setup: layers, args: () => ['create', '--rw', '--parent', 'top', '--id', 'new'] },
  { name: 'mount', setup: layers, args: () => ['mount', 'top'] },
  { name: 'mount --rw', setup: layers, args: () => ['mount', '--rw', '--name', 'web', 'top'] },
  {
    name: 'umount',
    setup: async (store, f) => {
      await layers(store, f);
      await store.mount('top');
    },
    args: () => ['umount', 'top'],
  },
  { name: 'rm', setup: layers, args: () => ['rm', 'top'] },
  {
    name: 'rmi',
    setup: async (store, f) => {
      await loadImages(store, f.imageA);
      await loadImages(store, f.imageB);
    },
    args: () => ['rmi', 'b:1'],
  },
  {
    name: 'cleanup',
    setup: async (store, f) => {
      await layers(store, f);
      await store.mount('top');
      await store.create({ id: 'rw', parent: 'top', writable: true });
      await store.mount('rw');
      await store.mount('rw');
    },
    args: () => ['cleanup'],
  },
];

function makeFixtures(dir: string): Fixtures {
  mkdirSync(dir, { recursive: true });
  const file = (name: string, data: Buffer) => {
    writeFileSync(join(dir, name), data);
    return join(dir, name);
  };
  const baseTar = makeLayerTar(dir, 'base', { 'etc/os-release': 'ID=crash\n', 'etc/gone': 'x\n', 'usr/bin/tool': '#!/bin/sh\necho hi\n' });
  const topTar = makeLayerTar(dir, 'top', { 'etc/app.conf': 'a=1\n', 'etc/.wh.gone': '', 'srv/data/one': '1\n'.repeat(100) });
  const extraTar = makeLayerTar(dir, 'extra', { 'opt/x/a': 'a\n', 'opt/x/b': 'b\n'.repeat(3000), 'etc/app.conf': 'a=2\n' });
  const l1 = makeLayerTar(dir, 'l1', { 'etc/os-release': 'ID=img\n', 'bin/sh': 'sh\n' });
  const l2 = makeLayerTar(dir, 'l2', { 'srv/two': '2\n'.repeat(500) });
  const l3 = makeLayerTar(dir, 'l3', { 'srv/three': '3\n', 'etc/.wh.os-release': '' });
  const imageA = writeOciLayout(join(dir, 'image-a'), { name: 'a:1', layers: [{ tar: l1 }] });
  const bDir = writeOciLayout(join(dir, 'image-b'), {
    name: 'b:1',
    layers: [{ tar: l1 }, { tar: l2, compression: 'gzip' }, { tar: l3, compression: 'gzip' }],
  });
  const bTar = tarDir(bDir, join(dir, 'image-b.tar'));
  return {
    base: file('base.tar', baseTar),
    top: file('top.tar', topTar),
    extra: file('extra.tar', extraTar),
    imageA,
    imageB: file('image-b.tar.gz', gzipSync(readFileSync(bTar))),
  };
}

/**
 * What the command left in its temp dir (it runs with TMPDIR=<a dir of its own>): a feature
 * probe or spool must write in the store, where recovery cleans. (/tmp itself is not watched:
 * other processes on a shared host come and go there.)
 */
function tmpLeftovers(tmp: string): string[] {
  return readdirSync(tmp).map((name) => `${tmp}/${name}`);
}

/** Unmounts and removes a store root whatever state it is in; FUSE processes serving it are waited for. */
async function teardown(root: string): Promise<void> {
  unmountAllBelow(root);
  for (let i = 0; i < 100 && fuseProcessesUnder(root).length > 0; i++) await sleep(20);
  for (const p of fuseProcessesUnder(root)) process.kill(p.pid, 'SIGKILL');
  rmSync(root, { recursive: true, force: true });
}

interface Outcome {
  point: KillPoint;
  killed: boolean;
  /** 'before' | 'after' | undefined (neither: an inconsistency). */
  matched?: 'before' | 'after';
  failures: string[];
}

const describePoint = (p: KillPoint) => `${p.syscall}:when=${p.k}${p.beforeStore ? ' (before the store is touched)' : ''}`;

/** Runs `tasks` with at most `jobs` at once, in order of start. */
async function pool<T, R>(items: T[], jobs: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(jobs, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

describe(`crash consistency (${MODE} sweep)`, () => {
  let scratch: Scratch;
  let fixtures: Fixtures;
  let n = 0;

  before(() => {
    scratch = makeScratch({ size: '2g' });
    fixtures = makeFixtures(join(scratch.dir, 'fixtures'));
  });
  after(async () => {
    for (const name of readdirSync(scratch.dir)) if (name.startsWith('store-')) await teardown(join(scratch.dir, name));
    scratch.dispose();
  });

  for (const driver of DRIVERS) {
    if (ONLY_DRIVERS !== undefined && !ONLY_DRIVERS.includes(driver)) continue;
    for (const op of OPS) {
      if (ONLY_OPS !== undefined && !ONLY_OPS.includes(op.name)) continue;
      it(`${op.name} on ${driver}`, { timeout: 6 * 60 * 60_000 }, async (t) => {
        const global = (root: string) => ['--root', root, '--driver', driver];
        const env = testEnv();

        /** A fresh store in the state before the operation. */
        const prepare = async (): Promise<string> => {
          const root = join(scratch.dir, `store-${++n}`);
          const store = await openStore({ root, driver });
          await op.setup(store, fixtures);
          await store.close();
          return root;
        };

        /** `ls` and `images` (recovery runs in both) succeed; then the state. */
        const settle = async (root: string, failures: string[]): Promise<StoreSnapshot> => {
          for (const cmd of ['ls', 'images']) {
            const r = await unionctl([...global(root), cmd], { env });
            if (r.status !== 0) failures.push(`${cmd} failed (exit ${r.status ?? r.signal}): ${r.stderr.trim()}`);
            else if (/warning|error/i.test(r.stderr)) failures.push(`${cmd} warned: ${r.stderr.trim()}`);
          }
          return snapshotStore(root, driver);
        };

        /** `cleanup` leaves nothing mounted, no FUSE process and nothing that must not be left. */
        const cleanUp = async (root: string, failures: string[]) => {
          const r = await unionctl([...global(root), 'cleanup'], { env });
          if (r.status !== 0) failures.push(`cleanup failed (exit ${r.status ?? r.signal}): ${r.stderr.trim()}`);
          const snap = snapshotStore(root, driver);
          for (const p of snap.problems) failures.push(`after cleanup: ${p}`);
          if (snap.state.some((l) => l.startsWith('kernel-mount ') || l.startsWith('mounts ')))
            failures.push(`after cleanup: still mounted: ${snap.state.filter((l) => /^(kernel-)?mounts? /.test(l)).join('; ')}`);
        };

        // The states before and after, and the kill points, from one unkilled traced run.
        const beforeRoot = await prepare();
        const setupFailures: string[] = [];
        const beforeState = await settle(beforeRoot, setupFailures);
        await teardown(beforeRoot);
        const root = await prepare();
        const trace = await traceSyscalls([...global(root), ...op.args(fixtures)], {
          env,
          storeRoot: root,
          traceFile: join(scratch.dir, `trace-${n}`),
        });
        assert.equal(trace.result.status, 0, `the unkilled run failed: ${trace.result.stderr}`);
        const afterState = await settle(root, setupFailures);
        await cleanUp(root, setupFailures);
        await teardown(root);
        assert.deepEqual(beforeState.problems, [], 'the state before the operation has problems');
        assert.deepEqual(afterState.problems, [], 'the state after the operation has problems');
        assert.deepEqual(setupFailures, []);
        assert.notDeepEqual(beforeState.state, afterState.state, 'the operation changed nothing');

        const all = killPoints(trace).filter((p) => ONLY_SYSCALLS === undefined || ONLY_SYSCALLS.includes(p.syscall));
        const random = prng(hashSeed(`${op.name}/${driver}`, SEED));
        const early = all.filter((p) => p.beforeStore);
        const points =
          MODE === 'full'
            ? all
            : MODE === 'store'
              ? [...samplePoints(early, 1, random), ...all.filter((p) => !p.beforeStore)]
              : samplePoints(all, PER_CASE, random);

        const outcomes = await pool(points, JOBS, async (point): Promise<Outcome> => {
          const failures: string[] = [];
          const root = await prepare();
          try {
            const tmp = join(scratch.dir, `tmp-${++n}`);
            mkdirSync(tmp);
            const r = await runKilledAt([...global(root), ...op.args(fixtures)], point, { env: { ...env, TMPDIR: tmp } });
            if (r.timedOut) failures.push('the operation hung');
            if (!r.killed && r.status !== 0)
              failures.push(`the operation failed without a kill (exit ${r.status ?? r.signal}): ${r.stderr.trim()}`);
            const snap = await settle(root, failures);
            failures.push(...snap.problems);
            for (const p of tmpLeftovers(tmp)) failures.push(`${p}: left outside the store`);
            await cleanUp(root, failures);
            rmSync(tmp, { recursive: true, force: true });
            const matched = isSame(snap.state, beforeState.state) ? 'before' : isSame(snap.state, afterState.state) ? 'after' : undefined;
            if (matched === undefined) {
              failures.push(
                `the store is neither as before nor as after the operation:\n  vs before:\n${indent(stateDiff(beforeState.state, snap.state))}\n  vs after:\n${indent(stateDiff(afterState.state, snap.state))}`,
              );
            }
            if (!r.killed && matched !== 'after') failures.push('the operation ran to its end but the store is not as after it');
            return { point, killed: r.killed, matched, failures };
          } finally {
            await teardown(root);
          }
        });

        const killed = outcomes.filter((o) => o.killed).length;
        const rolledBack = outcomes.filter((o) => o.matched === 'before').length;
        const forward = outcomes.filter((o) => o.matched === 'after').length;
        const summary = {
          op: op.name,
          driver,
          mode: MODE,
          points: all.length,
          beforeStore: early.length,
          run: points.length,
          killed,
          before: rolledBack,
          after: forward,
          bySyscall: Object.fromEntries(
            FAULT_SYSCALLS.filter((s) => all.some((p) => p.syscall === s)).map((s) => [s, all.filter((p) => p.syscall === s).length]),
          ),
          failures: outcomes.filter((o) => o.failures.length > 0).map((o) => ({ point: describePoint(o.point), failures: o.failures })),
        };
        t.diagnostic(
          `${op.name} on ${driver}: ${points.length} of ${all.length} kill points run, ${killed} killed, ${rolledBack} rolled back, ${forward} as after`,
        );
        if (REPORT !== undefined) appendFileSync(REPORT, `${JSON.stringify(summary)}\n`);
        const bad = outcomes.filter((o) => o.failures.length > 0);
        assert.equal(
          bad.length,
          0,
          bad
            .map(
              (o) =>
                `killed at ${describePoint(o.point)}${o.killed ? '' : ' (not reached)'}:\n${o.failures.map((f) => `  ${f}`).join('\n')}`,
            )
            .join('\n'),
        );
      });
    }
  }
});

function isSame(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((l, i) => l === b[i]);
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}
