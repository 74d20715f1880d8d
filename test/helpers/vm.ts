/**
 * Running tests inside the test VM (scripts/vm/run.mjs: Debian's kernel under qemu TCG, the host
 * root read-only over 9p, the project read-write) from a host-side test, and reading the TAP
 * summary the guest's node test runner printed.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { toolsMissing } from './requires.js';

/** The compiled tree the tests belong to (dist/, or a private build dir). */
export const DIST = fileURLToPath(new URL('../..', import.meta.url));
/** The project: dist/'s parent, or (for a private build dir) the directory the tests run from. */
export const PROJECT = existsSync(join(DIST, '..', 'package.json')) ? join(DIST, '..') : process.cwd();

/** Why the VM cannot run here, or undefined when it can. */
export function vmMissing(extraCommands: string[] = []): string | undefined {
  return toolsMissing(['qemu-system-x86_64', 'busybox', ...extraCommands]);
}

export interface TapSummary {
  tests: number;
  pass: number;
  fail: number;
  skipped: number;
}

/** The last `# tests / # pass / # fail / # skipped` lines of a TAP run (-1 when absent). */
export function tapSummary(out: string): TapSummary {
  const count = (key: string) => {
    const all = [...out.matchAll(new RegExp(`^# ${key} (\\d+)$`, 'gm'))];
    return all.length === 0 ? -1 : Number(all[all.length - 1][1]);
  };
  return { tests: count('tests'), pass: count('pass'), fail: count('fail'), skipped: count('skipped') };
}

export interface VmRun {
  /** The guest command's exit status; 124: the guest timed out; 125: the VM failed. */
  status: number | null;
  /** stdout and stderr, interleaved. */
  out: string;
  seconds: number;
}

/**
 * Boots the VM once and runs `command` in it (in the project directory). The compiled tree is
 * shared into the guest at its own path when it is not inside the project (a private build dir).
 */
export function runInVm(command: string[], opts: { timeoutSec: number; env?: Record<string, string> }): Promise<VmRun> {
  const started = Date.now();
  const share = DIST.startsWith(`${PROJECT}/`) ? [] : ['--share', DIST];
  const envPrefix = Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`);
  const guest = envPrefix.length > 0 ? ['env', ...envPrefix, ...command] : command;
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(PROJECT, 'scripts', 'vm', 'run.mjs'), '--timeout', String(opts.timeoutSec), ...share, '--', ...guest],
      {
        cwd: PROJECT,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, out, seconds: (Date.now() - started) / 1000 }));
  });
}

/** The last lines of a run's output, for assertion messages. */
export function tailOf(out: string, lines = 60): string {
  return out.split('\n').slice(-lines).join('\n');
}
