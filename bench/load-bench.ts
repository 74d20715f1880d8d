/**
 * Image load benchmark: `unionctl load` (overlay2) against `docker load` (Docker 20.10, overlay2)
 * and `podman load` (overlay), in one run, on the same filesystem: an ext4 image on a loop device
 * backed by tmpfs (bench/scratch-fs.ts). The archive lives on the tmpfs.
 *
 * The image is generated (same seed, same bytes every run): a docker-save archive of three layers,
 * ≥ 200 MB and ≥ 15,000 entries — a distro-like base (bench/synthetic-layer.ts), then two layers
 * that add files and delete some of the base's with `.wh.` whiteouts, and make a dir opaque.
 *
 * Each round loads the archive once with each tool into an empty store (alternating the order),
 * times the command as a whole process, then checks the digests: every tool must report the
 * image's diff IDs (Docker and podman hash the layers themselves; unionctl refuses a mismatch),
 * then `sync` (timed separately: all three leave dirty pages behind) and drops the caches.
 *
 *   npm run build && node dist/bench/load-bench.js [--rounds N] [--skip-docker] [--skip-podman]
 *
 * Writes bench/reports/load-<date>.md (+ .json).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { childrenCpuMs, processCpuMs } from './cpu.js';
import { timed } from './measure.js';
import { startDockerd, type Dockerd } from './peers/dockerd.js';
import { startPodman, type Podman } from './peers/podman.js';
import { makeBenchFs, settle, type BenchFs } from './scratch-fs.js';
import { DISTRO_LIKE, packTree, writeSyntheticTree, type SyntheticTree } from './synthetic-layer.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const CLI = join(HERE, '..', 'src', 'cli', 'main.js');
const REPORTS = join(HERE, '..', '..', 'bench', 'reports');

interface Args {
  rounds: number;
  docker: boolean;
  podman: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { rounds: 3, docker: true, podman: true };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--rounds') args.rounds = Number(argv[++i]);
    else if (argv[i] === '--skip-docker') args.docker = false;
    else if (argv[i] === '--skip-podman') args.podman = false;
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return args;
}

// ---- the image -------------------------------------------------------------------------------

interface GeneratedImage {
  archive: string;
  bytes: number;
  entries: number;
  diffIds: string[];
  whiteouts: number;
  name: string;
}

function sha256File(path: string): string {
  return `sha256:${execFileSync('sha256sum', [path], { encoding: 'utf8' }).split(' ')[0]}`;
}

function tarEntries(path: string): number {
  return execFileSync('tar', ['-tf', path], { encoding: 'utf8', maxBuffer: 256 << 20 })
    .split('\n')
    .filter(Boolean).length;
}

/** Upper layer: `add` new small files, whiteouts for `remove` files of the base, one opaque dir. */
function writeUpperTree(dir: string, base: SyntheticTree, seed: number, add: number, remove: number): number {
  writeSyntheticTree(dir, { smallFiles: add, largeFiles: 2, largeMean: 2 << 20, dirs: 120, symlinks: 50, hardlinks: 0 }, seed);
  let whiteouts = 0;
  for (let i = 0; i < remove; i++) {
    const victim = base.files[(i * 7919 + seed) % base.files.length];
    if (existsSync(join(dir, victim))) continue; // this layer writes that path itself
    const slash = victim.lastIndexOf('/');
    const whiteout = join(dir, victim.slice(0, slash), `.wh.${victim.slice(slash + 1)}`);
    mkdirSync(join(dir, victim.slice(0, slash)), { recursive: true });
    writeFileSync(whiteout, '');
    whiteouts++;
  }
  // An opaque directory: everything the base had under it disappears.
  const opaque = base.dirs[(seed * 31) % base.dirs.length];
  mkdirSync(join(dir, opaque), { recursive: true });
  writeFileSync(join(dir, opaque, '.wh..wh..opq'), '');
  return whiteouts + 1;
}

/** Where the runnable image (generateImage's `runnable`) keeps its one program: a static busybox. */
export const BENCH_BUSYBOX = '/unionctl-bench/busybox';

/**
 * The load benchmark's image in `tmp`. With `runnable`, a fourth small layer adds a static busybox
 * at BENCH_BUSYBOX (the image's command: `busybox true`), so containers can be started from it.
 */
export function generateImage(tmp: string, opts: { runnable?: boolean } = {}): GeneratedImage {
  const stage = join(tmp, 'image');
  mkdirSync(stage);
  const layerTars: string[] = [];
  let whiteouts = 0;
  const baseDir = join(tmp, 'tree-base');
  mkdirSync(baseDir);
  const base = writeSyntheticTree(baseDir, DISTRO_LIKE, 42);
  layerTars.push(join(tmp, 'layer-1.tar'));
  packTree(baseDir, layerTars[0]);
  for (const [i, [add, remove]] of [
    [4200, 400],
    [2600, 250],
  ].entries()) {
    const dir = join(tmp, `tree-${i + 2}`);
    mkdirSync(dir);
    whiteouts += writeUpperTree(dir, base, 100 + i, add, remove);
    layerTars.push(join(tmp, `layer-${i + 2}.tar`));
    packTree(dir, layerTars[i + 1]);
  }
  if (opts.runnable) {
    const dir = join(tmp, 'tree-run');
    mkdirSync(join(dir, BENCH_BUSYBOX, '..'), { recursive: true });
    copyFileSync('/bin/busybox', join(dir, BENCH_BUSYBOX));
    layerTars.push(join(tmp, 'layer-run.tar'));
    packTree(dir, layerTars[layerTars.length - 1]);
    rmSync(dir, { recursive: true, force: true });
  }
  const diffIds = layerTars.map(sha256File);
  const layers = diffIds.map((d, i) => {
    const dir = join(stage, d.slice(7));
    mkdirSync(dir);
    execFileSync('mv', [layerTars[i], join(dir, 'layer.tar')]);
    return `${d.slice(7)}/layer.tar`;
  });
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: opts.runnable ? [BENCH_BUSYBOX, 'true'] : ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map(() => ({ created: '2025-01-01T00:00:00Z', created_by: 'load-bench' })),
  });
  const configHex = createHash('sha256').update(config).digest('hex');
  writeFileSync(join(stage, `${configHex}.json`), config);
  const name = 'loadbench:1';
  writeFileSync(join(stage, 'manifest.json'), JSON.stringify([{ Config: `${configHex}.json`, RepoTags: [name], Layers: layers }]));
  const archive = join(tmp, 'loadbench.tar');
  execFileSync('tar', ['-cf', archive, '-C', stage, '.']);
  const entries = layers.reduce((n, l) => n + tarEntries(join(stage, l)), 0);
  const bytes = Number(execFileSync('stat', ['-c', '%s', archive], { encoding: 'utf8' }).trim());
  rmSync(stage, { recursive: true, force: true });
  for (const d of ['tree-base', 'tree-2', 'tree-3']) rmSync(join(tmp, d), { recursive: true, force: true });
  return { archive, bytes, entries, diffIds, whiteouts, name };
}

// ---- the tools -------------------------------------------------------------------------------

interface Tool {
  name: string;
  /** Loads the archive into an empty store; returns the diff IDs the tool reports. */
  load(): string[];
  /** CPU time (ms) used so far by the tool's long-running processes (dockerd), beyond the commands run. */
  daemonCpuMs?(): number;
  /** Empties the store again. */
  reset(): void;
}

function unionctlTool(fs: BenchFs, image: GeneratedImage): Tool {
  let n = 0;
  let root = '';
  return {
    name: 'unionctl load (overlay2)',
    load() {
      root = join(fs.target, `unionctl-${++n}`);
      const r = spawnSync(process.execPath, [CLI, '--root', root, '--driver', 'overlay2', '--json', 'load', image.archive], {
        encoding: 'utf8',
        maxBuffer: 64 << 20,
      });
      if (r.status !== 0) throw new Error(`unionctl load failed: ${r.stderr}`);
      return (JSON.parse(r.stdout) as { images: Array<{ layers: Array<{ diffId: string }> }> }).images[0].layers.map((l) => l.diffId);
    },
    reset() {
      spawnSync(process.execPath, [CLI, '--root', root, 'cleanup']);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

function dockerTool(dockerd: Dockerd, image: GeneratedImage): Tool {
  return {
    name: 'docker load (20.10, overlay2)',
    load() {
      dockerd.docker(['load', '-q', '-i', image.archive]);
      return (JSON.parse(dockerd.docker(['image', 'inspect', image.name])) as Array<{ RootFS: { Layers: string[] } }>)[0].RootFS.Layers;
    },
    reset() {
      dockerd.docker(['rmi', '-f', image.name]);
    },
    daemonCpuMs: () => processCpuMs(dockerd.pid),
  };
}

function podmanTool(podman: Podman, image: GeneratedImage): Tool {
  return {
    name: 'podman load (overlay)',
    load() {
      podman.podman(['load', '-q', '-i', image.archive]);
      return (JSON.parse(podman.podman(['image', 'inspect', `localhost/${image.name}`])) as Array<{ RootFS: { Layers: string[] } }>)[0]
        .RootFS.Layers;
    },
    reset() {
      podman.podman(['rmi', '-f', `localhost/${image.name}`]);
    },
  };
}

// ---- running ---------------------------------------------------------------------------------

interface Sample {
  tool: string;
  ms: number;
  syncMs: number;
  /** CPU time of the load: its processes, and the daemon's (dockerd) during it. */
  cpuMs: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function runRound(tools: Tool[], image: GeneratedImage, fs: BenchFs, round: number): Sample[] {
  const order = round % 2 === 0 ? tools : [...tools].reverse();
  const samples: Sample[] = [];
  for (const tool of order) {
    settle();
    const cpuBefore = childrenCpuMs() + (tool.daemonCpuMs?.() ?? 0);
    const { ms, value: diffIds } = timed(() => tool.load());
    const cpuMs = childrenCpuMs() + (tool.daemonCpuMs?.() ?? 0) - cpuBefore;
    const sync = timed(() => execFileSync('sync'));
    if (JSON.stringify(diffIds) !== JSON.stringify(image.diffIds)) {
      throw new Error(`${tool.name} reported diff IDs ${diffIds.join(', ')}, expected ${image.diffIds.join(', ')}`);
    }
    samples.push({ tool: tool.name, ms, syncMs: sync.ms, cpuMs });
    console.log(
      `  round ${round + 1}: ${tool.name.padEnd(32)} ${(ms / 1000).toFixed(2)} s (+ sync ${(sync.ms / 1000).toFixed(2)} s), CPU ${(cpuMs / 1000).toFixed(2)} s, digests verified`,
    );
    tool.reset();
    fs.trim();
  }
  return samples;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const fs = makeBenchFs({ type: 'ext4' });
  let dockerd: Dockerd | undefined;
  let podman: Podman | undefined;
  try {
    console.log(`generating the image on ${fs.tmp} …`);
    const image = generateImage(fs.tmp);
    console.log(
      `image: ${(image.bytes / 1e6).toFixed(0)} MB archive, ${image.entries} tar entries in ${image.diffIds.length} layers, ${image.whiteouts} whiteouts`,
    );
    const tools: Tool[] = [unionctlTool(fs, image)];
    if (args.docker) {
      dockerd = await startDockerd({ storageDriver: 'overlay2', dir: fs.target });
      tools.push(dockerTool(dockerd, image));
    }
    if (args.podman) {
      podman = startPodman({ storageDriver: 'overlay', dir: fs.target });
      tools.push(podmanTool(podman, image));
    }
    const samples: Sample[] = [];
    for (let r = 0; r < args.rounds; r++) samples.push(...runRound(tools, image, fs, r));
    report(tools, samples, image, fs, args);
  } finally {
    await dockerd?.stop().catch((e: Error) => console.error(`dockerd stop: ${e.message}`));
    podman?.stop();
    fs.dispose();
  }
}

function report(tools: Tool[], samples: Sample[], image: GeneratedImage, fs: BenchFs, args: Args): void {
  const rows = tools.map((t) => {
    const mine = samples.filter((s) => s.tool === t.name);
    return {
      tool: t.name,
      s: median(mine.map((m) => m.ms)) / 1000,
      withSync: median(mine.map((m) => m.ms + m.syncMs)) / 1000,
      cpu: median(mine.map((m) => m.cpuMs)) / 1000,
    };
  });
  const ours = rows[0];
  const peers = rows.slice(1);
  const fastestPeer = peers.length === 0 ? undefined : peers.reduce((a, b) => (a.s < b.s ? a : b));
  const leanestPeer = peers.length === 0 ? undefined : peers.reduce((a, b) => (a.cpu < b.cpu ? a : b));
  const date = new Date().toISOString().slice(0, 10);
  const lines = [
    `# Image load benchmark, ${date}`,
    '',
    `Image: generated docker-save archive, ${(image.bytes / 1e6).toFixed(0)} MB, ${image.entries} tar entries in ${image.diffIds.length} layers, ${image.whiteouts} whiteouts (incl. one opaque dir per upper layer).`,
    `Filesystem: ${fs.description}. ${args.rounds} rounds, order alternating, caches dropped before each load; medians. Node ${process.version}, ${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores, load average ${loadavg()[0].toFixed(1)} at the end (other work on the machine competes with every tool alike).`,
    "Every load was checked: the tool reported exactly the image's diff IDs.",
    '',
    '| tool | load, s | load + sync, s | vs unionctl | CPU, s | CPU vs unionctl |',
    '|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.tool} | ${r.s.toFixed(2)} | ${r.withSync.toFixed(2)} | ${(r.s / ours.s).toFixed(2)}× | ${r.cpu.toFixed(2)} | ${(r.cpu / ours.cpu).toFixed(2)}× |`,
    ),
    '',
    fastestPeer === undefined
      ? 'No peer was run.'
      : `unionctl is **${(fastestPeer.s / ours.s).toFixed(2)}×** faster than the faster peer (${fastestPeer.tool}); with sync: ${(fastestPeer.withSync / ours.withSync).toFixed(2)}×. In CPU time it uses ${(leanestPeer!.cpu / ours.cpu).toFixed(2)}× less than the leanest peer (${leanestPeer!.tool}). Target: ≥ 2× (wall).`,
    'CPU time counts the load command and its children (unionctl, docker CLI, podman) and, for Docker, what dockerd used meanwhile: on a busy machine it is the steadier figure.',
    '',
  ];
  const text = lines.join('\n');
  console.log(`\n${text}`);
  mkdirSync(REPORTS, { recursive: true });
  writeFileSync(join(REPORTS, `load-${date}.md`), text);
  writeFileSync(join(REPORTS, `load-${date}.json`), JSON.stringify({ image: { ...image, archive: undefined }, rows, samples }, null, 2));
}

// Run as a program (not when imported for generateImage).
if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e: Error) => {
    console.error(e.stack ?? e.message);
    process.exit(1);
  });
}
