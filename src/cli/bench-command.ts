/**
 * `unionctl bench`: the storage benchmark suite (bench/runner.ts) from the CLI. The runner lives in
 * bench/, outside the library, and is loaded only when this command runs: the other commands do not
 * pay for it, and an install without bench/ says so instead of failing to start.
 *
 * The runner is a plugin, loaded by path at run time: the library (src/) imports nothing from
 * bench/. What the CLI needs of it is the BenchSuite interface below, which bench/runner.ts
 * implements (its `suite` export is typed with it, so the two cannot drift apart).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { UnionctlError } from '../errors.js';
import { out, println } from './output.js';

/** What a benchmark run is asked to do. */
export interface BenchRunOptions {
  /** Driver names; default every registered driver. */
  drivers?: string[];
  /** Workload names; default all. */
  workloads?: string[];
  /** apt-get install missing peers first. */
  installPeers?: boolean;
  quick?: boolean;
  fs?: string;
  /** Where latest.json goes (the .md and plots go next to it). */
  json?: string;
  /** Timed runs per cell (default 5, 2 with quick). */
  runs?: number;
  say?: (line: string) => void;
}

/** What `unionctl bench` asks of bench/runner.js (its export `suite`). */
export interface BenchSuite {
  runBench(opts: BenchRunOptions): Promise<{
    targets: Array<{ target: string; measured: string; met: boolean | undefined }>;
    report: { skipped: readonly unknown[] };
    files: string[];
  }>;
}

interface BenchCliOptions {
  drivers?: string;
  workloads?: string;
  peers?: boolean;
  quick?: boolean;
  fs?: string;
  runs?: string;
}

const list = (s: string | undefined) =>
  s === undefined
    ? undefined
    : s
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);

/**
 * `--json FILE` names the results file. `--json` is also unionctl's global "machine-readable
 * output" flag, and commander gives it to the program wherever it appears, so FILE arrives here as
 * this command's optional argument.
 */
function resultsFile(fileArg: string | undefined, cmd: Command): string | undefined {
  const json = cmd.optsWithGlobals<{ json?: boolean }>().json === true;
  if (fileArg !== undefined && !json) {
    throw new UnionctlError('USAGE', `unexpected argument ${JSON.stringify(fileArg)} for bench`, {
      hint: 'name the results file with --json FILE',
    });
  }
  if (json && fileArg === undefined) {
    throw new UnionctlError('USAGE', 'bench --json needs a file name', { hint: 'e.g. unionctl bench --json /tmp/bench/latest.json' });
  }
  return fileArg;
}

/** The benchmark suite's entry point: present in a build of the repository, not in an installed package. */
const benchRunner = (): string => fileURLToPath(new URL('../../bench/runner.js', import.meta.url));

async function benchCommand(fileArg: string | undefined, opts: BenchCliOptions, cmd: Command): Promise<void> {
  const json = resultsFile(fileArg, cmd);
  const runner = benchRunner();
  if (!existsSync(runner)) {
    throw new UnionctlError('NOT_FOUND', `the benchmark suite is not part of this installation (${runner} is missing)`, {
      hint: 'run unionctl bench from a build of the repository (npm run build)',
    });
  }
  const runs = opts.runs === undefined ? undefined : Number(opts.runs);
  if (runs !== undefined && (!Number.isInteger(runs) || runs < 1)) {
    throw new UnionctlError('BAD_OPTION', `--runs must be a whole number ≥ 1, not ${JSON.stringify(opts.runs)}`, { hint: 'e.g. --runs 3' });
  }
  const { suite } = (await import(runner)) as { suite: BenchSuite };
  const outcome = await suite.runBench({
    drivers: list(opts.drivers),
    workloads: list(opts.workloads),
    installPeers: opts.peers === true,
    quick: opts.quick === true,
    fs: opts.fs,
    json,
    runs,
    say: (line) => println(out.dim(line)),
  });
  println();
  println(out.bold('Targets'));
  for (const t of outcome.targets) {
    // --quick runs small inputs twice: it shows where things stand, it does not judge the targets.
    const missed = opts.quick === true ? out.dim('not judged (--quick)') : out.red('missed');
    const mark = t.met === undefined ? out.dim('n/a') : t.met ? out.green('met') : missed;
    println(`  ${mark}  ${t.target}: ${t.measured}`);
  }
  if (outcome.report.skipped.length > 0) println(out.dim(`${outcome.report.skipped.length} subjects/cells skipped: see the report`));
  println(`${out.bold('Written:')} ${outcome.files.join(', ')}`);
}

/**
 * Adds `bench`; an installed package, which has no benchmark suite, keeps it out of the help
 * (`hidden`: as if installed, whether or not the suite is there).
 */
export function registerBenchCommand(program: Command, opts: { hidden?: boolean } = {}): void {
  program
    .command('bench', { hidden: opts.hidden === true || !existsSync(benchRunner()) })
    .usage('[--drivers …] [--workloads …] [--peers] [--quick] [--fs ext4|xfs|tmpfs] [--json FILE] [--runs N]')
    .argument('[file]', 'after --json: the results file; the .md table and SVG plots go next to it (default bench/results/latest.json)')
    .description(
      'storage benchmarks: every driver against GNU tar, Docker, podman, umoci, fuse-overlayfs on a fresh loop filesystem (root)',
    )
    .option('--drivers <list>', 'comma-separated unionctl drivers (default: all registered)')
    .option(
      '--workloads <list>',
      'comma-separated: distro, smallfiles, deep, whiteouts, bigfile, image, compression, rootfs (default: all but rootfs, a debootstrapped Debian, built once and cached)',
    )
    .option('--peers', 'apt-get install the peer tools that are missing (otherwise they are skipped, with a note)')
    .option('--quick', 'small workloads and 2 runs per cell (a smoke test, under 3 minutes)')
    .addOption(new Option('--fs <type>', 'filesystem to measure on').choices(['ext4', 'xfs', 'tmpfs']).default('ext4'))
    .option('--runs <n>', 'timed runs per cell (default 5; 2 with --quick)')
    .action(benchCommand);
}
