/**
 * A private Docker daemon for tests and benchmarks: Debian's docker.io (Docker 20.10) started by
 * hand with its own data root, exec root, socket and pid file under a directory you give, no
 * networking set-up (--bridge=none, no iptables), and the storage driver you ask for. It does not
 * touch a system dockerd or /var/lib/docker.
 *
 *   const d = await startDockerd({ storageDriver: 'overlay', dir: scratch.dir });
 *   try {
 *     d.docker(['load', '-i', 'fixtures/sample-docker.tar']);
 *     const json = d.docker(['image', 'inspect', 'sample-app:1']);
 *     …                      // the driver's files are under d.root/<driver>/
 *   } finally {
 *     await d.stop();        // kills dockerd (and its containerd), unmounts what it left, removes its dirs
 *   }
 *
 * There is no bridge network: `docker run` / `docker create` need `--network none`.
 *
 * `dir` should be a scratch filesystem (test/helpers/scratch.ts): the store's backing filesystem is
 * what the storage driver sees (tmpfs has d_type and xattrs, so overlay and fuse-overlayfs work).
 * Needs root, /usr/sbin/dockerd, /usr/bin/docker (Docker 20.10's CLI: a newer client elsewhere in
 * PATH may refuse the old API), containerd and runc; scripts/setup-system.sh installs docker.io.
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { unmountAllBelow } from './mount-table.js';
import { logTail, sleep, stopDaemon } from './processes.js';

export const DOCKERD = '/usr/sbin/dockerd';
export const DOCKER_CLI = '/usr/bin/docker';

export interface DockerdOptions {
  /** --storage-driver: overlay2, overlay, fuse-overlayfs, vfs, … */
  storageDriver: string;
  /** A directory to create the daemon's dirs in (a fresh sub-dir is made for each daemon). */
  dir: string;
  /** More dockerd flags (e.g. ['--storage-opt', 'overlay2.override_kernel_check=true']). */
  extraArgs?: string[];
  /** How long to wait for the API to answer, default 60 s. */
  readyTimeoutMs?: number;
}

export interface Dockerd {
  /** Runs `/usr/bin/docker -H unix://<socket> …args`, returns stdout; throws with stderr on failure. */
  docker(args: string[], input?: string | Buffer): string;
  /** The same, stdout as bytes (`docker save`, `docker export` to stdout). */
  dockerBytes(args: string[], input?: string | Buffer): Buffer;
  /** --data-root: the storage driver's home is <root>/<storageDriver>. */
  root: string;
  /** --exec-root */
  execRoot: string;
  socket: string;
  /** dockerd's log (stdout and stderr). */
  logFile: string;
  pid: number;
  /** Stops the daemon, unmounts whatever it left under its dirs and removes them. Idempotent. */
  stop(): Promise<void>;
  /** Stops the daemon and unmounts what it left, but keeps its dirs (the store it wrote, to read); stop() removes them. */
  halt(): Promise<void>;
}

/** dockerd and the Docker 20.10 CLI are installed. */
export function dockerdAvailable(): boolean {
  return existsSync(DOCKERD) && existsSync(DOCKER_CLI);
}

export async function startDockerd(opts: DockerdOptions): Promise<Dockerd> {
  if (!dockerdAvailable()) throw new Error(`startDockerd: ${DOCKERD} or ${DOCKER_CLI} is missing (apt-get install docker.io)`);
  mkdirSync(opts.dir, { recursive: true });
  // Short names: unix socket paths (docker.sock, exec/containerd/containerd.sock.ttrpc) must stay under 108 bytes.
  const base = mkdtempSync(join(opts.dir, 'dd-'));
  if (Buffer.byteLength(join(base, 'exec', 'containerd', 'containerd.sock.ttrpc')) >= 108) {
    rmSync(base, { recursive: true, force: true });
    throw new Error(`startDockerd: ${opts.dir} is too deep for unix socket paths (108 bytes); use a shorter dir`);
  }
  const root = join(base, 'data');
  const execRoot = join(base, 'exec');
  const socket = join(base, 'docker.sock');
  const pidFile = join(base, 'docker.pid');
  const logFile = join(base, 'dockerd.log');
  mkdirSync(root, { recursive: true });
  mkdirSync(execRoot, { recursive: true });

  const args = [
    '--data-root',
    root,
    '--exec-root',
    execRoot,
    '-H',
    `unix://${socket}`,
    '--pidfile',
    pidFile,
    '--bridge=none',
    '--iptables=false',
    '--ip6tables=false',
    '--ip-masq=false',
    '--storage-driver',
    opts.storageDriver,
    ...(opts.extraArgs ?? []),
  ];
  const log = openSync(logFile, 'a');
  const child = spawn(DOCKERD, args, { stdio: ['ignore', log, log], detached: true });
  closeSync(log);
  const pid = child.pid ?? -1;
  let exitCode: number | null = null;
  child.on('exit', (code) => (exitCode = code ?? -1));
  child.unref(); // a forgotten stop() must not keep the test runner alive (the scratch cleanup still unmounts)

  const dockerBytes = (dockerArgs: string[], input?: string | Buffer): Buffer => {
    try {
      return execFileSync(DOCKER_CLI, ['-H', `unix://${socket}`, ...dockerArgs], {
        input,
        maxBuffer: 1 << 30,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
    } catch (e) {
      const stderr = (e as { stderr?: Buffer }).stderr?.toString() ?? '';
      throw new Error(`docker ${dockerArgs.join(' ')} failed: ${stderr.trim() || (e as Error).message}`);
    }
  };
  const docker = (dockerArgs: string[], input?: string | Buffer): string => dockerBytes(dockerArgs, input).toString('utf8');

  let stopped = false;
  let halted = false;
  const halt = async (): Promise<void> => {
    if (halted || stopped) return;
    halted = true;
    await stopDaemon('dockerd', pid, base, { keepFiles: true }); // its containerd is its child: it stops with it
  };
  const stop = async (): Promise<void> => {
    if (stopped) return;
    if (!halted) await halt();
    stopped = true;
    unmountAllBelow(base, { andDir: true });
    rmSync(base, { recursive: true, force: true });
  };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
  for (;;) {
    try {
      docker(['version', '--format', '{{.Server.Version}}']);
      break;
    } catch (e) {
      if (exitCode !== null || Date.now() > deadline) {
        const tail = logTail(logFile);
        await stop().catch(() => {});
        throw new Error(
          `dockerd --storage-driver ${opts.storageDriver} did not come up (${exitCode !== null ? `exited ${exitCode}` : 'timed out'}): ${(e as Error).message}\n${tail}`,
        );
      }
      await sleep(200);
    }
  }
  return { docker, dockerBytes, root, execRoot, socket, logFile, pid, stop, halt };
}
