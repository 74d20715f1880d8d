/**
 * `unionctl pull` and `push` against Debian's docker-registry (distribution 2.8) started on
 * 127.0.0.1 by the test (bench/peers/registry.ts), the sample image pushed there by skopeo:
 * docker and OCI (gzip, zstd) images by tag and by digest, a multi-platform index, layers the
 * store holds skipped without a request, a download cut mid-blob resumed, a corrupt blob refused
 * with nothing stored, 404 and 401 paths, Basic auth (htpasswd) and the Bearer token flow, and
 * the round trip pull → push elsewhere → pull again, read back by skopeo too; podman and docker
 * (started privately) pull what unionctl pushed, and unionctl pulls what they pushed.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { dockerdAvailable, startDockerd, type Dockerd } from '../../bench/peers/dockerd.js';
import { podmanAvailable, startPodman, type Podman } from '../../bench/peers/podman.js';
import { registryAvailable, startRegistry, type Registry } from '../../bench/peers/registry.js';
import { openStore, pushImage, type PushProgress } from '../../src/index.js';
import { startCuttingProxy, startTokenServer, writeHtpasswd, type TokenServer } from '../helpers/registry-rigs.js';
import { toolsMissing } from '../helpers/requires.js';
import { makeScratch, scratchMissing, type Scratch } from '../helpers/scratch.js';
import {
  assertCleanFailure,
  DIFF_IDS,
  DOCKER_IMAGE_ID,
  EXPECTED_TREE,
  flattenedTree,
  listing,
  OCI_IMAGE_ID,
  ok,
  sha256,
  SAMPLE_DOCKER,
  SAMPLE_OCI_GZIP,
  SAMPLE_OCI_ZSTD,
  unionctl,
  unionctlAsync,
  MAIN,
} from './images-helpers.js';

/** Runs a command without blocking this process (its servers must answer meanwhile); throws with its stderr on failure. */
async function run(cmd: string, args: string[]): Promise<void> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve, reject) => child.on('error', reject).on('close', resolve));
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.trim()}`);
}

const skip = scratchMissing ?? (registryAvailable() ? toolsMissing(['htpasswd', 'openssl']) : 'docker-registry or skopeo is not installed');

/** What pull --json prints: the image (as images --json prints it) and how it was found. */
interface PullJson {
  image: { id: string; names: string[]; layers: Array<{ id: string; diffId: string; chainId: string; size: number }> };
  reference: string;
  manifestDigest: string;
  indexDigest: string | null;
  platform: { os: string; architecture: string; variant?: string } | null;
  reusedLayers: string[];
}

interface PushJson {
  manifestDigest: string;
  configDigest: string;
  layers: Array<{ digest: string; how: string }>;
}

const USER = { username: 'alice', password: 'wonder land' };

describe('unionctl pull and push with a registry', { skip }, () => {
  let scratch: Scratch;
  let registry: Registry;
  let roots = 0;
  const freshRoot = (driver = 'overlay2') => ['--root', join(scratch.dir, `root-${++roots}`), '--driver', driver];
  const pullJson = (g: string[], ref: string, ...extra: string[]) =>
    JSON.parse(ok(unionctl([...g, '--json', 'pull', '--insecure', ...extra, ref]))) as PullJson;
  const pushJson = (g: string[], image: string, dest: string, ...extra: string[]) =>
    JSON.parse(ok(unionctl([...g, '--json', 'push', '--insecure', ...extra, image, dest]))) as PushJson;
  /** The manifest at REF byte for byte, as skopeo fetches it. */
  const rawManifest = (ref: string) => execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
  /** The registry's manifest digest of REF, as skopeo sees it. */
  const digestOf = (ref: string) =>
    (JSON.parse(execFileSync('skopeo', ['inspect', '--tls-verify=false', `docker://${ref}`], { encoding: 'utf8' })) as { Digest: string })
      .Digest;

  before(async () => {
    scratch = makeScratch();
    registry = await startRegistry({ dir: scratch.dir });
    registry.push(`docker-archive:${SAMPLE_DOCKER}`, 'sample/docker:1');
    registry.push(`oci-archive:${SAMPLE_OCI_GZIP}`, 'sample/oci:gzip');
    registry.push(`oci-archive:${SAMPLE_OCI_ZSTD}`, 'sample/oci:zstd');
  });

  after(async () => {
    for (const name of existsSync(scratch.dir) ? readdirSync(scratch.dir) : []) {
      if (name.startsWith('root-')) unionctl(['--root', join(scratch.dir, name), 'cleanup']);
    }
    await registry?.stop();
    scratch?.dispose();
  });

  it('pulls a docker image by tag: the image id, diff IDs and flattened tree of the archive', () => {
    const g = freshRoot();
    const pulled = pullJson(g, `${registry.address}/sample/docker:1`);
    assert.equal(pulled.image.id, DOCKER_IMAGE_ID);
    assert.deepEqual(pulled.image.names, [`${registry.address}/sample/docker:1`]);
    assert.deepEqual(
      pulled.image.layers.map((l) => l.diffId),
      DIFF_IDS,
    );
    assert.equal(pulled.manifestDigest, digestOf(`${registry.address}/sample/docker:1`));
    assert.equal(flattenedTree(g, `${registry.address}/sample/docker:1`), EXPECTED_TREE);
  });

  it('pulls OCI images, gzip by tag and zstd by digest (a digest-only pull names no image)', () => {
    const g = freshRoot('vfs');
    assert.equal(pullJson(g, `${registry.address}/sample/oci:gzip`).image.id, OCI_IMAGE_ID);
    const digest = digestOf(`${registry.address}/sample/oci:zstd`);
    const g2 = freshRoot();
    const byDigest = pullJson(g2, `${registry.address}/sample/oci@${digest}`);
    assert.equal(byDigest.image.id, OCI_IMAGE_ID);
    assert.equal(byDigest.manifestDigest, digest);
    assert.deepEqual(byDigest.image.names, []);
    assert.equal(flattenedTree(g2, OCI_IMAGE_ID.slice(7, 19)), EXPECTED_TREE);
  });

  it('layers the store already holds are not fetched: a pull after load asks for no layer blob', () => {
    const g = freshRoot();
    ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
    const before = registry.blobGets().length;
    const pulled = pullJson(g, `${registry.address}/sample/oci:zstd`);
    assert.ok(
      pulled.image.layers.every((l) => pulled.reusedLayers.includes(l.id)),
      'every layer reused',
    );
    assert.equal(registry.blobGets().length - before, 1, 'only the config blob was fetched');
  });

  it('resolves a multi-platform index by --platform (default: this host), and names what an index offers', async () => {
    // An index in sample/oci: linux/amd64 → the docker image's manifest (copied there), linux/arm64/v8 → the OCI one.
    execFileSync('skopeo', [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      `docker://${registry.address}/sample/docker:1`,
      `docker://${registry.address}/sample/oci:docker`,
    ]);
    const entry = (tag: string, platform: object) => {
      const raw = rawManifest(`${registry.address}/sample/oci:${tag}`);
      return {
        mediaType: (JSON.parse(raw.toString()) as { mediaType: string }).mediaType,
        digest: sha256(raw),
        size: raw.length,
        platform,
      };
    };
    const body = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        entry('docker', { os: 'linux', architecture: 'amd64' }),
        entry('gzip', { os: 'linux', architecture: 'arm64', variant: 'v8' }),
      ],
    });
    const put = await fetch(`http://${registry.address}/v2/sample/oci/manifests/multi`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/vnd.oci.image.index.v1+json' },
      body,
    });
    assert.equal(put.status, 201, await put.text());
    const host = pullJson(freshRoot(), `${registry.address}/sample/oci:multi`);
    assert.equal(host.image.id, DOCKER_IMAGE_ID, 'the host is linux/amd64');
    assert.equal(host.indexDigest, sha256(body));
    const arm = pullJson(freshRoot(), `${registry.address}/sample/oci:multi`, '--platform', 'linux/arm64');
    assert.equal(arm.image.id, OCI_IMAGE_ID);
    assert.deepEqual(arm.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
    const none = unionctl([...freshRoot(), 'pull', '--insecure', '--platform', 'linux/s390x', `${registry.address}/sample/oci:multi`]);
    assertCleanFailure(none, /has no image for linux\/s390x \(it has: linux\/amd64, linux\/arm64\/v8\)/);
  });

  it('a download cut off mid-blob is resumed with a Range request; a 503 is retried', async () => {
    const manifest = JSON.parse(rawManifest(`${registry.address}/sample/docker:1`).toString()) as {
      layers: Array<{ digest: string; size: number }>;
    };
    const biggest = [...manifest.layers].sort((a, b) => b.size - a.size)[0]!;
    assert.ok(biggest.size > 4096, `a layer big enough to cut: ${biggest.size} bytes`);
    const proxy = await startCuttingProxy(registry.address, { digest: biggest.digest, afterBytes: 2048, times: 2, failManifests: 2 });
    try {
      const g = freshRoot();
      const pulled = JSON.parse(
        ok(await unionctlAsync([...g, '--json', 'pull', '--insecure', `${proxy.address}/sample/docker:1`])),
      ) as PullJson;
      assert.equal(pulled.image.id, DOCKER_IMAGE_ID);
      assert.equal(proxy.cuts(), 1, 'the first download was cut');
      assert.equal(proxy.rangeRequests(), 1, 'and resumed from where it stopped');
      assert.equal(proxy.failedManifests(), 2, 'two 503s for the manifest, retried');
      assert.equal(flattenedTree(g, DOCKER_IMAGE_ID.slice(7, 19)), EXPECTED_TREE);
    } finally {
      await proxy.close();
    }
  });

  it('a blob that does not match its digest: refused, nothing stored', () => {
    registry.push(`docker-archive:${SAMPLE_DOCKER}`, 'sample/corrupt:1');
    const manifest = JSON.parse(rawManifest(`${registry.address}/sample/corrupt:1`).toString()) as { layers: Array<{ digest: string }> };
    // Blobs are stored once for every repository: the damage is undone before the next test.
    const top = manifest.layers[3]!.digest;
    const file = registry.blobFile(top);
    const original = readFileSync(file);
    const damaged = Buffer.from(original);
    damaged[damaged.length - 20] ^= 0xff;
    writeFileSync(file, damaged);
    try {
      const g = freshRoot();
      const root = g[1]!;
      const r = unionctl([...g, 'pull', '--insecure', `${registry.address}/sample/corrupt:1`]);
      assertCleanFailure(r, /registry .*, repository sample\/corrupt: layer 4 of image .*(digest mismatch|gzip|invalid)/i);
      assert.deepEqual(JSON.parse(ok(unionctl([...g, '--json', 'ls']))), [], 'no layer stays');
      assert.deepEqual(JSON.parse(ok(unionctl([...g, '--json', 'images']))), []);
      assert.ok(!listing(root).some((l) => l.startsWith('images/')), 'no image record');
    } finally {
      writeFileSync(file, original);
    }
  });

  it('layers pulled at once: the same image with 1 or 4 at a time and on vfs; a corrupt lower layer fails the layers above it, nothing stored', () => {
    const ref = `${registry.address}/sample/docker:1`;
    const one = pullJson(freshRoot(), ref, '--max-concurrent-downloads', '1');
    const four = pullJson(freshRoot(), ref, '--max-concurrent-downloads', '4');
    const vfs = freshRoot('vfs');
    const onVfs = pullJson(vfs, ref);
    for (const pulled of [four, onVfs]) {
      assert.deepEqual(
        pulled.image.layers.map((l) => [l.diffId, l.chainId]),
        one.image.layers.map((l) => [l.diffId, l.chainId]),
      );
    }
    assert.equal(flattenedTree(vfs, DOCKER_IMAGE_ID.slice(7, 19)), EXPECTED_TREE);

    const bad = freshRoot();
    assertCleanFailure(unionctl([...bad, 'pull', '--insecure', '--max-concurrent-downloads', '0', ref]), /--max-concurrent-downloads 0/);
    assert.equal(existsSync(bad[1]!), false, 'a bad value creates no store');

    registry.push(`docker-archive:${SAMPLE_DOCKER}`, 'sample/corrupt-lower:1');
    const manifest = JSON.parse(rawManifest(`${registry.address}/sample/corrupt-lower:1`).toString()) as {
      layers: Array<{ digest: string }>;
    };
    // Blobs are stored once for every repository: the damage is undone before the next test.
    const file = registry.blobFile(manifest.layers[1]!.digest);
    const original = readFileSync(file);
    const damaged = Buffer.from(original);
    damaged[damaged.length - 20] ^= 0xff;
    writeFileSync(file, damaged);
    try {
      for (const driver of ['overlay2', 'vfs']) {
        const g = freshRoot(driver);
        const r = unionctl([...g, 'pull', '--insecure', '--max-concurrent-downloads', '4', `${registry.address}/sample/corrupt-lower:1`]);
        assertCleanFailure(r, /layer 2 of image .*(digest mismatch|gzip|invalid)/i);
        assert.deepEqual(JSON.parse(ok(unionctl([...g, '--json', 'ls']))), [], `${driver}: no layer stays`);
        // overlay2 keeps a dir per layer (and l/) in its home, vfs in its home's dir/.
        const home = driver === 'vfs' ? join(g[1]!, 'vfs', 'dir') : join(g[1]!, driver);
        const left = existsSync(home) ? readdirSync(home).filter((n) => n !== 'l' && !n.startsWith('.')) : [];
        assert.deepEqual(left, [], `${driver}: no layer storage stays`);
      }
    } finally {
      writeFileSync(file, original);
    }
  });

  it('a pull killed while its layers are being applied at once leaves nothing after the next open', async () => {
    const ref = 'sample/docker:1';
    const manifest = JSON.parse(rawManifest(`${registry.address}/${ref}`).toString()) as { layers: Array<{ digest: string }> };
    // The bottom layer's download hangs after 4 KiB; the three above are applied on it meanwhile.
    const proxy = await startCuttingProxy(registry.address, {
      digest: manifest.layers[0]!.digest,
      afterBytes: 4096,
      times: 1,
      stall: true,
    });
    const g = freshRoot();
    const root = g[1]!;
    const pull = spawn(process.execPath, [MAIN, ...g, 'pull', '--insecure', '--max-concurrent-downloads', '4', `${proxy.address}/${ref}`], {
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => pull.on('close', resolve));
    try {
      const records = () =>
        existsSync(join(root, 'layerdb')) ? readdirSync(join(root, 'layerdb')).filter((n) => n.endsWith('.json')) : [];
      const deadline = Date.now() + 60_000;
      while (records().length < 4) {
        if (Date.now() > deadline) throw new Error(`the pull made ${records().length} layer records in 60 s, not 4`);
        if (pull.exitCode !== null) throw new Error(`the pull exited (${pull.exitCode}) before all four layers were under way`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const states = records().map((n) => (JSON.parse(readFileSync(join(root, 'layerdb', n), 'utf8')) as { state: string }).state);
      assert.deepEqual(states, ['creating', 'creating', 'creating', 'creating'], 'four layers under way at once');
    } finally {
      pull.kill('SIGKILL');
      await exited;
      await proxy.close();
    }
    assert.deepEqual(JSON.parse(ok(await unionctlAsync([...g, '--json', 'ls']))), [], 'the next open rolled every layer back');
    assert.deepEqual(
      readdirSync(join(root, 'overlay2')).filter((n) => n !== 'l'),
      [],
      'no layer storage stays',
    );
    assert.deepEqual(readdirSync(join(root, 'overlay2', 'l')), [], 'no l/ link stays');
  });

  it('unknown repositories and tags are NOT_FOUND naming the registry and repository; bad references change nothing', () => {
    const g = freshRoot();
    assertCleanFailure(
      unionctl([...g, 'pull', '--insecure', `${registry.address}/sample/docker:nope`]),
      /registry 127\.0\.0\.1:\d+, repository sample\/docker: tag nope not found \(404/,
    );
    assertCleanFailure(unionctl([...g, 'pull', '--insecure', `${registry.address}/no/such:1`]), /repository no\/such: tag 1 not found/);
    // TLS spoken to a plain-HTTP registry: one attempt (retrying cannot help), and the hint says --insecure.
    const tls = unionctl([...g, 'pull', `${registry.address}/sample/docker:1`]);
    assertCleanFailure(tls, /cannot reach https:\/\/127\.0\.0\.1:\d+ \(EPROTO\)$/);
    assert.match(tls.stderr, /needs --insecure/);
    const untouched = freshRoot();
    assertCleanFailure(unionctl([...untouched, 'pull', 'Upper/Case:1']), /not an image reference/);
    assert.ok(!existsSync(untouched[1]!), 'no store made for a bad reference');
  });

  it('round trip: pull, push to another repository (blobs it has skipped on a second push, mounted into a third), pull again: the same image; skopeo reads it', () => {
    const g = freshRoot();
    pullJson(g, `${registry.address}/sample/docker:1`);
    const dest = `${registry.address}/copies/sample:1`;
    const first = pushJson(g, `${registry.address}/sample/docker:1`, dest);
    assert.equal(first.configDigest, DOCKER_IMAGE_ID, 'the config goes out byte for byte');
    const again = pushJson(g, `${registry.address}/sample/docker:1`, dest);
    assert.equal(again.manifestDigest, first.manifestDigest, 'the same blobs, the same manifest');
    assert.deepEqual(
      again.layers.map((l) => l.how),
      ['exists', 'exists', 'exists', 'exists'],
    );
    assert.equal(digestOf(dest), first.manifestDigest);
    const g2 = freshRoot('vfs');
    const back = pullJson(g2, dest);
    assert.equal(back.image.id, DOCKER_IMAGE_ID);
    assert.equal(flattenedTree(g2, dest), EXPECTED_TREE);
    // A third repository mounts every blob from the second: no layer bytes sent.
    const mounted = pushJson(
      g,
      `${registry.address}/sample/docker:1`,
      `${registry.address}/mounted/sample:1`,
      '--mount-from',
      'copies/sample',
    );
    assert.deepEqual(
      mounted.layers.map((l) => l.how),
      ['mounted', 'mounted', 'mounted', 'mounted'],
    );
    assert.equal(mounted.manifestDigest, first.manifestDigest);
    // skopeo turns it back into a docker archive that unionctl loads as the same image.
    const archive = join(scratch.dir, 'roundtrip.tar');
    execFileSync('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${dest}`, `docker-archive:${archive}:copies/sample:1`]);
    const loaded = JSON.parse(ok(unionctl([...freshRoot(), '--json', 'load', archive]))) as { images: Array<{ id: string }> };
    assert.equal(loaded.images[0]!.id, DOCKER_IMAGE_ID);
  });

  it('a committed image pushes and pulls back as itself: the base blobs exist already, the new layer goes up', () => {
    const g = freshRoot();
    pullJson(g, `${registry.address}/sample/docker:1`);
    const view = (
      JSON.parse(ok(unionctl([...g, '--json', 'mount', '--rw', '--name', 'work', `${registry.address}/sample/docker:1`]))) as {
        path: string;
      }
    ).path;
    writeFileSync(join(view, 'committed.txt'), 'from a writable layer\n');
    const committed = (
      JSON.parse(ok(unionctl([...g, '--json', 'commit', 'work', 'committed:1', '-c', 'ENV STAGE=2']))) as { image: { id: string } }
    ).image;
    ok(unionctl([...g, 'umount', 'work']));
    pushJson(g, `${registry.address}/sample/docker:1`, `${registry.address}/committed/app:base`);
    const dest = `${registry.address}/committed/app:2`;
    const pushed = pushJson(g, 'committed:1', dest);
    assert.equal(pushed.configDigest, committed.id, 'the config goes out byte for byte');
    assert.deepEqual(
      pushed.layers.map((l) => l.how),
      ['exists', 'exists', 'exists', 'exists', 'uploaded'],
    );
    const g2 = freshRoot('vfs');
    const back = pullJson(g2, dest);
    assert.equal(back.image.id, committed.id);
    assert.match(flattenedTree(g2, dest), /^f 0644 0:0 22 \d+ [0-9a-f]{16} committed\.txt$/m);
  });

  it('push reports each layer as it goes: its bytes sent up to the blob size, then uploaded; skipped when pushed again', async () => {
    const g = freshRoot();
    ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
    const store = await openStore({ root: g[1]!, driver: 'overlay2' });
    try {
      const push = async (chunkSize?: number) => {
        const events: PushProgress[] = [];
        const dest = `${registry.address}/progress/${chunkSize === undefined ? 'whole' : 'chunked'}:1`;
        await pushImage(store, DOCKER_IMAGE_ID, dest, { insecure: true, chunkSize, onProgress: (p) => events.push(p) });
        return events;
      };
      for (const chunkSize of [undefined, 4096]) {
        const first = await push(chunkSize);
        const staged = first.filter((e) => e.event === 'staged');
        assert.deepEqual(
          staged.map((e) => e.layer),
          [1, 2, 3, 4],
        );
        for (const layer of staged) {
          const mine = first.filter((e) => e.digest === layer.digest && e.layer === layer.layer);
          const sent = mine.filter((e) => e.event === 'sending').map((e) => e.bytes!);
          const last = mine[mine.length - 1]!;
          if (last.event === 'skipped') continue; // a blob an earlier layer or push already sent
          assert.equal(last.event, 'uploaded', `layer ${layer.layer}: ${mine.map((e) => e.event).join(', ')}`);
          assert.ok(sent.length > 0, `layer ${layer.layer}: bytes were reported while it was sent`);
          assert.deepEqual(
            sent,
            [...sent].sort((a, b) => a - b),
            'the count only grows',
          );
          assert.equal(sent[sent.length - 1], layer.size, 'the last count is the blob size');
        }
        const again = await push(chunkSize);
        assert.deepEqual(
          again.filter((e) => e.layer !== undefined && e.event !== 'staged').map((e) => e.event),
          ['skipped', 'skipped', 'skipped', 'skipped'],
        );
      }
    } finally {
      await store.close();
    }
  });

  it('pushes OCI manifests with zstd layers, chunked; docker manifests refuse zstd', () => {
    const g = freshRoot();
    ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
    const dest = `${registry.address}/copies/zstd:1`;
    const pushed = pushJson(g, 'sample-app:1', dest, '--format', 'oci', '--compress', 'zstd', '--chunk-size', '65536');
    assert.equal(pushed.configDigest, DOCKER_IMAGE_ID);
    const raw = JSON.parse(rawManifest(dest).toString()) as {
      mediaType: string;
      layers: Array<{ mediaType: string }>;
    };
    assert.equal(raw.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.ok(raw.layers.every((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar+zstd'));
    assert.equal(pullJson(freshRoot(), dest).image.id, DOCKER_IMAGE_ID);
    const refused = unionctl([...g, 'push', '--insecure', '--compress', 'zstd', 'sample-app:1', dest]);
    assertCleanFailure(refused, /zstd layers cannot go into a docker manifest/);
  });

  describe('interop: podman and docker pull what unionctl pushed, and unionctl pulls what they pushed', () => {
    let podman: Podman | undefined;
    let dockerd: Dockerd | undefined;
    before(async () => {
      if (podmanAvailable()) podman = startPodman({ storageDriver: 'overlay', dir: scratch.dir });
      if (dockerdAvailable()) dockerd = await startDockerd({ storageDriver: 'overlay2', dir: scratch.dir });
    });
    after(async () => {
      podman?.stop();
      await dockerd?.stop();
    });
    const pushed = () => {
      const g = freshRoot();
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      const ref = `${registry.address}/interop/sample:1`;
      ok(unionctl([...g, 'push', '--insecure', 'sample-app:1', ref]));
      return ref;
    };
    /** docker/podman image ids: the config digest's hex (docker prints it with sha256:). */
    const hex = (id: string) => id.trim().replace(/^sha256:/, '');

    it(
      "podman pulls it (same image id) and pushes it back; unionctl pulls podman's push",
      { skip: podmanAvailable() ? false : 'podman is not installed' },
      () => {
        const ref = pushed();
        podman!.podman(['pull', '-q', '--tls-verify=false', ref]);
        assert.equal(hex(podman!.podman(['image', 'inspect', '--format', '{{.Id}}', ref])), hex(DOCKER_IMAGE_ID));
        const back = `${registry.address}/interop/from-podman:1`;
        podman!.podman(['push', '-q', '--tls-verify=false', ref, back]);
        const g = freshRoot();
        assert.equal(pullJson(g, back).image.id, DOCKER_IMAGE_ID);
        assert.equal(flattenedTree(g, back), EXPECTED_TREE);
      },
    );

    it(
      "docker pulls it (same image id) and pushes it back; unionctl pulls docker's push",
      { skip: dockerdAvailable() ? false : 'docker.io is not installed' },
      () => {
        const ref = pushed();
        dockerd!.docker(['pull', '-q', ref]); // dockerd trusts 127.0.0.0/8 as an insecure registry by default
        assert.equal(hex(dockerd!.docker(['image', 'inspect', '--format', '{{.Id}}', ref])), hex(DOCKER_IMAGE_ID));
        const back = `${registry.address}/interop/from-docker:1`;
        dockerd!.docker(['tag', ref, back]);
        dockerd!.docker(['push', '-q', back]);
        const g = freshRoot('vfs');
        assert.equal(pullJson(g, back).image.id, DOCKER_IMAGE_ID);
        assert.equal(flattenedTree(g, back), EXPECTED_TREE);
      },
    );
  });

  describe('with Basic auth (htpasswd)', () => {
    let secured: Registry;
    before(async () => {
      secured = await startRegistry({ dir: scratch.dir, auth: { htpasswd: writeHtpasswd(scratch.dir, USER) } });
      secured.push(`docker-archive:${SAMPLE_DOCKER}`, 'private/app:1', `${USER.username}:${USER.password}`);
    });
    after(async () => secured?.stop());

    it('without credentials: DENIED naming the registry, with the hint to log in', () => {
      const r = unionctl([...freshRoot(), 'pull', '--insecure', `${secured.address}/private/app:1`]);
      assertCleanFailure(r, /registry .*, repository private\/app: tag 1: the registry asks for credentials \(401\) and none were given/);
      assert.match(r.stderr, /unionctl login/);
    });

    it('with --creds, or after unionctl login (the auth file): pulls; wrong credentials are refused and not filed', () => {
      const creds = `${USER.username}:${USER.password}`;
      assert.equal(pullJson(freshRoot(), `${secured.address}/private/app:1`, '--creds', creds).image.id, DOCKER_IMAGE_ID);
      const wrong = unionctl([...freshRoot(), 'pull', '--insecure', '--creds', 'alice:nope', `${secured.address}/private/app:1`]);
      assertCleanFailure(wrong, /refused the credentials \(401/);
      const authFile = join(scratch.dir, 'auth.json');
      const badLogin = unionctl(['login', '--insecure', '--authfile', authFile, '-u', 'alice', '-p', 'nope', secured.address]);
      assert.equal(badLogin.status, 1);
      assert.ok(!existsSync(authFile), 'a refused login files nothing');
      ok(
        unionctl(['login', '--insecure', '--authfile', authFile, '-u', USER.username, '--password-stdin', secured.address], {
          input: Buffer.from(`${USER.password}\n`),
        }),
      );
      const filed = JSON.parse(readFileSync(authFile, 'utf8')) as { auths: Record<string, { auth: string }> };
      assert.equal(Buffer.from(filed.auths[secured.address]!.auth, 'base64').toString(), creds);
      assert.equal(pullJson(freshRoot(), `${secured.address}/private/app:1`, '--authfile', authFile).image.id, DOCKER_IMAGE_ID);
      ok(unionctl(['logout', '--authfile', authFile, secured.address]));
      assert.deepEqual((JSON.parse(readFileSync(authFile, 'utf8')) as { auths: object }).auths, {});
    });
  });

  describe('with Bearer tokens from a token server', () => {
    let secured: Registry;
    let tokens: TokenServer;
    before(async () => {
      tokens = await startTokenServer(scratch.dir, USER);
      secured = await startRegistry({
        dir: scratch.dir,
        auth: { token: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.certFile } },
      });
      // skopeo asks the token server, which runs in this process: not a blocking call.
      await run('skopeo', [
        'copy',
        '--quiet',
        '--dest-tls-verify=false',
        '--dest-creds',
        `${USER.username}:${USER.password}`,
        `docker-archive:${SAMPLE_DOCKER}`,
        `docker://${secured.address}/team/app:1`,
      ]);
    });
    after(async () => {
      await secured?.stop();
      await tokens?.close();
    });

    it('pulls anonymously with a pull token; pushes with credentials; an anonymous push is DENIED', async () => {
      const g = freshRoot();
      const before = tokens.requests.length;
      const pulled = JSON.parse(
        ok(await unionctlAsync([...g, '--json', 'pull', '--insecure', `${secured.address}/team/app:1`])),
      ) as PullJson;
      assert.equal(pulled.image.id, DOCKER_IMAGE_ID);
      const asked = tokens.requests.slice(before);
      assert.ok(asked.length >= 1 && asked.every((r) => !r.account), 'anonymous tokens');
      assert.ok(asked[0]!.scope.includes('repository:team/app:pull'), JSON.stringify(asked));
      const pushed = JSON.parse(
        ok(
          await unionctlAsync([
            ...g,
            '--json',
            'push',
            '--insecure',
            '--creds',
            `${USER.username}:${USER.password}`,
            `${secured.address}/team/app:1`,
            `${secured.address}/team/copy:1`,
          ]),
        ),
      ) as PushJson;
      assert.equal(pushed.configDigest, DOCKER_IMAGE_ID);
      assert.ok(tokens.requests.some((r) => r.account && r.scope.includes('repository:team/copy:pull,push')));
      const anonymous = await unionctlAsync([
        ...g,
        'push',
        '--insecure',
        `${secured.address}/team/app:1`,
        `${secured.address}/team/other:1`,
      ]);
      assertCleanFailure(
        anonymous,
        /repository team\/other: .*does not grant anonymous users the access repository:team\/other:\S*push\S* \(401 insufficient_scope/,
      );
      assert.match(anonymous.stderr, /give credentials: --creds USER:PASSWORD, or unionctl login/);
    });
  });
});
