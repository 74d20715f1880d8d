/**
 * `unionctl serve` as its own process, for the tests and the benchmark that put containerd on a
 * unionctl store: started with a root, a driver and a socket, ready once the socket answers, its
 * stderr (the server's log, at debug) kept in a file.
 *
 *   const s = await startServe({ root, driver: 'overlay2', socket });
 *   … containerd with [proxy_plugins.unionctl] address = socket …
 *   await s.stop();            // SIGTERM: the server ends cleanly, mounts stay
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sleep } from './processes.js';

const CLI_MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface ServeProcessOptions {
  root: string;
  driver: string;
  socket: string;
  /** The server's log (stderr), appended to. */
  logFile: string;
  /** Runs the server under this command (e.g. strace with a fault to inject): argv before node. */
  wrapper?: string[];
  readyTimeoutMs?: number;
}

export interface ServeProcess {
  pid: number;
  /** Resolves with the exit code (or the signal's name) once the process has ended. */
  exited: Promise<number | string>;
  /** The log so far. */
  log(): string;
  /** SIGTERM (or `signal`) and wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

export async function startServe(opts: ServeProcessOptions): Promise<ServeProcess> {
  const args = [CLI_MAIN, '--root', opts.root, '--driver', opts.driver, 'serve', '--socket', opts.socket, '--log-level', 'debug'];
  const [cmd, ...pre] = [...(opts.wrapper ?? []), process.execPath];
  const logStart = existsSync(opts.logFile) ? statSync(opts.logFile).size : 0; // an earlier server's lines do not count
  const log = openSync(opts.logFile, 'a');
  // Its own process group: a stop that has to SIGKILL reaches the server under a wrapper (strace) too.
  const child = spawn(cmd!, [...pre, ...args], { stdio: ['ignore', log, log], detached: true });
  closeSync(log);
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  let done = false;
  void exited.then(() => (done = true));
  const readLog = () => (existsSync(opts.logFile) ? readFileSync(opts.logFile, 'utf8') : '');
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      /* gone */
    }
  };
  /** `signal` to the server (through its wrapper), SIGKILL to the whole group if it has not exited within 20 s. */
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (!done) child.kill(signal);
    const timer = setTimeout(() => killGroup('SIGKILL'), 20_000);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
      killGroup('SIGKILL'); // whatever of the group outlived the wrapper
    }
  };
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  while (!readLog().slice(logStart).includes(`snapshotter on ${opts.socket}`)) {
    if (done || Date.now() > deadline) {
      await stop('SIGKILL');
      throw new Error(`unionctl serve did not start:\n${readLog().split('\n').slice(-15).join('\n')}`);
    }
    await sleep(50);
  }
  return { pid: child.pid ?? -1, exited, log: readLog, stop };
}
