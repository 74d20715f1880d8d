/**
 * Crash safety of the layer store: a process SIGKILLed in the middle of an import leaves nothing
 * once the store is opened again; an import still running in a live process is left alone; an
 * interrupted removal is finished.
 *
 * The importing child reads a generated layer tar through a stream that stops after half of the
 * file and then waits (for ever, or until a "go" file appears), so the kill lands mid-apply every
 * time without any hook in the code under test.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { openStore } from '../../src/index.js';
import { withScratchFs } from '../helpers/scratch.js';

const storeModule = new URL('../../src/index.js', import.meta.url).href;

/** A layer tar of `files` files of 2 KiB each in 30 directories; returns its path. */
function makeBigTar(scratch: string, files = 3000): string {
  const src = join(scratch, 'gen');
  for (let i = 0; i < files; i++) {
    const dir = join(src, `d${i % 30}`);
    if (i < 30) mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `f${i}`), Buffer.alloc(2048, i % 251));
  }
  const tar = join(scratch, 'big.tar');
  execFileSync('tar', ['-cf', tar, '-C', src, '.']);
  rmSync(src, { recursive: true });
  return tar;
}

/**
 * A child process that imports `tar` as layer `id` on `parent`, feeding it in 64 KiB chunks; after
 * half the file it prints "half" and stalls until `goFile` exists (never, when undefined). Prints
 * "done <diffId>" when the import completes.
 */
function slowImporter(
  root: string,
  tar: string,
  id: string,
  parent: string,
  goFile?: string,
): { child: ChildProcess; half: Promise<void>; done: Promise<string> } {
  const code = `
    import { existsSync, openSync, readSync } from 'node:fs';
    import { Readable } from 'node:stream';
    import { setTimeout as sleep } from 'node:timers/promises';
    import { openStore } from ${JSON.stringify(storeModule)};
    const tar = ${JSON.stringify(tar)}, goFile = ${JSON.stringify(goFile ?? null)};
    async function* stalling() {
      const fd = openSync(tar, 'r');
      const buf = Buffer.alloc(65536);
      let offset = 0, saidHalf = false;
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, offset);
        if (n === 0) return;
        offset += n;
        yield Buffer.from(buf.subarray(0, n));
        if (!saidHalf && offset >= ${statSync(tar).size} / 2) {
          saidHalf = true;
          process.stdout.write('half\\n');
          while (goFile === null || !existsSync(goFile)) await sleep(20);
        }
      }
    }
    const store = await openStore({ root: ${JSON.stringify(root)}, driver: 'vfs' });
    const layer = await store.importLayer(Readable.from(stalling()), { id: ${JSON.stringify(id)}, parent: ${JSON.stringify(parent)} });
    process.stdout.write('done ' + layer.diffId + '\\n');`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const half = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('half\n')) resolve();
    });
    child.once('exit', (c, sig) => reject(new Error(`importer exited (${c ?? sig}) before reaching half`)));
  });
  const done = new Promise<string>((resolve, reject) =>
    child.once('exit', (c, sig) => {
      const m = /done (\S+)/.exec(out);
      if (c === 0 && m) resolve(m[1]);
      else reject(new Error(`importer exited (${c ?? sig}) without finishing`));
    }),
  );
  half.catch(() => {});
  done.catch(() => {});
  return { child, half, done };
}

async function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

/** Waits until the apply has really written into the layer directory. */
async function waitForFilesIn(dir: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (existsSync(dir) && readdirSync(dir).length > 0) return;
    await sleep(20);
  }
  throw new Error(`nothing was written to ${dir}`);
}

function readRecord(root: string, id: string): { state: string; owner?: { pid: number } } {
  return JSON.parse(readFileSync(join(root, 'layerdb', `${id}.json`), 'utf8'));
}

describe('crash safety', () => {
  it('an import killed mid-apply leaves no layer, no record and no directory after openStore', async (t) => {
    const scratch = await withScratchFs(t);
    const root = join(scratch, 'store');
    const tar = makeBigTar(scratch);
    const setup = await openStore({ root, driver: 'vfs' });
    await setup.create({ id: 'base' });
    await setup.close();

    const { child, half } = slowImporter(root, tar, 'victim', 'base');
    try {
      await half;
      await waitForFilesIn(join(root, 'vfs', 'dir', 'victim'));
      const rec = readRecord(root, 'victim');
      assert.equal(rec.state, 'creating', 'the record says the layer is unfinished while it is applied');
      assert.equal(rec.owner?.pid, child.pid);
    } finally {
      await killAndWait(child);
    }

    const store = await openStore({ root, driver: 'vfs' });
    try {
      assert.deepEqual(
        (await store.list()).map((l) => l.id),
        ['base'],
      );
      assert.ok(!existsSync(join(root, 'layerdb', 'victim.json')), 'record left behind');
      assert.ok(!existsSync(join(root, 'vfs', 'dir', 'victim')), 'layer directory left behind');
      assert.deepEqual(readdirSync(join(root, 'vfs', 'dir')), ['base']);
      assert.deepEqual(readdirSync(join(root, 'layerdb')), ['base.json']);
      await store.remove('base'); // no phantom child holds it
      assert.deepEqual(await store.list(), []);
    } finally {
      await store.close();
    }
  });

  it('an import still running in a live process is not rolled back by another openStore', async (t) => {
    const scratch = await withScratchFs(t);
    const root = join(scratch, 'store');
    const tar = makeBigTar(scratch, 1000);
    const goFile = join(scratch, 'go');
    const setup = await openStore({ root, driver: 'vfs' });
    await setup.create({ id: 'base' });
    await setup.close();

    const { child, half, done } = slowImporter(root, tar, 'busy', 'base', goFile);
    try {
      await half;
      await waitForFilesIn(join(root, 'vfs', 'dir', 'busy'));
      const store = await openStore({ root, driver: 'vfs' });
      try {
        assert.equal(readRecord(root, 'busy').state, 'creating', 'the live import was rolled back');
        assert.ok(existsSync(join(root, 'vfs', 'dir', 'busy')));
        assert.deepEqual(
          (await store.list()).map((l) => l.id),
          ['base'],
          'an unfinished layer is listed',
        );
        await assert.rejects(store.layer('busy'), { code: 'NOT_FOUND', message: /still being created/ });
        await assert.rejects(store.remove('base'), { code: 'HAS_CHILDREN', message: /busy/ });
        await assert.rejects(store.create({ id: 'busy' }), { code: 'EXISTS' });
        await assert.rejects(store.create({ parent: 'busy' }), { code: 'NOT_FOUND', message: /still being created/ });

        writeFileSync(goFile, '');
        const diffId = await done;
        assert.equal(diffId, `sha256:${createHash('sha256').update(readFileSync(tar)).digest('hex')}`);
        const busy = await store.layer('busy');
        assert.equal(busy.parent, 'base');
        assert.equal(busy.diffId, diffId);
        assert.equal(readRecord(root, 'busy').state, 'complete');
        assert.equal(readRecord(root, 'busy').owner, undefined);
      } finally {
        await store.close();
      }
    } finally {
      await killAndWait(child);
    }
  });

  it('a removal interrupted after the record was marked is finished by openStore', async (t) => {
    const scratch = await withScratchFs(t);
    const root = join(scratch, 'store');
    const tar = makeBigTar(scratch, 200);
    let store = await openStore({ root, driver: 'vfs' });
    const layer = await store.importLayer(tar, { id: 'doomed' });
    await store.close();

    // What a process killed during remove() leaves: the record marked, the tree half deleted.
    const recordPath = join(root, 'layerdb', 'doomed.json');
    writeFileSync(recordPath, JSON.stringify({ ...readRecord(root, 'doomed'), state: 'removing' }));
    rmSync(join(root, 'vfs', 'dir', 'doomed', 'd0'), { recursive: true });

    store = await openStore({ root, driver: 'vfs' });
    try {
      assert.deepEqual(await store.list(), []);
      assert.ok(!existsSync(recordPath));
      assert.ok(!existsSync(join(root, 'vfs', 'dir', layer.id)));
    } finally {
      await store.close();
    }
  });
});
