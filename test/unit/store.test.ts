/**
 * The layer store on the vfs driver, with the bundled sample image (fixtures/sample-docker.tar):
 * import, merged view, digests, diffs, mounts across processes, and the errors that must leave the
 * store exactly as it was.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  createWriteStream,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { UnionctlError } from '../../src/errors.js';
import { openStore, type LayerRecord, type LayerStore, type StoreTx } from '../../src/index.js';
import { makeScratch, scratchMissing, withScratchFs } from '../helpers/scratch.js';

const repo = process.env.UNIONCTL_REPO ?? process.cwd();
const storeModule = new URL('../../src/index.js', import.meta.url).href;

/** diff_id and chainID of the four sample layers (fixtures/SAMPLE-README.md). */
const SAMPLE = [
  {
    diffId: 'sha256:9e721e9db1f84b04216fcb0f3fe271f3e9d48a5fe020252e82180d636f2a27b1',
    chainId: 'sha256:9e721e9db1f84b04216fcb0f3fe271f3e9d48a5fe020252e82180d636f2a27b1',
  },
  {
    diffId: 'sha256:7058b3d776058fe84d8142c37271aa8d2890654562594c4b4a8cfcbe179d08c0',
    chainId: 'sha256:f1c9c69d6813e225ecfb00eee0604359849e627f8ca17e661a8f4b4281d9871d',
  },
  {
    diffId: 'sha256:2d03330843ef3bb247481366ee85ad8628c69efc9af29ec53430071860189fea',
    chainId: 'sha256:944766f4f0ab95ac1f698d005d89bb5359804c772a7cb109802ba6e7e7fbd1ab',
  },
  {
    diffId: 'sha256:d52c36bcc68cf387ca56ba2a2736674cdac472ea3ef6ef70393743c36580deca',
    chainId: 'sha256:6dedba2aa0f99182ca7d2aabec7e17910c0049db3eca8ee50c6a55a5e435a90e',
  },
];

/** Extracts fixtures/sample-docker.tar with GNU tar; returns the layer.tar paths, bottom first. */
function extractSampleLayers(dir: string): string[] {
  execFileSync('tar', ['-xf', join(repo, 'fixtures', 'sample-docker.tar'), '-C', dir]);
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
  return manifest[0].Layers.map((l) => join(dir, l));
}

function treeList(path: string): string {
  return execFileSync('python3', [join(repo, 'test', 'treelist.py'), path], { maxBuffer: 64 << 20 }).toString();
}

/**
 * Everything under the store root: path, type, mode, size, and the content of files and links.
 * Two equal snapshots mean an operation changed nothing (directory mtimes are left out).
 */
function snapshot(root: string): string {
  const lines: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      const st = lstatSync(p);
      let what = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? `link ${readlinkSync(p)}` : 'other';
      if (st.isFile()) what = `file ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
      lines.push(`${p.slice(root.length)} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${st.isDirectory() ? 0 : st.size} ${what}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(root);
  return lines.join('\n');
}

/** Asserts that `op` fails with `code` (and a message matching `message`) and leaves the store root unchanged. */
async function assertRefusedUnchanged(root: string, op: () => Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  const before = snapshot(root);
  await assert.rejects(op, (e: unknown) => {
    assert.ok(e instanceof UnionctlError, `expected a UnionctlError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
  assert.equal(snapshot(root), before, 'the failed operation changed the store');
}

/** Runs `body` in a child node process with `store` open on `root` (vfs); resolves with its stdout. */
function runChild(root: string, body: string): { child: ChildProcess; output: Promise<string>; line: Promise<string> } {
  const code = `
    import { openStore } from ${JSON.stringify(storeModule)};
    const store = await openStore({ root: ${JSON.stringify(root)}, driver: 'vfs' });
    ${body}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const line = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
    child.once('exit', (c) => reject(new Error(`child exited (${c}) before printing a line`)));
  });
  const output = new Promise<string>((resolve, reject) =>
    child.once('exit', (c) => (c === 0 ? resolve(out.trim()) : reject(new Error(`child exited with ${c}`)))),
  );
  line.catch(() => {});
  output.catch(() => {}); // a test that kills the child does not wait for this one
  return { child, output, line };
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('LayerStore with vfs and the sample image', { skip: scratchMissing }, () => {
  let scratch: string;
  let root: string;
  let layerTars: string[];
  let store: LayerStore;
  const layers: LayerRecord[] = [];

  let disposeScratch = () => {};
  before(async () => {
    const fs = makeScratch();
    disposeScratch = fs.dispose;
    scratch = fs.dir;
    mkdirSync(join(scratch, 'fixture'));
    layerTars = extractSampleLayers(join(scratch, 'fixture'));
    root = join(scratch, 'store');
    store = await openStore({ root, driver: 'vfs' });
    let parent: string | undefined;
    for (const tar of layerTars) {
      const layer = await store.importLayer(tar, { parent });
      layers.push(layer);
      parent = layer.id;
    }
  });
  after(async () => {
    try {
      await store?.cleanup();
      await store?.close();
    } finally {
      disposeScratch();
    }
  });

  it('records every layer with its parent, diffId and chainId', async () => {
    assert.equal(layers.length, 4);
    for (const [i, layer] of layers.entries()) {
      assert.match(layer.id, /^[0-9a-f]{64}$/);
      assert.equal(layer.parent, i === 0 ? undefined : layers[i - 1].id);
      assert.equal(layer.diffId, SAMPLE[i].diffId, `diffId of layer ${i + 1}`);
      assert.equal(layer.chainId, SAMPLE[i].chainId, `chainId of layer ${i + 1}`);
      assert.equal(layer.driver, 'vfs');
      assert.equal(layer.writable, false);
      assert.ok(layer.size > 0);
      assert.deepEqual(await store.layer(layer.id), layer);
    }
    assert.deepEqual(
      (await store.list()).filter((l) => layers.some((x) => x.id === l.id)).map((l) => l.id),
      layers.map((l) => l.id),
    );
    // Layer 2 carries 204800 + 4096 + … bytes of file content: at least the two big files.
    assert.ok(layers[1].size >= 204800 + 4096);
  });

  it('mounts the top layer as the flattened image (sample-expected.txt)', async () => {
    const top = layers[3].id;
    const { id, path } = await store.mount(top);
    try {
      assert.equal(id, top);
      assert.equal(store.mountCount(top), 1);
      assert.equal(treeList(path), readFileSync(join(repo, 'fixtures', 'sample-expected.txt'), 'utf8'));
    } finally {
      await store.unmount(top);
    }
    assert.equal(store.mountCount(top), 0);
  });

  it('reports info, status and one read-only branch per image layer', async () => {
    const info = await store.info();
    assert.equal(info.driver, 'vfs');
    assert.equal(info.root, root);
    assert.equal(info.capabilities.whiteoutFormat, 'plain');
    assert.equal(info.capabilities.nativeDiff, false);
    assert.deepEqual(info.status[0], ['Backing Filesystem', 'tmpfs']);
    const branches = await store.branches(layers[2].id);
    assert.deepEqual(branches, [{ path: join(root, 'vfs', 'dir', layers[2].id), layer: layers[2].id, mode: 'ro' }]);
  });

  it('lists the changes of the top layer against its parent', async () => {
    const changes = await store.changes(layers[3].id);
    const has = (kind: string, path: string) =>
      assert.ok(
        changes.some((c) => c.kind === kind && c.path === path),
        `missing ${kind} ${path}`,
      );
    has('D', '/srv/app/etc/legacy.conf');
    has('D', '/srv/app/extras/defaults.env');
    has('D', '/var/cache/app/.lock');
    has('D', '/var/cache/app/index.db');
    has('D', '/var/cache/app/thumbs');
    has('D', '/srv/app/plugins/auth.plug');
    has('A', '/srv/app/plugins/search.plug');
    has('C', '/srv/app/secrets/api.token');
    has('C', '/srv/app/current');
    assert.ok(!changes.some((c) => c.path.startsWith('/bin/')), 'unchanged base files listed as changes');
    // Against the base layer instead: layer 2's files show up too.
    const vsBase = await store.changes(layers[3].id, { parent: layers[0].id });
    assert.ok(vsBase.some((c) => c.kind === 'A' && c.path === '/srv/app/lib/blob.bin'));
    assert.ok(!vsBase.some((c) => c.path === '/srv/app/etc/legacy.conf'), 'legacy.conf never existed in the base');
  });

  it('measures diff sizes', async () => {
    // Docker's rule: non-directory A and C entries, by lstat size: search.plug, api.token, and the
    // retargeted symlink current -> releases/v2.
    assert.equal(await store.diffSize(layers[3].id), 17 + 17 + 11);
    assert.ok((await store.diffSize(layers[1].id)) >= 204800 + 4096);
  });

  it('exports diffs that rebuild the same image in another store', async () => {
    const root2 = join(scratch, 'store-roundtrip');
    const store2 = await openStore({ root: root2, driver: 'vfs' });
    try {
      let parent: string | undefined;
      for (const [i, layer] of layers.entries()) {
        const file = join(scratch, `diff-${i}.tar`);
        await pipeline(await store.diff(layer.id), createWriteStream(file));
        parent = (await store2.importLayer(file, { parent })).id;
      }
      const { path } = await store2.mount(parent!);
      try {
        assert.equal(treeList(path), readFileSync(join(repo, 'fixtures', 'sample-expected.txt'), 'utf8'));
      } finally {
        await store2.unmount(parent!);
      }
    } finally {
      await store2.close();
    }
    // The same layer exports the same bytes every time.
    const again = await collect(await store.diff(layers[3].id));
    assert.ok(again.equals(readFileSync(join(scratch, 'diff-3.tar'))), 'two exports of one layer differ');
    // The diff took references on both layers and gave them back once the stream ended.
    await assertRefusedUnchanged(root, () => store.remove(layers[0].id), 'HAS_CHILDREN');
  });

  it('mounts an image layer read-write through a new writable child layer', async () => {
    const { id, path } = await store.mount(layers[3].id, { rw: true });
    try {
      // A fresh id: a short id (12 characters) names it alone, not its parent too.
      assert.match(id, /^[0-9a-f]{64}$/);
      assert.deepEqual(store.layerIdsStartingWith(id.slice(0, 12)), [id]);
      const rec = await store.layer(id);
      assert.equal(rec.parent, layers[3].id);
      assert.equal(rec.writable, true);
      assert.deepEqual(await store.branches(id), [{ path, layer: id, mode: 'rw' }]);
      writeFileSync(join(path, 'hello.txt'), 'hi\n');
      assert.deepEqual(await store.changes(id), [{ path: '/hello.txt', kind: 'A' }]);
      await assertRefusedUnchanged(root, () => store.remove(id), 'IN_USE', new RegExp(`layer ${id} is mounted`));
    } finally {
      await store.unmount(id);
    }
    await store.remove(id);
    await assert.rejects(store.layer(id), { code: 'NOT_FOUND' });
    assert.ok(!existsSync(join(root, 'vfs', 'dir', id)));
  });

  it('creates empty image and writable layers, and removes them', async () => {
    const image = await store.create({ parent: layers[3].id, id: 'empty-image' });
    assert.equal(image.writable, false);
    assert.equal(image.size, 0);
    assert.equal(image.diffId, undefined);
    assert.deepEqual(await store.changes('empty-image'), []);
    const rw = await store.create({ parent: 'empty-image', id: 'container-1', writable: true });
    assert.equal(rw.writable, true);
    assert.equal((await store.branches('container-1'))[0].mode, 'rw');
    await store.remove('container-1');
    await store.remove('empty-image');
    assert.ok(!(await store.list()).some((l) => l.id === 'empty-image' || l.id === 'container-1'));
  });

  it('imports two layers at the same time', async () => {
    const [a, b] = await Promise.all([
      store.importLayer(layerTars[2], { id: 'parallel-a', parent: layers[1].id }),
      store.importLayer(layerTars[2], { id: 'parallel-b', parent: layers[1].id, onProgress: () => {} }),
    ]);
    assert.equal(a.diffId, SAMPLE[2].diffId);
    assert.equal(b.diffId, SAMPLE[2].diffId);
    assert.equal(a.chainId, b.chainId);
    await store.remove('parallel-a');
    await store.remove('parallel-b');
  });

  it('reports import progress in bytes read', async () => {
    const seen: number[] = [];
    const rec = await store.importLayer(Readable.from([readFileSync(layerTars[2])]), {
      id: 'progress',
      parent: layers[1].id,
      onProgress: (n) => seen.push(n),
    });
    try {
      assert.equal(seen.at(-1), lstatSync(layerTars[2]).size);
      assert.equal(rec.diffId, SAMPLE[2].diffId);
    } finally {
      await store.remove('progress');
    }
  });

  describe('refusals leave the store unchanged', () => {
    it('HAS_CHILDREN names the children', async () => {
      await assertRefusedUnchanged(root, () => store.remove(layers[2].id), 'HAS_CHILDREN', new RegExp(layers[3].id));
    });

    it('IN_USE while mounted', async () => {
      await store.mount(layers[3].id);
      try {
        await assertRefusedUnchanged(root, () => store.remove(layers[3].id), 'IN_USE', /unmount|mounted/);
      } finally {
        await store.unmount(layers[3].id);
      }
    });

    it('NOT_FOUND for unknown layers and parents', async () => {
      await assertRefusedUnchanged(root, () => store.remove('nope'), 'NOT_FOUND', /layer nope does not exist/);
      await assertRefusedUnchanged(root, () => store.layer('nope'), 'NOT_FOUND');
      await assertRefusedUnchanged(root, () => store.mount('nope'), 'NOT_FOUND');
      await assertRefusedUnchanged(root, () => store.diff('nope'), 'NOT_FOUND');
      await assertRefusedUnchanged(root, () => store.changes(layers[3].id, { parent: 'nope' }), 'NOT_FOUND');
      await assertRefusedUnchanged(
        root,
        () => store.importLayer(layerTars[0], { parent: 'nope' }),
        'NOT_FOUND',
        /parent layer nope does not exist/,
      );
      await assertRefusedUnchanged(root, () => store.create({ parent: 'nope' }), 'NOT_FOUND', /parent layer nope does not exist/);
      await assertRefusedUnchanged(root, () => store.importLayer(join(scratch, 'missing.tar')), 'NOT_FOUND', /missing\.tar/);
    });

    it('INVALID_ID for ids that are not [A-Za-z0-9][A-Za-z0-9_.-]*', async () => {
      await assertRefusedUnchanged(root, () => store.importLayer(layerTars[0], { id: '../escape' }), 'INVALID_ID');
      await assertRefusedUnchanged(root, () => store.create({ id: '-dash' }), 'INVALID_ID');
      await assertRefusedUnchanged(root, () => store.create({ id: 'x'.repeat(129) }), 'INVALID_ID');
      await assertRefusedUnchanged(root, () => store.remove('a/b'), 'INVALID_ID');
      await assertRefusedUnchanged(root, () => store.importLayer(layerTars[0], { parent: '.hidden' }), 'INVALID_ID');
    });

    it('EXISTS for an id already taken', async () => {
      await assertRefusedUnchanged(root, () => store.importLayer(layerTars[2], { id: layers[0].id }), 'EXISTS');
      await assertRefusedUnchanged(root, () => store.create({ id: layers[3].id, parent: layers[3].id }), 'EXISTS');
    });

    it('BAD_OPTION for storage options', async () => {
      await assertRefusedUnchanged(
        root,
        () => store.create({ parent: layers[3].id, storageOpt: { size: '1G' } }),
        'BAD_OPTION',
        /writable layers/,
      );
      await assertRefusedUnchanged(
        root,
        () => store.create({ parent: layers[3].id, writable: true, storageOpt: ['size=1G'] }),
        'BAD_OPTION',
        /size/,
      );
      await assertRefusedUnchanged(root, () => store.create({ writable: true, storageOpt: ['novalue'] }), 'BAD_OPTION', /key=value/);
      await assertRefusedUnchanged(root, () => openStore({ root, driver: 'vfs', storageOpt: ['vfs.size=1G'] }), 'BAD_OPTION', /vfs\.size/);
      await assertRefusedUnchanged(root, () => openStore({ root, driver: 'nosuchdriver' }), 'BAD_OPTION', /nosuchdriver/);
      await assertRefusedUnchanged(root, () => openStore({ root, driver: 'overlay2' }), 'BAD_OPTION', /vfs/);
    });

    it('a tarball that is not a tar: the half-made layer is removed again', async () => {
      const junk = join(scratch, 'junk.tar');
      writeFileSync(junk, Buffer.alloc(4096, 0x41));
      await assertRefusedUnchanged(root, () => store.importLayer(junk, { parent: layers[3].id }), 'BAD_TAR');
    });

    it('a tar entry that escapes the layer: refused, nothing written', async () => {
      const evil = join(scratch, 'evil.tar');
      execFileSync('python3', [
        '-c',
        `import tarfile, io
t = tarfile.open(${JSON.stringify(evil)}, 'w', format=tarfile.USTAR_FORMAT)
for name in ['ok.txt', '../escaped.txt']:
    info = tarfile.TarInfo(name); data = b'x'; info.size = len(data); t.addfile(info, io.BytesIO(data))
t.close()`,
      ]);
      await assertRefusedUnchanged(root, () => store.importLayer(evil, { parent: layers[3].id }), 'UNSAFE_ENTRY');
      assert.ok(!existsSync(join(root, 'vfs', 'dir', 'escaped.txt')));
    });
  });

  describe('across processes', () => {
    it('a mount made by one process is counted and released by another', async () => {
      await store.create({ id: 'shared-mount', parent: layers[3].id });
      const { output } = runChild(root, `const m = await store.mount('shared-mount'); console.log(m.path); await store.close();`);
      // An image layer: its read-only view (src/graph/read-only-views.ts).
      assert.equal(await output, join(root, 'driver-state', 'vfs', 'read-only', 'mnt', 'shared-mount'));
      assert.equal(store.mountCount('shared-mount'), 1);
      await assertRefusedUnchanged(root, () => store.remove('shared-mount'), 'IN_USE');
      await runChild(root, `await store.unmount('shared-mount'); console.log('ok');`).output;
      assert.equal(store.mountCount('shared-mount'), 0);
      await store.remove('shared-mount');
    });

    it('a layer another process is reading (diff) cannot be removed; it can once that process is gone', async () => {
      await store.create({ id: 'being-read', parent: layers[3].id });
      const { child, line } = runChild(
        root,
        `const tar = await store.diff('being-read'); console.log('reading'); setInterval(() => {}, 1000);`,
      );
      try {
        assert.equal(await line, 'reading');
        await assertRefusedUnchanged(root, () => store.remove('being-read'), 'IN_USE', /another process/);
      } finally {
        child.kill('SIGKILL');
        await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(undefined) : child.once('exit', r)));
      }
      await store.remove('being-read');
    });

    it('changes wait for the store lock another process holds', async () => {
      const log = join(scratch, 'lock-order.log');
      const lockModule = new URL('../../src/graph/lock.js', import.meta.url).href;
      const code = `
        import { appendFileSync } from 'node:fs';
        import { withFileLock } from ${JSON.stringify(lockModule)};
        await withFileLock(${JSON.stringify(join(root, 'store.lock'))}, async () => {
          console.log('locked');
          await new Promise((r) => setTimeout(r, 300));
          appendFileSync(${JSON.stringify(log)}, 'child released\\n');
        });`;
      const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        await new Promise<void>((resolve, reject) => {
          child.stdout!.on('data', () => resolve());
          child.once('exit', (c) => reject(new Error(`lock holder exited (${c})`)));
        });
        await store.create({ id: 'after-lock', parent: layers[3].id });
        appendFileSync(log, 'parent created\n');
        assert.deepEqual(readFileSync(log, 'utf8').trim().split('\n'), ['child released', 'parent created']);
      } finally {
        child.kill('SIGKILL');
        await store.remove('after-lock');
      }
    });

    it('openStore with no driver named picks the driver the store already uses', async () => {
      const again = await openStore({ root });
      try {
        assert.equal(again.driver.name, 'vfs');
        assert.equal((await again.list()).length, (await store.list()).length);
      } finally {
        await again.close();
      }
    });
  });

  it('unmount of a layer that is not mounted is a usage error', async () => {
    await assertRefusedUnchanged(root, () => store.unmount(layers[0].id), 'USAGE', /not mounted/);
  });

  it('transactions: siblings started inside one never overlap it or each other; a handle is dead after its body', async () => {
    let inside = 0;
    let maxInside = 0;
    const body = async (tx: StoreTx) => {
      inside += 1;
      maxInside = Math.max(maxInside, inside);
      tx.records(); // uses the handle while inside
      await new Promise((r) => setTimeout(r, 3));
      inside -= 1;
    };
    let siblings!: Promise<unknown>;
    let leaked!: StoreTx;
    await store.transaction(async (tx) => {
      leaked = tx;
      await body(tx);
      // What the old reentrant store lock let through: Promise.all of transactions started inside one.
      siblings = Promise.all([store.transaction(body), store.transaction(body), store.transaction(body)]);
      await body(tx);
    });
    await siblings;
    assert.equal(maxInside, 1, 'two transactions were inside at once');
    assert.throws(() => leaked.records(), { code: 'USAGE' });
    assert.throws(() => leaked.writeDocument('x', 'y'), { code: 'USAGE' });
  });

  it('a closed store refuses further calls', async () => {
    const other = await openStore({ root, driver: 'vfs' });
    await other.close();
    await assert.rejects(other.list(), { code: 'USAGE' });
  });
});

describe('openStore on a fresh root', { skip: scratchMissing }, () => {
  it('refuses unknown drivers and options without creating anything', async (t) => {
    const scratch = await withScratchFs(t);
    const root = join(scratch, 'never');
    await assert.rejects(openStore({ root, driver: 'nosuchdriver' }), (e: unknown) => {
      assert.ok(e instanceof UnionctlError);
      assert.equal(e.code, 'BAD_OPTION');
      assert.match(e.hint ?? '', /vfs/);
      return true;
    });
    await assert.rejects(openStore({ root, driver: 'vfs', storageOpt: { 'vfs.colour': 'blue' } }), { code: 'BAD_OPTION' });
    assert.ok(!existsSync(root));
  });

  it('drops the mount counts of the earlier layout (<root>/mounts/), leaving anything else there', async (t) => {
    const scratch = await withScratchFs(t);
    const root = join(scratch, 'old');
    await (await openStore({ root, driver: 'vfs' })).close();
    mkdirSync(join(root, 'mounts'));
    writeFileSync(join(root, 'mounts', '.lock'), '');
    writeFileSync(join(root, 'mounts', 'layer1'), JSON.stringify({ count: 1, boot: 'b' }));
    await (await openStore({ root, driver: 'vfs' })).close();
    assert.equal(existsSync(join(root, 'mounts')), false);
    mkdirSync(join(root, 'mounts'));
    writeFileSync(join(root, 'mounts', 'notes.txt'), 'mine');
    await (await openStore({ root, driver: 'vfs' })).close();
    assert.deepEqual(readdirSync(join(root, 'mounts')), ['notes.txt']);
  });

  it('creates the store layout', async (t) => {
    const scratch = await withScratchFs(t);
    const root = join(scratch, 'new');
    const store = await openStore({ root, driver: 'vfs' });
    await store.close();
    assert.deepEqual(readdirSync(root).sort(), ['driver-state', 'layerdb', 'store.json', 'store.lock', 'vfs']);
    // The driver the store was made with, so that a store without layers keeps it.
    assert.deepEqual(JSON.parse(readFileSync(join(root, 'store.json'), 'utf8')), { driver: 'vfs' });
    // The mount lifecycle's references and locks live outside the driver's Docker-identical home.
    assert.deepEqual(readdirSync(join(root, 'driver-state')), ['vfs']);
    assert.deepEqual(readdirSync(join(root, 'vfs')).sort(), ['dir', 'rw']);
    assert.equal(lstatSync(root).mode & 0o777, 0o700);
  });
});

/**
 * importLayer's parentImport: a pull imports a layer while its parent is still being imported.
 * overlay2 creates and applies the child meanwhile (its dir holds only its diff); vfs builds a
 * layer from its parent's tree, so the child starts after the parent. Either way the child is
 * complete after its parent with the same diff ID and chain ID as one imported after it, and a
 * parent that fails takes the child with it, leaving nothing.
 */
describe('LayerStore.importLayer on a parent still being imported', { skip: scratchMissing }, () => {
  let scratch: ReturnType<typeof makeScratch>;
  let layerTars: string[];
  before(() => {
    scratch = makeScratch();
    mkdirSync(join(scratch.dir, 'fixture'));
    layerTars = extractSampleLayers(join(scratch.dir, 'fixture'));
  });
  after(() => scratch?.dispose());

  const deferred = () => {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    return { promise, resolve };
  };
  /** The file's bytes, held back until `gate` resolves: a parent whose download is slow. */
  async function* gated(bytes: Buffer, gate: Promise<void>): AsyncGenerator<Buffer> {
    await gate;
    yield bytes;
  }
  const turns = () => new Promise<void>((r) => setTimeout(r, 100));

  for (const driver of ['overlay2', 'vfs']) {
    it(`${driver}: the child is made complete after its parent, with the chain ID a sequential import gives`, async () => {
      const store = await openStore({ root: join(scratch.dir, `ok-${driver}`), driver });
      try {
        const gate = deferred();
        const parentCreated = deferred();
        const parent = store.importLayer(Readable.from(gated(readFileSync(layerTars[0]), gate.promise)), {
          id: 'p',
          onCreated: parentCreated.resolve,
        });
        let childBytes = 0;
        const child = store.importLayer(layerTars[1], {
          id: 'c',
          parent: 'p',
          parentImport: { created: parentCreated.promise, done: parent },
          onProgress: (n) => (childBytes = n),
        });
        await turns();
        if (driver === 'overlay2') assert.ok(childBytes > 0, 'overlay2 applies the child while the parent waits for its bytes');
        else assert.equal(childBytes, 0, 'vfs starts the child only once its parent is complete');
        // overlay2's child is "creating" meanwhile; vfs's is not there yet. Neither is usable.
        await assert.rejects(store.layer('c'), driver === 'overlay2' ? /still being created/ : /does not exist/);
        gate.resolve();
        const [p, c] = await Promise.all([parent, child]);
        assert.equal(p.chainId, SAMPLE[0].chainId);
        assert.deepEqual([c.parent, c.diffId, c.chainId], ['p', SAMPLE[1].diffId, SAMPLE[1].chainId]);
        assert.deepEqual((await store.list()).map((l) => l.id).sort(), ['c', 'p']);
      } finally {
        await store.close();
      }
    });

    it(`${driver}: a parent that fails takes the child with it; nothing is left`, async () => {
      const root = join(scratch.dir, `fail-${driver}`);
      const store = await openStore({ root, driver });
      try {
        const gate = deferred();
        const parentCreated = deferred();
        const garbage = Buffer.alloc(4096, 0x41); // not a tar
        const parent = store.importLayer(Readable.from(gated(garbage, gate.promise)), { id: 'p', onCreated: parentCreated.resolve });
        const child = store.importLayer(layerTars[1], {
          id: 'c',
          parent: 'p',
          parentImport: { created: parentCreated.promise, done: parent },
        });
        await turns();
        gate.resolve();
        const [p, c] = await Promise.allSettled([parent, child]);
        assert.equal(p.status, 'rejected');
        assert.equal(c.status, 'rejected');
        assert.equal((c as PromiseRejectedResult).reason, (p as PromiseRejectedResult).reason, "the child fails with its parent's error");
        assert.deepEqual(await store.list(), []);
        assert.equal(await store.driver.exists('c'), false, "the child's storage is gone");
        assert.equal(await store.driver.exists('p'), false, "the parent's storage is gone");
      } finally {
        await store.close();
      }
    });
  }
});
