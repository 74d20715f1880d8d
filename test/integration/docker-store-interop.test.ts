/**
 * Stores written by Docker 20.10 itself, read by unionctl:
 *
 * 1. dockerd --storage-driver overlay loads fixtures/sample-docker.tar; unionctl's overlay driver,
 *    opened on Docker's own home (<data-root>/overlay), gets the top layer and must show exactly
 *    fixtures/sample-expected.txt, with the metadata Docker reports (RootDir) and a change list
 *    against the parent layer that matches the deletions the sample's top layer makes.
 *
 * 2. dockerd --storage-driver fuse-overlayfs loads the same image. That driver stores layers in
 *    overlay2's layout (<id>/diff, l/, lower, link) but applies layer tars in the aufs whiteout
 *    format, so its diff dirs hold `.wh.` files and `.wh..wh..opq` markers: they are aufs branches.
 *    How unionctl's aufs driver reads them honestly: an aufs home is made whose diff/<cache-id> is
 *    a read-only bind mount of Docker's <cache-id>/diff (Docker's bytes, not a copy, and nothing
 *    can write to them), and whose layers/<cache-id> lists the ancestors in the order Docker's own
 *    image metadata gives (GraphDriver.Data UpperDir, LowerDir). unionctl's aufs driver mounts that
 *    with fuse-overlayfs and must show the same merged view, and its native change list (from the
 *    `.wh.` files) must name what Docker's top layer deletes.
 *
 * Both views must equal the fixture's expected listing and each other.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AufsDriver } from '../../src/drivers/aufs/index.js';
import { OverlayDriver } from '../../src/drivers/overlay/index.js';
import { treeList, REPO } from '../conformance/inspect.js';
import { dockerdAvailable, startDockerd, type Dockerd } from '../../bench/peers/dockerd.js';
import { mountsBelow } from '../helpers/mounts.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';

const SAMPLE = join(REPO, 'fixtures', 'sample-docker.tar');
const EXPECTED = readFileSync(join(REPO, 'fixtures', 'sample-expected.txt'), 'utf8');
const IMAGE = 'sample-app:1';

interface GraphDriverInfo {
  Name: string;
  Data: Record<string, string>;
}

function graphDriverOf(d: Dockerd): GraphDriverInfo {
  return JSON.parse(d.docker(['image', 'inspect', IMAGE, '--format', '{{json .GraphDriver}}'])) as GraphDriverInfo;
}

/** `.wh.` names below a dir, as D paths ("/var/cache/app/thumbs"); the opaque marker excluded. */
function whiteoutDeletions(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[])
    .filter((rel) => basename(rel).startsWith('.wh.') && !basename(rel).startsWith('.wh..wh.'))
    .map((rel) => `/${join(dirname(rel), basename(rel).slice(4))}`.replace(/^\/\.\//, '/'))
    .sort();
}

describe('Docker 20.10 stores read by unionctl', { skip: dockerdAvailable() ? false : 'docker.io is not installed' }, () => {
  let scratch: Scratch;
  /** The top layer's deletions as unionctl's overlay driver computed them (naive: two trees compared). */
  let overlayDeletions: string[] = [];
  before(() => {
    scratch = makeScratch({ size: '2g' });
  });
  after(() => {
    scratch?.dispose();
  });

  it("reads Docker's overlay store with unionctl's overlay driver: the expected merged view", async () => {
    const d = await startDockerd({ storageDriver: 'overlay', dir: scratch.dir });
    try {
      d.docker(['load', '-i', SAMPLE]);
      const gd = graphDriverOf(d);
      assert.equal(gd.Name, 'overlay');
      const rootDir = gd.Data.RootDir;
      const home = join(d.root, 'overlay');
      const topId = relative(home, rootDir).split('/')[0];

      const state = join(scratch.dir, 'unionctl-overlay-state');
      const driver = OverlayDriver.open({ home, root: state, stateDir: join(state, 'driver-state', 'overlay'), options: {} });
      assert.equal(await driver.exists(topId), true);
      assert.deepEqual(await driver.metadata(topId), { RootDir: rootDir }, 'the metadata Docker reports');
      const view = await driver.get(topId);
      try {
        assert.equal(view, rootDir);
        assert.equal(treeList(view), EXPECTED);
      } finally {
        await driver.put(topId);
      }
      // Every image layer is a full tree; the top's parent is the image layer below in Docker's layer db.
      const parentId = parentCacheId(d.root, 'overlay', topId);
      const deleted = (await driver.changes(topId, parentId)).filter((c) => c.kind === 'D').map((c) => c.path);
      for (const path of topLayerDeletions())
        assert.ok(deleted.includes(path), `${path} (a .wh. entry of the sample's top layer) is a D change`);
      overlayDeletions = deleted.sort();
    } finally {
      await d.stop();
    }
  });

  it("reads Docker's fuse-overlayfs store (aufs-format diff dirs) with unionctl's aufs driver: the same view", async () => {
    const d = await startDockerd({ storageDriver: 'fuse-overlayfs', dir: scratch.dir });
    const aufsRoot = join(scratch.dir, 'unionctl-aufs');
    const binds: string[] = [];
    try {
      d.docker(['load', '-i', SAMPLE]);
      const gd = graphDriverOf(d);
      assert.equal(gd.Name, 'fuse-overlayfs');
      // Top first: Docker's UpperDir, then LowerDir nearest first; each is <home>/<cache-id>/diff.
      const diffDirs = [gd.Data.UpperDir, ...gd.Data.LowerDir.split(':')];
      const ids = diffDirs.map((p) => basename(dirname(p)));
      assert.ok(
        diffDirs.some((p) => whiteoutDeletions(p).length > 0),
        "Docker's fuse-overlayfs diff dirs keep .wh. files",
      );

      const home = join(aufsRoot, 'aufs');
      const driver = AufsDriver.open({ home, root: aufsRoot, stateDir: join(aufsRoot, 'driver-state', 'aufs'), options: {} });
      for (const [i, id] of ids.entries()) {
        // diff/<id>: Docker's own dir, bound read-only; layers/<id>: its ancestors nearest first.
        const target = join(home, 'diff', id);
        mkdirSync(target, { mode: 0o755 });
        mkdirSync(join(home, 'mnt', id), { mode: 0o755 });
        execFileSync('mount', ['--bind', diffDirs[i], target]);
        binds.push(target);
        execFileSync('mount', ['-o', 'remount,bind,ro', target]);
        writeFileSync(
          join(home, 'layers', id),
          ids
            .slice(i + 1)
            .map((a) => `${a}\n`)
            .join(''),
        );
      }
      const top = ids[0];
      const view = await driver.get(top);
      try {
        assert.equal(treeList(view), EXPECTED);
        assert.deepEqual(
          (await driver.branches(top)).map((b) => `${b.layer} ${b.mode}`),
          ids.map((id) => `${id} ro+wh`),
          'an image layer: every branch read-only with whiteouts',
        );
      } finally {
        await driver.put(top);
      }
      const deleted = (await driver.changes(top, ids[1])).filter((c) => c.kind === 'D').map((c) => c.path);
      for (const path of topLayerDeletions()) assert.ok(deleted.includes(path), `${path} is a D change read from Docker's .wh. files`);
      assert.ok(overlayDeletions.length > 0, 'the overlay test ran first and found deletions');
      // Opaque dirs add the lower entries they hide; both drivers must agree on the whole list.
      assert.deepEqual(deleted.sort(), overlayDeletions, "aufs's native deletions = overlay's naive ones");
      await driver.cleanup();
    } finally {
      for (const b of binds.reverse()) execFileSync('umount', [b]);
      await d.stop();
    }
    assert.deepEqual(
      mountsBelow(scratch.dir).map((m) => m.mountPoint),
      [],
    );
  });
});

/** The parent of an image layer in Docker's layer db (<root>/image/<driver>/layerdb/sha256/<chain>/{cache-id,parent}). */
function parentCacheId(root: string, driver: string, cacheId: string): string {
  const db = join(root, 'image', driver, 'layerdb', 'sha256');
  const byCache = new Map<string, string>();
  for (const chain of readdirSync(db)) byCache.set(readFileSync(join(db, chain, 'cache-id'), 'utf8').trim(), chain);
  const chain = byCache.get(cacheId);
  assert.ok(chain, `layer ${cacheId} is in Docker's layer db`);
  const parentChain = readFileSync(join(db, chain, 'parent'), 'utf8')
    .trim()
    .replace(/^sha256:/, '');
  return readFileSync(join(db, parentChain, 'cache-id'), 'utf8').trim();
}

/** What the sample's top layer deletes: its `.wh.` entries (read with GNU tar from the docker-save archive). */
function topLayerDeletions(): string[] {
  const manifest = JSON.parse(execFileSync('tar', ['-xOf', SAMPLE, 'manifest.json'], { encoding: 'utf8' })) as Array<{ Layers: string[] }>;
  const layers = manifest[0].Layers;
  const top = layers[layers.length - 1];
  const names = execFileSync('sh', ['-c', `tar -xOf "$0" "$1" | tar -tf -`, SAMPLE, top], { encoding: 'utf8' }).split('\n');
  return names
    .map((n) => n.replace(/^\.\//, ''))
    .filter((n) => basename(n).startsWith('.wh.') && !basename(n).startsWith('.wh..wh.'))
    .map((n) => `/${join(dirname(n), basename(n).slice(4))}`.replace(/^\/\.\//, '/'))
    .sort();
}
