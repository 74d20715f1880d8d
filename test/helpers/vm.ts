/**
 * Running tests inside the test VM (scripts/vm/run.mjs: Debian's kernel under qemu TCG, the host
 * root read-only over 9p, the project read-write) from a host-side test, and reading the TAP
 * summary the guest's node test runner printed.
 *
 * Every limit of such a run comes from scripts/vm/budget.mjs, scaled by a calibration of the host
 * taken once per test process: vmRunLimits(quiet) gives both the guest's limits (passed to run.mjs)
 * and the node:test timeout that goes around them.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { toolsMissing } from './requires.js';

/** The compiled tree the tests belong to (dist/, or a private build dir). */
export const DIST = fileURLToPath(new URL('../..', import.meta.url));
/** The project: dist/'s parent, or (for a private build dir) the directory the tests run from. */
export const PROJECT = existsSync(join(DIST, '..', 'package.json')) ? join(DIST, '..') : process.cwd();

/** What scripts/vm/budget.mjs calibrates and derives (see there). */
export interface VmCalibration {
  speed: number;
  contention: number;
  probeCpuMs: number;
  probeWallMs: number;
  source: string;
}
export interface VmLimits {
  /** CPU seconds qemu may use. */
  workSec: number;
  /** Wall seconds with no output and no CPU. */
  idleSec: number;
  /** Wall seconds in all. */
  wallSec: number;
}
export interface VmBudget {
  QUIET_SECONDS: { devicemapperFull: number; devicemapperQuick: number; overlay2: number; command: number };
  MARGIN: number;
  WORK_FLOOR: number;
  IDLE_FLOOR: number;
  WALL_STRETCH: number;
  calibrate(env?: Record<string, string | undefined>): VmCalibration;
  vmLimits(quietSeconds: number, cal: VmCalibration): VmLimits;
  limitArgs(limits: VmLimits): string[];
  describeLimits(cal: VmCalibration, limits: VmLimits): string;
  watchGuest(
    pid: number,
    limits: VmLimits,
    kill: (reason: string) => void,
    opts?: { intervalMs?: number },
  ): { output(): void; stop(): void; usage(): number };
  processCpuSeconds(pid: number): number | undefined;
}

/** scripts/vm/budget.mjs, loaded from the project (it is not compiled into dist/). */
export const budget = (await import(pathToFileURL(join(PROJECT, 'scripts', 'vm', 'budget.mjs')).href)) as VmBudget;

/** What each VM run takes on a quiet machine, in seconds (budget.mjs). */
export const QUIET_SECONDS = budget.QUIET_SECONDS;

let calibration: VmCalibration | undefined;

/** The limits for a run that takes `quietSeconds` on a quiet machine, and the node:test timeout around them. */
export function vmRunLimits(quietSeconds: number): { limits: VmLimits; testTimeoutMs: number; description: string } {
  calibration ??= budget.calibrate();
  const limits = budget.vmLimits(quietSeconds, calibration);
  // run.mjs kills the guest at limits.wallSec at the latest; the test's own timeout only guards
  // against run.mjs itself hanging, and leaves it time to report.
  return { limits, testTimeoutMs: (limits.wallSec + 120) * 1000, description: budget.describeLimits(calibration, limits) };
}

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
  /** CPU seconds qemu used (run.mjs's last line), NaN when it did not say. */
  cpuSeconds: number;
}

/**
 * Boots the VM once and runs `command` in it (in the project directory), within `limits`
 * (vmRunLimits). The compiled tree is shared into the guest at its own path when it is not inside
 * the project (a private build dir).
 */
export function runInVm(command: string[], opts: { limits: VmLimits; env?: Record<string, string> }): Promise<VmRun> {
  const started = Date.now();
  const share = DIST.startsWith(`${PROJECT}/`) ? [] : ['--share', DIST];
  const envPrefix = Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`);
  const guest = envPrefix.length > 0 ? ['env', ...envPrefix, ...command] : command;
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(PROJECT, 'scripts', 'vm', 'run.mjs'), ...budget.limitArgs(opts.limits), ...share, '--', ...guest],
      {
        cwd: PROJECT,
        // UNIONCTL_VM_VERBOSE: run.mjs ends with the run's wall and CPU seconds.
        env: { ...process.env, UNIONCTL_VM_VERBOSE: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    child.on('error', reject);
    child.on('close', (status) => {
      const cpu = /^vm: exit \d+ after [\d.]+ s \(([\d.]+) s of qemu CPU\)$/m.exec(out);
      resolve({ status, out, seconds: (Date.now() - started) / 1000, cpuSeconds: cpu === null ? NaN : Number(cpu[1]) });
    });
  });
}

/** The last lines of a run's output, for assertion messages. */
export function tailOf(out: string, lines = 60): string {
  return out.split('\n').slice(-lines).join('\n');
}
