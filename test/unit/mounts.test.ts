/**
 * The one mount lifecycle (src/graph/mounts.ts) with a fake Mounter: "mounted" is a marker file,
 * so these run without root. The drivers' real mounts are exercised by the conformance suite.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnionctlError } from '../../src/errors.js';
import { MountLifecycle, type Mounter } from '../../src/graph/mounts.js';
import { bootId } from '../../src/sys/index.js';

const mountsModule = new URL('../../src/graph/mounts.js', import.meta.url).href;
const dir = mkdtempSync(join(tmpdir(), 'unionctl-mounts-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;

interface Fake {
  lifecycle: MountLifecycle;
  stateDir: string;
  base: string;
  calls: { mount: number; unmount: number };
  marker(id: string): string;
  mountPoint(id: string): string;
}

/**
 * A lifecycle over `base/<id>/` layer dirs: "mounted" = base/<id>.mounted exists. Layers whose id
 * starts with "flat" need no mount (vfs-like). `failMount` makes mount throw.
 */
function fakeLifecycle(opts: { failMount?: boolean; removeMountPoint?: boolean } = {}): Fake {
  const base = join(dir, `case-${++n}`);
  const stateDir = join(base, 'state');
  mkdirSync(base, { recursive: true });
  const calls = { mount: 0, unmount: 0 };
  const marker = (id: string) => join(base, `${id}.mounted`);
  const mountPoint = (id: string) => join(base, id, 'merged');
  const mounter: Mounter = {
    mountPoint,
    view: (id) => {
      if (!existsSync(join(base, id))) throw new UnionctlError('NOT_FOUND', `layer ${id} does not exist`);
      return id.startsWith('flat') ? { path: join(base, id), needsMount: false } : { path: mountPoint(id), needsMount: true };
    },
    mount: async (id) => {
      calls.mount += 1;
      await sleep(1); // a real mount takes time: lets concurrent callers interleave
      if (opts.failMount) throw new UnionctlError('SYSCALL', 'mount failed');
      writeFileSync(marker(id), '');
    },
    unmount: async (id) => {
      calls.unmount += 1;
      await sleep(1);
      rmSync(marker(id));
    },
    isMounted: (id) => existsSync(marker(id)),
  };
  const lifecycle = new MountLifecycle('fake', stateDir, mounter, {
    mountPointMode: 0o700,
    removeMountPoint: opts.removeMountPoint ?? true,
  });
  return { lifecycle, stateDir, base, calls, marker, mountPoint };
}

function makeLayer(fake: Fake, id: string): string {
  mkdirSync(join(fake.base, id), { recursive: true });
  return id;
}

/** Runs `body` in a child node process with `lc` (a MountLifecycle over the same fake) in scope. */
function inChild(fake: Fake, body: string): Promise<string> {
  const code = `
    import { existsSync, rmSync, writeFileSync } from 'node:fs';
    import { join } from 'node:path';
    import { MountLifecycle } from ${JSON.stringify(mountsModule)};
    const base = ${JSON.stringify(fake.base)};
    const marker = (id) => join(base, id + '.mounted');
    const lc = new MountLifecycle('fake', ${JSON.stringify(fake.stateDir)}, {
      mountPoint: (id) => join(base, id, 'merged'),
      view: (id) => ({ path: join(base, id, 'merged'), needsMount: true }),
      mount: (id) => writeFileSync(marker(id), ''),
      unmount: (id) => rmSync(marker(id)),
      isMounted: (id) => existsSync(marker(id)),
    }, { mountPointMode: 0o700, removeMountPoint: true });
    ${body}`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`child exited with ${code}`))));
  });
}

const inUse = (e: unknown) => e instanceof UnionctlError && e.code === 'IN_USE';

describe('MountLifecycle', () => {
  it('mounts on the first get, unmounts and removes the mount point on the last put', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    assert.equal(await f.lifecycle.get(id), f.mountPoint(id));
    assert.equal(await f.lifecycle.get(id), f.mountPoint(id));
    assert.equal(f.calls.mount, 1);
    assert.deepEqual(f.lifecycle.references(id), {
      persistent: 0,
      processes: [{ pid: process.pid, count: 2 }],
      readers: [],
      heldBy: [],
      total: 2,
      mounted: true,
    });
    await f.lifecycle.put(id);
    assert.equal(f.calls.unmount, 0);
    await f.lifecycle.put(id);
    assert.equal(f.calls.unmount, 1);
    assert.equal(existsSync(f.mountPoint(id)), false, 'mount point left');
    assert.deepEqual(f.lifecycle.referencedIds(), [], 'reference file left');
  });

  it('keeps the mount point when the format says so', async () => {
    const f = fakeLifecycle({ removeMountPoint: false });
    const id = makeLayer(f, 'a');
    await f.lifecycle.get(id);
    await f.lifecycle.put(id);
    assert.equal(existsSync(f.mountPoint(id)), true);
  });

  it('refuses a put without a reference of that kind (USAGE) and changes nothing', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    await assert.rejects(f.lifecycle.put(id), { code: 'USAGE' });
    await f.lifecycle.get(id);
    await assert.rejects(f.lifecycle.put(id, { persistent: true }), { code: 'USAGE' });
    assert.equal(f.lifecycle.references(id).total, 1);
    assert.equal(f.calls.unmount, 0);
    await f.lifecycle.put(id);
  });

  it('refuses a layer the mounter does not know (NOT_FOUND) and an invalid id (INVALID_ID)', async () => {
    const f = fakeLifecycle();
    await assert.rejects(f.lifecycle.get('missing'), { code: 'NOT_FOUND' });
    await assert.rejects(f.lifecycle.get('../x'), { code: 'INVALID_ID' });
    assert.deepEqual(f.lifecycle.referencedIds(), []);
  });

  it('counts nothing when the mount fails, and removes the mount point it made', async () => {
    const f = fakeLifecycle({ failMount: true });
    const id = makeLayer(f, 'a');
    await assert.rejects(f.lifecycle.get(id), { code: 'SYSCALL' });
    assert.equal(f.lifecycle.references(id).total, 0);
    assert.deepEqual(f.lifecycle.referencedIds(), []);
    assert.equal(existsSync(f.mountPoint(id)), false);
  });

  it('counts a layer that needs no mount without mounting anything', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'flat1');
    assert.equal(await f.lifecycle.get(id), join(f.base, id));
    assert.equal(f.calls.mount, 0);
    assert.equal(f.lifecycle.references(id).total, 1);
    await assert.rejects(
      f.lifecycle.whileUnused(id, () => 'removed'),
      inUse,
    );
    await f.lifecycle.put(id);
    assert.equal(await f.lifecycle.whileUnused(id, () => 'removed'), 'removed');
  });

  it('mounts once and unmounts once under 200 concurrent gets and puts', async () => {
    const f = fakeLifecycle();
    const ids = ['a', 'b', 'c'].map((id) => makeLayer(f, id));
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const id = ids[i % ids.length]!;
        await f.lifecycle.get(id);
        await sleep(i % 7);
        await f.lifecycle.put(id);
      }),
    );
    for (const id of ids)
      assert.deepEqual(f.lifecycle.references(id), { persistent: 0, processes: [], readers: [], heldBy: [], total: 0, mounted: false });
    assert.equal(f.calls.mount, f.calls.unmount, 'every mount was unmounted');
    assert.ok(f.calls.mount >= ids.length);
    assert.deepEqual(f.lifecycle.referencedIds(), []);
  });

  it('adopts a mount nobody counts (left by a killed process) instead of mounting twice', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    writeFileSync(f.marker(id), '');
    assert.equal(f.lifecycle.references(id).mounted, true);
    await assert.rejects(
      f.lifecycle.whileUnused(id, () => undefined),
      inUse,
      'an uncounted mount is still in use',
    );
    await f.lifecycle.get(id);
    assert.equal(f.calls.mount, 0);
    await f.lifecycle.put(id);
    assert.equal(f.calls.unmount, 1);
  });

  it('starts over when the counted union is gone (unmounted by hand)', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    await f.lifecycle.get(id, { persistent: true });
    rmSync(f.marker(id)); // umount by hand
    assert.equal(f.lifecycle.references(id).total, 0, 'a count without its mount is no reference');
    await f.lifecycle.get(id);
    assert.equal(f.calls.mount, 2);
    assert.deepEqual(f.lifecycle.references(id).persistent, 0, 'the stale count was dropped');
    await f.lifecycle.put(id);
    assert.equal(f.lifecycle.references(id).mounted, false);
  });

  it('drops the references of a process that died without putting them; its mount stays in use until adopted', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    const childPid = Number(await inChild(f, `await lc.get('a'); await lc.get('a'); process.stdout.write(String(process.pid));`));
    const refs = f.lifecycle.references(id);
    assert.equal(refs.total, 0, `the dead process ${childPid} still counts`);
    assert.equal(refs.mounted, true);
    await f.lifecycle.get(id);
    assert.equal(f.calls.mount, 0, 'adopted');
    await f.lifecycle.put(id);
    assert.equal(existsSync(f.marker(id)), false);
  });

  it('keeps persistent references across processes; another process releases them', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    await inChild(f, `await lc.get('a', { persistent: true });`);
    assert.deepEqual(f.lifecycle.references(id), { persistent: 1, processes: [], readers: [], heldBy: [], total: 1, mounted: true });
    await assert.rejects(
      f.lifecycle.whileUnused(id, () => undefined),
      (e: unknown) => inUse(e) && /unionctl umount a/.test((e as UnionctlError).hint ?? ''),
    );
    // This process's own get and put leave the child's mount alone.
    await f.lifecycle.get(id);
    await f.lifecycle.put(id);
    assert.equal(existsSync(f.marker(id)), true);
    const out = await inChild(f, `await lc.put('a', { persistent: true }); process.stdout.write(String(existsSync(marker('a'))));`);
    assert.equal(out, 'false', 'the last persistent put unmounts');
    assert.equal(f.lifecycle.references(id).total, 0);
  });

  it('names the live holders of in-process references in IN_USE', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    await f.lifecycle.get(id);
    await assert.rejects(
      f.lifecycle.whileUnused(id, () => undefined),
      (e: unknown) => inUse(e) && new RegExp(`process ${process.pid}`).test((e as Error).message),
    );
    await f.lifecycle.put(id);
  });

  it('whileUnused runs the removal under the lock and forgets the references; force unmounts first', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    await f.lifecycle.get(id, { persistent: true });
    await assert.rejects(
      f.lifecycle.whileUnused(id, () => 'no'),
      inUse,
    );
    assert.equal(existsSync(f.marker(id)), true, 'a refused removal changed nothing');
    assert.equal(await f.lifecycle.whileUnused(id, () => 'forced', { force: true }), 'forced');
    assert.equal(existsSync(f.marker(id)), false);
    assert.deepEqual(f.lifecycle.referencedIds(), []);
    assert.deepEqual(readdirSync(join(f.stateDir, 'locks')), [], 'lock file of a removed layer left');
  });

  it('reset and resetAll unmount and drop every reference, and are idempotent', async () => {
    const f = fakeLifecycle();
    const ids = ['a', 'b'].map((id) => makeLayer(f, id));
    await f.lifecycle.get(ids[0]!, { persistent: true });
    await f.lifecycle.get(ids[1]!);
    await f.lifecycle.resetAll();
    await f.lifecycle.resetAll();
    for (const id of ids)
      assert.deepEqual(f.lifecycle.references(id), { persistent: 0, processes: [], readers: [], heldBy: [], total: 0, mounted: false });
    // An uncounted mount is reset when its id is named.
    writeFileSync(f.marker(ids[0]!), '');
    await f.lifecycle.resetAll([ids[0]!]);
    assert.equal(existsSync(f.marker(ids[0]!)), false);
  });

  it('counts nothing for a reference file from another boot', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    writeFileSync(f.marker(id), '');
    mkdirSync(join(f.stateDir, 'refs'), { recursive: true });
    writeFileSync(join(f.stateDir, 'refs', id), JSON.stringify({ boot: 'another-boot', persistent: 3, holders: [] }));
    assert.equal(f.lifecycle.references(id).total, 0);
  });

  it('reads a reference file of the earlier format ({count, boot}) as that many persistent references', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    writeFileSync(f.marker(id), '');
    writeFileSync(join(f.stateDir, 'refs', id), JSON.stringify({ count: 2, boot: bootId() }));
    assert.deepEqual(f.lifecycle.references(id), { persistent: 2, processes: [], readers: [], heldBy: [], total: 2, mounted: true });
    await f.lifecycle.put(id, { persistent: true });
    await f.lifecycle.put(id, { persistent: true });
    assert.equal(existsSync(f.marker(id)), false);
  });

  it('says CORRUPT, naming the file, for a damaged reference file', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    mkdirSync(join(f.stateDir, 'refs'), { recursive: true });
    for (const bad of [
      '{',
      '[]',
      JSON.stringify({ boot: 'x', persistent: -1, holders: [] }),
      JSON.stringify({ boot: 'x', persistent: 0, holders: [{ pid: 'a' }] }),
    ]) {
      writeFileSync(join(f.stateDir, 'refs', id), bad);
      assert.throws(
        () => f.lifecycle.references(id),
        (e: unknown) => e instanceof UnionctlError && e.code === 'CORRUPT' && e.message.includes(join(f.stateDir, 'refs', id)),
      );
    }
  });

  it('prune drops what a killed get or put left, and nothing that is in use', async () => {
    const f = fakeLifecycle();
    const [stale, mounted, flat, held, damaged] = ['stale', 'mounted', 'flat-dead', 'flat-held', 'damaged'].map((id) => makeLayer(f, id));
    // stale: counted, its mount point made, never mounted (a get killed before its mount).
    await f.lifecycle.get(stale!, { persistent: true });
    await f.lifecycle.get(mounted!, { persistent: true });
    rmSync(f.marker(stale!));
    // flat-dead: only a reference of a process that is gone.
    const refs = join(f.stateDir, 'refs');
    writeFileSync(
      join(refs, flat!),
      JSON.stringify({ boot: bootId(), persistent: 0, holders: [{ pid: 999999999, start: '1', boot: bootId(), count: 1 }] }),
    );
    await f.lifecycle.get(held!, { persistent: true });
    writeFileSync(join(refs, damaged!), '{');
    writeFileSync(join(f.stateDir, 'locks', 'lock-only'), '');
    await f.lifecycle.prune();
    assert.equal(existsSync(f.mountPoint(stale!)), false, 'the empty mount point of the stale reference is removed');
    assert.deepEqual(readdirSync(refs).sort(), [damaged, held, mounted].sort(), 'stale and dead references are dropped');
    assert.equal(readdirSync(join(f.stateDir, 'locks')).includes('lock-only'), false);
    assert.equal(f.lifecycle.references(mounted!).persistent, 1);
    assert.equal(f.lifecycle.references(held!).persistent, 1);
    assert.equal(f.calls.unmount, 0);
  });

  it('refuses a mount point that is not a directory (CORRUPT), mounting nothing', async () => {
    const f = fakeLifecycle();
    const id = makeLayer(f, 'a');
    writeFileSync(f.mountPoint(id), 'not a dir');
    await assert.rejects(f.lifecycle.get(id), { code: 'CORRUPT' });
    assert.equal(f.calls.mount, 0);
    assert.equal(f.lifecycle.references(id).total, 0);
  });
});
