/** What every operation module gets from the runner. */
import type { ResultLog } from './results.js';
import type { BenchFs } from './scratch-fs.js';
import type { PeerName } from './peers/detect.js';
import type { WorkloadSizes } from './workloads.js';

export interface BenchContext {
  fs: BenchFs;
  sizes: WorkloadSizes;
  /** Timed runs per cell. */
  runs: number;
  quick: boolean;
  /** unionctl drivers to measure (registered and supported here). */
  drivers: string[];
  /** Installed peer tools and their versions. */
  peers: Map<PeerName, string>;
  log: ResultLog;
  say(line: string): void;
  /** The unionctl CLI entry point of this build (…/src/cli/main.js). */
  cliMain: string;
}

/** The subject name of a unionctl driver in results. */
export const unionctlSubject = (driver: string) => `unionctl ${driver}`;

/** A new, unique directory path on the measured filesystem (not created: the caller or the store does). */
let counter = 0;
export function freshDir(ctx: BenchContext, label: string): string {
  counter += 1;
  return `${ctx.fs.target}/${label}-${counter}`;
}
