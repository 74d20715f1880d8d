/**
 * A private podman image store for tests and benchmarks: podman run with its own --root and
 * --runroot (and TMPDIR) under a directory you give, the storage driver you ask for, so it never
 * touches /var/lib/containers. stop() unmounts anything podman left there and removes the dirs.
 *
 *   const p = startPodman({ storageDriver: 'overlay', dir: scratch.dir });
 *   try {
 *     p.podman(['load', '-i', 'image.tar']);
 *     const json = p.podman(['image', 'inspect', 'sample-app:1']);
 *   } finally {
 *     p.stop();
 *   }
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { unmountAllBelow } from './mount-table.js';

export const PODMAN = '/usr/bin/podman';

export interface PodmanOptions {
  /** overlay or vfs */
  storageDriver: 'overlay' | 'vfs';
  dir: string;
  /** Read-only containers/storage image stores (storage.conf `additionalimagestores`). */
  additionalImageStores?: string[];
}

export interface Podman {
  /** Runs podman with this store's flags; returns stdout, throws with stderr on failure. */
  podman(args: string[], input?: string | Buffer): string;
  /** --root */
  root: string;
  /** The flags that select this store (for timing a podman command yourself). */
  globalArgs: string[];
  env: NodeJS.ProcessEnv;
  stop(): void;
}

export function podmanAvailable(): boolean {
  return existsSync(PODMAN);
}

export function startPodman(opts: PodmanOptions): Podman {
  if (!podmanAvailable()) throw new Error(`startPodman: ${PODMAN} is missing (apt-get install podman)`);
  // Short: podman refuses a runroot longer than 50 characters.
  const base = join(opts.dir, `pm-${Date.now().toString(36).slice(-5)}`);
  const root = join(base, 'root');
  const runroot = join(base, 'run');
  const tmp = join(base, 'tmp');
  for (const d of [root, runroot, tmp]) mkdirSync(d, { recursive: true });
  // A storage.conf of its own: no system-wide options (mount_program, additional stores) leak in.
  const storageConf = join(base, 'storage.conf');
  const stores = opts.additionalImageStores ?? [];
  const graphOptions = stores.length > 0 ? `[storage.options]\nadditionalimagestores = ${JSON.stringify(stores)}\n` : '';
  writeFileSync(storageConf, `[storage]\ndriver = "${opts.storageDriver}"\nrunroot = "${runroot}"\ngraphroot = "${root}"\n${graphOptions}`);
  const common = ['--tmpdir', tmp, '--events-backend', 'file', '--cgroup-manager', 'cgroupfs'];
  const globalArgs = stores.length > 0 ? common : ['--root', root, '--runroot', runroot, '--storage-driver', opts.storageDriver, ...common];
  const confEnv: NodeJS.ProcessEnv = {};
  if (stores.length > 0) {
    const containersConf = join(base, 'containers.conf');
    writeFileSync(
      containersConf,
      [
        '[containers]',
        'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
        '[engine]',
        `static_dir = "${join(root, 'libpod')}"`,
        `tmp_dir = "${join(runroot, 'libpod')}"`,
        `volume_path = "${join(root, 'volumes')}"`,
        '',
      ].join('\n'),
    );
    confEnv.CONTAINERS_CONF = containersConf;
  }
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp, CONTAINERS_STORAGE_CONF: storageConf, ...confEnv };
  const podman = (args: string[], input?: string | Buffer): string => {
    try {
      return execFileSync(PODMAN, [...globalArgs, ...args], {
        input,
        env,
        encoding: 'utf8',
        maxBuffer: 256 << 20,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
    } catch (e) {
      const stderr = (e as { stderr?: string }).stderr ?? '';
      throw new Error(`podman ${args.join(' ')} failed: ${stderr.trim() || (e as Error).message}`);
    }
  };
  let stopped = false;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    try {
      podman(['rm', '--all', '--force', '--time', '0']); // containers a failed test left running
    } catch {
      /* none, or podman itself is broken: the unmounts below still clean up */
    }
    unmountAllBelow(base, { andDir: true });
    rmSync(base, { recursive: true, force: true });
  };
  return { podman, root, globalArgs, env, stop };
}
