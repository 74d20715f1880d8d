/**
 * What the containerd snapshotter tests share (containerd-snapshotter.test.ts for overlay2,
 * containerd-drivers.test.ts for the other drivers): a scratch tmpfs with a unionctl store served
 * by `unionctl serve` and a private containerd using it as the proxy snapshotter `unionctl`, a
 * direct gRPC client of the server, and the views of the state the tests compare: the store's
 * layers (`unionctl ls`), the snapshot records, and ctr's snapshot list.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startContainerd, type Containerd } from '../../bench/peers/containerd.js';
import { startServe, type ServeProcess } from '../../bench/peers/unionctl-serve.js';
import { chainIdOf } from '../../src/graph/store.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { eventually } from '../helpers/wait.js';
import { snapshotsClient, type SnapshotsClient } from '../helpers/snapshots-client.js';
import { DIFF_IDS, ok, SAMPLE_DOCKER, unionctl } from './images-helpers.js';

export const IMAGE = 'docker.io/library/sample-app:1';
/** The sample image's chain IDs, bottom first. */
export const CHAIN_IDS = DIFF_IDS.reduce<string[]>((ids, d) => [...ids, chainIdOf(ids.at(-1), d)], []);

export interface ListedLayer {
  id: string;
  parent?: string;
  chainId?: string;
  writable: boolean;
}

export class SnapshotterRig {
  readonly root: string;
  readonly socket: string;
  serve: ServeProcess | undefined;
  cd: Containerd | undefined;
  client!: SnapshotsClient;

  private constructor(
    readonly scratch: Scratch,
    readonly driver: string,
  ) {
    this.root = join(scratch.dir, 'root');
    this.socket = join(scratch.dir, 'run', 'uc.sock');
  }

  /** A scratch dir, the server on `driver`, containerd, the client. */
  static async start(driver: string): Promise<SnapshotterRig> {
    const rig = new SnapshotterRig(makeScratch(), driver);
    await rig.startServer();
    rig.cd = await startContainerd({ dir: rig.scratch.dir, proxySnapshotters: { unionctl: rig.socket } });
    rig.client = snapshotsClient(rig.socket);
    return rig;
  }

  /** (Re)starts the server, under `wrapper` if given (strace with a fault to inject). */
  async startServer(wrapper?: string[]): Promise<void> {
    this.serve = await startServe({
      root: this.root,
      driver: this.driver,
      socket: this.socket,
      logFile: join(this.scratch.dir, 'serve.log'),
      wrapper,
    });
  }

  /** The global options of a unionctl command on the store. */
  g(): string[] {
    return ['--root', this.root, '--driver', this.driver];
  }

  layers(): ListedLayer[] {
    return JSON.parse(ok(unionctl([...this.g(), '--json', 'ls']))) as ListedLayer[];
  }

  snapshotDocs(): string[] {
    const dir = join(this.root, 'snapshots');
    return existsSync(dir) ? readdirSync(dir) : [];
  }

  /**
   * Waits until no Remove or Cleanup has reached the server for `quietMs`: containerd's GC (which
   * one deletion can schedule more than once) removes every snapshot its metadata does not know,
   * so a test that makes snapshots directly over gRPC must start after the last run of it.
   */
  async gcSettled(quietMs = 1500): Promise<void> {
    const gcCalls = () => this.serve!.log().match(/\b(Remove|Cleanup)\b/g)?.length ?? 0;
    let seen = gcCalls();
    let quietSince = Date.now();
    await eventually(`containerd's GC quiet for ${quietMs} ms`, () => {
      const now = gcCalls();
      if (now !== seen) [seen, quietSince] = [now, Date.now()];
      return Date.now() - quietSince >= quietMs;
    });
  }

  /** The lines of `ctr snapshots ls` (name, parent, kind). */
  snapshots(): string[] {
    return this.cd!.ctr(['snapshots', '--snapshotter', 'unionctl', 'ls'])
      .trim()
      .split('\n')
      .slice(1)
      .map((line) => line.trim())
      .filter(Boolean);
  }

  /**
   * `ctr images import` of the sample image, checked: one image layer per image layer, with its
   * chain ID, and one snapshot named by each chain ID. Returns the layers.
   */
  importSample(): ListedLayer[] {
    this.cd!.ctr(['images', 'import', '--snapshotter', 'unionctl', SAMPLE_DOCKER]);
    const made = this.layers();
    assert.deepEqual(
      made.map((l) => l.chainId),
      CHAIN_IDS,
    );
    assert.ok(made.every((l) => !l.writable));
    assert.deepEqual(
      this.snapshots().map((line) => line.split(/\s+/)[0]),
      [...CHAIN_IDS].sort(),
    );
    return made;
  }

  /**
   * Two `ctr run --rm` of the sample image, checked: the app prints its version; the opaque
   * /var/cache/app and the whited-out plugins hold inside. Returns the container's root line of
   * /proc/mounts.
   */
  runSample(): string {
    assert.match(this.runOutput('c1', ['/srv/app/bin/run-app']), /sample-app 2\.0\.0/);
    const script = 'ls -A /var/cache/app; echo ---; ls -A /srv/app/plugins; echo ---; grep " / " /proc/mounts';
    const [cache, plugins, rootMount] = this.runOutput('c2', ['/bin/sh', '-c', script]).split('---\n');
    assert.equal(cache, '', 'the opaque /var/cache/app shows none of the lower files');
    assert.equal(plugins!.trim(), 'search.plug', 'the whited-out plugins are gone');
    return rootMount!;
  }

  /**
   * The output of `ctr run --rm` of the sample (its command, or `command`). containerd 1.6 at times
   * loses all the output of a task that exits at once (a race between the task's exit and the copy
   * of its fifos, known in containerd; the exit status is still right), more often on a busy
   * machine: an empty output is run again, under a new container name, up to 3 times.
   */
  runOutput(name: string, command: string[] = []): string {
    let out = '';
    for (let attempt = 0; attempt < 3 && out === ''; attempt++)
      out = this.cd!.ctr(['run', '--snapshotter', 'unionctl', '--rm', IMAGE, attempt === 0 ? name : `${name}-${attempt}`, ...command]);
    return out;
  }

  /**
   * `ctr images import` of the sample, retried while containerd's connection to the server is still
   * backing off ("unavailable" while the server runs: the call never reached it); the import's
   * error once it reached the server (a killed server's is "unavailable" too), or undefined.
   */
  async importReachingServer(): Promise<Error | undefined> {
    let serverGone = false;
    void this.serve!.exited.then(() => (serverGone = true));
    let outcome: Error | undefined;
    await eventually('an import reaches the server', () => {
      try {
        this.cd!.ctr(['images', 'import', '--snapshotter', 'unionctl', SAMPLE_DOCKER]);
        outcome = undefined;
        return true;
      } catch (e) {
        outcome = e as Error;
        return serverGone || !/unavailable/.test(outcome.message);
      }
    });
    return outcome;
  }

  /**
   * The server is restarted under strace, killed at its rename no. `when` during a `ctr images
   * import`, restarted again (`afterKill` looks at the store in between); the import is retried until it gets through, the image runs, and
   * after `ctr images rm` the GC and Cleanup leave no snapshot, snapshot record or layer.
   */
  async killedImportRedone(when: number, afterKill?: () => void): Promise<void> {
    await this.serve!.stop('SIGTERM');
    await this.startServer([
      'strace',
      '-f',
      '-qq',
      '-o',
      '/dev/null',
      '-e',
      'trace=rename',
      '-e',
      `inject=rename:signal=KILL:when=${when}`,
    ]);
    // containerd's connection backs off after the server went away (calls fail fast meanwhile, never
    // reaching the server): retry until the import reaches the server, which the fault then kills.
    const killed = await this.importReachingServer();
    assert.ok(killed instanceof Error, 'the import failed: the server was killed under it');
    await this.serve!.exited;
    afterKill?.(); // what the kill left, before the restart's recovery
    await this.startServer();
    // The user (or kubelet) retries the import until it gets through.
    assert.equal(await this.importReachingServer(), undefined);
    assert.match(this.runOutput(`k${when}`), /sample-app 2\.0\.0/);
    this.cd!.ctr(['images', 'rm', '--sync', IMAGE]); // --sync: the GC runs now (a slow earlier run would delay a scheduled one by 50×)
    const diagnose = () =>
      [
        `snapshots: ${this.snapshots().join('; ')}`,
        `leases: ${this.cd!.ctr(['leases', 'ls'])}`,
        `images: ${this.cd!.ctr(['images', 'ls', '-q'])}`,
        `server log (${this.serve!.log().length} bytes):\n${this.serve!.log()
          .split('\n')
          .filter((l) => !/ ok \d+ ms$/.test(l))
          .slice(-30)
          .join('\n')}`,
        `containerd log:\n${readFileSync(this.cd!.logFile, 'utf8')
          .split('\n')
          .filter((l) => /level=(error|warning)|garbage|gc/.test(l))
          .slice(-15)
          .join('\n')}`,
      ].join('\n');
    await eventually('no snapshots left', () => this.snapshots().length === 0, { diagnose });
    // Whatever the killed request had made is gone once containerd's GC and Cleanup have run.
    await eventually('no layers and no snapshot records left', () => this.layers().length === 0 && this.snapshotDocs().length === 0);
  }

  /** Everything stops; the store's mounts go (unionctl cleanup); `beforeDispose` runs last before the scratch goes. */
  async stop(beforeDispose?: () => void): Promise<void> {
    this.client?.close();
    await this.cd?.stop();
    await this.serve?.stop();
    unionctl([...this.g(), 'cleanup']);
    beforeDispose?.();
    this.scratch.dispose();
  }
}
