import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { bootId, MountRefs } from '../../src/graph/refcount.js';

const refcountModule = new URL('../../src/graph/refcount.js', import.meta.url).href;
const dir = mkdtempSync(join(tmpdir(), 'unionctl-refcount-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const freshDir = () => join(dir, `state-${++n}`);

/** A fake mount: a marker file that exists while "mounted", and counters of (un)mount calls. */
function fakeMount(marker: string) {
  const calls = { mount: 0, unmount: 0 };
  return {
    calls,
    isMounted: () => existsSync(marker),
    mount: () => {
      calls.mount += 1;
      writeFileSync(marker, '');
    },
    unmount: () => {
      calls.unmount += 1;
      rmSync(marker);
    },
  };
}

/** Runs `body` (ESM, with MountRefs, refs and fake mount helpers in scope) in a child node process. */
function inChild(stateDir: string, marker: string, body: string): Promise<string> {
  const code = `
    import { existsSync, rmSync, writeFileSync } from 'node:fs';
    import { MountRefs } from ${JSON.stringify(refcountModule)};
    const refs = new MountRefs(${JSON.stringify(stateDir)});
    const marker = ${JSON.stringify(marker)};
    const isMounted = () => existsSync(marker);
    const mount = () => writeFileSync(marker, '');
    const unmount = () => rmSync(marker);
    ${body}`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`child exited with ${code}`))));
  });
}

describe('MountRefs', () => {
  it('mounts on the first acquire, unmounts on the last release', async () => {
    const refs = new MountRefs(freshDir());
    const m = fakeMount(join(dir, `marker-${n}`));
    assert.equal(await refs.acquire('layer1', m.isMounted, m.mount), 1);
    assert.equal(await refs.acquire('layer1', m.isMounted, m.mount), 2);
    assert.equal(m.calls.mount, 1);
    assert.equal(refs.count('layer1'), 2);
    assert.deepEqual(refs.ids(), ['layer1']);
    assert.equal(await refs.release('layer1', m.isMounted, m.unmount), 1);
    assert.equal(m.calls.unmount, 0);
    assert.equal(await refs.release('layer1', m.isMounted, m.unmount), 0);
    assert.equal(m.calls.unmount, 1);
    assert.equal(refs.count('layer1'), 0);
    assert.deepEqual(refs.ids(), []);
  });

  it('adopts a mount left by an earlier process instead of mounting twice', async () => {
    const refs = new MountRefs(freshDir());
    const m = fakeMount(join(dir, `marker-${n}`));
    writeFileSync(join(dir, `marker-${n}`), ''); // already mounted, no count
    assert.equal(await refs.acquire('layer1', m.isMounted, m.mount), 1);
    assert.equal(m.calls.mount, 0);
    assert.equal(await refs.release('layer1', m.isMounted, m.unmount), 0);
    assert.equal(m.calls.unmount, 1);
  });

  it('starts over when the counted mount is gone (crashed process, umount by hand)', async () => {
    const refs = new MountRefs(freshDir());
    const marker = join(dir, `marker-${n}`);
    const m = fakeMount(marker);
    await refs.acquire('layer1', m.isMounted, m.mount);
    await refs.acquire('layer1', m.isMounted, m.mount);
    rmSync(marker); // the mount vanished behind the count's back
    assert.equal(await refs.acquire('layer1', m.isMounted, m.mount), 1);
    assert.equal(m.calls.mount, 2);
  });

  it('never goes below 0, and a release at 0 still unmounts a stray mount', async () => {
    const refs = new MountRefs(freshDir());
    const marker = join(dir, `marker-${n}`);
    const m = fakeMount(marker);
    assert.equal(await refs.release('layer1', m.isMounted, m.unmount), 0);
    assert.equal(m.calls.unmount, 0);
    writeFileSync(marker, '');
    assert.equal(await refs.release('layer1', m.isMounted, m.unmount), 0);
    assert.equal(m.calls.unmount, 1);
    assert.equal(refs.count('layer1'), 0);
  });

  it('keeps the count when mount or unmount fails', async () => {
    const refs = new MountRefs(freshDir());
    const m = fakeMount(join(dir, `marker-${n}`));
    await assert.rejects(
      refs.acquire('layer1', m.isMounted, () => Promise.reject(new Error('mount failed'))),
      /mount failed/,
    );
    assert.equal(refs.count('layer1'), 0);
    await refs.acquire('layer1', m.isMounted, m.mount);
    await assert.rejects(
      refs.release('layer1', m.isMounted, () => Promise.reject(new Error('busy'))),
      /busy/,
    );
    assert.equal(refs.count('layer1'), 1);
    assert.equal(await refs.release('layer1', m.isMounted, m.unmount), 0);
  });

  it('counts layers with nothing to mount when isMounted says true', async () => {
    const refs = new MountRefs(freshDir());
    const always = () => true;
    let unmounts = 0;
    await refs.acquire('base', always, () => assert.fail('nothing to mount'));
    await refs.acquire('base', always, () => assert.fail('nothing to mount'));
    assert.equal(refs.count('base'), 2);
    await refs.release('base', always, () => void (unmounts += 1));
    await refs.release('base', always, () => void (unmounts += 1));
    assert.equal(unmounts, 1);
  });

  it('reads a count from an earlier boot as 0', () => {
    const state = freshDir();
    const refs = new MountRefs(state);
    // Written by hand: one count from this boot, one from another.
    mkdirSync(state, { recursive: true });
    writeFileSync(join(state, 'now'), JSON.stringify({ count: 2, boot: bootId() }));
    writeFileSync(join(state, 'old'), JSON.stringify({ count: 5, boot: '00000000-0000-0000-0000-000000000000' }));
    assert.equal(refs.count('now'), 2);
    assert.equal(refs.count('old'), 0);
    assert.deepEqual(refs.ids(), ['now']);
  });

  it('forget drops the count without unmounting', async () => {
    const refs = new MountRefs(freshDir());
    const m = fakeMount(join(dir, `marker-${n}`));
    await refs.acquire('layer1', m.isMounted, m.mount);
    refs.forget('layer1');
    assert.equal(refs.count('layer1'), 0);
    assert.equal(m.calls.unmount, 0);
  });

  it('refuses ids that are not layer ids', async () => {
    const refs = new MountRefs(freshDir());
    await assert.rejects(
      refs.acquire(
        '../x',
        () => true,
        () => {},
      ),
      { code: 'INVALID_ID' },
    );
    assert.throws(() => refs.count('.lock'), { code: 'INVALID_ID' });
  });

  it('survives the process: mount in one process, see and release it in another', async () => {
    const state = freshDir();
    const marker = join(dir, `marker-${n}`);
    assert.equal(await inChild(state, marker, `console.log(await refs.acquire('layer1', isMounted, mount));`), '1');
    assert.ok(existsSync(marker), 'the child mounted');
    const refs = new MountRefs(state);
    assert.equal(refs.count('layer1'), 1);
    const m = fakeMount(marker);
    assert.equal(await refs.acquire('layer1', m.isMounted, m.mount), 2);
    assert.equal(m.calls.mount, 0, 'the mount of the earlier process was reused');
    assert.equal(await inChild(state, marker, `console.log(await refs.release('layer1', isMounted, unmount));`), '1');
    assert.ok(existsSync(marker));
    assert.equal(await refs.release('layer1', m.isMounted, m.unmount), 0);
    assert.ok(!existsSync(marker));
  });

  it('loses no update when processes acquire at the same time', async () => {
    const state = freshDir();
    const marker = join(dir, `marker-${n}`);
    const body = `for (let i = 0; i < 25; i++) await refs.acquire('shared', isMounted, mount);`;
    await Promise.all([inChild(state, marker, body), inChild(state, marker, body), inChild(state, marker, body)]);
    assert.equal(new MountRefs(state).count('shared'), 75);
    assert.equal(JSON.parse(readFileSync(join(state, 'shared'), 'utf8')).count, 75);
  });
});
