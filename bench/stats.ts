/**
 * The arithmetic of the report: summaries of repeated runs, throughputs and ratios. Pure functions,
 * unit-tested (test/unit/bench-stats.test.ts).
 */

export interface Summary {
  min: number;
  median: number;
  max: number;
  runs: number;
}

/** min/median/max of the runs; the median of an even count is the mean of the middle two. */
export function summarize(samples: number[]): Summary {
  if (samples.length === 0) throw new RangeError('summarize: no samples');
  if (samples.some((s) => !Number.isFinite(s))) throw new RangeError(`summarize: not a finite number in ${JSON.stringify(samples)}`);
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { min: sorted[0], median, max: sorted[sorted.length - 1], runs: sorted.length };
}

/** Units per second at `seconds` (undefined when there is nothing to divide). */
export function perSecond(amount: number | undefined, seconds: number): number | undefined {
  if (amount === undefined || amount <= 0 || seconds <= 0) return undefined;
  return amount / seconds;
}

/** How many times slower `seconds` is than `reference` (1.0 = as fast; < 1 = faster). */
export function ratio(seconds: number, reference: number | undefined): number | undefined {
  if (reference === undefined || reference <= 0) return undefined;
  return seconds / reference;
}

/** "1.23×", "0.45×", "120×" — two significant decimals below 10, none above 100. */
export function formatRatio(r: number | undefined): string {
  if (r === undefined) return '–';
  if (r >= 100) return `${r.toFixed(0)}×`;
  if (r >= 10) return `${r.toFixed(1)}×`;
  return `${r.toFixed(2)}×`;
}

/** A duration in the unit that keeps it readable: "850 µs", "12.3 ms", "4.56 s". */
export function formatSeconds(s: number): string {
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(s < 0.01 ? 2 : s < 0.1 ? 1 : 0)} ms`;
  return `${s.toFixed(2)} s`;
}

/** "248 MB/s" from bytes per second (decimal megabytes, like the tools it is compared with). */
export function formatRate(perSec: number | undefined, unit: 'MB' | 'files'): string {
  if (perSec === undefined) return '–';
  if (unit === 'MB') {
    const mb = perSec / 1e6;
    return `${mb >= 100 ? mb.toFixed(0) : mb.toFixed(1)} MB/s`;
  }
  return `${perSec >= 1000 ? Math.round(perSec).toLocaleString('en-US') : perSec.toFixed(0)} files/s`;
}
