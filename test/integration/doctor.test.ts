/**
 * Issue 15 part 4: `unionctl doctor` reports this machine's facts as they are (checked against the
 * files and programs they come from), and `unionctl mount --explain` predicts exactly the mount
 * that `unionctl mount` then makes (method, paths and options, compared with /proc/self/mountinfo
 * or fuse-overlayfs's argv), for overlay2 (short chains, and chains deep enough for the relative
 * l/ form and for lowerdir+), overlay, aufs (fuse-overlayfs here) and vfs (a single dir). Neither
 * command leaves anything mounted, or anything in the store root.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openStore, type LayerStore, type MountExplanation } from '../../src/index.js';
import type { DoctorReport } from '../../src/drivers/doctor.js';
import { findFuseProcess, findFuseOverlayfs } from '../../src/drivers/aufs/fuse.js';
import { findMount, parseOverlayOptions, readMountInfo } from '../../src/sys/index.js';
import { runCli, showResult } from '../helpers/cli.js';
import { makeScratch, scratchMissing, withScratchFs, type CleanupRegistrar } from '../helpers/scratch.js';

/** `unionctl --json --root ROOT ARGS` → its document (the command must succeed). */
function cliJson<T>(root: string, args: string[], driver?: string): T {
  const r = runCli(['--root', root, ...(driver === undefined ? [] : ['--driver', driver]), '--json', ...args]);
  assert.equal(r.status, 0, showResult(r));
  return JSON.parse(r.stdout) as T;
}

/** The mounts below `dir` (a test's scratch fs) as text lines: what must not change while doctor and --explain run. */
function mountTable(dir: string): string[] {
  return readMountInfo()
    .filter((m) => m.mountPoint.startsWith(dir + '/'))
    .map((m) => `${m.mountPoint} ${m.fsType} ${m.superOptions.join(',')}`);
}

function inProcFilesystems(name: string): boolean {
  return readFileSync('/proc/filesystems', 'utf8')
    .split('\n')
    .some((l) => l.split('\t').pop() === name);
}

/** A chain of `depth` empty image layers on top of each other, ids c0…; returns the top id. */
async function chain(store: LayerStore, depth: number, prefix = 'c'): Promise<string> {
  let parent: string | undefined;
  for (let i = 0; i < depth; i++) parent = (await store.create({ id: `${prefix}${i}`, parent })).id;
  return parent!;
}

/** `mount --explain` (mountinfo unchanged: nothing mounted), then `mount`, whose mount must be the one explained. */
function explainThenMount(root: string, layer: string, driver?: string): MountExplanation {
  const before = mountTable(root);
  const explained = cliJson<MountExplanation>(root, ['mount', '--explain', layer], driver);
  assert.deepEqual(mountTable(root), before, 'mount --explain mounted nothing');
  const mounted = cliJson<{ path: string }>(root, ['mount', layer], driver);
  assert.equal(mounted.path, explained.path, 'mount prints the path --explain said');
  assertMountIsPlan(explained);
  return explained;
}

/** The kernel's view of the union (and of the read-only bind, if any) is what the plan said. */
function assertMountIsPlan(e: MountExplanation): void {
  const plan = e.plan;
  if (e.bind !== null && e.bind !== undefined) {
    const bind = findMount(e.bind.target);
    assert.ok(bind !== undefined, `the read-only bind is at ${e.bind.target}`);
    assert.ok(bind.mountOptions.includes('ro'), `${e.bind.target} is mounted read-only`);
  }
  if (plan.method === 'single-dir') {
    // Nothing of its own is mounted at the layer's dir (a bind of it may be, elsewhere).
    assert.equal(findMount(plan.path)?.mountPoint === plan.path, false, `${plan.path} is a plain dir`);
    return;
  }
  const m = findMount(plan.path);
  assert.ok(m !== undefined, `something is mounted at ${plan.path}`);
  assert.equal(m.fsType, plan.fsType);
  if (plan.method === 'fuse-overlayfs') {
    const proc = findFuseProcess(plan.path);
    assert.ok(proc !== undefined, 'fuse-overlayfs serves the mount');
    assert.deepEqual(proc.argv.slice(1), plan.data, 'fuse-overlayfs got the arguments explained');
    return;
  }
  const shown = m.superOptions.some((o) => o.startsWith('lowerdir+='))
    ? 'new-api'
    : parseOverlayOptions(m.superOptions).lowerdirs[0]!.startsWith('/')
      ? 'absolute'
      : 'relative';
  assert.equal(shown, plan.method, `the kernel shows a ${shown} mount, --explain said ${plan.method}`);
  // The paths are shown as handed over; index and userxattr are shown where they differ from the module's defaults.
  const handed = plan.method === 'new-api' ? plan.data.filter((d) => !d.startsWith('source=')) : plan.data[0]!.split(',');
  const isPath = (o: string) => /^(lowerdir\+?|upperdir|workdir)=/.test(o);
  for (const option of handed.filter(isPath))
    assert.ok(m.superOptions.includes(option), `mountinfo of ${plan.path} shows ${option.slice(0, 200)}`);
  const shownPaths = m.superOptions.filter(isPath);
  assert.equal(shownPaths.length, handed.filter(isPath).length, 'no branch but those explained');
  const other = parseOverlayOptions(m.superOptions).other;
  if (handed.includes('index=off')) assert.ok(other.index === undefined || other.index === 'off', `index is off (${String(other.index)})`);
  assert.equal(other.userxattr === true, handed.includes('userxattr'), 'userxattr as explained');
}

/**
 * A scratch fs with a store of `driver` at <scratch>/root; one after-hook releases every mount,
 * cleans the driver up and only then disposes of the scratch fs (which fails on leftovers).
 */
async function storeFor(t: CleanupRegistrar, driver: string, size = '64m'): Promise<{ root: string; store: LayerStore }> {
  const scratch = makeScratch({ size });
  const root = join(scratch.dir, 'root');
  let store: LayerStore;
  try {
    store = await openStore({ root, driver });
  } catch (e) {
    scratch.dispose();
    throw e;
  }
  t.after(async () => {
    try {
      runCli(['--root', root, 'umount', '--all']);
      await store.cleanup();
      await store.close();
    } finally {
      scratch.dispose();
    }
  });
  return { root, store };
}

function decision(e: MountExplanation, name: string): string | undefined {
  return e.plan.decisions.find((d) => d.name === name)?.value;
}

describe('unionctl doctor', { skip: scratchMissing }, () => {
  it('reports the facts of this machine and leaves nothing behind', async (t) => {
    const dir = await withScratchFs(t, { size: '64m' });
    const root = join(dir, 'root');
    // A store root that exists (probes run in its tmp/), and one that does not (a temp dir is used, the root stays absent).
    cliJson(root, ['create', '--id', 'base'], 'vfs');
    const entries = readdirSync(root).sort();
    const before = mountTable(dir);
    const report = cliJson<DoctorReport>(root, ['doctor']);
    assert.deepEqual(mountTable(dir), before, 'doctor leaves nothing mounted');
    assert.deepEqual(readdirSync(root).sort(), entries, 'doctor leaves nothing in the store root');
    assert.ok(report.scratch.startsWith(join(root, 'tmp') + '/'), `probes ran under the root's tmp/ (${report.scratch})`);
    // What a doctor killed mid-probe left (named with its pid, now dead) is removed by the next one.
    const deadPid = spawnSync('true').pid!;
    const left = join(root, 'tmp', `doctor-${deadPid}-left`);
    mkdirSync(join(left, '.overlay-probe-1-x'), { recursive: true });
    cliJson<DoctorReport>(root, ['doctor']);
    assert.equal(existsSync(left), false, "the dead doctor's scratch dir is gone");
    const missing = join(dir, 'no-store');
    cliJson<DoctorReport>(missing, ['doctor']);
    assert.equal(existsSync(missing), false, 'doctor made no store root');

    const fact = (name: string) => {
      const f = report.facts.find((x) => x.name === name);
      assert.ok(f !== undefined, `doctor reports ${name}`);
      assert.ok(f.consequences.length > 0, `${name} says what it means`);
      return f.value;
    };
    assert.equal(fact('overlay'), inProcFilesystems('overlay') ? 'yes' : 'no');
    assert.equal(fact('erofs'), inProcFilesystems('erofs') ? 'yes' : 'no');
    assert.equal(fact('aufs'), inProcFilesystems('aufs') ? 'yes' : 'no');
    const dm = existsSync('/dev/mapper/control') || /\bdevice-mapper\b/.test(readFileSync('/proc/misc', 'utf8'));
    assert.equal(fact('device-mapper'), dm ? 'yes' : 'no');
    if (!dm)
      assert.equal(report.drivers.find((d) => d.name === 'devicemapper')?.usable, false, 'no device-mapper: devicemapper cannot run');
    assert.equal(fact('fuse-overlayfs').split(' ')[0], findFuseOverlayfs() ?? 'no');
    assert.equal(fact('page-size'), execFileSync('getconf', ['PAGESIZE']).toString().trim());
    const maxUserNs = readFileSync('/proc/sys/user/max_user_namespaces', 'utf8').trim();
    assert.match(fact('user-namespaces'), new RegExp(`max_user_namespaces=${maxUserNs}\\b`));
    // tmpfs: d_type, trusted.* and (since Linux 6.6) user.* xattrs; no project quota.
    assert.equal(fact('d_type'), 'yes');
    assert.equal(fact('xattr.trusted'), 'yes');
    assert.match(fact('backing-fs'), /^tmpfs/);
    assert.match(fact('project-quota'), /^no/);
    if (inProcFilesystems('overlay')) {
      const paramDir = '/sys/module/overlay/parameters';
      for (const p of readdirSync(paramDir)) {
        assert.ok(
          fact('overlay.parameters')
            .split(' ')
            .includes(`${p}=${readFileSync(join(paramDir, p), 'utf8').trim()}`),
          `overlay.parameters shows ${p}`,
        );
      }
      assert.equal(fact('overlay.mount'), 'yes', 'a writable overlay mounts on tmpfs');
      assert.equal(fact('overlay.index'), existsSync(join(paramDir, 'index')) ? 'off' : 'not set');
      assert.equal(report.drivers.find((d) => d.name === 'overlay2')?.usable, true);
    }
    assert.equal(report.drivers.find((d) => d.name === 'vfs')?.usable, true);
    // The human form: a table naming every fact.
    const human = runCli(['--root', root, 'doctor']);
    assert.equal(human.status, 0, showResult(human));
    for (const f of report.facts) assert.match(human.stdout, new RegExp(`^${f.name.replace(/[.+]/g, '\\$&')}\\s`, 'm'));
  });
});

describe(
  'unionctl mount --explain predicts the mount',
  { skip: scratchMissing || (inProcFilesystems('overlay') ? false : 'no overlayfs') },
  () => {
    it('overlay2: short chains, a base layer, a writable layer; relative l/ paths and lowerdir+ for deep chains', async (t) => {
      const { root, store } = await storeFor(t, 'overlay2', '256m');
      const top = await chain(store, 3, 's');
      const short = explainThenMount(root, top);
      assert.equal(short.plan.method, 'absolute');
      assert.equal(short.readOnly, true);
      assert.equal(decision(short, 'union'), 'writable', 'an image layer without children mounts its diff as the upper');
      assert.ok((short.plan.dataBytes ?? 0) <= (short.plan.pageSize ?? 0));
      const base = explainThenMount(root, 's0');
      assert.equal(base.plan.method, 'single-dir', 'a layer without a parent is never mounted');
      // Explaining what is mounted: mount would only count.
      assert.equal(cliJson<MountExplanation>(root, ['mount', '--explain', top]).mounted, true);

      await store.create({ id: 'w', parent: top, writable: true });
      const writable = explainThenMount(root, 'w');
      assert.equal(writable.readOnly, false);
      assert.equal(writable.bind, null);
      assert.equal(writable.plan.method, 'absolute');

      // Deep enough that absolute paths pass the page, then that relative ones do too.
      const relative = explainThenMount(root, await chain(store, 100, 'r'));
      assert.equal(relative.plan.method, 'relative');
      assert.equal(relative.plan.cwd, join(root, 'overlay2'));
      const human = runCli(['--root', root, 'mount', '--explain', 'r99']);
      assert.equal(human.status, 0, showResult(human));
      assert.match(human.stdout, /^method\s+relative \(overlay\)$/m);
      assert.match(human.stdout, /^index\s+(off|not set)\s/m, 'the decisions, each with its reason');
      const deep = explainThenMount(root, await chain(store, 160, 'd'));
      assert.equal(deep.plan.method, 'new-api');
      assert.equal(deep.plan.data.filter((d) => d.startsWith('lowerdir+=')).length, 159);
    });

    it('overlay: an image layer is a single dir, a writable layer one overlay of its image root', async (t) => {
      const { root, store } = await storeFor(t, 'overlay', '64m');
      await store.create({ id: 'img' });
      await store.create({ id: 'ctr', parent: 'img', writable: true });
      assert.equal(explainThenMount(root, 'img').plan.method, 'single-dir');
      const ctr = explainThenMount(root, 'ctr');
      assert.equal(ctr.plan.method, 'absolute');
      assert.ok(ctr.plan.data[0]!.includes(`lowerdir=${join(root, 'overlay', 'img', 'root')}`));
    });

    it(
      'aufs with fuse-overlayfs: the arguments fuse-overlayfs is started with',
      { skip: findFuseOverlayfs() === undefined ? 'no fuse-overlayfs' : inProcFilesystems('aufs') ? 'kernel aufs here' : false },
      async (t) => {
        const { root, store } = await storeFor(t, 'aufs', '64m');
        const top = await chain(store, 3, 'a');
        const image = explainThenMount(root, top);
        assert.equal(image.plan.method, 'fuse-overlayfs');
        assert.equal(decision(image, 'union'), 'read-only');
        await store.create({ id: 'aw', parent: top, writable: true });
        const writable = explainThenMount(root, 'aw');
        assert.equal(decision(writable, 'union'), 'writable');
        assert.equal(explainThenMount(root, 'a0').plan.method, 'single-dir');
      },
    );

    it('vfs: every layer is a single dir; nothing but the read-only bind is mounted', async (t) => {
      const { root, store } = await storeFor(t, 'vfs', '64m');
      const top = await chain(store, 2, 'v');
      const image = explainThenMount(root, top);
      assert.equal(image.plan.method, 'single-dir');
      assert.equal(image.plan.path, join(root, 'vfs', 'dir', top));
      await store.create({ id: 'vw', parent: top, writable: true });
      const before = mountTable(root);
      const writable = explainThenMount(root, 'vw');
      assert.equal(writable.plan.method, 'single-dir');
      assert.deepEqual(mountTable(root), before, 'a writable vfs layer is mounted by nothing');
      // --rw on an image layer would make a layer: refused, nothing made.
      const r = runCli(['--root', root, 'mount', '--explain', '--rw', top]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /cannot be explained before it exists/);
      assert.equal((await store.list()).length, 3);
    });
  },
);
