/**
 * Timing helpers. Every figure is wall-clock time around exactly the operation (set-up and clean-up
 * are outside it), taken `runs` times with the filesystem settled (synced, caches dropped) before
 * each run unless the cell says otherwise.
 */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { settle } from './scratch-fs.js';

/** Seconds `fn` takes. */
export async function time(fn: () => unknown): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1e3;
}

/** Milliseconds a synchronous `fn` takes (whole commands run with spawnSync, say), and its value. */
export function timed<T>(fn: () => T): { ms: number; value: T } {
  const start = performance.now();
  const value = fn();
  return { ms: performance.now() - start, value };
}

export interface RunPlan<T> {
  runs: number;
  /** Untimed, before each run; its value goes to measure and teardown. */
  setup?: (run: number) => T | Promise<T>;
  measure: (state: T, run: number) => unknown;
  /** Untimed, after each run (also after a failed measure). */
  teardown?: (state: T, run: number) => unknown;
  /** Sync and drop caches before each measure (default true). */
  settle?: boolean;
}

/** Runs the plan and returns the seconds of each measure. */
export async function timeRuns<T>(plan: RunPlan<T>): Promise<number[]> {
  const seconds: number[] = [];
  for (let i = 0; i < plan.runs; i++) {
    const state = (await plan.setup?.(i)) as T;
    try {
      if (plan.settle !== false) settle();
      seconds.push(await time(() => plan.measure(state, i)));
    } finally {
      await plan.teardown?.(state, i);
    }
  }
  return seconds;
}

/** Runs a command to completion; throws with its stderr when it fails. Returns stdout. */
export function sh(cmd: string, args: string[], opts: SpawnSyncOptions = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) {
    const err = String(r.stderr ?? '')
      .trim()
      .split('\n')
      .slice(-3)
      .join(' / ');
    throw new Error(`${cmd} ${args.slice(0, 4).join(' ')}${args.length > 4 ? ' …' : ''} exited ${r.status ?? r.signal}: ${err}`);
  }
  return String(r.stdout ?? '');
}
