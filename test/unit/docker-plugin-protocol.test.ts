/**
 * The Docker graphdriver plugin's protocol and rules without dockerd: the HTTP calls dockerd makes
 * (moby v20.10 daemon/graphdriver/proxy.go), sent over the unix socket to serveDockerPlugin on a
 * vfs store. Init persisted and checked for conflicts, errors as {"Err"} on a non-200, Get/Put
 * counted per plugin, Cleanup releasing only the plugin's own mounts, Changes kinds, Diff
 * streamed, and a shutdown that lets a request in flight finish.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { startServe } from '../../bench/peers/unionctl-serve.js';
import { openStore, type LayerStore } from '../../src/index.js';
import { serveDockerPlugin, type DockerPlugin } from '../../src/serve/docker-plugin/index.js';
import { makeLogger } from '../../src/serve/log.js';
import { runCli, showResult } from '../helpers/cli.js';
import { scratchMissing, withScratchFs } from '../helpers/scratch.js';

interface Answer {
  status: number;
  body: Buffer;
  json: Record<string, unknown>;
}

/** POST /<method> on the socket; `body` is JSON-encoded unless it is a stream or bytes. */
function call(socket: string, method: string, body?: unknown): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path: `/${method}`, method: 'POST', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        let json: Record<string, unknown> = {};
        if (String(res.headers['content-type']).includes('json')) json = JSON.parse(buf.toString()) as Record<string, unknown>;
        resolve({ status: res.statusCode ?? 0, body: buf, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body instanceof PassThrough) body.pipe(req);
    else req.end(Buffer.isBuffer(body) ? body : body === undefined ? undefined : JSON.stringify(body));
  });
}

async function ok(socket: string, method: string, body?: unknown): Promise<Record<string, unknown>> {
  const a = await call(socket, method, body);
  assert.equal(a.status, 200, `${method}: ${a.body.toString()}`);
  return a.json;
}

async function err(socket: string, method: string, body: unknown, message: RegExp): Promise<void> {
  const a = await call(socket, method, body);
  assert.equal(a.status, 500, `${method} should fail: ${a.body.toString()}`);
  assert.match(String(a.json.Err), message);
}

const INIT = { Home: '/var/lib/docker/uc', Opts: [], UIDMaps: null, GIDMaps: null };

/** A tar holding one file `name` with `content`, made by GNU tar. */
function tarOf(dir: string, name: string, content: string): Buffer {
  const src = join(dir, `src-${name}`);
  execFileSync('mkdir', ['-p', src]);
  writeFileSync(join(src, name), content);
  return execFileSync('tar', ['-cf', '-', '-C', src, name]);
}

async function withPlugin(
  t: { after(fn: () => Promise<void> | void): void },
  fn: (ctx: {
    store: LayerStore;
    socket: string;
    dir: string;
    start: () => Promise<DockerPlugin>;
    current: () => DockerPlugin;
    log: string[];
  }) => Promise<void>,
): Promise<void> {
  const dir = await withScratchFs(t);
  const store = await openStore({ root: join(dir, 'store'), driver: 'vfs' });
  const socket = join(dir, 'p.sock');
  const log: string[] = [];
  let plugin: DockerPlugin | undefined;
  const start = async () => {
    plugin = await serveDockerPlugin(store, { name: 'uct', socket, log: makeLogger('debug', (l) => log.push(l)) });
    return plugin;
  };
  try {
    await start();
    await fn({ store, socket, dir, start, current: () => plugin!, log });
  } finally {
    await plugin?.close();
    await store.cleanup();
    await store.close();
  }
}

describe('Docker graphdriver plugin protocol (vfs store, no dockerd)', { skip: scratchMissing }, () => {
  it('Activate, then nothing but Init until dockerd has sent one; Init is persisted across a restart', async (t) => {
    await withPlugin(t, async ({ store, socket, start, current }) => {
      assert.deepEqual(await ok(socket, 'Plugin.Activate'), { Implements: ['GraphDriver'] });
      await err(socket, 'GraphDriver.Status', undefined, /not been initialised/);
      assert.deepEqual(await ok(socket, 'GraphDriver.Init', INIT), {});
      const status = (await ok(socket, 'GraphDriver.Status')).Status as string[][];
      assert.deepEqual(status[0], ['unionctl driver', 'vfs']);
      assert.deepEqual(await ok(socket, 'GraphDriver.Capabilities'), { Capabilities: { ReproducesExactDiffs: false } });
      const file = join(store.root, 'plugins', 'docker', 'uct.json');
      assert.equal((JSON.parse(readFileSync(file, 'utf8')) as { init: { Home: string } }).init.Home, INIT.Home);
      // Restarted (a new server on the same store): serves without a new Init.
      await current().close();
      assert.equal(existsSync(socket), false, 'close removes the socket');
      await start();
      assert.ok(Array.isArray((await ok(socket, 'GraphDriver.Status')).Status));
    });
  });

  it('refuses an Init that conflicts: another home, another driver, other options, userns remapping', async (t) => {
    await withPlugin(t, async ({ socket, log }) => {
      await ok(socket, 'GraphDriver.Init', INIT);
      await err(
        socket,
        'GraphDriver.Init',
        { ...INIT, Home: '/elsewhere' },
        /already serves the dockerd whose home is \/var\/lib\/docker\/uc/,
      );
      await err(socket, 'GraphDriver.Init', { ...INIT, Opts: ['unionctl.driver=overlay2'] }, /asks for unionctl driver overlay2.*uses vfs/);
      await err(socket, 'GraphDriver.Init', { ...INIT, Opts: ['vfs.copy=x'] }, /storage option vfs\.copy=x differs/);
      await err(socket, 'GraphDriver.Init', { ...INIT, UIDMaps: [{ ContainerID: 0, HostID: 1000, Size: 1 }] }, /userns-remap/);
      assert.ok(log.some((l) => / error refused dockerd's Init/.test(l)));
      // The right one is still accepted.
      await ok(socket, 'GraphDriver.Init', { ...INIT, Opts: ['unionctl.driver=vfs'] });
    });
  });

  it('layers: Create, ApplyDiff, Exists, Get/Put, Changes kinds, Diff, DiffSize, Remove', async (t) => {
    await withPlugin(t, async ({ store, socket, dir }) => {
      await ok(socket, 'GraphDriver.Init', INIT);
      await ok(socket, 'GraphDriver.Create', { ID: 'base', Parent: '', MountLabel: '', StorageOpt: null });
      const tar = Buffer.concat([tarOf(dir, 'keep', 'k'), Buffer.alloc(0)]);
      const applied = await ok(socket, 'GraphDriver.ApplyDiff?id=base&parent=', tar);
      assert.equal(applied.Size, 1);
      // Two more files in base through a second layer, so the container can modify and delete.
      await ok(socket, 'GraphDriver.Create', { ID: 'img', Parent: 'base' });
      const stream = new PassThrough();
      const pending = call(socket, 'GraphDriver.ApplyDiff?id=img&parent=base', stream);
      stream.end(execFileSync('sh', ['-c', `mkdir -p ${dir}/two && cd ${dir}/two && echo a > mod && echo b > gone && tar -cf - mod gone`]));
      assert.equal((await pending).status, 200);
      assert.equal((await store.layer('img')).diffId?.startsWith('sha256:'), true);
      assert.deepEqual(await ok(socket, 'GraphDriver.Exists', { ID: 'img' }), { Exists: true });
      assert.deepEqual(await ok(socket, 'GraphDriver.Exists', { ID: 'nope' }), { Exists: false });

      await ok(socket, 'GraphDriver.CreateReadWrite', { ID: 'ctr', Parent: 'img', StorageOpt: {} });
      const { Dir } = (await ok(socket, 'GraphDriver.Get', { ID: 'ctr', MountLabel: '' })) as { Dir: string };
      writeFileSync(join(Dir, 'mod'), 'changed');
      writeFileSync(join(Dir, 'new'), 'n');
      rmSync(join(Dir, 'gone'));
      const changes = (await ok(socket, 'GraphDriver.Changes', { ID: 'ctr', Parent: 'img' })).Changes as Array<{
        Path: string;
        Kind: number;
      }>;
      assert.deepEqual(changes, [
        { Path: '/gone', Kind: 2 },
        { Path: '/mod', Kind: 0 },
        { Path: '/new', Kind: 1 },
      ]);
      assert.equal((await ok(socket, 'GraphDriver.DiffSize', { ID: 'ctr', Parent: 'img' })).Size, 8);
      const diff = await call(socket, 'GraphDriver.Diff', { ID: 'ctr', Parent: 'img' });
      assert.equal(diff.status, 200);
      writeFileSync(join(dir, 'diff.tar'), diff.body);
      assert.deepEqual(
        execFileSync('tar', ['-tf', join(dir, 'diff.tar')])
          .toString()
          .split('\n')
          .filter(Boolean)
          .sort(),
        ['.wh.gone', 'mod', 'new'],
      );
      await err(socket, 'GraphDriver.Diff', { ID: 'nope' }, /layer nope does not exist/);
      assert.deepEqual((await ok(socket, 'GraphDriver.GetMetadata', { ID: 'ctr' })).Metadata, await store.driver.metadata('ctr'));

      await err(socket, 'GraphDriver.Remove', { ID: 'ctr' }, /mounted/);
      await ok(socket, 'GraphDriver.Put', { ID: 'ctr' });
      await err(socket, 'GraphDriver.Put', { ID: 'ctr' }, /not mounted by this plugin/);
      await ok(socket, 'GraphDriver.Remove', { ID: 'ctr' });
      await ok(socket, 'GraphDriver.Remove', { ID: 'ctr' }); // gone already: done, as Docker's drivers do
      await err(socket, 'GraphDriver.Remove', { ID: 'base' }, /has child layers/);
      await err(socket, 'GraphDriver.Create', { ID: '../x' }, /invalid layer id/);
      assert.equal((await call(socket, 'GraphDriver.NoSuchThing', {})).status, 404);
    });
  });

  it("Cleanup releases the plugin's own mounts, not another user's; a new dockerd's Init releases the old one's", async (t) => {
    await withPlugin(t, async ({ store, socket }) => {
      await ok(socket, 'GraphDriver.Init', INIT);
      await ok(socket, 'GraphDriver.CreateReadWrite', { ID: 'a' });
      await ok(socket, 'GraphDriver.Get', { ID: 'a' });
      await ok(socket, 'GraphDriver.Get', { ID: 'a' });
      await store.mount('a'); // someone else's unionctl mount of the same layer
      assert.equal(store.mountCount('a'), 3);
      await ok(socket, 'GraphDriver.Cleanup');
      assert.equal(store.mountCount('a'), 1, "the other user's mount stays");
      await ok(socket, 'GraphDriver.Get', { ID: 'a' });
      await ok(socket, 'GraphDriver.Init', INIT); // dockerd started again without a Cleanup
      assert.equal(store.mountCount('a'), 1);
      await store.unmount('a');
      // `unionctl cleanup` released everything behind the plugin's back: its Cleanup still succeeds.
      await ok(socket, 'GraphDriver.Get', { ID: 'a' });
      await store.cleanup();
      await ok(socket, 'GraphDriver.Cleanup');
      const file = join(store.root, 'plugins', 'docker', 'uct.json');
      assert.deepEqual((JSON.parse(readFileSync(file, 'utf8')) as { mounts: object }).mounts, {});
    });
  });

  it('a request in flight when the plugin is told to stop finishes; then the socket is gone', async (t) => {
    await withPlugin(t, async ({ store, socket, dir, start, current }) => {
      await ok(socket, 'GraphDriver.Init', INIT);
      await ok(socket, 'GraphDriver.Create', { ID: 'slow' });
      const stream = new PassThrough();
      const pending = call(socket, 'GraphDriver.ApplyDiff?id=slow', stream);
      const tar = tarOf(dir, 'late', 'data');
      stream.write(tar.subarray(0, 512));
      await new Promise((r) => setTimeout(r, 200)); // the server is reading the body now
      await assert.rejects(start(), /another process is serving/, 'a second server on a live socket is refused');
      let closed = false;
      const closing = current()
        .close()
        .then(() => (closed = true));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(closed, false, 'close waits for the request in flight');
      await assert.rejects(call(socket, 'Plugin.Activate'), 'no new connections once closing');
      stream.end(tar.subarray(512));
      const answer = await pending;
      assert.equal(answer.status, 200, answer.body.toString());
      await closing;
      assert.equal((await store.layer('slow')).size, 4);
      assert.equal(existsSync(socket), false);
    });
  });
});

describe('unionctl serve (CLI)', () => {
  it(
    'without --docker-plugin, on the overlay (v1) driver: the containerd snapshotter listens; SIGTERM ends it',
    { skip: scratchMissing },
    async (t) => {
      const dir = await withScratchFs(t);
      const socket = join(dir, 'run', 'snap.sock');
      const serve = await startServe({ root: join(dir, 'root'), driver: 'overlay', socket, logFile: join(dir, 'serve.log') });
      assert.match(serve.log(), /serving the overlay store at .* as containerd snapshotter/);
      assert.equal(await serve.stop('SIGTERM'), 0);
      assert.equal(existsSync(socket), false);
    },
  );

  it('a plugin name that is not a name: refused before the store is opened', () => {
    const root = '/nonexistent/unionctl-serve-test';
    const r = runCli(['--root', root, 'serve', '--docker-plugin', '../x', '--socket', '/nonexistent/x.sock']);
    assert.equal(r.status, 1, showResult(r));
    assert.match(r.stderr, /invalid plugin name "\.\.\/x"/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(existsSync(root), false, 'nothing was written');
  });
});
