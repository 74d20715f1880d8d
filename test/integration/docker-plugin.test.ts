/**
 * unionctl as Docker's storage: a private dockerd 20.10 (--experimental, --storage-driver <plugin
 * name>) talks to `unionctl serve --docker-plugin NAME` over Docker's legacy plugin protocol, and
 * every layer it makes is a unionctl layer record in the plugin's store (overlay2).
 *
 * The plugin listens in the scratch dir; /run/docker/plugins/NAME.sock (where dockerd looks,
 * whatever its --exec-root) is a symlink to it for the test's duration. Everything is undone in
 * `after`, also when a test failed: containers, dockerd (and what it mounted), the plugin, the
 * symlink, the store's mounts, the scratch filesystem.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DOCKER_CLI, dockerdAvailable, startDockerd, type Dockerd } from '../../bench/peers/dockerd.js';
import { REPO } from '../conformance/inspect.js';
import { CLI_MAIN, runCli, showResult } from '../helpers/cli.js';
import { mountsBelow } from '../helpers/mounts.js';
import { rootMissing } from '../helpers/requires.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { eventually } from '../helpers/wait.js';

const SAMPLE = join(REPO, 'fixtures', 'sample-docker.tar');
/** The sample image's diff IDs, bottom first (fixtures/SAMPLE-README.md). */
const DIFF_IDS = [
  'sha256:9e721e9db1f84b04216fcb0f3fe271f3e9d48a5fe020252e82180d636f2a27b1',
  'sha256:7058b3d776058fe84d8142c37271aa8d2890654562594c4b4a8cfcbe179d08c0',
  'sha256:2d03330843ef3bb247481366ee85ad8628c69efc9af29ec53430071860189fea',
  'sha256:d52c36bcc68cf387ca56ba2a2736674cdac472ea3ef6ef70393743c36580deca',
];
const TOP_CHAIN_ID = 'sha256:6dedba2aa0f99182ca7d2aabec7e17910c0049db3eca8ee50c6a55a5e435a90e';
const PLUGIN_DIR = '/run/docker/plugins';

const skip =
  rootMissing('runs dockerd and mounts overlays') ?? (dockerdAvailable() ? undefined : 'docker.io (dockerd 20.10) is not installed');

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A Layer as ls --json prints it (docs/json.md). */
interface LsRecord {
  id: string;
  parent: string | null;
  diffId: string | null;
  chainId: string | null;
  writable: boolean;
}

describe('dockerd 20.10 on unionctl serve --docker-plugin', { skip, timeout: 20 * 60_000 }, () => {
  const name = `uctest-${process.pid}`;
  const link = join(PLUGIN_DIR, `${name}.sock`);
  let scratch: Scratch | undefined;
  let storeRoot = '';
  let socket = '';
  let pluginLog = '';
  let plugin: ChildProcess | undefined;
  let d: Dockerd | undefined;

  const logTail = () => (existsSync(pluginLog) ? readFileSync(pluginLog, 'utf8').split('\n').slice(-30).join('\n') : '');
  const docker = (args: string[]) => {
    assert.ok(d, 'dockerd is running');
    return d.docker(args);
  };
  const unionctl = (args: string[]) => runCli(['--root', storeRoot, ...args]);
  const layers = (): LsRecord[] => {
    const r = unionctl(['--json', 'ls']);
    assert.equal(r.status, 0, showResult(r));
    return JSON.parse(r.stdout) as LsRecord[];
  };

  /** Starts the plugin and waits for its socket (generously: the machine is shared). */
  async function startPlugin(): Promise<void> {
    const log = openSync(pluginLog, 'a');
    const child = spawn(
      process.execPath,
      [CLI_MAIN, '--root', storeRoot, '--driver', 'overlay2', 'serve', '--docker-plugin', name, '--socket', socket, '--log-level', 'debug'],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log);
    plugin = child;
    let exited: number | null | undefined;
    child.once('exit', (code) => (exited = code));
    for (let waited = 0; !existsSync(socket); waited += 100) {
      if (exited !== undefined) throw new Error(`the plugin exited (${exited}) before listening:\n${logTail()}`);
      if (waited > 120_000) throw new Error(`the plugin did not listen on ${socket}:\n${logTail()}`);
      await sleep(100);
    }
  }

  /** SIGTERM, then waits for the exit; returns the exit code. */
  async function stopPlugin(): Promise<number | null> {
    const child = plugin;
    plugin = undefined;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }

  before(async () => {
    scratch = makeScratch({ size: '2g' });
    storeRoot = join(scratch.dir, 'store');
    socket = join(scratch.dir, 'plugin.sock');
    pluginLog = join(scratch.dir, 'plugin.log');
    await startPlugin();
    mkdirSync(PLUGIN_DIR, { recursive: true });
    symlinkSync(socket, link);
    d = await startDockerd({ storageDriver: name, dir: scratch.dir, extraArgs: ['--experimental'], readyTimeoutMs: 180_000 });
  });

  after(async () => {
    const errors: string[] = [];
    const step = async (what: string, fn: () => unknown) => {
      try {
        await fn();
      } catch (e) {
        errors.push(`${what}: ${(e as Error).message}`);
      }
    };
    if (d !== undefined) {
      const dd = d;
      await step('removing containers', () => {
        const ids = dd.docker(['ps', '-aq']).split('\n').filter(Boolean);
        if (ids.length > 0) dd.docker(['rm', '-f', ...ids]);
      });
      await step('stopping dockerd', () => dd.stop());
    }
    await step('stopping the plugin', () => stopPlugin());
    await step('removing the plugin symlink', () => {
      const st = lstatSync(link, { throwIfNoEntry: false });
      if (st?.isSymbolicLink() && readlinkSync(link) === socket) rmSync(link);
    });
    if (storeRoot !== '' && existsSync(storeRoot)) await step('unionctl cleanup', () => unionctl(['cleanup']));
    await step('scratch', () => scratch?.dispose());
    if (errors.length > 0) throw new Error(`cleanup: ${errors.join('; ')}`);
  });

  it('dockerd uses the plugin: docker info names it and shows the store', () => {
    const info = JSON.parse(docker(['info', '--format', '{{json .}}'])) as { Driver: string; DriverStatus: string[][] };
    assert.equal(info.Driver, name);
    assert.deepEqual(info.DriverStatus[0], ['unionctl driver', 'overlay2']);
    assert.deepEqual(info.DriverStatus[1], ['unionctl root', storeRoot]);
    const state = JSON.parse(readFileSync(join(storeRoot, 'plugins', 'docker', `${name}.json`), 'utf8')) as { init: { Home: string } };
    assert.equal(state.init.Home, join(d!.root, name), "dockerd's Init is persisted in the store");
  });

  it('docker load makes unionctl layer records with the image diff IDs and chain IDs', () => {
    assert.match(docker(['load', '-i', SAMPLE]), /Loaded image: sample-app:1/);
    const images = layers().filter((l) => !l.writable);
    // Bottom first, by following parents from the layer without one.
    const chain: LsRecord[] = [];
    for (let p: string | undefined; ;) {
      const next = images.find((l) => (l.parent ?? undefined) === p && DIFF_IDS.includes(l.diffId ?? '')); // a base layer's parent is null
      if (next === undefined) break;
      chain.push(next);
      p = next.id;
    }
    assert.deepEqual(
      chain.map((l) => l.diffId),
      DIFF_IDS,
      `layers: ${JSON.stringify(images, null, 1)}`,
    );
    assert.equal(chain.at(-1)?.chainId, TOP_CHAIN_ID);
    // The store's rm guards apply to dockerd's layers: a parent layer has children.
    const r = unionctl(['rm', chain[0]!.id]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /has child layers/);
  });

  it('docker run prints sample-app 2.0.0, on a rootfs made of the store’s overlay2 layers', () => {
    assert.equal(docker(['run', '--rm', '--network', 'none', 'sample-app:1']).trim(), 'sample-app 2.0.0');
    const mounts = docker(['run', '--rm', '--network', 'none', 'sample-app:1', 'cat', '/proc/mounts']);
    const root = mounts.split('\n').find((l) => l.split(' ')[1] === '/');
    assert.ok(root, mounts);
    const [source, , type, options] = root.split(' ');
    assert.equal(`${source} ${type}`, 'overlay overlay', root);
    const home = join(storeRoot, 'overlay2');
    assert.ok(options!.includes(`lowerdir=${home}/l/`), root);
    assert.ok(options!.includes(`upperdir=${home}/`), root);
    // --rm removed the container's layers (<c>-init and <c>): only image layers are left.
    assert.deepEqual(
      layers().filter((l) => l.writable),
      [],
    );
    assert.deepEqual(mountsBelow(storeRoot), [], 'nothing stays mounted once the containers are gone');
  });

  it('concurrent docker runs: dockerd’s requests arrive side by side, and all of them work', async () => {
    const runs = await Promise.all(
      [1, 2, 3, 4].map(
        (n) =>
          new Promise<string>((resolve, reject) =>
            execFile(
              DOCKER_CLI,
              [
                '-H',
                `unix://${d!.socket}`,
                'run',
                '--rm',
                '--network',
                'none',
                'sample-app:1',
                'sh',
                '-c',
                `echo run ${n}; /srv/app/bin/run-app`,
              ],
              (e, stdout, stderr) => (e ? reject(new Error(`docker run ${n}: ${stderr}`)) : resolve(stdout)),
            ),
          ),
      ),
    );
    assert.deepEqual(
      runs,
      [1, 2, 3, 4].map((n) => `run ${n}\nsample-app 2.0.0\n`),
    );
    assert.deepEqual(
      layers().filter((l) => l.writable),
      [],
    );
  });

  it('docker diff and docker commit of a container that changed files', () => {
    docker(['run', '--name', 'changed', '--network', 'none', 'sample-app:1', 'sh', '-c', 'echo hello > /committed.txt && rm /etc/group']);
    const diff = docker(['diff', 'changed']).split('\n');
    assert.ok(diff.includes('A /committed.txt'), diff.join('\n'));
    assert.ok(diff.includes('D /etc/group'), diff.join('\n'));
    const before = new Set(layers().map((l) => l.id));
    docker(['commit', 'changed', 'sample-app:committed']);
    docker(['rm', 'changed']);
    const added = layers().filter((l) => !before.has(l.id));
    assert.equal(added.length, 1, JSON.stringify(added));
    assert.equal(added[0]!.writable, false);
    assert.match(added[0]!.diffId ?? '', /^sha256:[0-9a-f]{64}$/, 'ApplyDiff recorded the diff ID');
    const out = docker([
      'run',
      '--rm',
      '--network',
      'none',
      'sample-app:committed',
      'sh',
      '-c',
      'cat /committed.txt; ls /etc/group || true',
    ]);
    assert.match(out, /^hello\n/);
    assert.doesNotMatch(out, /^\/etc\/group$/m);
  });

  it('docker save writes layer.tars whose digests are the original diff IDs', () => {
    const dir = join(scratch!.dir, 'saved');
    mkdirSync(dir);
    const tar = join(dir, 'image.tar');
    docker(['save', '-o', tar, 'sample-app:1']);
    execFileSync('tar', ['-xf', tar, '-C', dir]);
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
    const digests = manifest[0]!.Layers.map(
      (l) =>
        `sha256:${createHash('sha256')
          .update(readFileSync(join(dir, l)))
          .digest('hex')}`,
    );
    assert.deepEqual(digests, DIFF_IDS);
    rmSync(dir, { recursive: true });
  });

  it('a restarted plugin keeps serving dockerd (which never sends Init again)', async () => {
    const code = await stopPlugin();
    assert.equal(code, 0, `the plugin stops cleanly on SIGTERM:\n${logTail()}`);
    assert.equal(existsSync(socket), false, 'the socket is removed');
    await startPlugin();
    // The socket exists a moment before the plugin logs how it starts: wait for the second start's line.
    const startLines = () =>
      readFileSync(pluginLog, 'utf8')
        .split('\n')
        .filter((l) => l.includes('docker graphdriver plugin'));
    await eventually('the restarted plugin logs how it starts', () => startLines().length >= 2, { diagnose: logTail });
    assert.match(startLines().at(-1)!, /serving on from dockerd's Init/);
    assert.equal(docker(['run', '--rm', '--network', 'none', 'sample-app:1']).trim(), 'sample-app 2.0.0');
  });

  it('unionctl ls lists the layers; dockerd stopping leaves nothing mounted', async () => {
    const r = unionctl(['ls', '--no-trunc']);
    assert.equal(r.status, 0, showResult(r));
    for (const id of layers().map((l) => l.id)) assert.ok(r.stdout.includes(id), r.stdout);
    assert.equal(layers().filter((l) => !l.writable).length, 5, 'the 4 sample layers and the committed one');
    const dd = d!;
    d = undefined;
    await dd.stop();
    assert.deepEqual(mountsBelow(storeRoot), []);
    assert.match(readFileSync(pluginLog, 'utf8'), /GraphDriver\.Cleanup → ok/);
    assert.equal(
      readdirSync(join(storeRoot, 'layerdb')).filter((f) => f.endsWith('.json')).length,
      5,
      'no writable layers are left behind',
    );
  });
});
