/**
 * Waiting in a test for something another process does in its own time (a GC in the background,
 * an apply reaching a file): polls a condition, fails naming it after a deadline. A deadline is
 * a bound on a hang, not a timing assertion: make it generous.
 */
import { setTimeout as sleep } from 'node:timers/promises';

export interface EventuallyOptions {
  /** Default 60 s. */
  timeoutMs?: number;
  /** Default 200 ms. */
  intervalMs?: number;
  /** What to add to the failure: logs, the state seen. */
  diagnose?: () => string;
}

/** Polls `check` until it returns true; throws "still not true after … ms: <what>" after the deadline. */
export async function eventually(what: string, check: () => boolean, opts: EventuallyOptions = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline)
      throw new Error(`still not true after ${timeoutMs} ms: ${what}${opts.diagnose ? `\n${opts.diagnose()}` : ''}`);
    await sleep(opts.intervalMs ?? 200);
  }
}
