/**
 * A private containerd for tests and benchmarks: Debian's containerd (1.6) started by hand with
 * its own root, state, sockets and opt dir under a directory you give, CRI off unless asked, and
 * proxy snapshotters (`[proxy_plugins.NAME] type = "snapshot"`) pointing where you say. It does
 * not touch a system containerd or /var/lib/containerd.
 *
 *   const cd = await startContainerd({ dir: scratch.dir, proxySnapshotters: { unionctl: socket } });
 *   try {
 *     cd.ctr(['images', 'import', '--snapshotter', 'unionctl', 'fixtures/sample-docker.tar']);
 *   } finally {
 *     await cd.stop();   // kills containerd and its shims, unmounts what they left, removes its dirs
 *   }
 *
 * `ctr` runs in namespace `cd.namespace` (unique per start: runc keeps its state in
 * /run/containerd/runc/<namespace>, shared by every containerd on the machine).
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { logTail, sleep, stopDaemon } from './processes.js';

export const CONTAINERD = '/usr/bin/containerd';
export const CTR = '/usr/bin/ctr';

export interface ContainerdOptions {
  /** Where its dirs go (a scratch filesystem); keep it short: socket paths must stay under 108 bytes. */
  dir: string;
  /** Proxy snapshotter name → its socket. */
  proxySnapshotters?: Record<string, string>;
  /** TOML appended to the config (CRI settings, say); CRI stays disabled unless `cri` is set. */
  extraConfig?: string;
  cri?: boolean;
  readyTimeoutMs?: number;
}

export interface Containerd {
  /** containerd's gRPC socket. */
  address: string;
  /** containerd's own process (its CPU time is part of what a benchmark measures). */
  pid: number;
  /** Its root dir (content store, metadata, built-in snapshotters). */
  root: string;
  namespace: string;
  logFile: string;
  /** `ctr --address … -n <namespace> args…`; throws with ctr's stderr on failure. */
  ctr(args: string[], opts?: { input?: Buffer; namespace?: string }): string;
  stop(): Promise<void>;
}

function rmEmptyDir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    /* missing, or still used by another containerd's CRI */
  }
}

export function containerdAvailable(): boolean {
  return existsSync(CONTAINERD) && existsSync(CTR) && existsSync('/usr/sbin/runc');
}

function configToml(base: string, opts: ContainerdOptions): string {
  const lines = [
    'version = 2',
    `root = "${join(base, 'root')}"`,
    `state = "${join(base, 'state')}"`,
    ...(opts.cri ? [] : ['disabled_plugins = ["io.containerd.grpc.v1.cri"]']),
    '[grpc]',
    `  address = "${join(base, 'cd.sock')}"`,
    '[ttrpc]',
    `  address = "${join(base, 'cd.sock.ttrpc')}"`,
    '[debug]',
    `  address = "${join(base, 'debug.sock')}"`,
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = "${join(base, 'opt')}"`,
  ];
  for (const [name, socket] of Object.entries(opts.proxySnapshotters ?? {})) {
    lines.push(`[proxy_plugins.${name}]`, '  type = "snapshot"', `  address = "${socket}"`);
  }
  return `${lines.join('\n')}\n${opts.extraConfig ?? ''}\n`;
}

export async function startContainerd(opts: ContainerdOptions): Promise<Containerd> {
  if (!containerdAvailable()) throw new Error('startContainerd: containerd, ctr or runc is missing (apt-get install containerd runc)');
  mkdirSync(opts.dir, { recursive: true });
  const base = mkdtempSync(join(opts.dir, 'cd-'));
  const address = join(base, 'cd.sock');
  const logFile = join(base, 'containerd.log');
  const configFile = join(base, 'config.toml');
  writeFileSync(configFile, configToml(base, opts));
  const namespace = `uc${process.pid}${base
    .slice(-4)
    .toLowerCase()
    .replace(/[^a-z0-9]/g, 'x')}`;
  const log = openSync(logFile, 'a');
  const child = spawn(CONTAINERD, ['--config', configFile], { stdio: ['ignore', log, log], detached: true });
  closeSync(log);
  const pid = child.pid ?? -1;
  let exitCode: number | null = null;
  child.on('exit', (code) => (exitCode = code ?? -1));
  child.unref();

  const ctr = (args: string[], o: { input?: Buffer; namespace?: string } = {}): string => {
    try {
      return execFileSync(CTR, ['--address', address, '-n', o.namespace ?? namespace, ...args], {
        input: o.input,
        maxBuffer: 1 << 30,
        stdio: ['pipe', 'pipe', 'pipe'],
      }).toString('utf8');
    } catch (e) {
      const stderr = (e as { stderr?: Buffer }).stderr?.toString() ?? '';
      throw new Error(`ctr ${args.join(' ')} failed: ${stderr.trim() || (e as Error).message}`);
    }
  };

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    try {
      await stopDaemon('containerd', pid, base);
    } finally {
      rmSync(join('/run/containerd/runc', namespace), { recursive: true, force: true });
      // The CRI's namespace is k8s.io whatever the daemon: its runc dir goes once no containerd uses it.
      if (opts.cri) rmEmptyDir(join('/run/containerd/runc', 'k8s.io'));
    }
  };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
  for (;;) {
    try {
      ctr(['version']);
      break;
    } catch (e) {
      if (exitCode !== null || Date.now() > deadline) {
        const tail = logTail(logFile);
        await stop().catch(() => {});
        throw new Error(`containerd did not start (${(e as Error).message}):\n${tail}`);
      }
      await sleep(100);
    }
  }
  return { address, pid, root: join(base, 'root'), namespace, logFile, ctr, stop };
}
