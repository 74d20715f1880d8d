/**
 * unionctl adopt: stores written by the real dockerd 20.10 (overlay2, overlay, vfs) and podman 4.3
 * (overlay, vfs), each started privately (bench/peers/), loaded with the sample image, stopped, and
 * adopted. For each:
 * - while the owner runs (dockerd up), adopt refuses and makes no store;
 * - the adopted image's `unionctl save` has layer tars whose digests are the diff IDs and equal
 *   those of the owner's own `docker save` / `podman save` (rebuilt through their tar-split);
 * - its merged view is the fixture's expected listing; `changes` and `diff` of it are exactly those
 *   of the same image loaded with `unionctl load` from the fixture;
 * - the foreign store is unchanged: every path, type, mode, owner, size, mtime, ctime, link target
 *   and file content below it is the same before and after the adoption.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { dockerdAvailable, startDockerd } from '../../bench/peers/dockerd.js';
import { podmanAvailable, startPodman } from '../../bench/peers/podman.js';
import { writeTinyStorageStore } from '../helpers/foreign-store.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import {
  assertCleanFailure,
  DIFF_IDS,
  DOCKER_IMAGE_ID,
  EXPECTED_TREE,
  flattenedTree,
  ok,
  SAMPLE_DOCKER,
  sha256,
  unionctl,
  untar,
} from './images-helpers.js';

let scratch: Scratch;
let roots = 0;
/** Per unionctl driver: what the sample gives for `changes` and `diff` when loaded (what an adopted image must equal). */
const loaded = new Map<string, { changes: string; diff: string }>();

function loadedReference(driver: string): { changes: string; diff: string } {
  let ref = loaded.get(driver);
  if (ref === undefined) {
    const g = freshRoot(driver);
    ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
    ref = { changes: ok(unionctl([...g, '--json', 'changes', 'sample-app:1'])), diff: diffListing(g, 'sample-app:1') };
    loaded.set(driver, ref);
  }
  return ref;
}

before(() => {
  scratch = makeScratch({ size: '3g' });
});
after(() => {
  for (let n = 1; n <= roots; n++) {
    const root = join(scratch.dir, `uc-${n}`);
    if (!existsSync(root)) continue;
    unionctl(['--root', root, 'umount', '--all']);
    unionctl(['--root', root, 'cleanup']);
  }
  scratch?.dispose();
});

function freshRoot(driver: string): string[] {
  return ['--root', join(scratch.dir, `uc-${++roots}`), '--driver', driver];
}

/**
 * `unionctl diff REF` as `tar -tv` lists it, without the times: a whiteout entry is stamped with the
 * time of the diff, everything else (names, types, modes, owners, sizes, link targets) must match.
 */
function diffListing(g: string[], ref: string): string {
  const out = join(scratch.dir, `diff-${roots}.tar`);
  ok(unionctl([...g, 'diff', ref, '-o', out]));
  return execFileSync('tar', ['--numeric-owner', '-tvf', out], { encoding: 'utf8' }).replace(/ \d{4}-\d\d-\d\d \d\d:\d\d /g, ' ');
}

/** Everything below `dir` but atimes: path, type, mode, owner, size, mtime, ctime, link target, and each file's sha256. */
function fingerprint(dir: string): string {
  const meta = execFileSync('find', [dir, '-printf', '%P %y %m %U:%G %s %T@ %C@ %l\\n'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const sums = execFileSync('sh', ['-c', 'cd "$0" && find . -type f -print0 | sort -z | xargs -0r sha256sum', dir], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  return `${meta.split('\n').sort().join('\n')}\n${sums}`;
}

/** The sha256 of each layer tar of a docker-archive, bottom first. */
function archiveLayerDigests(archive: string): string[] {
  const dir = untar(archive, `${archive}.d`);
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
  return manifest[0]!.Layers.map((l) => sha256(readFileSync(join(dir, l))));
}

/** Adopts, then checks save, the merged view, changes and diff of `ref` in the new store; the foreign store must not change. */
function adoptAndCheck(kind: 'docker' | 'podman', path: string, driver: string, ref: string, ownSave: string): void {
  const g = freshRoot(driver);
  const before = fingerprint(path);
  const out = JSON.parse(ok(unionctl([...g, '--json', 'adopt', kind, path]))) as {
    kind: string;
    images: Array<{ id: string; names: string[]; layers: Array<{ diffId: string }> }>;
    reusedLayers: string[];
  };
  assert.equal(out.kind, kind);
  assert.deepEqual(
    out.images.map((i) => [i.id, i.names, i.layers.map((l) => l.diffId)]),
    [[DOCKER_IMAGE_ID, [ref], DIFF_IDS]],
  );
  assert.deepEqual(out.reusedLayers, []);

  const saved = join(scratch.dir, `adopted-${roots}.tar`);
  ok(unionctl([...g, 'save', ref, '-o', saved]));
  const digests = archiveLayerDigests(saved);
  assert.deepEqual(digests, DIFF_IDS, 'the layer tars are the original ones, byte for byte');
  assert.deepEqual(digests, archiveLayerDigests(ownSave), `the same layer tars as ${kind} save`);

  assert.equal(flattenedTree(g, ref), EXPECTED_TREE);
  const reference = loadedReference(driver);
  assert.equal(ok(unionctl([...g, '--json', 'changes', ref])), reference.changes, 'changes as of the loaded image');
  assert.equal(diffListing(g, ref), reference.diff, 'diff as of the loaded image');
  assert.equal(fingerprint(path), before, `nothing below ${path} changed`);

  // Adopting again finds every layer by chain ID: nothing new, nothing read but the metadata.
  const again = JSON.parse(ok(unionctl([...g, '--json', 'adopt', kind, path]))) as { reusedLayers: string[] };
  assert.equal(again.reusedLayers.length, DIFF_IDS.length);
}

describe('adopt docker', { skip: dockerdAvailable() ? false : 'docker.io is not installed' }, () => {
  for (const [dockerDriver, driver] of [
    ['overlay2', 'overlay2'],
    ['overlay', 'overlay'],
    ['vfs', 'vfs'],
  ] as const) {
    it(`a dockerd ${dockerDriver} store: refused while dockerd runs, then adopted into ${driver}, byte-identical, unchanged`, async () => {
      const d = await startDockerd({ storageDriver: dockerDriver, dir: scratch.dir });
      try {
        d.docker(['load', '-i', SAMPLE_DOCKER]);
        const ownSave = join(scratch.dir, `docker-${dockerDriver}.tar`);
        d.docker(['save', '-o', ownSave, 'sample-app:1']);

        const running = freshRoot(driver);
        assertCleanFailure(unionctl([...running, 'adopt', 'docker', d.root]), /is in use.*dockerd/);
        assert.equal(existsSync(running[1]!), false, 'a refused adoption makes no store');

        await d.halt();
        adoptAndCheck('docker', d.root, driver, 'sample-app:1', ownSave);
      } finally {
        await d.stop();
      }
    });
  }

  it('refuses what it cannot adopt: no store there, another driver, --take-over', () => {
    const dir = join(scratch.dir, 'not-docker');
    mkdirSync(join(dir, 'image', 'devicemapper'), { recursive: true });
    const g = freshRoot('vfs');
    assertCleanFailure(unionctl([...g, 'adopt', 'docker', join(scratch.dir, 'nothing')]), /no dockerd store at/);
    assertCleanFailure(unionctl([...g, 'adopt', 'docker', dir]), /storage driver devicemapper: adopt reads overlay2, overlay and vfs/);
    assertCleanFailure(unionctl([...g, 'adopt', 'podman', dir]), /no containers\/storage store at/);
    assertCleanFailure(unionctl([...g, 'adopt', 'docker', dir, '--take-over']), /taking over .* is not implemented/);
    assertCleanFailure(
      unionctl(['--root', join(dir, 'uc'), 'adopt', 'docker', dir]),
      /overlap: adopting would write into the docker store/,
    );
    assertCleanFailure(unionctl(['--root', scratch.dir, 'adopt', 'docker', dir]), /overlap/);
    assert.equal(existsSync(join(dir, 'uc')), false, 'nothing was written into it');
    assert.equal(existsSync(g[1]!), false, 'no store was made');
  });
});

describe('adopt podman', { skip: podmanAvailable() ? false : 'podman is not installed' }, () => {
  for (const [podmanDriver, driver] of [
    ['overlay', 'overlay2'],
    ['vfs', 'vfs'],
  ] as const) {
    it(`a podman ${podmanDriver} store: adopted into ${driver}, byte-identical, unchanged`, () => {
      const p = startPodman({ storageDriver: podmanDriver, dir: scratch.dir });
      try {
        p.podman(['load', '-i', SAMPLE_DOCKER]);
        const ownSave = join(scratch.dir, `podman-${podmanDriver}.tar`);
        p.podman(['save', '--format', 'docker-archive', '-o', ownSave, 'localhost/sample-app:1']);
        adoptAndCheck('podman', p.root, driver, 'localhost/sample-app:1', ownSave);
      } finally {
        p.stop();
      }
    });
  }
});

describe('adopt refuses a store its owner is using (a hand-written c/storage store)', () => {
  it('while a lock is held on storage.lock, and while something is mounted below the graphroot; then adopts it', async () => {
    const tiny = writeTinyStorageStore(join(scratch.dir, 'tiny-root'), scratch.dir);
    const g = freshRoot('vfs');
    const busy = join(tiny.root, 'vfs', 'busy'); // a mount point for a while (its owner's, say)
    mkdirSync(busy);
    const before = fingerprint(tiny.root);

    // flock(1) holds the lock (its shell and sleep inherit it) until its process group is killed; "locked" says it has it.
    const holder = spawn('flock', [join(tiny.root, 'storage.lock'), '-c', 'echo locked; exec sleep 600'], {
      stdio: ['ignore', 'pipe', 'ignore'],
      detached: true,
    });
    const closed = new Promise((resolve) => holder.once('close', resolve));
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once('data', () => resolve());
        holder.once('exit', () => reject(new Error('flock exited before taking the lock')));
      });
      assertCleanFailure(
        unionctl([...g, 'adopt', 'podman', tiny.root]),
        /is in use: process \d+ holds a lock on .*storage\.lock \(podman is running\)/,
      );
    } finally {
      process.kill(-holder.pid!, 'SIGKILL');
      await closed;
    }

    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', busy]);
    try {
      assertCleanFailure(unionctl([...g, 'adopt', 'podman', tiny.root]), /is in use: a mount is at or below it/);
    } finally {
      execFileSync('umount', [busy]);
    }
    assert.equal(existsSync(g[1]!), false, 'the refusals made no store');

    const out = JSON.parse(ok(unionctl([...g, '--json', 'adopt', 'podman', tiny.root]))) as {
      driver: string;
      images: Array<{ id: string; names: string[] }>;
    };
    assert.equal(out.driver, 'vfs');
    assert.deepEqual(
      out.images.map((i) => [i.id, i.names]),
      [[tiny.imageId, [tiny.name]]],
    );
    const saved = join(scratch.dir, 'tiny-saved.tar');
    ok(unionctl([...g, 'save', tiny.name, '-o', saved]));
    assert.deepEqual(archiveLayerDigests(saved), [tiny.diffId]);
    assert.equal(fingerprint(tiny.root), before, 'the store is as it was');
  });
});
