/**
 * Interop: archives written by `unionctl save` load into Docker 20.10 (a private dockerd,
 * bench/peers/dockerd.ts) and podman (a private store, bench/peers/podman.ts), and skopeo reads
 * them; what those tools save loads into unionctl. The image id and every diff ID must survive,
 * which Docker and podman check themselves: they hash each layer tar and compare it with the config.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { dockerdAvailable, startDockerd, type Dockerd } from '../../bench/peers/dockerd.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { podmanAvailable, startPodman, type Podman } from '../../bench/peers/podman.js';
import { DIFF_IDS, DOCKER_IMAGE_ID, EXPECTED_TREE, ok, SAMPLE_DOCKER, treeList, unionctl } from './images-helpers.js';

let scratchFs: Scratch;
let scratch = '';
let g: string[] = [];

before(() => {
  scratchFs = makeScratch();
  scratch = scratchFs.dir;
  g = ['--root', join(scratch, 'root'), '--driver', 'overlay2'];
  ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
});

after(() => {
  unionctl([...g, 'cleanup']);
  scratchFs.dispose();
});

function save(format: string, compress: string): string {
  const out = join(scratch, `save-${format}-${compress}.tar`);
  ok(unionctl([...g, 'save', 'sample-app:1', '-o', out, '--format', format, '--compress', compress]));
  return out;
}

interface InspectedImage {
  Id: string;
  RepoTags: string[];
  RootFS: { Layers: string[] };
}

describe('Docker 20.10', { skip: dockerdAvailable() ? false : 'docker.io is not installed' }, () => {
  let dockerd: Dockerd;
  before(async () => {
    dockerd = await startDockerd({ storageDriver: 'overlay2', dir: scratch });
  });
  after(async () => {
    await dockerd?.stop();
  });

  for (const compress of ['none', 'gzip']) {
    it(`docker load takes a docker-format archive (${compress} layers) with the same image id and diff IDs`, () => {
      const archive = save('docker', compress);
      dockerd.docker(['rmi', '-f', 'sample-app:1'], undefined);
      assert.match(dockerd.docker(['load', '-i', archive]), /Loaded image: sample-app:1/);
      const [image] = JSON.parse(dockerd.docker(['image', 'inspect', 'sample-app:1'])) as InspectedImage[];
      assert.equal(image.Id, DOCKER_IMAGE_ID);
      assert.deepEqual(image.RootFS.Layers, DIFF_IDS);
    });
  }

  it('what docker save writes from that image loads back into unionctl, same tree', () => {
    const out = join(scratch, 'from-docker.tar');
    dockerd.docker(['save', '-o', out, 'sample-app:1']);
    const g2 = ['--root', join(scratch, 'root-from-docker'), '--driver', 'overlay2'];
    const loaded = JSON.parse(ok(unionctl([...g2, '--json', 'load', out]))) as {
      images: Array<{ id: string; layers: Array<{ diffId: string }> }>;
    };
    assert.equal(loaded.images[0].id, DOCKER_IMAGE_ID);
    assert.deepEqual(
      loaded.images[0].layers.map((l) => l.diffId),
      DIFF_IDS,
    );
    const lines = ok(unionctl([...g2, 'mount', 'sample-app:1']))
      .trim()
      .split('\n');
    try {
      assert.equal(treeList(lines[lines.length - 1]), EXPECTED_TREE);
    } finally {
      ok(unionctl([...g2, 'umount', lines[0].replace(/^layer /, '')]));
    }
  });
});

describe('podman', { skip: podmanAvailable() ? false : 'podman is not installed' }, () => {
  let podman: Podman;
  before(() => {
    podman = startPodman({ storageDriver: 'overlay', dir: scratch });
  });
  after(() => podman?.stop());

  for (const [format, compress] of [
    ['docker', 'none'],
    ['oci', 'none'],
    ['oci', 'gzip'],
    ['oci', 'zstd'],
  ]) {
    it(`podman load takes a ${format} archive with ${compress} layers: same image id and diff IDs`, () => {
      const archive = save(format, compress);
      try {
        podman.podman(['rmi', '-f', 'sample-app:1']);
      } catch {
        /* not there yet */
      }
      podman.podman(['load', '-i', archive]);
      const [image] = JSON.parse(podman.podman(['image', 'inspect', 'localhost/sample-app:1'])) as InspectedImage[];
      assert.equal(`sha256:${image.Id}`, DOCKER_IMAGE_ID);
      assert.deepEqual(image.RootFS.Layers, DIFF_IDS);
    });
  }
});

describe('skopeo', { skip: podmanAvailable() ? false : 'skopeo is not installed' }, () => {
  for (const [format, compress, transport] of [
    ['oci', 'gzip', 'oci-archive'],
    ['oci', 'zstd', 'oci-archive'],
    ['docker', 'none', 'docker-archive'],
  ]) {
    it(`skopeo reads and copies a ${format} archive with ${compress} layers (digests checked on copy)`, () => {
      const archive = save(format, compress);
      const inspected = JSON.parse(execFileSync('skopeo', ['inspect', '--config', `${transport}:${archive}`], { encoding: 'utf8' })) as {
        rootfs: { diff_ids: string[] };
      };
      assert.deepEqual(inspected.rootfs.diff_ids, DIFF_IDS);
      const dest = join(scratch, `skopeo-${format}-${compress}`);
      execFileSync('skopeo', ['copy', '--quiet', `${transport}:${archive}`, `oci:${dest}:copied`], { stdio: ['ignore', 'pipe', 'pipe'] });
      const g2 = ['--root', join(scratch, `root-skopeo-${format}-${compress}`), '--driver', 'vfs'];
      const loaded = JSON.parse(ok(unionctl([...g2, '--json', 'load', dest]))) as { images: Array<{ layers: Array<{ diffId: string }> }> };
      assert.deepEqual(
        loaded.images[0].layers.map((l) => l.diffId),
        DIFF_IDS,
      );
    });
  }
});
