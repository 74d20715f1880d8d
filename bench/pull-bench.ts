/**
 * Pull benchmark: `unionctl pull` against `docker pull` (dockerd 20.10, overlay2), `podman pull`
 * (containers/storage overlay) and `ctr images pull` (containerd 1.6, overlayfs snapshotter,
 * unpacked), all from one private registry (distribution 2.8 on 127.0.0.1, its data on tmpfs)
 * holding the same image, into an empty store on the same filesystem (ext4 on a loop device
 * backed by tmpfs, bench/scratch-fs.ts), timed as whole client processes — what a user runs.
 *
 * The image is the load benchmark's (bench/load-bench.ts generateImage: ≥ 200 MB, ≥ 15,000
 * entries, whiteouts and opaque dirs) pushed by skopeo, so its layers are gzip blobs. Each
 * subject starts every round from nothing (a fresh daemon and store, untimed); subjects
 * alternate order from round to round; caches are dropped before each pull. CPU time counts the
 * client and, for the daemons, the daemon. unionctl's peak RSS is its VmHWM, read while it runs.
 *
 *   npm run build && node dist/bench/pull-bench.js [--rounds N]
 *
 * Writes bench/reports/pull-<date>.md (+ .json).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { processCpuMs } from './cpu.js';
import { generateImage } from './load-bench.js';
import { startContainerd } from './peers/containerd.js';
import { startDockerd } from './peers/dockerd.js';
import { startPodman } from './peers/podman.js';
import { startRegistry, type Registry } from './peers/registry.js';
import { makeBenchFs, settle, type BenchFs } from './scratch-fs.js';
import { summarize } from './stats.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(HERE, '..', 'src', 'cli', 'main.js');
const REPORTS = join(HERE, '..', '..', 'bench', 'reports');
const REPOSITORY = 'bench/pull';

interface Args {
  rounds: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { rounds: 3 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--rounds') args.rounds = Number(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return args;
}

/**
 * A finished client process: wall time, its peak RSS (VmHWM) and its CPU time (all threads, and
 * children it reaped), both polled from /proc while it ran: the last poll misses at most 10 ms of
 * its run. (Not this process's cutime: that also takes in a daemon of the subject before, stopped
 * and reaped while the next subject runs — a dockerd's whole life.)
 */
interface Timed {
  ms: number;
  peakRssKb: number;
  cpuMs: number;
}

/** Runs a command to completion, timing it and polling its VmHWM and CPU time; throws with its stderr on failure. */
async function runTimed(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<Timed> {
  const started = performance.now();
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: env ?? process.env });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let peakRssKb = 0;
  let cpuMs = 0;
  const poll = setInterval(() => {
    try {
      const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1];
      if (hwm !== undefined) peakRssKb = Math.max(peakRssKb, Number(hwm));
      cpuMs = Math.max(cpuMs, processCpuMs(child.pid!));
    } catch {
      /* exited (or a zombie, whose status has no VmHWM) */
    }
  }, 10);
  const code = await new Promise<number | null>((resolve, reject) => child.on('error', reject).on('close', resolve));
  clearInterval(poll);
  const ms = performance.now() - started;
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.trim().split('\n').slice(-5).join('\n')}`);
  return { ms, peakRssKb, cpuMs };
}

interface Subject {
  name: string;
  /** Sets up from nothing (untimed); returns the timed pull and a teardown. */
  setUp(
    fs: BenchFs,
    round: number,
    ref: string,
  ): Promise<{ pull: () => Promise<Timed>; daemonCpuMs: () => number; close: () => Promise<void> }>;
}

const unionctl: Subject = {
  name: 'unionctl pull (overlay2)',
  async setUp(fs, round, ref) {
    const root = join(fs.target, `uc-${round}`);
    return {
      pull: () => runTimed(process.execPath, [CLI, '--root', root, '--driver', 'overlay2', 'pull', '--insecure', ref]),
      daemonCpuMs: () => 0,
      async close() {
        execFileSync(process.execPath, [CLI, '--root', root, 'cleanup']);
        rmSync(root, { recursive: true, force: true });
      },
    };
  },
};

const docker: Subject = {
  name: 'docker pull (dockerd 20.10, overlay2)',
  async setUp(fs, _round, ref) {
    const d = await startDockerd({ storageDriver: 'overlay2', dir: fs.target });
    // dockerd trusts 127.0.0.0/8 as an insecure registry by default.
    return {
      pull: () => runTimed('/usr/bin/docker', ['-H', `unix://${d.socket}`, 'pull', '-q', ref]),
      daemonCpuMs: () => processCpuMs(d.pid),
      close: () => d.stop(),
    };
  },
};

const podman: Subject = {
  name: 'podman pull (overlay)',
  async setUp(fs, _round, ref) {
    const p = startPodman({ storageDriver: 'overlay', dir: fs.target });
    return {
      pull: () => runTimed('/usr/bin/podman', [...p.globalArgs, 'pull', '-q', '--tls-verify=false', ref], p.env),
      daemonCpuMs: () => 0,
      async close() {
        p.stop();
      },
    };
  },
};

const ctr: Subject = {
  name: 'ctr images pull (containerd 1.6, overlayfs)',
  async setUp(fs, _round, ref) {
    const cd = await startContainerd({ dir: fs.target });
    return {
      pull: () => runTimed('/usr/bin/ctr', ['--address', cd.address, '-n', cd.namespace, 'images', 'pull', '--plain-http', ref]),
      daemonCpuMs: () => processCpuMs(cd.pid),
      close: () => cd.stop(),
    };
  },
};

interface Sample {
  subject: string;
  ms: number;
  cpuMs: number;
  peakRssKb: number;
}

async function runSubject(subject: Subject, fs: BenchFs, ref: string, round: number): Promise<Sample> {
  const s = await subject.setUp(fs, round, ref);
  try {
    settle();
    const daemonBefore = s.daemonCpuMs();
    const t = await s.pull();
    const cpuMs = t.cpuMs + s.daemonCpuMs() - daemonBefore;
    console.log(
      `  round ${round + 1}: ${subject.name.padEnd(44)} ${(t.ms / 1000).toFixed(2)} s, CPU ${(cpuMs / 1000).toFixed(2)} s, client peak RSS ${(t.peakRssKb / 1024).toFixed(0)} MB`,
    );
    return { subject: subject.name, ms: t.ms, cpuMs, peakRssKb: t.peakRssKb };
  } finally {
    await s.close();
    fs.trim();
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const fs = makeBenchFs({ type: 'ext4' });
  let registry: Registry | undefined;
  try {
    console.log(`generating the image on ${fs.tmp} …`);
    const image = generateImage(fs.tmp, { runnable: true });
    registry = await startRegistry({ dir: fs.tmp });
    const ref = `${registry.address}/${REPOSITORY}:1`;
    registry.push(`docker-archive:${image.archive}`, `${REPOSITORY}:1`); // skopeo: gzip layers
    rmSync(image.archive, { force: true });
    const manifest = JSON.parse(
      execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], { encoding: 'utf8' }),
    ) as {
      layers: Array<{ size: number }>;
    };
    const blobBytes = manifest.layers.reduce((n, l) => n + l.size, 0);
    console.log(
      `image: ${(blobBytes / 1e6).toFixed(0)} MB of gzip layers, ${image.entries} tar entries in ${image.diffIds.length} layers, at ${ref}`,
    );
    const subjects = [unionctl, docker, podman, ctr];
    const samples: Sample[] = [];
    for (let r = 0; r < args.rounds; r++) {
      const order = r % 2 === 0 ? subjects : [...subjects].reverse();
      for (const subject of order) samples.push(await runSubject(subject, fs, ref, r));
    }
    report(subjects, samples, { blobBytes, entries: image.entries, layers: image.diffIds.length, whiteouts: image.whiteouts }, fs, args);
  } finally {
    await registry?.stop();
    fs.dispose();
  }
}

function report(
  subjects: Subject[],
  samples: Sample[],
  image: { blobBytes: number; entries: number; layers: number; whiteouts: number },
  fs: BenchFs,
  args: Args,
): void {
  const median = (xs: number[]) => summarize(xs).median;
  const rows = subjects.map((subject) => {
    const mine = samples.filter((s) => s.subject === subject.name);
    return {
      subject: subject.name,
      s: median(mine.map((m) => m.ms)) / 1000,
      cpuS: median(mine.map((m) => m.cpuMs)) / 1000,
      peakRssMb: Math.max(...mine.map((m) => m.peakRssKb)) / 1024,
    };
  });
  const [ours, ...peers] = rows as [(typeof rows)[0], ...typeof rows];
  const fastest = peers.reduce((a, b) => (b.s < a.s ? b : a));
  const speedup = fastest.s / ours.s;
  const perRound = Array.from({ length: args.rounds }, (_, r) => {
    const inRound = (name: string) => samples.filter((s) => s.subject === name)[r]!.ms;
    return Math.min(...peers.map((p) => inRound(p.subject))) / inRound(ours.subject);
  });
  const spread = summarize(perRound);
  const date = new Date().toISOString().slice(0, 10);
  const lines = [
    `# Pull benchmark, ${date}`,
    '',
    `Image: the load benchmark's generated image plus a busybox layer, pushed by skopeo: ${(image.blobBytes / 1e6).toFixed(0)} MB of gzip layer blobs, ${image.entries} tar entries in ${image.layers} layers, ${image.whiteouts} whiteouts. Registry: distribution ${execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'docker-registry'], { encoding: 'utf8' })} on 127.0.0.1, data on tmpfs.`,
    `Stores on ${fs.description}, empty at each pull (daemons started afresh each round, untimed). ${args.rounds} rounds, order alternating, caches dropped before each pull; medians of whole client processes. CPU: the client, plus dockerd or containerd. Node ${process.version}, ${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores, load average ${loadavg()[0].toFixed(1)} at the end.`,
    '',
    '| client | pull, s | CPU, s | client peak RSS, MB |',
    '|---|---|---|---|',
    ...rows.map((r) => `| ${r.subject} | ${r.s.toFixed(2)} | ${r.cpuS.toFixed(2)} | ${r.peakRssMb.toFixed(0)} |`),
    '',
    `unionctl pull is **${speedup.toFixed(2)}×** as fast as the fastest peer (${fastest.subject}); target ≥ 2×: ${speedup >= 2 ? 'met' : 'missed'}. Round by round: ${spread.min.toFixed(2)}–${spread.max.toFixed(2)}× (median ${spread.median.toFixed(2)}×).`,
    `unionctl's peak RSS: **${ours.peakRssMb.toFixed(0)} MB** (target < 200 MB: ${ours.peakRssMb < 200 ? 'met' : 'missed'}).`,
    '',
  ];
  const text = lines.join('\n');
  console.log(`\n${text}`);
  mkdirSync(REPORTS, { recursive: true });
  writeFileSync(join(REPORTS, `pull-${date}.md`), text);
  writeFileSync(join(REPORTS, `pull-${date}.json`), JSON.stringify({ image, rows, samples }, null, 2));
}

main().catch((e: Error) => {
  console.error(e.stack ?? e.message);
  process.exit(1);
});
