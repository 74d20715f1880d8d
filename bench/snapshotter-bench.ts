/**
 * containerd snapshotter benchmark: containerd 1.6 with `unionctl serve` (overlay2) as its proxy
 * snapshotter against containerd's built-in overlayfs snapshotter, in one run, on the same
 * filesystem (ext4 on a loop device backed by tmpfs, bench/scratch-fs.ts), as whole `ctr`
 * processes — what a user of containerd runs:
 *
 *   - import + first run: `ctr images import --snapshotter S image.tar`, then the first
 *     `ctr run --rm --snapshotter S image c busybox true` (containerd unpacks every layer into the
 *     snapshotter, then prepares the container's writable snapshot and mounts it);
 *   - start latency: `ctr run --rm … true` of the image once it is unpacked and synced (median of
 *     several); for unionctl also once the server's background diff-ID hashing (below) is over.
 *
 * The image is the load benchmark's (bench/load-bench.ts generateImage: 3 layers, ≥ 200 MB,
 * ≥ 15,000 entries, whiteouts and opaque dirs) plus a small layer with a static busybox to run.
 * Every round starts each subject from nothing: a fresh containerd (and for unionctl a fresh
 * server and store) on the benchmark filesystem, started untimed; subjects alternate order from
 * round to round; caches are dropped before each timed import. CPU time counts the ctr processes,
 * containerd and (for unionctl) the server.
 *
 * unionctl hashes each committed layer's export to record its diff ID (containerd does not pass
 * it), in the background after the Commit has answered: the server's debug log times each
 * Commit, the report gives their sum, and the CPU column includes the hashing (the round waits
 * for the last diff ID, and says how long that went on after the first run).
 *
 *   npm run build && node dist/bench/snapshotter-bench.js [--rounds N] [--starts N]
 *
 * Writes bench/reports/snapshotter-<date>.md (+ .json).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { childrenCpuMs, processCpuMs } from './cpu.js';
import { BENCH_BUSYBOX, generateImage } from './load-bench.js';
import { timed } from './measure.js';
import { startContainerd, type Containerd } from './peers/containerd.js';
import { startServe, type ServeProcess } from './peers/unionctl-serve.js';
import { makeBenchFs, settle, type BenchFs } from './scratch-fs.js';
import { summarize } from './stats.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(HERE, '..', 'src', 'cli', 'main.js');
const REPORTS = join(HERE, '..', '..', 'bench', 'reports');
const IMAGE = 'docker.io/library/loadbench:1';

interface Args {
  rounds: number;
  starts: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { rounds: 3, starts: 7 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--rounds') args.rounds = Number(argv[++i]);
    else if (argv[i] === '--starts') args.starts = Number(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return args;
}

/** One subject of a round, set up from nothing (untimed) and torn down after. */
interface Setup {
  snapshotter: string;
  cd: Containerd;
  serve?: ServeProcess;
  /** CPU (ms) of the daemons so far: containerd, the server. */
  daemonCpuMs(): number;
  /** unionctl: resolves once the server has recorded every committed layer's diff ID (its work after the Commits). */
  backgroundDone?(): Promise<void>;
  close(): Promise<void>;
}

interface Subject {
  name: string;
  setUp(fs: BenchFs, round: number): Promise<Setup>;
}

const builtIn: Subject = {
  name: 'containerd overlayfs (built-in)',
  async setUp(fs) {
    const cd = await startContainerd({ dir: fs.target });
    return { snapshotter: 'overlayfs', cd, daemonCpuMs: () => processCpuMs(cd.pid), close: () => cd.stop() };
  },
};

const unionctl: Subject = {
  name: 'containerd + unionctl serve (overlay2)',
  async setUp(fs, round) {
    const root = join(fs.target, `uc-${round}`);
    const socket = join(fs.target, `uc-${round}.sock`);
    const serve = await startServe({ root, driver: 'overlay2', socket, logFile: join(fs.tmp, `serve-${round}.log`) });
    const cd = await startContainerd({ dir: fs.target, proxySnapshotters: { unionctl: socket } });
    return {
      snapshotter: 'unionctl',
      cd,
      serve,
      daemonCpuMs: () => processCpuMs(cd.pid) + processCpuMs(serve.pid),
      backgroundDone: () => diffIdsRecorded(root),
      async close() {
        await cd.stop();
        await serve.stop();
        execFileSync(process.execPath, [CLI, '--root', root, 'cleanup']);
        rmSync(root, { recursive: true, force: true });
      },
    };
  },
};

interface Sample {
  subject: string;
  importMs: number;
  firstRunMs: number;
  /** CPU of import + first run: ctr, containerd, the server. */
  cpuMs: number;
  /** Medians of this round's `ctr run --rm … true`. */
  startMs: number;
  /** unionctl only: the Commits' time in the server (diff ID re-hash included). */
  commitMs?: number;
  /** unionctl only: how long after the first run ended the server's background diff-ID hashing went on. */
  hashingAfterMs?: number;
}

/**
 * Resolves once every complete image layer of the store at `root` has its diff ID: the server
 * hashes big layers after their Commit has answered (src/serve/containerd/diff-ids.ts). Reads the
 * layer records (layerdb/<id>.json) as files, every 50 ms: a CLI process per poll would add its own
 * CPU to what is measured.
 */
async function diffIdsRecorded(root: string): Promise<void> {
  const dir = join(root, 'layerdb');
  const pending = () =>
    readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .some((f) => {
        const rec = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { state?: string; writable?: boolean; diffId?: string };
        return rec.state === 'complete' && rec.writable !== true && rec.diffId === undefined;
      });
  while (pending()) await new Promise((r) => setTimeout(r, 50));
}

/** The server's Commit durations so far, from its debug log ("Commit(…) ok N ms"). */
function commitMsInLog(log: string): number {
  return [...log.matchAll(/Commit\([^)]*\) ok (\d+) ms/g)].reduce((sum, m) => sum + Number(m[1]), 0);
}

async function runSubject(subject: Subject, fs: BenchFs, archive: string, args: Args, round: number): Promise<Sample> {
  const s = await subject.setUp(fs, round);
  try {
    const run = (name: string) => s.cd.ctr(['run', '--rm', '--snapshotter', s.snapshotter, IMAGE, name, BENCH_BUSYBOX, 'true']);
    settle();
    const cpuBefore = childrenCpuMs() + s.daemonCpuMs();
    const imported = timed(() => s.cd.ctr(['images', 'import', '--snapshotter', s.snapshotter, archive]));
    const first = timed(() => run('first'));
    // The CPU of the import includes the server's hashing after its Commits; start latency is that
    // of an image whose unpacking (and hashing) is over, as for the built-in.
    const hashingStarted = performance.now();
    await s.backgroundDone?.();
    const hashingAfterMs = performance.now() - hashingStarted;
    const cpuMs = childrenCpuMs() + s.daemonCpuMs() - cpuBefore;
    // Start latency of an image already unpacked: the import's writeback is not part of it.
    settle();
    const starts: number[] = [];
    for (let i = 0; i < args.starts; i++) starts.push(timed(() => run(`start-${i}`)).ms);
    const sample: Sample = {
      subject: subject.name,
      importMs: imported.ms,
      firstRunMs: first.ms,
      cpuMs,
      startMs: summarize(starts).median,
      ...(s.serve ? { commitMs: commitMsInLog(s.serve.log()), hashingAfterMs } : {}),
    };
    console.log(
      `  round ${round + 1}: ${subject.name.padEnd(40)} import ${(sample.importMs / 1000).toFixed(2)} s + first run ${(sample.firstRunMs / 1000).toFixed(2)} s, CPU ${(cpuMs / 1000).toFixed(2)} s, start ${sample.startMs.toFixed(0)} ms${sample.commitMs === undefined ? '' : `, Commits ${(sample.commitMs / 1000).toFixed(2)} s`}`,
    );
    return sample;
  } finally {
    await s.close();
    fs.trim();
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const fs = makeBenchFs({ type: 'ext4' });
  try {
    console.log(`generating the image on ${fs.tmp} …`);
    const image = generateImage(fs.tmp, { runnable: true });
    console.log(`image: ${(image.bytes / 1e6).toFixed(0)} MB archive, ${image.entries} tar entries in ${image.diffIds.length} layers`);
    const subjects = [unionctl, builtIn];
    const samples: Sample[] = [];
    for (let r = 0; r < args.rounds; r++) {
      for (const subject of r % 2 === 0 ? subjects : [...subjects].reverse())
        samples.push(await runSubject(subject, fs, image.archive, args, r));
    }
    report(subjects, samples, image, fs, args);
  } finally {
    fs.dispose();
  }
}

function report(subjects: Subject[], samples: Sample[], image: ReturnType<typeof generateImage>, fs: BenchFs, args: Args): void {
  const median = (xs: number[]) => summarize(xs).median;
  const rows = subjects.map((subject) => {
    const mine = samples.filter((s) => s.subject === subject.name);
    return {
      subject: subject.name,
      importS: median(mine.map((m) => m.importMs)) / 1000,
      importAndRunS: median(mine.map((m) => m.importMs + m.firstRunMs)) / 1000,
      cpuS: median(mine.map((m) => m.cpuMs)) / 1000,
      startMs: median(mine.map((m) => m.startMs)),
      commitS: mine[0]?.commitMs === undefined ? undefined : median(mine.map((m) => m.commitMs!)) / 1000,
      hashingAfterS: mine[0]?.hashingAfterMs === undefined ? undefined : median(mine.map((m) => m.hashingAfterMs!)) / 1000,
    };
  });
  const [ours, peer] = rows as [(typeof rows)[0], (typeof rows)[0]];
  const importRatio = ours.importAndRunS / peer.importAndRunS;
  const startRatio = ours.startMs / peer.startMs;
  // Each round's own ratio (its two subjects ran back to back): how much the ratio moves run to run.
  const perRound = (f: (s: Sample) => number) => {
    const ratios = Array.from({ length: args.rounds }, (_, r) => {
      const [a, b] = [ours, peer].map((row) => samples.filter((s) => s.subject === row.subject)[r]!);
      return f(a!) / f(b!);
    });
    const sum = summarize(ratios);
    return `${sum.min.toFixed(2)}–${sum.max.toFixed(2)}× (median ${sum.median.toFixed(2)}×)`;
  };
  const date = new Date().toISOString().slice(0, 10);
  const lines = [
    `# containerd snapshotter benchmark, ${date}`,
    '',
    `Image: the load benchmark's generated image plus a busybox layer: ${(image.bytes / 1e6).toFixed(0)} MB docker-save archive, ${image.entries} tar entries in ${image.diffIds.length} layers, ${image.whiteouts} whiteouts.`,
    `containerd ${execFileSync('containerd', ['--version'], { encoding: 'utf8' }).trim().split(' ')[2]}, started afresh for each subject and round (the unionctl server and store too). Filesystem: ${fs.description}. ${args.rounds} rounds, order alternating, caches dropped before each import; medians; start latency is the median of ${args.starts} \`ctr run --rm … true\` per round. Node ${process.version}, ${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores, load average ${loadavg()[0].toFixed(1)} at the end.`,
    '',
    '| snapshotter | import, s | import + first run, s | CPU, s | ctr run --rm true, ms | Commits in the server, s |',
    '|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.subject} | ${r.importS.toFixed(2)} | ${r.importAndRunS.toFixed(2)} | ${r.cpuS.toFixed(2)} | ${r.startMs.toFixed(0)} | ${r.commitS === undefined ? '–' : r.commitS.toFixed(2)} |`,
    ),
    '',
    `Import + first run with unionctl: **${importRatio.toFixed(2)}×** the built-in's time (target ≤ 1.15×: ${importRatio <= 1.15 ? 'met' : 'missed'}). Container start: **${startRatio.toFixed(2)}×** (target ≤ 1.1×: ${startRatio <= 1.1 ? 'met' : 'missed'}).`,
    `Round by round: import + first run ${perRound((s) => s.importMs + s.firstRunMs)}, start ${perRound((s) => s.startMs)}.`,
    `Commits in the server: containerd's Commit calls as the server timed them. The diff ID of each committed layer (the sha256 of its export: containerd does not pass it) is hashed inside the Commit for a layer up to 16 MiB, and after the Commit has answered for a bigger one, in the background while containerd unpacks the next layer; its CPU is in the CPU column, counted until the last diff ID is recorded: ${ours.hashingAfterS === undefined ? '' : `that went on ${ours.hashingAfterS.toFixed(2)} s (median) after the first run had ended. `}Start latency is measured after that, for both: an image whose unpacking is over.`,
    '',
  ];
  const text = lines.join('\n');
  console.log(`\n${text}`);
  mkdirSync(REPORTS, { recursive: true });
  writeFileSync(join(REPORTS, `snapshotter-${date}.md`), text);
  writeFileSync(
    join(REPORTS, `snapshotter-${date}.json`),
    JSON.stringify({ image: { ...image, archive: undefined }, rows, samples }, null, 2),
  );
}

main().catch((e: Error) => {
  console.error(e.stack ?? e.message);
  process.exit(1);
});
