/**
 * The processes of a peer daemon (dockerd, containerd, their shims): finding them, signalling
 * them and waiting for them to exit, and the peers' stop() made of those.
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { unmountAllBelow } from './mount-table.js';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Children of pid (containerd, shims), from /proc/<pid>/task/<pid>/children. */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Live processes whose command line mentions `dir` (containerd shims of the daemon's containers, say). */
export function processesMentioning(dir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(dir) && alive(Number(name))) pids.push(Number(name));
    } catch {
      /* exited meanwhile */
    }
  }
  return pids;
}

export async function waitForExit(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let left = pids.filter(alive);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(50);
    left = left.filter(alive);
  }
  return left;
}

export function killAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      /* gone */
    }
  }
}

/**
 * Stops daemon `pid` that was started with its whole state under `base`: SIGTERM, up to 20 s for
 * it and its children (dockerd's containerd) to exit, then SIGKILL for whatever is left and for
 * every process whose command line names `base` (shims of containers still running); then
 * unmounts everything below `base` and removes it (with `keepFiles`, leaves the files there: a test
 * reads the store the daemon left). Throws, naming them, when processes survive.
 */
export async function stopDaemon(name: string, pid: number, base: string, opts: { keepFiles?: boolean } = {}): Promise<void> {
  const family = [pid, ...childrenOf(pid)];
  killAll([pid], 'SIGTERM');
  let left = await waitForExit(family, 20_000);
  left = [...new Set([...left, ...processesMentioning(base)])];
  if (left.length > 0) {
    killAll(left, 'SIGKILL');
    left = await waitForExit(left, 5_000);
  }
  unmountAllBelow(base, { andDir: true });
  if (opts.keepFiles !== true) rmSync(base, { recursive: true, force: true });
  if (left.length > 0) throw new Error(`${name} processes ${left.join(', ')} did not exit`);
}

/** The last lines of a daemon's log, for the error that says it did not start. */
export function logTail(file: string, lines = 15): string {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n') : '';
}
