/**
 * aufs-on-FUSE and overlay (v1) against overlay2, on the same layers, in one run:
 *
 * - mount / unmount latency of a writable layer on top of the image (get / put);
 * - first read through a fresh mount, caches dropped: one large file and 200 small files of the
 *   bottom layer;
 * - copy-up: the first write to a large lower file, and to 100 small lower files;
 * - apply: importing the image's upper layers (overlay v1 hardlink-copies the parent's whole tree
 *   for every image layer; overlay2 and aufs write only the layer's own files);
 * each as a ratio against overlay2 (aufs-FUSE / overlay2, overlay v1 / overlay2).
 *
 *   npm run build && node dist/bench/aufs-overlay-bench.js [--quick] [--fs ext4|xfs|tmpfs]
 *
 * The stores live on a scratch filesystem from bench/scratch-fs.ts (ext4 on a loop device by
 * default). The image: a distro-like base layer and 8 upper layers that add, change and delete
 * files (the deletions as .wh. entries), generated deterministically and packed with GNU tar.
 * Writes a JSON and a Markdown report to bench/reports/aufs-overlay-<date>.{json,md}.
 */
import { appendFileSync, chmodSync, closeSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStore, type LayerStore } from '../src/index.js';
import { time } from './measure.js';
import { makeBenchFs, settle, type BenchFsType } from './scratch-fs.js';
import { formatRatio, formatSeconds, summarize, type Summary } from './stats.js';
import { packTree, writeSyntheticTree, type SyntheticShape } from './synthetic-layer.js';

const QUICK = process.argv.includes('--quick');
const FS_ARG = process.argv.indexOf('--fs');
const FS_TYPE = (FS_ARG >= 0 ? process.argv[FS_ARG + 1] : 'ext4') as BenchFsType;
const RUNS = QUICK ? 3 : 9;
const UPPER_LAYERS = 8;
const BASE: SyntheticShape = QUICK
  ? { smallFiles: 800, largeFiles: 4, largeMean: 2 * 1024 * 1024, dirs: 120, symlinks: 40, hardlinks: 5 }
  : { smallFiles: 4000, largeFiles: 12, largeMean: 4 * 1024 * 1024, dirs: 400, symlinks: 200, hardlinks: 20 };
const APPLY_ROUNDS = QUICK ? 1 : 3;
const SMALL_READS = 200;
const SMALL_COPY_UPS = 100;

type DriverName = 'aufs' | 'overlay2' | 'overlay';
const DRIVERS: DriverName[] = ['overlay2', 'aufs', 'overlay'];

interface Image {
  tars: string[];
  /** Files of the base layer the upper layers leave alone: read and copied up by the measures. */
  largeFiles: string[];
  smallFiles: string[];
}

/** The base tree plus UPPER_LAYERS layers that each add 150 files, rewrite 20 and delete 10 of the base's. */
function buildImage(tmp: string): Image {
  const baseDir = join(tmp, 'layer-0');
  mkdirSync(baseDir);
  const base = writeSyntheticTree(baseDir, BASE, 7);
  const tars = [join(tmp, 'layer-0.tar')];
  packTree(baseDir, tars[0]);
  const sizes = new Map(base.files.map((f) => [f, readFileSync(join(baseDir, f)).length]));
  const large = base.files.filter((f) => (sizes.get(f) ?? 0) >= 512 * 1024);
  const small = base.files.filter((f) => (sizes.get(f) ?? 0) < 64 * 1024);
  // The measures use the first files of each list; the upper layers touch only files from the end.
  const touchable = small.slice(SMALL_READS + SMALL_COPY_UPS + 50);
  for (let layer = 1; layer <= UPPER_LAYERS; layer++) {
    const dir = join(tmp, `layer-${layer}`);
    mkdirSync(dir);
    const write = (rel: string, content: string | Buffer) => {
      mkdirSync(dirname(join(dir, rel)), { recursive: true });
      writeFileSync(join(dir, rel), content);
    };
    for (let i = 0; i < 150; i++) write(`opt/layer${layer}/d${i % 10}/new-${i}.txt`, `layer ${layer} file ${i}\n`.repeat(40));
    for (let i = 0; i < 20; i++) write(touchable[(layer * 37 + i) % touchable.length], `rewritten by layer ${layer}\n`);
    for (let i = 0; i < 10; i++) {
      const victim = touchable[(layer * 53 + 500 + i) % touchable.length];
      write(join(dirname(victim), `.wh.${victim.slice(victim.lastIndexOf('/') + 1)}`), '');
    }
    tars.push(join(tmp, `layer-${layer}.tar`));
    packTree(dir, tars[layer]);
  }
  return { tars, largeFiles: large.slice(0, 4), smallFiles: small.slice(0, SMALL_READS + SMALL_COPY_UPS) };
}

interface DriverResult {
  applyBase: Summary;
  applyUppers: Summary;
  mount?: Summary;
  unmount?: Summary;
  firstReadLarge?: Summary;
  firstReadSmall?: Summary;
  copyUpLarge?: Summary;
  copyUpSmall?: Summary;
}

async function importImage(store: LayerStore, image: Image): Promise<{ top: string; applyBase: number; applyUppers: number }> {
  let parent: string | undefined;
  let applyBase = 0;
  let applyUppers = 0;
  for (const [i, tar] of image.tars.entries()) {
    settle();
    let id = '';
    const seconds = await time(async () => {
      id = (await store.importLayer(tar, { parent })).id;
    });
    if (i === 0) applyBase = seconds;
    else applyUppers += seconds;
    parent = id;
  }
  return { top: parent as string, applyBase, applyUppers };
}

function readWhole(path: string): number {
  const fd = openSync(path, 'r');
  const buf = Buffer.allocUnsafe(1 << 20);
  let total = 0;
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0;) total += n;
  } finally {
    closeSync(fd);
  }
  return total;
}

/** Mount, read and copy-up measures on a writable layer over the image's top layer. */
async function unionMeasures(store: LayerStore, top: string, image: Image, result: DriverResult): Promise<void> {
  const driver = store.driver;
  const fresh = async () => (await store.create({ parent: top, writable: true })).id;
  const mounts: number[] = [];
  const unmounts: number[] = [];
  const readsLarge: number[] = [];
  const readsSmall: number[] = [];
  const copyLarge: number[] = [];
  const copySmall: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const rw = await fresh();
    settle();
    let path = '';
    mounts.push(await time(async () => (path = await driver.get(rw))));
    readsLarge.push(await time(() => readWhole(join(path, image.largeFiles[0]))));
    readsSmall.push(await time(() => image.smallFiles.slice(0, SMALL_READS).forEach((f) => readWhole(join(path, f)))));
    copyLarge.push(await time(() => appendFileSync(join(path, image.largeFiles[1]), 'x')));
    copySmall.push(await time(() => image.smallFiles.slice(SMALL_READS).forEach((f) => chmodSync(join(path, f), 0o600))));
    unmounts.push(await time(() => driver.put(rw)));
    await store.remove(rw);
  }
  result.mount = summarize(mounts);
  result.unmount = summarize(unmounts);
  result.firstReadLarge = summarize(readsLarge);
  result.firstReadSmall = summarize(readsSmall);
  result.copyUpLarge = summarize(copyLarge);
  result.copyUpSmall = summarize(copySmall);
}

/** Imports the image into a fresh store; with `union`, then runs the union measures on it. */
async function benchStore(
  name: DriverName,
  root: string,
  image: Image,
  union: boolean,
): Promise<{ applyBase: number; applyUppers: number; result?: DriverResult }> {
  const store = await openStore({ root, driver: name });
  try {
    const { top, applyBase, applyUppers } = await importImage(store, image);
    if (!union) return { applyBase, applyUppers };
    const result = { applyBase: summarize([applyBase]), applyUppers: summarize([applyUppers]) } as DriverResult;
    await unionMeasures(store, top, image, result);
    return { applyBase, applyUppers, result };
  } finally {
    await store.cleanup();
    await store.close();
  }
}

type Row = { what: string; key: keyof DriverResult; vs: DriverName; against: DriverName };
const ROWS: Row[] = [
  { what: 'mount (get) of a writable layer on the image', key: 'mount', vs: 'aufs', against: 'overlay2' },
  { what: 'unmount (put)', key: 'unmount', vs: 'aufs', against: 'overlay2' },
  { what: `first read, one large file (${BASE.largeMean / 2 ** 20} MiB mean)`, key: 'firstReadLarge', vs: 'aufs', against: 'overlay2' },
  { what: `first read, ${SMALL_READS} small files`, key: 'firstReadSmall', vs: 'aufs', against: 'overlay2' },
  { what: 'copy-up, first write to a large lower file', key: 'copyUpLarge', vs: 'aufs', against: 'overlay2' },
  { what: `copy-up, chmod of ${SMALL_COPY_UPS} small lower files`, key: 'copyUpSmall', vs: 'aufs', against: 'overlay2' },
  { what: 'apply, base layer', key: 'applyBase', vs: 'overlay', against: 'overlay2' },
  { what: `apply, ${UPPER_LAYERS} upper layers`, key: 'applyUppers', vs: 'overlay', against: 'overlay2' },
  { what: `apply, ${UPPER_LAYERS} upper layers (aufs)`, key: 'applyUppers', vs: 'aufs', against: 'overlay2' },
];

function seconds(v: Summary | undefined): number | undefined {
  return v?.median;
}

/** The 1-minute load average: these figures are only comparable on a machine that is otherwise idle. */
function loadAverage(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
}

function report(
  results: Record<DriverName, DriverResult>,
  fsDescription: string,
  load: { start: string; end: string },
): { md: string; rows: Array<Record<string, unknown>> } {
  const rows = ROWS.map((r) => {
    const a = seconds(results[r.vs][r.key] as Summary | undefined);
    const b = seconds(results[r.against][r.key] as Summary | undefined);
    return { measure: r.what, driver: r.vs, seconds: a, overlay2Seconds: b, ratio: a !== undefined && b ? a / b : undefined };
  });
  const lines = [
    `# aufs (fuse-overlayfs) and overlay (v1) against overlay2 — ${new Date().toISOString().slice(0, 10)}`,
    '',
    `Filesystem: ${fsDescription}. Base layer: ${BASE.smallFiles} small + ${BASE.largeFiles} large files; ${UPPER_LAYERS} upper layers. ` +
      `Union measures: median of ${RUNS} runs, caches dropped before each mount; apply: median of ${APPLY_ROUNDS} imports into fresh stores. Command: \`node dist/bench/aufs-overlay-bench.js${QUICK ? ' --quick' : ''}\`. ` +
      `Load average (1 min) at start / end: ${load.start} / ${load.end} on ${availableParallelism()} CPUs.`,
    '',
    '| measure | driver | driver time | overlay2 time | ratio (driver / overlay2) |',
    '|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.measure} | ${r.driver} | ${r.seconds === undefined ? '–' : formatSeconds(r.seconds)} | ${r.overlay2Seconds === undefined ? '–' : formatSeconds(r.overlay2Seconds)} | ${formatRatio(r.ratio)} |`,
    ),
    '',
  ];
  return { md: lines.join('\n'), rows };
}

async function main(): Promise<void> {
  const loadAtStart = loadAverage();
  const fs = makeBenchFs({ type: FS_TYPE, imageSize: '8G', tmpfsSize: '10g' });
  try {
    process.stderr.write(`building the image in ${fs.tmp} …\n`);
    const image = buildImage(fs.tmp);
    const results = {} as Record<DriverName, DriverResult>;
    // Warm-up (not reported): the first import of a process pays for JIT compilation and cold caches.
    await benchStore('overlay2', join(fs.target, 'warm-up'), { ...image, tars: image.tars.slice(0, 2) }, false);
    // Apply: APPLY_ROUNDS fresh stores per driver, the drivers taking turns so that noise from
    // the rest of the machine spreads over all of them; the union measures run on the last round.
    const applies = new Map<DriverName, { base: number[]; uppers: number[] }>(DRIVERS.map((d) => [d, { base: [], uppers: [] }]));
    for (let round = 0; round < APPLY_ROUNDS; round++) {
      for (const name of DRIVERS) {
        process.stderr.write(`${name}, round ${round + 1} of ${APPLY_ROUNDS} …\n`);
        const last = round === APPLY_ROUNDS - 1;
        const r = await benchStore(name, join(fs.target, `${name}-${round}`), image, last && name !== 'overlay');
        applies.get(name)!.base.push(r.applyBase);
        applies.get(name)!.uppers.push(r.applyUppers);
        if (last) results[name] = r.result ?? ({} as DriverResult);
        fs.trim();
      }
    }
    for (const name of DRIVERS) {
      results[name].applyBase = summarize(applies.get(name)!.base);
      results[name].applyUppers = summarize(applies.get(name)!.uppers);
    }
    const { md, rows } = report(results, fs.description, { start: loadAtStart, end: loadAverage() });
    process.stdout.write(`${md}\n`);
    const reports = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'reports');
    mkdirSync(reports, { recursive: true });
    const stamp = new Date().toISOString().slice(0, 10);
    writeFileSync(join(reports, `aufs-overlay-${stamp}.md`), md);
    writeFileSync(
      join(reports, `aufs-overlay-${stamp}.json`),
      `${JSON.stringify({ fs: fs.description, quick: QUICK, runs: RUNS, applyRounds: APPLY_ROUNDS, loadAtStart, rows, results }, null, 2)}\n`,
    );
  } finally {
    fs.dispose();
  }
}

await main();
