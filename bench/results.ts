/**
 * The shape of a benchmark run's results (bench/results/latest.json) and how the runner collects
 * them. One Result is one (workload, operation, subject[, parameter]) cell with every run's time.
 */

/** unionctl's own drivers; peers (other tools); the floor each operation is compared with. */
export type SubjectKind = 'unionctl' | 'peer' | 'floor';

export interface Result {
  workload: string;
  operation: string;
  subject: string;
  kind: SubjectKind;
  /** Distinguishes cells of one operation: "depth 128", "4 KiB". */
  param?: string;
  /** Wall-clock seconds of each run, in run order. */
  seconds: number[];
  /** Bytes the operation moved (tar bytes applied, file bytes copied up), when it makes sense. */
  bytes?: number;
  /** Files (tar entries) the operation handled, when it makes sense. */
  files?: number;
  note?: string;
}

/** A subject or cell that did not run, and why: the report lists every one. */
export interface Skip {
  subject: string;
  operation?: string;
  workload?: string;
  reason: string;
}

export interface MachineInfo {
  date: string;
  kernel: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  /** The filesystem the run measured on ("ext4 on a loop device backed by tmpfs"). */
  filesystem: string;
  overlay: Record<string, unknown>;
  /** Versions of the peers that were found. */
  peers: Record<string, string>;
  loadAverage: number[];
}

export interface BenchReport {
  machine: MachineInfo;
  options: { quick: boolean; runs: number; drivers: string[]; workloads: string[]; fs: string };
  results: Result[];
  skipped: Skip[];
  /** Free text the report prints under the tables (profiles, caveats). */
  notes: string[];
  /** Seconds the whole run took. */
  elapsed: number;
}

/** Collects results and skips while the runner works, printing a line for each as it lands. */
export class ResultLog {
  readonly results: Result[] = [];
  readonly skipped: Skip[] = [];
  readonly notes: string[] = [];

  constructor(private readonly print: (line: string) => void = () => {}) {}

  add(r: Result): void {
    this.results.push(r);
    const times = r.seconds.map((s) => (s * 1e3).toFixed(s < 0.01 ? 2 : 0)).join(', ');
    this.print(`  ${r.workload} ${r.operation}${r.param ? ` [${r.param}]` : ''} — ${r.subject}: ${times} ms`);
  }

  skip(s: Skip): void {
    // Tool errors can carry pages of log: keep the report's lines readable.
    const flat = s.reason.replace(/\s*\n\s*/g, ' / ');
    s = { ...s, reason: flat.length > 600 ? `${flat.slice(0, 600)} …` : flat };
    // One line per subject and reason: a missing peer is not reported once per cell.
    if (
      this.skipped.some((k) => k.subject === s.subject && k.operation === s.operation && k.workload === s.workload && k.reason === s.reason)
    )
      return;
    this.skipped.push(s);
    this.print(`  skipped ${s.subject}${s.operation ? ` (${s.workload ? `${s.workload} ` : ''}${s.operation})` : ''}: ${s.reason}`);
  }

  note(text: string): void {
    this.notes.push(text);
    this.print(`  note: ${text}`);
  }
}
