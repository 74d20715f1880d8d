/**
 * devicemapper benchmark, run inside the test VM (the machines' own kernel has no device-mapper):
 *
 *   npm run build && npm run vm -- node dist/bench/dm-bench.js      (from the project directory)
 *
 * Three measurements, each against overlay2 in the same VM run so the figures are ratios that
 * do not depend on how slow the emulation is:
 *   1. apply of a large synthetic layer (thousands of files, a few multi-MiB ones);
 *   2. layer creation time against chain depth 1…100 (devicemapper: create_snap of the parent's
 *      thin device; overlay2: a new dir and a lower file one entry longer);
 *   3. first-write latency to a big file of a parent layer: devicemapper copies one pool block
 *      (block CoW), overlay2 copies the whole file up.
 * Writes bench/reports/dm-<date>.{json,md} and prints the markdown.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import '../src/index.js'; // the composition root registers the built-in drivers
import type { Driver } from '../src/graph/driver.js';
import { openStore, type LayerStore } from '../src/index.js';
import { packTree, writeSyntheticTree, type SyntheticShape } from './synthetic-layer.js';

/** Reports go to bench/reports of the project the benchmark is run from (the VM's cwd is the project). */
const REPORTS = join(process.cwd(), 'bench', 'reports');
const WORK = '/tmp/unionctl-bench-dm';

const LAYER_SHAPE: SyntheticShape = {
  smallFiles: 2500,
  largeFiles: 8,
  largeMean: 3 * 1024 * 1024,
  dirs: 200,
  symlinks: 100,
  hardlinks: 20,
};
const DEPTHS = [1, 10, 25, 50, 100];
const BIG_FILE = 32 * 1024 * 1024;
const ROUNDS = 3;

const DM_OPTIONS = { 'dm.loopdatasize': '1G', 'dm.loopmetadatasize': '64M', 'dm.basesize': '512M' };

async function ms(fn: () => unknown | Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function openDriver(name: string): Promise<LayerStore> {
  const root = join(WORK, name);
  mkdirSync(root, { recursive: true });
  return openStore({ root, driver: name, storageOpt: name === 'devicemapper' ? DM_OPTIONS : undefined });
}

/** 1. Apply: median of ROUNDS fresh layers, each a full apply of the same tar. */
async function applyTimes(d: Driver, tar: string, tag: string): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const id = `apply-${tag}-${i}`;
    await d.create(id);
    times.push(await ms(() => d.applyDiff(id, undefined, tar)));
    await d.remove(id);
  }
  return median(times);
}

/**
 * 2. Create time against depth: one chain grows to 100 layers (each adds one file); at each
 * measured depth, ROUNDS sibling layers are created on the chain's tip and removed again (median).
 */
async function snapshotTimes(d: Driver, tag: string): Promise<Record<number, number>> {
  const out: Record<number, number> = {};
  let parent: string | undefined;
  for (let depth = 1; depth <= DEPTHS[DEPTHS.length - 1]; depth++) {
    if (DEPTHS.includes(depth)) {
      const times: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const probe = `probe-${tag}-${depth}-${i}`;
        times.push(await ms(() => d.create(probe, parent)));
        await d.remove(probe);
      }
      out[depth] = median(times);
    }
    const id = `chain-${tag}-${depth}`;
    await d.create(id, parent);
    const root = await d.get(id);
    writeFileSync(join(root, `f${depth}`), `layer ${depth}`);
    await d.put(id);
    parent = id;
  }
  return out;
}

/** 3. First write into a big file of the parent: open, write 4 KiB in the middle, fsync. */
async function firstWriteTimes(d: Driver, tag: string): Promise<number> {
  const parent = `big-${tag}`;
  await d.createReadWrite(parent);
  const proot = await d.get(parent);
  const fd = openSync(join(proot, 'big'), 'w');
  const chunk = Buffer.alloc(1 << 20, 0x61);
  for (let i = 0; i < BIG_FILE / chunk.length; i++) writeSync(fd, chunk);
  fsyncSync(fd);
  closeSync(fd);
  await d.put(parent);
  const times: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const child = `cow-${tag}-${i}`;
    await d.createReadWrite(child, parent);
    const root = await d.get(child);
    times.push(
      await ms(() => {
        const f = openSync(join(root, 'big'), 'r+');
        writeSync(f, Buffer.alloc(4096, 0x62), 0, 4096, BIG_FILE / 2);
        fsyncSync(f);
        closeSync(f);
      }),
    );
    await d.put(child);
  }
  return median(times);
}

async function main(): Promise<void> {
  mkdirSync(WORK, { recursive: true });
  const treeDir = join(WORK, 'tree');
  const tree = writeSyntheticTree(treeDir, LAYER_SHAPE, 7);
  const tar = join(WORK, 'layer.tar');
  packTree(treeDir, tar);

  const results: Record<string, { apply: number; snapshots: Record<number, number>; firstWrite: number }> = {};
  for (const name of ['devicemapper', 'overlay2']) {
    const store = await openDriver(name);
    try {
      const d = store.driver;
      results[name] = {
        apply: await applyTimes(d, tar, name),
        snapshots: await snapshotTimes(d, name),
        firstWrite: await firstWriteTimes(d, name),
      };
    } finally {
      await store.cleanup();
      await store.close();
    }
  }

  const dm = results.devicemapper;
  const ov = results.overlay2;
  const round = (x: number) => Math.round(x * 10) / 10;
  const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
  const report = {
    date: new Date().toISOString(),
    where: 'qemu TCG guest (-smp 1), Debian kernel, store on the guest tmpfs (pool on loop files)',
    layer: { bytes: tree.bytes, files: tree.files.length },
    applyMs: { devicemapper: round(dm.apply), overlay2: round(ov.apply), ratio: ratio(dm.apply, ov.apply) },
    snapshotMs: Object.fromEntries(
      DEPTHS.map((depth) => [depth, { devicemapper: round(dm.snapshots[depth]), overlay2: round(ov.snapshots[depth]) }]),
    ),
    snapshotDepthRatio: { devicemapper: ratio(dm.snapshots[100], dm.snapshots[1]), overlay2: ratio(ov.snapshots[100], ov.snapshots[1]) },
    firstWriteMs: {
      devicemapper: round(dm.firstWrite),
      overlay2: round(ov.firstWrite),
      overlay2OverDevicemapper: ratio(ov.firstWrite, dm.firstWrite),
      bigFileBytes: BIG_FILE,
    },
  };
  const md = [
    `# devicemapper benchmark (${report.date.slice(0, 10)})`,
    '',
    `${report.where}. Medians of ${ROUNDS} rounds; ratios are devicemapper against overlay2 in the same run.`,
    '',
    `| measurement | devicemapper | overlay2 | ratio |`,
    `|---|---|---|---|`,
    `| apply ${(tree.bytes / 1e6).toFixed(1)} MB, ${tree.files.length} files | ${report.applyMs.devicemapper} ms | ${report.applyMs.overlay2} ms | dm/ov ${report.applyMs.ratio} |`,
    ...DEPTHS.map(
      (depth) =>
        `| create layer at depth ${depth} | ${report.snapshotMs[depth].devicemapper} ms | ${report.snapshotMs[depth].overlay2} ms | dm/ov ${ratio(dm.snapshots[depth], ov.snapshots[depth])} |`,
    ),
    `| create at depth 100 / depth 1 | ${report.snapshotDepthRatio.devicemapper} | ${report.snapshotDepthRatio.overlay2} | |`,
    `| first 4 KiB write into a ${BIG_FILE >> 20} MiB lower file (+fsync) | ${report.firstWriteMs.devicemapper} ms (block CoW) | ${report.firstWriteMs.overlay2} ms (file copy-up) | ov/dm ${report.firstWriteMs.overlay2OverDevicemapper} |`,
    '',
  ].join('\n');
  mkdirSync(REPORTS, { recursive: true });
  const base = join(REPORTS, `dm-${report.date.slice(0, 10)}`);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(`${base}.md`, md);
  process.stdout.write(md);
}

await main();
