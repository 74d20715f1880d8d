/**
 * Kubernetes' path onto a unionctl store: containerd 1.6's CRI plugin with `snapshotter =
 * "unionctl"` and `disable_snapshot_annotations = false`, driven by a small CRI client playing
 * kubelet, pulling from a private docker-registry on 127.0.0.1. The store already holds the sample
 * image (`unionctl load`), so the CRI pull takes the remote-snapshotter path: each layer is
 * adopted by chain ID and its blob never downloaded (the registry's access log shows no GET for
 * it, while the pause image, new to the store, is downloaded). A host-network pod's container then
 * runs on the store's own layers, and removing pod and images lets containerd's GC take what it
 * made and leave what the store's image holds.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeImageArchive } from '../../bench/image-archive.js';
import { containerdAvailable, startContainerd, type Containerd } from '../../bench/peers/containerd.js';
import { registryAvailable, startRegistry, type Registry } from '../../bench/peers/registry.js';
import { startServe, type ServeProcess } from '../../bench/peers/unionctl-serve.js';
import { chainIdOf } from '../../src/graph/store.js';
import { criClient, type CriClient, type PodSandboxConfig } from '../helpers/cri-client.js';
import { makeScratch, scratchMissing, type Scratch } from '../helpers/scratch.js';
import { snapshotsClient, type SnapshotsClient } from '../helpers/snapshots-client.js';
import { eventually } from '../helpers/wait.js';
import { DIFF_IDS, ok, SAMPLE_DOCKER, unionctl } from './images-helpers.js';

const BUSYBOX = '/bin/busybox';
const skip =
  scratchMissing ??
  (!containerdAvailable()
    ? 'containerd, ctr or runc is not installed'
    : !registryAvailable()
      ? 'docker-registry or skopeo is not installed'
      : undefined);
const CHAIN_IDS = DIFF_IDS.reduce<string[]>((ids, d) => [...ids, chainIdOf(ids.at(-1), d)], []);

interface ListedLayer {
  id: string;
  chainId?: string;
  writable: boolean;
}

/** A pause image for the pod sandbox: a static busybox that sleeps (no network here to fetch registry.k8s.io/pause). */
async function writePauseImage(dir: string): Promise<string> {
  const tree = join(dir, 'pause-tree');
  mkdirSync(join(tree, 'bin'), { recursive: true });
  copyFileSync(BUSYBOX, join(tree, 'bin', 'busybox'));
  const layer = join(dir, 'pause-layer.tar');
  execFileSync('tar', ['-C', tree, '--numeric-owner', '--owner=0', '--group=0', '-cf', layer, 'bin']);
  const archive = await writeImageArchive(join(dir, 'pause.tar'), [{ path: layer, entries: 2 }], 'pause:1', {
    Entrypoint: ['/bin/busybox', 'sleep', '2147483647'],
  });
  return archive.path;
}

/** The layer blob digests of `repo:tag`'s Docker schema2 manifest in the registry. */
async function layerBlobs(reg: Registry, repo: string, tag: string): Promise<string[]> {
  const res = await fetch(`http://${reg.address}/v2/${repo}/manifests/${tag}`, {
    headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' },
  });
  assert.equal(res.status, 200, `manifest of ${repo}:${tag}`);
  return ((await res.json()) as { layers: Array<{ digest: string }> }).layers.map((l) => l.digest);
}

describe('containerd CRI with the unionctl snapshotter: a Kubernetes pull and pod on store layers', { skip }, () => {
  let scratch: Scratch;
  let root = '';
  let registry: Registry | undefined;
  let serve: ServeProcess | undefined;
  let cd: Containerd | undefined;
  let cri: CriClient | undefined;
  let snapshots: SnapshotsClient | undefined;
  let app = '';
  let pause = '';
  let sandbox: PodSandboxConfig;
  let sandboxId = '';
  const containers: string[] = [];
  const g = () => ['--root', root, '--driver', 'overlay2'];
  const layers = () => JSON.parse(ok(unionctl([...g(), '--json', 'ls']))) as ListedLayer[];
  /** The snapshot documents the server keeps, one per snapshot. */
  const snapshotCount = () => (existsSync(join(root, 'snapshots')) ? readdirSync(join(root, 'snapshots')).length : 0);
  let loadedLayerIds: string[] = [];

  before(async () => {
    scratch = makeScratch();
    root = join(scratch.dir, 'root');
    ok(unionctl([...g(), 'load', SAMPLE_DOCKER]));
    loadedLayerIds = layers().map((l) => l.id);

    registry = await startRegistry({ dir: scratch.dir });
    app = `${registry.address}/sample/app:1`;
    pause = `${registry.address}/pause:1`;
    // skopeo compresses the layers on the way: the registry's blobs are gzip tars unionctl has never seen.
    registry.push(`docker-archive:${SAMPLE_DOCKER}`, 'sample/app:1');
    registry.push(`docker-archive:${await writePauseImage(scratch.dir)}`, 'pause:1');

    const socket = join(scratch.dir, 'run', 'uc.sock');
    serve = await startServe({ root, driver: 'overlay2', socket, logFile: join(scratch.dir, 'serve.log') });
    const criTable = 'plugins."io.containerd.grpc.v1.cri"';
    cd = await startContainerd({
      dir: scratch.dir,
      cri: true,
      proxySnapshotters: { unionctl: socket },
      extraConfig: [
        `[${criTable}]`,
        `  sandbox_image = "${pause}"`,
        // runc may not write /proc/self/oom_score_adj here (see the runtime notes): keep within ours.
        '  restrict_oom_score_adj = true',
        `[${criTable}.containerd]`,
        '  snapshotter = "unionctl"',
        '  disable_snapshot_annotations = false',
        `[${criTable}.cni]`,
        `  bin_dir = "${join(scratch.dir, 'cni', 'bin')}"`,
        `  conf_dir = "${join(scratch.dir, 'cni', 'conf')}"`,
        `[${criTable}.registry.mirrors."${registry.address}"]`,
        `  endpoint = ["http://${registry.address}"]`,
      ].join('\n'),
    });
    cri = criClient(cd.address);
    snapshots = snapshotsClient(socket);
    sandbox = cri.hostNetworkSandboxConfig('uc-pod', join(scratch.dir, 'pod-logs'));
    mkdirSync(sandbox.log_directory, { recursive: true });
  });

  after(async () => {
    if (sandboxId !== '') await cri?.removePod(sandboxId, containers).catch(() => undefined);
    cri?.close();
    snapshots?.close();
    await cd?.stop();
    await serve?.stop();
    await registry?.stop();
    unionctl([...g(), 'cleanup']);
    scratch.dispose();
  });

  it('CRI answers as containerd with runtime API v1', async () => {
    const v = await cri!.version();
    assert.equal(v.runtime_name, 'containerd');
    assert.equal(v.runtime_api_version, 'v1');
  });

  it('a CRI PullImage adopts the layers the store holds: no layer blob is downloaded, no layer made', async () => {
    const appBlobs = await layerBlobs(registry!, 'sample/app', '1');
    assert.equal(appBlobs.length, DIFF_IDS.length);
    const imageRef = await cri!.pullImage(app, sandbox);
    assert.match(imageRef, /^sha256:[0-9a-f]{64}$/);
    const fetched = registry!.blobGets();
    for (const blob of appBlobs) assert.ok(!fetched.includes(blob), `layer blob ${blob} was downloaded: ${fetched.join(' ')}`);
    assert.deepEqual(
      layers().map((l) => l.id),
      loadedLayerIds,
      'the store made no layer for the pull',
    );
    // The snapshots containerd uses are the store's layers, each carrying its chain ID as the target.
    const committed = (await snapshots!.list()).filter((s) => s.kind === 'COMMITTED');
    assert.deepEqual(committed.map((s) => s.labels['containerd.io/snapshot.ref']).sort(), [...CHAIN_IDS].sort());
    assert.ok(committed.every((s) => s.labels['containerd.io/snapshot/cri.image-ref'] === app));
  });

  it('a host-network pod runs, its sandbox image downloaded and unpacked through the snapshotter', async () => {
    sandboxId = await cri!.runPodSandbox(sandbox);
    const pauseBlobs = await layerBlobs(registry!, 'pause', '1');
    const fetched = registry!.blobGets();
    assert.ok(
      pauseBlobs.every((b) => fetched.includes(b)),
      `the pause layer (new to the store) was downloaded: ${fetched.join(' ')}`,
    );
    const imageLayers = layers().filter((l) => !l.writable);
    assert.equal(imageLayers.length, loadedLayerIds.length + 1, 'the pause layer became a store layer');
    assert.equal(layers().length, imageLayers.length + 1, "the sandbox container's writable layer");
  });

  it("the pod's container runs on the store's layers and prints the app's version", async () => {
    const script = '/srv/app/bin/run-app; ls -A /var/cache/app; echo ---; grep " / " /proc/mounts';
    const id = await cri!.createContainer(sandboxId, sandbox, 'app', app, ['/bin/sh', '-c', script]);
    containers.push(id);
    await cri!.startContainer(id);
    const status = await cri!.waitExited(id);
    assert.equal(status.exit_code, 0, `the container failed: ${JSON.stringify(status)}`);
    // CRI log format: "<time> stdout F <line>".
    const log = readFileSync(join(sandbox.log_directory, 'app.log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split(' ').slice(3).join(' '));
    assert.equal(log[0], 'sample-app 2.0.0');
    assert.equal(log[1], '---', 'the opaque /var/cache/app shows none of the lower files');
    const rootMount = log.slice(2).join('\n');
    for (const id of loadedLayerIds)
      assert.ok(rootMount.includes(join(root, 'overlay2', id, 'diff')), `store layer ${id} is a lower of the root: ${rootMount}`);
  });

  it("removing the pod and the images lets containerd's GC remove its snapshots; the loaded image's layers stay", async () => {
    await cri!.removePod(sandboxId, containers.splice(0));
    sandboxId = '';
    await cri!.removeImage(app);
    await cri!.removeImage(pause);
    await eventually('every snapshot is gone', () => snapshotCount() === 0, {
      diagnose: () => JSON.stringify(layers()),
    });
    assert.deepEqual(
      layers().map((l) => l.id),
      loadedLayerIds,
    );
    ok(unionctl([...g(), 'images']));
  });
});
