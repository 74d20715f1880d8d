/**
 * The benchmark runner behind `unionctl bench` (and `npm run bench`): checks the request, finds
 * the peers, makes the benchmark filesystem, builds each workload's inputs, runs the operations,
 * and writes latest.json, latest.md and the plots.
 *
 * Every figure of a run is taken on one freshly made filesystem (ext4 on a loop device by default),
 * with the subjects of a cell interleaved run by run: compare ratios within a run.
 */
import type { BenchRunOptions, BenchSuite } from '../src/cli/bench-command.js';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../src/index.js'; // the composition root registers the built-in drivers
import { UnionctlError } from '../src/errors.js';
import { driverNames, lookupDriver } from '../src/graph/registry.js';
import {
  newMountApiSupported,
  overlayLowerdirPlusSupported,
  overlayMaxLowerLayers,
  overlayModuleParams,
  pageSize,
  reflinkSupported,
  supportsDType,
} from '../src/sys/probes.js';
import type { BenchContext } from './context.js';
import { writeImageArchive, type ImageArchive } from './image-archive.js';
import { runCopyUp } from './ops/copy-up.js';
import { runDiff } from './ops/diff.js';
import { runCompressedImport, runImport } from './ops/import.js';
import { runRootfsImport } from './ops/rootfs-import.js';
import { runLoad } from './ops/load.js';
import { runMount } from './ops/mount.js';
import { installedPeers, installPeers, PEER_TOOLS, type PeerName } from './peers/detect.js';
import { checkTargets, writeReportFiles, type TargetCheck } from './report.js';
import { debianRootfsTar } from './rootfs.js';
import { ResultLog, type BenchReport, type MachineInfo } from './results.js';
import { BENCH_FS_TYPES, makeBenchFs, type BenchFs, type BenchFsType } from './scratch-fs.js';
import {
  buildBigFileLayer,
  buildSyntheticLayer,
  buildWhiteoutLayers,
  DEFAULT_WORKLOADS,
  FULL_SIZES,
  QUICK_SIZES,
  WORKLOADS,
  type LayerTar,
  type WorkloadName,
} from './workloads.js';

/** What a run is asked to do (the CLI's type: `unionctl bench` passes its flags as they are). */
export type BenchOptions = BenchRunOptions;

export interface BenchOutcome {
  report: BenchReport;
  targets: TargetCheck[];
  files: string[];
}

/** Drivers that cannot run on this machine at all, and why (reported, never silently dropped). */
const VM_ONLY: Record<string, string> = {
  devicemapper: 'needs device-mapper, which this kernel lacks: it is benchmarked inside the VM harness (scripts/vm), not here',
};

/** What `unionctl bench` loads (src/cli/bench-command.ts): typed with the CLI's interface. */
export const suite: BenchSuite = { runBench };

export const DEFAULT_RESULTS = 'bench/results/latest.json';
export const DEFAULT_QUICK_RESULTS = 'bench/results/quick/latest.json';

/** Checks the request before anything is made; unknown names are refused with the known ones. */
export function parseRequest(opts: BenchOptions): { drivers: string[]; workloads: WorkloadName[]; fs: BenchFsType } {
  const known = driverNames();
  const drivers = opts.drivers?.length ? opts.drivers : known;
  for (const d of drivers) {
    if (!known.includes(d))
      throw new UnionctlError('BAD_OPTION', `unknown storage driver ${JSON.stringify(d)} in --drivers`, {
        hint: `known drivers: ${known.join(', ')}`,
      });
  }
  const workloads = (opts.workloads?.length ? opts.workloads : DEFAULT_WORKLOADS) as WorkloadName[];
  for (const w of workloads) {
    if (!(WORKLOADS as readonly string[]).includes(w))
      throw new UnionctlError('BAD_OPTION', `unknown workload ${JSON.stringify(w)} in --workloads`, {
        hint: `workloads: ${WORKLOADS.join(', ')}`,
      });
  }
  const fs = (opts.fs ?? 'ext4') as BenchFsType;
  if (!BENCH_FS_TYPES.includes(fs))
    throw new UnionctlError('BAD_OPTION', `unknown benchmark filesystem ${JSON.stringify(opts.fs)} in --fs`, {
      hint: `choose one of ${BENCH_FS_TYPES.join(', ')}`,
    });
  return { drivers, workloads, fs };
}

function machineInfo(fs: BenchFs, peers: Map<PeerName, string>): MachineInfo {
  const cpuModel = cpus()[0]?.model ?? 'unknown CPU';
  return {
    date: new Date().toISOString(),
    kernel: execFileSync('uname', ['-r']).toString().trim(),
    cpu: cpuModel.trim(),
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    node: process.version,
    filesystem: fs.description,
    overlay: {
      ...overlayModuleParams(),
      newMountApi: newMountApiSupported(),
      lowerdirPlus: overlayLowerdirPlusSupported(),
      maxLowerLayers: overlayMaxLowerLayers(),
      pageSize: pageSize(),
      dType: supportsDType(fs.target),
      reflink: reflinkSupported(fs.target),
    },
    peers: Object.fromEntries(peers),
    loadAverage: loadavg(),
  };
}

/** Drivers that can run on the benchmark filesystem; the others are reported as skipped. */
function usableDrivers(requested: string[], fs: BenchFs, log: ResultLog): string[] {
  const usable: string[] = [];
  for (const name of requested) {
    const reason = VM_ONLY[name] ?? lookupDriver(name).unsupportedReason(join(fs.target, 'probe', name));
    if (reason === undefined) usable.push(name);
    else log.skip({ subject: `unionctl ${name}`, reason });
  }
  for (const [name, reason] of Object.entries(VM_ONLY)) {
    if (!driverNames().includes(name) && requested.length === driverNames().length)
      log.skip({ subject: `unionctl ${name}`, reason: `not registered in this build; ${reason}` });
  }
  return usable;
}

function findPeers(install: boolean, say: (l: string) => void, log: ResultLog): Map<PeerName, string> {
  let peers = installedPeers();
  const missing = (Object.keys(PEER_TOOLS) as PeerName[]).filter((n) => !peers.has(n));
  if (install && missing.length > 0) {
    const failure = installPeers(missing, say);
    if (failure) log.note(`--peers: ${failure}`);
    peers = installedPeers();
  }
  return peers;
}

/** The path of this build's CLI entry point (dist/bench/runner.js → dist/src/cli/main.js). */
function cliMainPath(): string {
  return fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
}

export async function runBench(opts: BenchOptions = {}): Promise<BenchOutcome> {
  const say = opts.say ?? (() => {});
  if (process.geteuid?.() !== 0) {
    throw new UnionctlError('UNSUPPORTED', 'unionctl bench mounts filesystems and needs root', {
      hint: 'run it as root (sudo unionctl bench …)',
    });
  }
  const started = Date.now();
  const request = parseRequest(opts);
  const quick = opts.quick === true;
  const runs = opts.runs ?? (quick ? 2 : 5);
  const jsonPath = resolve(opts.json ?? (quick ? DEFAULT_QUICK_RESULTS : DEFAULT_RESULTS));
  const log = new ResultLog(say);
  const peers = findPeers(opts.installPeers === true, say, log);
  const sizes = quick ? QUICK_SIZES : FULL_SIZES;
  const fs = makeBenchFs({ type: request.fs, imageSize: quick ? '4G' : '16G' });
  say(`benchmark filesystem: ${fs.description} at ${fs.target}`);
  // Ctrl-C or a kill: take the filesystem (and whatever is mounted in it) away before going.
  const onSignal = (signal: NodeJS.Signals) => {
    fs.dispose();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let report: BenchReport;
  try {
    const machine = machineInfo(fs, peers);
    const drivers = usableDrivers(request.drivers, fs, log);
    const ctx: BenchContext = { fs, sizes, runs, quick, drivers, peers, log, say, cliMain: cliMainPath() };
    await runWorkloads(ctx, request.workloads);
    report = {
      machine,
      options: { quick, runs, drivers, workloads: request.workloads, fs: request.fs },
      results: log.results,
      skipped: log.skipped,
      notes: log.notes,
      elapsed: (Date.now() - started) / 1e3,
    };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    fs.dispose();
  }
  const files = writeReportFiles(report, dirname(jsonPath), jsonPath.replace(/^.*\//, '').replace(/\.json$/, ''));
  return { report, targets: checkTargets(report), files };
}

/** Builds each workload's inputs once (the image reuses the other layers) and runs its operations. */
async function runWorkloads(ctx: BenchContext, workloads: WorkloadName[]): Promise<void> {
  const { tmp } = ctx.fs;
  const cache = new Map<string, LayerTar>();
  const layer = (name: string, build: () => LayerTar) => cache.get(name) ?? (cache.set(name, build()), cache.get(name)!);
  const distro = () => layer('distro', () => buildSyntheticLayer(tmp, 'distro', ctx.sizes.distro, 42));
  const smallfiles = () => layer('smallfiles', () => buildSyntheticLayer(tmp, 'smallfiles', ctx.sizes.smallfiles, 7));
  const whiteouts = () => {
    if (!cache.has('whiteouts-upper')) {
      const { base, upper } = buildWhiteoutLayers(tmp, ctx.sizes.whiteouts, 11);
      cache.set('whiteouts-base', base).set('whiteouts-upper', upper);
    }
    return { base: cache.get('whiteouts-base')!, tar: cache.get('whiteouts-upper')! };
  };
  for (const w of workloads) {
    ctx.say(`— workload ${w}`);
    switch (w) {
      case 'distro':
        await runImport(ctx, { name: 'distro', tar: distro(), remove: true });
        await runDiff(ctx, { name: 'distro', tar: distro() });
        break;
      case 'smallfiles':
        await runImport(ctx, { name: 'smallfiles', tar: smallfiles(), remove: true });
        break;
      case 'whiteouts':
        await runImport(ctx, { name: 'whiteouts', ...whiteouts(), remove: false });
        await runDiff(ctx, { name: 'whiteouts', ...whiteouts() });
        break;
      case 'deep':
        await runMount(ctx);
        break;
      case 'bigfile': {
        const big = buildBigFileLayer(tmp, ctx.sizes.bigFileBytes, 3);
        try {
          await runCopyUp(ctx, big, ctx.sizes.bigFileBytes);
        } finally {
          rmSync(big.path, { force: true });
        }
        break;
      }
      case 'compression': {
        const plain = buildSyntheticLayer(tmp, 'compressible', ctx.sizes.compression, 17);
        try {
          await runCompressedImport(ctx, plain);
        } finally {
          rmSync(plain.path, { force: true });
        }
        break;
      }
      case 'rootfs': {
        const rootfs = debianRootfsTar(tmp, ctx.say);
        try {
          await runRootfsImport(ctx, rootfs);
        } finally {
          rmSync(rootfs.path, { force: true });
        }
        break;
      }
      case 'image': {
        const w = whiteouts();
        const layers = [distro(), smallfiles(), w.base, w.tar];
        const archive: ImageArchive = await writeImageArchive(join(tmp, 'image.tar'), layers);
        try {
          await runLoad(ctx, archive, layers);
        } finally {
          rmSync(archive.path, { force: true });
        }
        break;
      }
    }
  }
}
