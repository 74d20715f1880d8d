/**
 * Import benchmark: a large synthetic layer (distro-like, ≥ 200 MB, ≥ 7,000 files) imported into an
 * overlay2 store on a loop-mounted ext4, side by side in the same run with GNU tar extracting the
 * same tar onto the same filesystem. Runs alternate (tar, unionctl, tar, unionctl, …) and the
 * report gives the median of each and their ratio, plus unionctl's peak RSS — and the peak RSS of an
 * import of a much larger layer, to show memory stays bounded whatever the layer size.
 *
 *   npm run bench            (as root; writes bench/reports/import-<date>.md and .json)
 *   node dist/bench/import-bench.js --rounds 5 --no-big
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { makeBenchFs, settle } from './scratch-fs.js';
import { DISTRO_LIKE, packTree, writeSyntheticTree } from './synthetic-layer.js';

const repo = new URL('../..', import.meta.url).pathname;
const childScript = new URL('./import-child.js', import.meta.url).pathname;
const args = process.argv.slice(2);
const rounds = Number(args[args.indexOf('--rounds') + 1]) || 5;
const withBig = !args.includes('--no-big');

interface Run {
  tool: string;
  /** wall time of the whole process (node start-up and module loading included for unionctl) */
  ms: number;
  /** unionctl only: time inside store.importLayer */
  innerMs?: number;
  maxRssKiB?: number;
}

function timed(cmd: string, argv: string[]): { ms: number; stdout: string } {
  const start = performance.now();
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 1 << 20 });
  const ms = performance.now() - start;
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed: ${r.stderr}`);
  return { ms, stdout: r.stdout };
}

function gnuTarExtract(tarPath: string, dest: string): Run {
  mkdirSync(dest);
  // As root GNU tar keeps owners and permissions by default; --xattrs to carry what unionctl carries.
  const { ms } = timed('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-xpf', tarPath, '-C', dest]);
  return { tool: 'GNU tar', ms };
}

function unionctlImport(tarPath: string, storeRoot: string): Run & { diffId: string } {
  const { ms, stdout } = timed(process.execPath, [childScript, storeRoot, 'overlay2', tarPath]);
  const out = JSON.parse(stdout.trim().split('\n').pop()!);
  return { tool: 'unionctl overlay2', ms, innerMs: out.ms, maxRssKiB: out.maxRssKiB, diffId: out.diffId };
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}

function countEntries(tarPath: string): number {
  return execFileSync('tar', ['-tf', tarPath], { maxBuffer: 1 << 28 }).toString().split('\n').filter(Boolean).length;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const fs = makeBenchFs();
  try {
    const tree = join(fs.tmp, 'tree');
    mkdirSync(tree);
    const contentBytes = writeSyntheticTree(tree, DISTRO_LIKE);
    const tarPath = join(fs.tmp, 'layer.tar');
    packTree(tree, tarPath);
    rmSync(tree, { recursive: true });
    const tarBytes = statSync(tarPath).size;
    const entries = countEntries(tarPath);
    const expectedDiffId = await sha256File(tarPath);
    console.log(`layer: ${(tarBytes / 1e6).toFixed(1)} MB tar, ${entries} entries, ${(contentBytes / 1e6).toFixed(1)} MB of file content`);

    const runs: Run[] = [];
    for (let i = 0; i < rounds; i++) {
      settle();
      const t = gnuTarExtract(tarPath, join(fs.target, `tar-${i}`));
      settle();
      const u = unionctlImport(tarPath, join(fs.target, `store-${i}`));
      if (u.diffId !== expectedDiffId) throw new Error(`unionctl diffId ${u.diffId} != ${expectedDiffId}`);
      runs.push(t, u);
      console.log(`round ${i + 1}: GNU tar ${t.ms.toFixed(0)} ms, unionctl ${u.ms.toFixed(0)} ms (${(u.ms / t.ms).toFixed(2)}x; importLayer alone ${u.innerMs!.toFixed(0)} ms), peak RSS ${(u.maxRssKiB! / 1024).toFixed(0)} MiB`);
      rmSync(join(fs.target, `tar-${i}`), { recursive: true });
      rmSync(join(fs.target, `store-${i}`), { recursive: true });
    }

    let big: { tarMB: number; maxRssMiB: number } | undefined;
    if (withBig) {
      // A layer four times larger with a 600 MB file in it: peak RSS must not follow the layer size.
      const bigTree = join(fs.tmp, 'big');
      mkdirSync(bigTree);
      writeSyntheticTree(bigTree, { ...DISTRO_LIKE, largeFiles: 1, largeMean: 600e6 / 1.0 }, 7);
      const bigTar = join(fs.tmp, 'big.tar');
      packTree(bigTree, bigTar);
      rmSync(bigTree, { recursive: true });
      settle();
      const u = unionctlImport(bigTar, join(fs.target, 'store-big'));
      big = { tarMB: statSync(bigTar).size / 1e6, maxRssMiB: u.maxRssKiB! / 1024 };
      console.log(`big layer: ${big.tarMB.toFixed(0)} MB tar → peak RSS ${big.maxRssMiB.toFixed(0)} MiB`);
      rmSync(bigTar);
    }

    const tarMs = median(runs.filter((r) => r.tool === 'GNU tar').map((r) => r.ms));
    const ucRuns = runs.filter((r) => r.tool !== 'GNU tar');
    const ucMs = median(ucRuns.map((r) => r.ms));
    const ucInnerMs = median(ucRuns.map((r) => r.innerMs!));
    const peakRss = Math.max(...ucRuns.map((r) => r.maxRssKiB!)) / 1024;
    const report = {
      date: new Date().toISOString(),
      kernel: execFileSync('uname', ['-r']).toString().trim(),
      filesystem: 'ext4 on a loop device backed by tmpfs',
      layer: { tarBytes, entries, contentBytes, diffId: expectedDiffId },
      rounds,
      medianMs: { gnuTar: tarMs, unionctl: ucMs, unionctlImportLayer: ucInnerMs },
      ratio: ucMs / tarMs,
      ratioImportLayer: ucInnerMs / tarMs,
      peakRssMiB: peakRss,
      bigLayer: big,
      runs,
    };
    const outDir = join(repo, 'bench', 'reports');
    mkdirSync(outDir, { recursive: true });
    const stamp = report.date.slice(0, 10);
    writeFileSync(join(outDir, `import-${stamp}.json`), JSON.stringify(report, null, 2) + '\n');
    writeFileSync(join(outDir, `import-${stamp}.md`), renderMarkdown(report));
    console.log(`\nmedian: GNU tar ${tarMs.toFixed(0)} ms, unionctl ${ucMs.toFixed(0)} ms → ratio ${(ucMs / tarMs).toFixed(2)}x (target ≤ 1.5x); importLayer alone ${ucInnerMs.toFixed(0)} ms → ${(ucInnerMs / tarMs).toFixed(2)}x; peak RSS ${peakRss.toFixed(0)} MiB`);
    console.log(`report: bench/reports/import-${stamp}.md`);
  } finally {
    fs.dispose();
  }
}

function renderMarkdown(r: any): string {
  const rows = r.runs.map((x: Run, i: number) => `| ${Math.floor(i / 2) + 1} | ${x.tool} | ${x.ms.toFixed(0)} | ${x.innerMs ? x.innerMs.toFixed(0) : ''} | ${x.maxRssKiB ? (x.maxRssKiB / 1024).toFixed(0) : ''} |`);
  return [
    `# Import benchmark — ${r.date}`,
    '',
    `Kernel ${r.kernel}; ${r.filesystem}. Command: \`npm run bench\` (as root).`,
    '',
    `Layer: ${(r.layer.tarBytes / 1e6).toFixed(1)} MB uncompressed tar, ${r.layer.entries} entries, ${(r.layer.contentBytes / 1e6).toFixed(1)} MB file content, ${r.layer.diffId}.`,
    '',
    `| | median ms |`,
    `|---|---|`,
    `| GNU tar \`-xpf\` | ${r.medianMs.gnuTar.toFixed(0)} |`,
    `| unionctl import (overlay2), whole process | ${r.medianMs.unionctl.toFixed(0)} |`,
    `| unionctl \`store.importLayer\` alone (in that process) | ${r.medianMs.unionctlImportLayer.toFixed(0)} |`,
    `| **ratio, whole process** | **${r.ratio.toFixed(2)}×** (target ≤ 1.5×) |`,
    `| ratio, importLayer alone | ${r.ratioImportLayer.toFixed(2)}× |`,
    '',
    `Peak RSS of the unionctl import: ${r.peakRssMiB.toFixed(0)} MiB` + (r.bigLayer ? `; of a ${r.bigLayer.tarMB.toFixed(0)} MB layer: ${r.bigLayer.maxRssMiB.toFixed(0)} MiB.` : '.'),
    '',
    '| round | tool | process ms | importLayer ms | peak RSS MiB |',
    '|---|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}

await main();
