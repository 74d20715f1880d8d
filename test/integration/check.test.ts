/**
 * `unionctl check` (issue 15): per driver that runs here (vfs, overlay2, overlay, aufs through
 * fuse-overlayfs; devicemapper only in the VM), a real store with real layers — a base and a
 * child imported from tars, a writable layer on top written through its mount — is damaged in
 * each way the check knows, the findings' exact codes and subjects are asserted, the repair is
 * made, a second check is clean (or holds exactly what has no repair), and the writable layer's
 * merged view is what it was before the damage.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { checkStore, openStore, type CheckReport, type LayerStore } from '../../src/index.js';
import { runCli, showResult } from '../helpers/cli.js';
import { killPoints, runKilledAt, testEnv, traceSyscalls, type FaultSyscall } from '../helpers/faults.js';
import { isMountedAt } from '../helpers/mounts.js';
import { toolsMissing } from '../helpers/requires.js';
import { makeScratch, scratchMissing } from '../helpers/scratch.js';
import { buildTar } from '../helpers/tarbuild.js';
import { eventually } from '../helpers/wait.js';

const BASE = buildTar([
  { name: 'etc/', type: 'dir', mode: 0o755 },
  { name: 'etc/hostname', content: 'base\n' },
  { name: 'bin/', type: 'dir', mode: 0o755 },
  { name: 'bin/tool', content: 'tool v1\n', mode: 0o755 },
  { name: 'var/', type: 'dir', mode: 0o755 },
  { name: 'var/old', content: 'old\n' },
]);
const MID = buildTar([
  { name: 'etc/', type: 'dir', mode: 0o755 },
  { name: 'etc/hostname', content: 'mid\n' },
  { name: 'usr/', type: 'dir', mode: 0o755 },
  { name: 'usr/x', content: 'x\n' },
  { name: 'var/', type: 'dir', mode: 0o755 },
  { name: 'var/.wh.old', content: '' },
]);

type DriverName = 'vfs' | 'overlay2' | 'overlay' | 'aufs';

/** Where each driver keeps an image layer's own files (relative to its home). */
const FILES_OF: Record<DriverName, (id: string) => string> = {
  vfs: (id) => `dir/${id}`,
  overlay2: (id) => `${id}/diff`,
  overlay: (id) => `${id}/root`,
  aufs: (id) => `diff/${id}`,
};

/** The dir holding a layer's own files, for the drivers where a layer has more than that dir (vfs: the dir is the layer). */
const OWN_FILES: Partial<Record<DriverName, (id: string) => string>> = {
  overlay2: (id) => `${id}/diff`,
  overlay: (id) => `${id}/upper`, // a layer made on an image layer: an overlay child
  aufs: (id) => `diff/${id}`,
};

const SKIP: Record<DriverName, string | undefined> = {
  vfs: scratchMissing,
  overlay2: scratchMissing,
  overlay: scratchMissing,
  aufs: scratchMissing ?? toolsMissing(['fuse-overlayfs']),
};

interface Rig {
  root: string;
  home: string;
  store: LayerStore;
  /** The writable layer's merged view as it was made: paths, types, sizes and content hashes. */
  view: string;
}

/** base ← mid (imported) ← top (writable, a file written through its mount); closed and unmounted at the end. */
async function makeRig(t: TestContext, driver: DriverName): Promise<Rig> {
  const scratch = makeScratch();
  const opened: { store?: LayerStore } = {};
  // The store's mounts go before the scratch filesystem under them (after hooks run in order).
  t.after(async () => {
    try {
      await opened.store?.cleanup();
      await opened.store?.close();
    } finally {
      scratch.dispose();
    }
  });
  const root = join(scratch.dir, 'store');
  writeFileSync(join(scratch.dir, 'base.tar'), BASE);
  writeFileSync(join(scratch.dir, 'mid.tar'), MID);
  const store = await openStore({ root, driver, log: () => {} });
  opened.store = store;
  await store.importLayer(join(scratch.dir, 'base.tar'), { id: 'base' });
  await store.importLayer(join(scratch.dir, 'mid.tar'), { id: 'mid', parent: 'base' });
  await store.create({ id: 'top', parent: 'mid', writable: true });
  const { path } = await store.mount('top');
  writeFileSync(join(path, 'etc', 'added'), 'written through the mount\n');
  await store.unmount('top');
  return { root, home: store.driver.home, store, view: await viewOf(store, 'top') };
}

/** The layer's merged view, mounted for the listing and released. */
async function viewOf(store: LayerStore, id: string): Promise<string> {
  const { path } = await store.mount(id);
  try {
    return execFileSync(
      'sh',
      ['-c', 'cd "$1" && find . -printf "%p %y %s\\n" | sort && find . -type f -exec sha256sum {} + | sort', 'sh', path],
      {
        encoding: 'utf8',
      },
    );
  } finally {
    await store.unmount(id);
  }
}

/** "CODE subject" of each finding, sorted. */
function codes(findings: CheckReport['findings']): string[] {
  return findings.map((f) => `${f.code} ${f.subject}`).sort();
}

/** Checks, repairs, checks again; returns the three reports. */
async function checkRepairCheck(store: LayerStore, opts: { removeOrphans?: boolean } = {}) {
  // Layout damage can keep a layer from being mounted, and its tar from being rebuilt: the first
  // check looks at the layout only (the content check has a test of its own).
  const before = await checkStore(store, { skipContent: true });
  const actions: string[] = [];
  const repair = await checkStore(store, {
    repair: true,
    ...opts,
    onRepair: (f, action, failed) => actions.push(`${f.code} ${action} ${failed?.message ?? ''}`),
  });
  const after = await checkStore(store);
  return { before, repair, after, actions };
}

/** Damages the layout of a driver's home (layers base, mid, top); returns the findings expected. */
type LayoutDamage = (rig: Rig) => { found: string[]; verify?: (rig: Rig) => void };

const LAYOUT_DAMAGE: Partial<Record<DriverName, LayoutDamage>> = {
  overlay2: ({ home }) => {
    const lid = (id: string) => readFileSync(join(home, id, 'link'), 'utf8');
    const [base, mid, top] = [lid('base'), lid('mid'), lid('top')];
    rmSync(join(home, 'l', mid)); // mid's link
    symlinkSync('../gone/diff', join(home, 'l', 'AAAAAAAAAAAAAAAAAAAAAAAAAA')); // dangling
    symlinkSync('../base/diff', join(home, 'l', 'BBBBBBBBBBBBBBBBBBBBBBBBBB')); // a second link to base
    rmSync(join(home, 'top', 'link')); // top's link file (its l/ link stays: taken over)
    writeFileSync(join(home, 'top', 'lower'), `l/${base}`); // the parent left out
    writeFileSync(join(home, 'mid', 'lower'), 'l/CCCCCCCCCCCCCCCCCCCCCCCCCC'); // names no link
    rmSync(join(home, 'top', 'work'), { recursive: true });
    rmSync(join(home, 'base', 'committed'));
    writeFileSync(join(home, 'top', 'committed'), ''); // nothing is built on top
    return {
      found: [
        'COMMITTED_MISSING overlay2/base/committed',
        'COMMITTED_STALE overlay2/top/committed',
        'LINK_DANGLING overlay2/l/AAAAAAAAAAAAAAAAAAAAAAAAAA',
        'LINK_DUPLICATE overlay2/l/BBBBBBBBBBBBBBBBBBBBBBBBBB',
        'LINK_FILE_MISSING overlay2/top/link',
        `LINK_MISSING overlay2/l/${mid}`,
        'LOWER_MISSING_LINK overlay2/mid/lower',
        'LOWER_WRONG overlay2/top/lower',
        'WORK_MISSING overlay2/top/work',
      ],
      verify: () => {
        assert.equal(lid('top'), top, 'the link top had is taken over');
        assert.equal(readFileSync(join(home, 'top', 'lower'), 'utf8'), `l/${mid}:l/${base}`);
        assert.equal(readFileSync(join(home, 'mid', 'lower'), 'utf8'), `l/${base}`);
        assert.deepEqual(readdirSync(join(home, 'l')).sort(), [base, mid, top].sort());
        assert.equal(execFileSync('stat', ['-c', '%a', join(home, 'top', 'link')], { encoding: 'utf8' }).trim(), '644');
      },
    };
  },
  overlay: ({ home }) => {
    writeFileSync(join(home, 'top', 'lower-id'), 'base'); // mid is the image layer below it
    mkdirSync(join(home, 'mid', 'tmproot123456'));
    writeFileSync(join(home, 'mid', 'tmproot123456', 'half'), 'a farm a killed apply left');
    return {
      found: ['LOWER_ID_WRONG overlay/top/lower-id', 'STAGING_LEFTOVER overlay/mid/tmproot123456'],
      verify: () => assert.equal(readFileSync(join(home, 'top', 'lower-id'), 'utf8'), 'mid'),
    };
  },
  aufs: ({ home }) => {
    writeFileSync(join(home, 'layers', 'top'), 'base\nmid\n'); // wrong order
    rmSync(join(home, 'layers', 'mid'));
    return {
      found: ['LAYERS_FILE_MISSING aufs/layers/mid', 'LAYERS_FILE_WRONG aufs/layers/top'],
      verify: () => {
        assert.equal(readFileSync(join(home, 'layers', 'top'), 'utf8'), 'mid\nbase\n');
        assert.equal(readFileSync(join(home, 'layers', 'mid'), 'utf8'), 'base\n');
      },
    };
  },
};

for (const driver of ['vfs', 'overlay2', 'overlay', 'aufs'] as const) {
  describe(`unionctl check on ${driver}`, { skip: SKIP[driver] }, () => {
    it('finds nothing on a store as unionctl made it', async (t) => {
      const rig = await makeRig(t, driver);
      const report = await checkStore(rig.store);
      assert.deepEqual(codes(report.findings), []);
      assert.deepEqual(report.remaining, []);
    });

    it('finds and repairs what every driver shares: orphans, leftovers, reference files, stray mounts', async (t) => {
      const rig = await makeRig(t, driver);
      const { store, root, home } = rig;
      // A layer in the home no record knows; a record whose storage is gone; a tar-split of no layer.
      await store.driver.create('stray');
      await store.create({ id: 'leaf', parent: 'base' });
      await store.driver.remove('leaf', { parent: 'base' });
      copyFileSync(join(root, 'layerdb', 'base.tar-split.gz'), join(root, 'layerdb', 'ghost.tar-split.gz'));
      // What a killed push left in tmp/; a damaged reference file; a mount on a layer's own files.
      mkdirSync(join(root, 'tmp', 'push-0123456789ab'), { recursive: true });
      writeFileSync(join(root, 'driver-state', driver, 'refs', 'mid'), '{not json');
      const bindSource = join(root, '..', 'bind-source');
      mkdirSync(bindSource);
      const bindTarget = join(home, FILES_OF[driver]('base'), 'var');
      execFileSync('mount', ['--bind', bindSource, bindTarget]);
      t.after(() => {
        if (isMountedAt(bindTarget)) execFileSync('umount', [bindTarget]);
      });

      const first = await checkStore(store, { skipContent: true });
      const strayRel = `${driver}/${FILES_OF[driver]('base')}/var`;
      assert.deepEqual(codes(first.findings), [
        'LAYER_STORAGE_MISSING leaf',
        'LAYER_UNACCOUNTED stray',
        `MOUNT_STRAY ${strayRel}`,
        `REFS_DAMAGED driver-state/${driver}/refs/mid`,
        'STAGING_LEFTOVER tmp/push-0123456789ab',
        'TARSPLIT_ORPHAN layerdb/ghost.tar-split.gz',
      ]);
      assert.deepEqual(first.findings.map((f) => `${f.code} ${f.when}`).sort(), [
        'LAYER_STORAGE_MISSING remove-orphans',
        'LAYER_UNACCOUNTED remove-orphans',
        'MOUNT_STRAY default',
        'REFS_DAMAGED default',
        'STAGING_LEFTOVER remove-orphans',
        'TARSPLIT_ORPHAN default',
      ]);

      // --repair alone leaves the orphans; --remove-orphans takes them too.
      const plain = await checkRepairCheck(store);
      assert.deepEqual(codes(plain.after.findings), [
        'LAYER_STORAGE_MISSING leaf',
        'LAYER_UNACCOUNTED stray',
        'STAGING_LEFTOVER tmp/push-0123456789ab',
      ]);
      assert.deepEqual(codes(plain.repair.remaining), codes(plain.after.findings));
      assert.equal(plain.actions.length, 3, plain.actions.join('\n'));
      assert.equal(isMountedAt(bindTarget), false, 'the stray mount is gone');
      assert.equal(await store.driver.exists('stray'), true, 'an unaccounted layer stays without --remove-orphans');

      const orphans = await checkRepairCheck(store, { removeOrphans: true });
      assert.deepEqual(codes(orphans.after.findings), []);
      assert.ok(orphans.repair.findings.every((f) => f.repaired));
      assert.equal(await store.driver.exists('stray'), false);
      assert.deepEqual(
        readdirSync(join(root, 'layerdb')).filter((n) => n.startsWith('leaf') || n.startsWith('ghost')),
        [],
      );
      assert.equal(await viewOf(store, 'top'), rig.view, "the writable layer's view is unchanged");
    });

    it('reports an imported layer whose files no longer rebuild its diff ID, and an image naming a missing layer: no repair', async (t) => {
      const { store, root, home } = await makeRig(t, driver);
      // Same size, other bytes: the tar rebuilds, with another digest.
      writeFileSync(join(home, FILES_OF[driver]('base'), 'bin', 'tool'), 'tool v2\n');
      const config = JSON.stringify({ rootfs: { type: 'layers', diff_ids: ['sha256:00'] } });
      const imageId = `sha256:${execFileSync('sha256sum', { input: config, encoding: 'utf8' }).split(' ')[0]}`;
      const image = {
        id: imageId,
        names: ['lost:latest'],
        layers: [{ id: 'gone', diffId: 'sha256:00', chainId: 'sha256:00' }],
        config,
        loaded: new Date().toISOString(),
      };
      mkdirSync(join(root, 'images'), { recursive: true });
      writeFileSync(join(root, 'images', `${imageId.slice(7)}.json`), JSON.stringify(image));

      const before = await checkStore(store);
      const { repair, after, actions } = await checkRepairCheck(store, { removeOrphans: true });
      const expected = [`IMAGE_LAYER_MISSING ${imageId}`, 'TARSPLIT_MISMATCH base'];
      assert.deepEqual(codes(before.findings), expected);
      assert.ok(before.findings.every((f) => f.when === 'never' && f.repair !== ''));
      assert.deepEqual(actions, []);
      assert.deepEqual(codes(repair.remaining), expected);
      assert.deepEqual(codes(after.findings), expected);
      assert.deepEqual(codes((await checkStore(store, { skipContent: true })).findings), [`IMAGE_LAYER_MISSING ${imageId}`]);
    });

    const ownFiles = OWN_FILES[driver];
    if (ownFiles !== undefined) {
      it('reports a layer whose files are gone and a damaged record, with no repair', async (t) => {
        const { store, root, home } = await makeRig(t, driver);
        await store.create({ id: 'leaf', parent: 'base' });
        rmSync(join(home, ownFiles('leaf')), { recursive: true });
        writeFileSync(join(root, 'layerdb', 'torn.json'), '{"id": "torn", "par');
        const { before, after } = await checkRepairCheck(store, { removeOrphans: true });
        const never = ['LAYER_INCOMPLETE leaf', 'RECORD_DAMAGED layerdb/torn.json'];
        // overlay2's l/ link of the layer points nowhere now: that one is repaired.
        assert.deepEqual(
          codes(before.findings).filter((c) => !c.startsWith('LINK_DANGLING')),
          never,
        );
        assert.ok(before.findings.every((f) => f.when === (f.code === 'LINK_DANGLING' ? 'default' : 'never')));
        assert.deepEqual(codes(after.findings), never);
      });
    }

    if (driver !== 'vfs') {
      it('unmounts a union mounted that no reference counts (a process killed mounting it)', async (t) => {
        const rig = await makeRig(t, driver);
        const { path } = await rig.store.mount('top');
        rmSync(join(rig.root, 'driver-state', driver, 'refs', 'top'));
        const { before, after } = await checkRepairCheck(rig.store);
        assert.deepEqual(codes(before.findings), ['MOUNT_LEAKED top']);
        assert.deepEqual(codes(after.findings), []);
        assert.equal(isMountedAt(path), false);
        assert.equal(await viewOf(rig.store, 'top'), rig.view);
      });
    }

    if (driver === 'aufs') {
      it('stops a fuse-overlayfs process that serves a mount point where nothing is mounted', async (t) => {
        const rig = await makeRig(t, driver);
        // A process the way the check finds them (argv[0] fuse-overlayfs, the mount point last), without a mount.
        const target = join(rig.home, 'mnt', 'top');
        const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1 << 30)', '--', '-o', 'lowerdir=x', target], {
          argv0: 'fuse-overlayfs',
          stdio: 'ignore',
        });
        t.after(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        });
        const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal)));
        const cmdline = () => {
          try {
            return readFileSync(`/proc/${child.pid}/cmdline`, 'utf8');
          } catch {
            return '';
          }
        };
        await eventually('the process runs as fuse-overlayfs', () => cmdline().startsWith('fuse-overlayfs\0'));
        const { before, after } = await checkRepairCheck(rig.store);
        assert.deepEqual(codes(before.findings), ['FUSE_ORPHAN aufs/mnt/top']);
        assert.equal(await exited, 'SIGTERM');
        assert.deepEqual(codes(after.findings), []);
        assert.equal(await viewOf(rig.store, 'top'), rig.view);
      });
    }

    const layout = LAYOUT_DAMAGE[driver];
    if (layout !== undefined) {
      it(`finds and repairs damage to ${driver}'s own layout files`, async (t) => {
        const rig = await makeRig(t, driver);
        const expected = layout(rig);
        const { before, repair, after, actions } = await checkRepairCheck(rig.store);
        assert.deepEqual(codes(before.findings), expected.found);
        assert.ok(
          before.findings.every((f) => f.when === 'default'),
          JSON.stringify(before.findings, null, 2),
        );
        assert.ok(
          repair.findings.every((f) => f.repaired),
          JSON.stringify(repair.findings, null, 2),
        );
        assert.ok(actions.length >= expected.found.length, actions.join('\n'));
        assert.deepEqual(codes(after.findings), []);
        expected.verify?.(rig);
        assert.equal(await viewOf(rig.store, 'top'), rig.view, "the writable layer's view is unchanged");
      });
    }
  });
}

describe('unionctl check, the command', { skip: scratchMissing }, () => {
  it('exits 4 while problems remain, prints each repair, and 0 once repaired; --remove-orphans needs --repair', async (t) => {
    const rig = await makeRig(t, 'overlay2');
    const lid = readFileSync(join(rig.home, 'mid', 'link'), 'utf8');
    rmSync(join(rig.home, 'l', lid));
    await rig.store.driver.create('stray');
    const g = ['--root', rig.root];
    const found = runCli([...g, 'check', '--quick']);
    assert.equal(found.status, 4, showResult(found));
    assert.match(found.stdout, /^LINK_MISSING overlay2\/l\/\S+$/m);
    assert.match(found.stdout, /^LAYER_UNACCOUNTED stray$/m);
    assert.match(found.stdout, /2 problems found, 2 remaining/);

    const usage = runCli([...g, 'check', '--remove-orphans']);
    assert.equal(usage.status, 1, showResult(usage));
    assert.match(usage.stderr, /--remove-orphans is an option of --repair/);

    const repaired = runCli([...g, 'check', '--repair', '--json']);
    assert.equal(repaired.status, 4, showResult(repaired));
    assert.match(repaired.stderr, new RegExp(`^repaired LINK_MISSING overlay2/l/${lid}: made l/${lid}`, 'm'));
    const report = JSON.parse(repaired.stdout) as { clean: boolean; remaining: Array<{ code: string }> };
    assert.equal(report.clean, false);
    assert.deepEqual(
      report.remaining.map((f) => f.code),
      ['LAYER_UNACCOUNTED'],
    );

    const all = runCli([...g, 'check', '--repair', '--remove-orphans']);
    assert.equal(all.status, 0, showResult(all));
    assert.match(all.stdout, /^repaired LAYER_UNACCOUNTED stray: /m);
    const clean = runCli([...g, 'check']);
    assert.equal(clean.status, 0, showResult(clean));
    assert.equal(clean.stdout, 'no problems found\n');
  });
});

describe('check --repair killed at each change it makes', { skip: scratchMissing ?? toolsMissing(['strace']) }, () => {
  /** The calls where a repair changes the store: killed at one, the next repair must finish the job. */
  const CHANGING = new Set<FaultSyscall>([
    'rename',
    'renameat',
    'renameat2',
    'symlink',
    'symlinkat',
    'unlink',
    'unlinkat',
    'mkdir',
    'mkdirat',
  ]);
  /** At most this many kill points per syscall, spread evenly over the calls the repair makes. */
  const PER_SYSCALL = 4;

  it('is finished by the next check --repair, with the view unchanged (overlay2)', async (t) => {
    const traced = await makeRig(t, 'overlay2');
    LAYOUT_DAMAGE.overlay2!(traced);
    const args = ['--root', traced.root, 'check', '--repair', '--quick'];
    const trace = await traceSyscalls(args, { storeRoot: traced.root, traceFile: join(traced.root, '..', 'trace.txt'), env: testEnv() });
    assert.equal(trace.result.status, 0, trace.result.stderr);
    const points = killPoints(trace).filter((p) => !p.beforeStore && CHANGING.has(p.syscall));
    assert.ok(points.length > 0, 'the repair changes the store');
    const chosen = [...CHANGING].flatMap((syscall) => {
      const of = points.filter((p) => p.syscall === syscall);
      return of.filter((_, i) => i % Math.ceil(of.length / PER_SYSCALL) === 0);
    });
    let killed = 0;
    for (const point of chosen) {
      await t.test(`${point.syscall} #${point.k}`, async (tt) => {
        const rig = await makeRig(tt, 'overlay2');
        LAYOUT_DAMAGE.overlay2!(rig);
        const run = await runKilledAt(['--root', rig.root, 'check', '--repair', '--quick'], point, { env: testEnv() });
        if (run.killed) killed++;
        const again = runCli(['--root', rig.root, 'check', '--repair', '--quick']);
        assert.equal(again.status, 0, showResult(again));
        const clean = runCli(['--root', rig.root, 'check']);
        assert.equal(clean.stdout, 'no problems found\n', showResult(clean));
        assert.equal(await viewOf(rig.store, 'top'), rig.view);
      });
    }
    assert.ok(killed > 0, 'some runs were killed');
  });
});
