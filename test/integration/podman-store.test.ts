/**
 * unionctl as podman's read-only image store (containers/storage `additionalimagestores`), with
 * the real podman 4.3: `unionctl load` + `unionctl export-storage DIR`, then a private podman whose
 * storage.conf lists DIR:
 *
 * - `podman images` lists the image, read-only;
 * - `podman run --rm --network none` prints what the image prints, with every lowerdir of the
 *   container's root a layer dir of the unionctl store (through DIR/overlay → the overlay2 home);
 * - nothing podman does writes into the unionctl store (every inode's type, mode, size, mtime and
 *   ctime compared before and after);
 * - `unionctl rmi` makes the image disappear from `podman images`, another `load` makes one appear;
 * - a reader holding c/storage's read lock (a classic fcntl F_SETLKW read lock, taken by python's
 *   fcntl.lockf exactly as c/storage takes it) makes the rewrite wait — unionctl says whom it waits
 *   for, the metadata stays as it was — and the rewrite finishes once the lock is let go;
 * - `export-storage --remove` leaves DIR an empty image store podman still reads.
 *
 * Without podman: only image layers are exported; rmi is refused (nothing changed) while the export
 * cannot be rewritten, a load is done with a warning; other drivers are UNSUPPORTED; a DIR that
 * holds anything else, or lies inside the store, is refused.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { podmanAvailable, startPodman, type Podman } from '../../bench/peers/podman.js';
import { REPO } from '../conformance/inspect.js';
import { CLI_MAIN, runCli, showResult, type CliResult } from '../helpers/cli.js';
import { rootMissing, toolsMissing } from '../helpers/requires.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';

const DOCKER_SAMPLE = join(REPO, 'fixtures', 'sample-docker.tar');
const OCI_SAMPLE = join(REPO, 'fixtures', 'sample-oci-zstd.tar');
/** The name podman gives sample-app:1 (as `podman load` of the same archive does). */
const IMAGE = 'localhost/sample-app:1';
const DOCKER_ID = '1cac91af1a9293a18ca5edea62f01cb6b7186865673a44854e6007d50d1096aa';
const OCI_ID = '457ebf047d7b7c6b6e25044a447053f2b36de4f21d7f8da968f44d482e65eff9';

const skip = rootMissing('mounts a scratch tmpfs and runs podman') ?? (podmanAvailable() ? undefined : 'podman is not installed');

/** Every inode below `dir`: path, type, mode, size, mtime, ctime (atime left out: reading changes it). */
function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    const st = lstatSync(join(dir, rel), { bigint: true });
    out.push(`${rel || '.'} ${st.mode.toString(8)} ${st.size} ${st.mtimeNs} ${st.ctimeNs} ${st.ino}`);
    if (st.isDirectory()) for (const name of readdirSync(join(dir, rel)).sort()) walk(rel ? join(rel, name) : name);
  };
  walk('');
  return out;
}

function imagesJson(ais: string): Array<{ id: string; names?: string[] }> {
  return JSON.parse(readFileSync(join(ais, 'overlay-images', 'images.json'), 'utf8')) as Array<{ id: string; names?: string[] }>;
}

interface PodmanImage {
  Id: string;
  Names?: string[];
  ReadOnly?: boolean;
}

function podmanImages(pm: Podman): PodmanImage[] {
  return JSON.parse(pm.podman(['images', '--format', 'json'])) as PodmanImage[];
}

/** A python child holding a classic POSIX read lock (F_SETLKW, F_RDLCK) on `path` until its stdin closes. */
async function holdReadLock(path: string): Promise<ChildProcess> {
  const code = 'import fcntl,sys\nf=open(sys.argv[1],"r")\nfcntl.lockf(f,fcntl.LOCK_SH)\nprint("locked",flush=True)\nsys.stdin.read()\n';
  const child = spawn('python3', ['-c', code, path], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (c) => reject(new Error(`the lock holder exited (${c}) before it locked`)));
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('locked')) resolve();
    });
  });
  return child;
}

interface RunningCli {
  /** Resolves with all of stderr so far once it contains `text`; rejects if the process ends first. */
  stderrContaining(text: string): Promise<string>;
  done: Promise<CliResult>;
}

/** The CLI as a child whose stderr can be watched while it runs. */
function startCli(args: string[]): RunningCli {
  const child = spawn(process.execPath, [CLI_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const watchers: Array<() => void> = [];
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    for (const w of watchers) w();
  });
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
  return {
    done,
    stderrContaining: (text) =>
      new Promise<string>((resolve, reject) => {
        const check = () => {
          if (stderr.includes(text)) resolve(stderr);
        };
        watchers.push(check);
        check();
        void done.then((r) => reject(new Error(`the command ended before saying ${JSON.stringify(text)}:\n${showResult(r)}`)));
      }),
  };
}

describe('podman with a unionctl store as additional image store', { skip }, () => {
  let scratch: Scratch;
  let root = '';
  let ais = '';
  let pm: Podman | undefined;
  let storeBefore: string[] = [];
  const children: ChildProcess[] = [];
  const unionctl = (...args: string[]) => runCli(['--root', root, '--driver', 'overlay2', ...args]);

  before(() => {
    scratch = makeScratch({ size: '2g' });
    root = join(scratch.dir, 'store');
    ais = join(scratch.dir, 'ais');
  });
  after(() => {
    for (const c of children) c.kill('SIGKILL');
    try {
      pm?.stop();
    } finally {
      scratch.dispose();
    }
  });

  it('export-storage writes c/storage metadata for the loaded image', () => {
    const load = unionctl('load', DOCKER_SAMPLE);
    assert.equal(load.status, 0, showResult(load));
    const exp = unionctl('--json', 'export-storage', ais);
    assert.equal(exp.status, 0, showResult(exp));
    assert.deepEqual(JSON.parse(exp.stdout), { dir: ais, images: 1, layers: 4 });
    assert.equal(realpathSync(join(ais, 'overlay')), join(root, 'overlay2'));
    assert.deepEqual(
      imagesJson(ais).map((i) => [i.id, i.names]),
      [[DOCKER_ID, [IMAGE]]],
    );
    // The config byte for byte, under c/storage's name for the key "sha256:<id>".
    const configFile = join(ais, 'overlay-images', DOCKER_ID, `=${Buffer.from(`sha256:${DOCKER_ID}`).toString('base64')}`);
    const config = execFileSync('tar', ['-xOf', DOCKER_SAMPLE, `${DOCKER_ID}.json`]);
    assert.deepEqual(readFileSync(configFile), config);
    for (const lock of ['overlay-layers/layers.lock', 'overlay-images/images.lock']) {
      assert.equal(readFileSync(join(ais, lock)).length, 64, `${lock} holds c/storage's 64-byte last-writer token`);
    }
    const list = unionctl('export-storage');
    assert.equal(list.stdout, `${ais}\n`);
    storeBefore = listing(root); // from here until rmi, only podman runs
    pm = startPodman({ storageDriver: 'overlay', dir: scratch.dir, additionalImageStores: [ais] });
  });

  it('podman images lists it read-only', () => {
    const images = podmanImages(pm!);
    assert.equal(images.length, 1);
    assert.equal(images[0]!.Id, DOCKER_ID);
    assert.deepEqual(images[0]!.Names, [IMAGE]);
    assert.equal(images[0]!.ReadOnly, true);
  });

  it('podman run starts it from the unionctl store; podman writes nothing into the store', () => {
    const out = pm!.podman(['run', '--rm', '--network', 'none', IMAGE]);
    assert.equal(out.trim(), 'sample-app 2.0.0');
    const mountinfo = pm!.podman(['run', '--rm', '--network', 'none', IMAGE, 'cat', '/proc/self/mountinfo']);
    const rootLine = mountinfo.split('\n').find((l) => l.split(' ')[4] === '/' && l.includes(' - overlay '));
    assert.ok(rootLine, mountinfo);
    const lowers = /lowerdir=([^,]+)/.exec(rootLine)![1]!.split(':');
    assert.equal(lowers.length, 4, rootLine);
    const layerDirs = new Set(readdirSync(join(root, 'overlay2')).map((id) => join(root, 'overlay2', id, 'diff')));
    for (const lower of lowers) {
      assert.ok(lower.startsWith(join(ais, 'overlay', 'l') + '/'), `${lower} is a link of the export`);
      assert.ok(layerDirs.has(realpathSync(lower)), `${lower} leads to a layer dir of the unionctl store`);
    }
    assert.deepEqual(listing(root), storeBefore, 'podman (images, run, run) wrote into the unionctl store');
  });

  it('rmi is refused while a podman container runs from the image', () => {
    const id = pm!.podman(['run', '-d', '--network', 'none', IMAGE, 'sleep', '600']).trim();
    try {
      const r = unionctl('rmi', 'sample-app:1');
      assert.equal(r.status, 1, showResult(r));
      assert.match(r.stderr, /is a lower layer of the overlay mounted at .*\(a container of podman, buildah or CRI-O, through /);
      assert.equal(podmanImages(pm!).length, 1, 'podman still sees it');
      assert.equal(JSON.parse(unionctl('--json', 'images').stdout).length, 1, 'unionctl still has it');
    } finally {
      pm!.podman(['rm', '--force', '--time', '0', id]);
    }
  });

  it('rmi makes the image disappear from podman images; another load makes one appear', () => {
    const rmi = unionctl('rmi', 'sample-app:1');
    assert.equal(rmi.status, 0, showResult(rmi));
    assert.deepEqual(podmanImages(pm!), []);
    assert.deepEqual(readdirSync(join(ais, 'overlay-images')).sort(), ['images.json', 'images.lock'], 'its big data went too');
    const load = unionctl('load', OCI_SAMPLE);
    assert.equal(load.status, 0, showResult(load));
    const images = podmanImages(pm!);
    assert.deepEqual(
      images.map((i) => [i.Id, i.Names]),
      [[OCI_ID, [IMAGE]]],
    );
    assert.equal(pm!.podman(['run', '--rm', '--network', 'none', IMAGE]).trim(), 'sample-app 2.0.0');
  });

  it(
    "a reader holding c/storage's read lock makes the rewrite wait; it proceeds once the lock goes",
    { skip: toolsMissing(['python3']) },
    async () => {
      const holder = await holdReadLock(join(ais, 'overlay-images', 'images.lock'));
      children.push(holder);
      const rmi = startCli(['--root', root, '--driver', 'overlay2', 'rmi', 'sample-app:1']);
      // Wait until unionctl says it waits for that very process (it polls the lock; it must not write meanwhile).
      const waiting = await rmi.stderrContaining(`held by process ${holder.pid}`);
      assert.match(waiting, /waiting for the containers-storage lock .*images\.lock/);
      assert.deepEqual(
        imagesJson(ais).map((i) => i.id),
        [OCI_ID],
        'nothing rewritten while the reader holds the lock',
      );
      assert.ok(existsSync(join(root, 'images', `${OCI_ID}.json`)), 'the rmi has not committed while it waits');
      holder.stdin!.end(); // the reader lets go
      const result = await rmi.done;
      assert.equal(result.status, 0, showResult(result));
      assert.deepEqual(imagesJson(ais), []);
      assert.deepEqual(podmanImages(pm!), []);
    },
  );

  it('--remove stops the export and leaves an empty image store', () => {
    const load = unionctl('load', DOCKER_SAMPLE);
    assert.equal(load.status, 0, showResult(load));
    assert.equal(podmanImages(pm!).length, 1);
    const rm = unionctl('export-storage', '--remove', ais);
    assert.equal(rm.status, 0, showResult(rm));
    assert.equal(unionctl('export-storage').stdout, '');
    assert.deepEqual(imagesJson(ais), []);
    assert.deepEqual(readdirSync(join(ais, 'overlay-images')).sort(), ['images.json', 'images.lock']);
    assert.equal(existsSync(join(ais, 'overlay')), false, 'the link to the store is gone');
    assert.deepEqual(podmanImages(pm!), []);
    const second = unionctl('load', OCI_SAMPLE);
    assert.equal(second.status, 0, showResult(second));
    assert.deepEqual(imagesJson(ais), [], 'a load no longer writes there');
    assert.deepEqual(podmanImages(pm!), []);
  });
});

describe('export-storage (without podman)', { skip: rootMissing('mounts a scratch tmpfs and overlay2 layers') }, () => {
  let scratch: Scratch;
  let root = '';
  let ais = '';
  const unionctl = (...args: string[]) => runCli(['--root', root, '--driver', 'overlay2', ...args]);

  before(() => {
    scratch = makeScratch({ size: '1g' });
    root = join(scratch.dir, 'store');
    ais = join(scratch.dir, 'ais');
  });
  after(() => scratch.dispose());

  it('exports the layers of images only', () => {
    const imp = unionctl('import', join(REPO, 'fixtures', 'layers', '1-base.tar'), '--id', 'not-an-image-layer');
    assert.equal(imp.status, 0, showResult(imp));
    const load = unionctl('load', DOCKER_SAMPLE);
    assert.equal(load.status, 0, showResult(load));
    const exp = unionctl('export-storage', ais);
    assert.equal(exp.status, 0, showResult(exp));
    const layers = JSON.parse(readFileSync(join(ais, 'overlay-layers', 'layers.json'), 'utf8')) as Array<{ id: string }>;
    const loaded = JSON.parse(unionctl('--json', 'images').stdout) as Array<{ layers: Array<{ id: string }> }>;
    assert.deepEqual(
      layers.map((l) => l.id),
      loaded[0]!.layers.map((l) => l.id),
    );
  });

  it('rmi is refused, changing nothing, while the export cannot be rewritten', () => {
    const link = join(ais, 'overlay');
    rmSync(link);
    symlinkSync(scratch.dir, link); // someone pointed it elsewhere
    const r = unionctl('rmi', 'sample-app:1');
    assert.equal(r.status, 1, showResult(r));
    assert.match(r.stderr, /is not a symbolic link to the store's overlay2 home/);
    assert.equal(JSON.parse(unionctl('--json', 'images').stdout).length, 1, 'the image is still in the store');
    assert.deepEqual(
      imagesJson(ais).map((i) => i.id),
      [DOCKER_ID],
    );
    rmSync(link);
    const again = unionctl('rmi', 'sample-app:1');
    assert.equal(again.status, 0, showResult(again));
    assert.deepEqual(imagesJson(ais), []);
    assert.equal(realpathSync(link), join(root, 'overlay2'), 'the link is made again');
  });

  it('a load whose export cannot be rewritten is done all the same, with a warning; export-storage catches up', () => {
    const link = join(ais, 'overlay');
    rmSync(link);
    symlinkSync(scratch.dir, link);
    const load = unionctl('load', DOCKER_SAMPLE);
    assert.equal(load.status, 0, showResult(load));
    assert.match(load.stderr, /warning: the containers-storage export was not updated .*run unionctl export-storage DIR to retry/);
    assert.equal(JSON.parse(unionctl('--json', 'images').stdout).length, 1);
    assert.deepEqual(imagesJson(ais), []);
    rmSync(link);
    const exp = unionctl('export-storage', ais);
    assert.equal(exp.status, 0, showResult(exp));
    assert.deepEqual(
      imagesJson(ais).map((i) => i.id),
      [DOCKER_ID],
    );
  });

  it('refuses an export dir that holds something else, and a dir inside the store', () => {
    const other = join(scratch.dir, 'not-empty');
    mkdirSync(other);
    writeFileSync(join(other, 'file'), 'x');
    const r = unionctl('export-storage', other);
    assert.equal(r.status, 1, showResult(r));
    assert.match(r.stderr, /is not empty and is not an export of the store/);
    const inside = unionctl('export-storage', join(root, 'export'));
    assert.equal(inside.status, 1, showResult(inside));
    assert.match(inside.stderr, /must be outside the store root/);
  });

  it('other drivers: UNSUPPORTED, saying why', () => {
    const vfsRoot = join(scratch.dir, 'vfs-store');
    const load = runCli(['--root', vfsRoot, '--driver', 'vfs', 'load', DOCKER_SAMPLE]);
    assert.equal(load.status, 0, showResult(load));
    const r = runCli(['--root', vfsRoot, 'export-storage', join(scratch.dir, 'vfs-ais')]);
    assert.equal(r.status, 1, showResult(r));
    assert.match(r.stderr, /export-storage needs the overlay2 driver, and the store at .* uses vfs/);
    assert.equal(existsSync(join(scratch.dir, 'vfs-ais')), false);
  });
});
