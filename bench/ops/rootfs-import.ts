/**
 * The rootfs workload (issue 15): a whole `unionctl --driver overlay2 import` process of a real
 * Debian rootfs tar against GNU tar extracting it with the same fidelity (numeric owners,
 * permissions, xattrs), on the bench filesystem, in alternating order run by run (the other one
 * goes first every other run, so that a noisy neighbour hits both alike). Wall time and CPU time
 * (user + sys of the child, from this process's cutime/cstime) are recorded for each; so is the
 * start-up of a process that does nothing (`unionctl --version` against `node -e 0`).
 *
 * Then, untimed: a few imports under `node --cpu-prof`, whose samples are split into the phases of
 * an import (cpu-profile.ts), and one `strace -c` of each subject, for the system calls per entry.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { freshDir, type BenchContext } from '../context.js';
import { childrenCpuMs } from '../cpu.js';
import { phaseTable, phaseTimesOfDir, type Phase } from '../cpu-profile.js';
import { sha256File } from '../image-archive.js';
import { sh, timed } from '../measure.js';
import { removeTree, TAR_EXTRACT_ARGS } from '../peers/gnu-tar.js';
import { settle } from '../scratch-fs.js';
import type { LayerTar } from '../workloads.js';
import { discardStore } from './import.js';

const WORKLOAD = 'rootfs';
const CLI = 'unionctl overlay2 (CLI process)';
/** Profiled imports (their median per phase is reported); one with --quick. */
const PROFILED_RUNS = 3;

interface Sample {
  wallS: number;
  cpuS: number;
}

/** Runs `cmd args` to completion; its wall and CPU seconds, and its stdout. */
function measured(cmd: string, args: string[]): Sample & { stdout: string } {
  const cpu0 = childrenCpuMs();
  const { ms, value } = timed(() => sh(cmd, args));
  return { wallS: ms / 1e3, cpuS: (childrenCpuMs() - cpu0) / 1e3, stdout: value };
}

export async function runRootfsImport(ctx: BenchContext, tar: LayerTar): Promise<void> {
  ctx.say(`import: rootfs (${(tar.bytes / 1e6).toFixed(1)} MB, ${tar.entries} entries)`);
  const expected = `sha256:${await sha256File(tar.path)}`;
  const samples = new Map<string, Sample[]>();
  const push = (subject: string, s: Sample) => samples.set(subject, [...(samples.get(subject) ?? []), s]);
  const cliArgs = (root: string, main = ctx.cliMain) => [main, '--json', '--root', root, '--driver', 'overlay2', 'import', tar.path];

  const gnuTar = () => {
    const dest = freshDir(ctx, 'tar');
    mkdirSync(dest);
    settle();
    push('GNU tar', measured('tar', [...TAR_EXTRACT_ARGS, tar.path, '-C', dest]));
    removeTree(dest);
  };
  const unionctl = async () => {
    const root = freshDir(ctx, 'cli');
    settle();
    const s = measured(process.execPath, cliArgs(root));
    const diffId = (JSON.parse(s.stdout) as { diffId: string }).diffId;
    if (diffId !== expected) throw new Error(`unionctl import computed diffId ${diffId}, expected ${expected}`);
    push(CLI, s);
    await discardStore(root, 'overlay2');
  };
  for (let run = 0; run < ctx.runs; run++) {
    if (run % 2 === 0) {
      gnuTar();
      await unionctl();
    } else {
      await unionctl();
      gnuTar();
    }
    push('node -e 0', measured(process.execPath, ['-e', '0']));
    push('unionctl --version (CLI process)', measured(process.execPath, [ctx.cliMain, '--version']));
    ctx.fs.trim();
  }

  const add = (operation: string, subject: string, kind: 'floor' | 'unionctl', pick: (s: Sample) => number, note?: string) =>
    ctx.log.add({
      workload: WORKLOAD,
      operation,
      subject,
      kind,
      seconds: samples.get(subject)!.map(pick),
      ...(operation.startsWith('import') ? { bytes: tar.bytes, files: tar.entries } : {}),
      ...(note === undefined ? {} : { note }),
    });
  const wall = (s: Sample) => s.wallS;
  const cpu = (s: Sample) => s.cpuS;
  add('import', 'GNU tar', 'floor', wall);
  add(
    'import',
    CLI,
    'unionctl',
    wall,
    'a whole `unionctl --json --driver overlay2 import` process: node start-up, module loading and store open included',
  );
  add('import CPU (user+sys)', 'GNU tar', 'floor', cpu);
  add('import CPU (user+sys)', CLI, 'unionctl', cpu);
  add('start-up', 'node -e 0', 'floor', wall);
  add('start-up', 'unionctl --version (CLI process)', 'unionctl', wall);
  add('start-up CPU (user+sys)', 'node -e 0', 'floor', cpu);
  add('start-up CPU (user+sys)', 'unionctl --version (CLI process)', 'unionctl', cpu);

  await profilePhases(ctx, cliArgs);
  await syscallCounts(ctx, tar, cliArgs);
}

/** PROFILED_RUNS imports under --cpu-prof; a note with the median time per phase. */
async function profilePhases(ctx: BenchContext, cliArgs: (root: string, main?: string) => string[]): Promise<void> {
  // The unbundled CLI (scripts/bundle-cli.mjs): phases are told apart by module file, and the
  // bundle is one file. Its start-up row is therefore the unbundled one's.
  const unbundled = join(dirname(ctx.cliMain), 'main-modules.js');
  const runs: Array<Map<Phase, number>> = [];
  const count = ctx.quick ? 1 : PROFILED_RUNS;
  for (let i = 0; i < count; i++) {
    const root = freshDir(ctx, 'cli');
    const dir = join(ctx.fs.tmp, `cpu-prof-${i}`);
    settle();
    sh(process.execPath, ['--cpu-prof', '--cpu-prof-interval', '250', '--cpu-prof-dir', dir, ...cliArgs(root, unbundled)]);
    runs.push(phaseTimesOfDir(dir));
    rmSync(dir, { recursive: true, force: true });
    await discardStore(root, 'overlay2');
  }
  ctx.log.note(
    `rootfs import per phase (\`node --cpu-prof\`, 250 µs sampling, median of ${count} profiled import${count === 1 ? '' : 's'} of the unbundled CLI, dist/src/cli/main-modules.js; sampled wall time of the main thread and the digest worker's sha256, so the profiler's own overhead is in it and it does not add up to the CPU figure above):\n\n${phaseTable(runs)}\n`,
  );
}

/** One `strace -f -c` of each subject: a note with the system calls each made (most frequent first). */
async function syscallCounts(ctx: BenchContext, tar: LayerTar, cliArgs: (root: string) => string[]): Promise<void> {
  if (spawnSync('strace', ['-V']).error !== undefined) {
    ctx.log.note('rootfs: strace is not installed: no system-call counts (apt-get install strace)');
    return;
  }
  const out = join(ctx.fs.tmp, 'strace.txt');
  const count = (cmd: string, args: string[]) => {
    sh('strace', ['-f', '-c', '-o', out, cmd, ...args]);
    const calls = new Map<string, number>();
    for (const line of readFileSync(out, 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      // "% time  seconds  usecs/call  calls  [errors]  syscall"
      if (f.length >= 5 && /^\d+$/.test(f[3]!) && f[f.length - 1] !== 'total') calls.set(f[f.length - 1]!, Number(f[3]));
    }
    return calls;
  };
  const dest = freshDir(ctx, 'tar');
  mkdirSync(dest);
  const tarCalls = count('tar', [...TAR_EXTRACT_ARGS, tar.path, '-C', dest]);
  removeTree(dest);
  const root = freshDir(ctx, 'cli');
  const ourCalls = count(process.execPath, cliArgs(root));
  await discardStore(root, 'overlay2');
  if (existsSync(out)) rmSync(out);
  const names = [...new Set([...tarCalls.keys(), ...ourCalls.keys()])]
    .map((n) => ({ n, max: Math.max(tarCalls.get(n) ?? 0, ourCalls.get(n) ?? 0) }))
    .filter((x) => x.max >= 100)
    .sort((a, b) => b.max - a.max);
  const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  ctx.log.note(
    `rootfs system calls (\`strace -f -c\`, one run each, ${tar.entries} entries; calls made ≥ 100 times by either):\n\n| syscall | GNU tar | unionctl import |\n|---|---|---|\n${names
      .map(({ n }) => `| ${n} | ${tarCalls.get(n) ?? 0} | ${ourCalls.get(n) ?? 0} |`)
      .join('\n')}\n| all | ${sum(tarCalls)} | ${sum(ourCalls)} |\n`,
  );
}
