/**
 * CI smoke test of the benchmark suite: `unionctl bench --quick` runs every workload and operation
 * end to end on its own loop filesystem and writes the JSON, the Markdown table and the plots.
 * It fails on errors only — a unionctl subject that fails, a missing output, a mount or loop device
 * left behind — never on how long anything took (the machine is shared and noisy).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import type { BenchReport } from '../../bench/results.js';
import { listMounts } from '../helpers/mounts.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const out = mkdtempSync(join(tmpdir(), 'unionctl-bench-quick-'));
after(() => rmSync(out, { recursive: true, force: true }));

const benchMounts = () => listMounts().filter((m) => m.mountPoint.includes('/unionctl-bench-') || m.source.includes('/unionctl-bench-'));

describe('unionctl bench: bad requests change nothing', () => {
  const bench = (...args: string[]) => spawnSync(process.execPath, [MAIN, 'bench', ...args], { encoding: 'utf8' });

  it('refuses an unknown driver or workload, naming the known ones, before making anything', () => {
    const before = benchMounts().length;
    const driver = bench('--quick', '--drivers', 'nope');
    assert.equal(driver.status, 1);
    assert.match(driver.stderr, /unknown storage driver "nope" in --drivers/);
    assert.match(driver.stderr, /known drivers: .*overlay2/);
    const workload = bench('--quick', '--workloads', 'distro,nope');
    assert.equal(workload.status, 1);
    assert.match(workload.stderr, /unknown workload "nope".*\n.*distro, smallfiles, deep, whiteouts, bigfile, image/);
    assert.equal(benchMounts().length, before);
  });

  it('wants a file after --json, and --json before a file', () => {
    const noFile = bench('--quick', '--json');
    assert.equal(noFile.status, 1);
    assert.match(noFile.stderr, /bench --json needs a file name/);
    const stray = bench('--quick', 'results.json');
    assert.equal(stray.status, 1);
    assert.match(stray.stderr, /unexpected argument "results.json"/);
    const runs = bench('--quick', '--runs', '0');
    assert.equal(runs.status, 1);
    assert.match(runs.stderr, /--runs must be a whole number/);
  });
});

describe('unionctl bench --quick', () => {
  // Generous: slowness must never fail CI; a hung run still ends.
  it('runs every workload and writes the results, the table and the plots', { timeout: 15 * 60_000 }, () => {
    const before = benchMounts().length;
    const json = join(out, 'latest.json');
    const r = spawnSync(process.execPath, [MAIN, 'bench', '--quick', '--json', json], { encoding: 'utf8', maxBuffer: 64 << 20 });
    assert.equal(r.status, 0, `unionctl bench --quick exited ${r.status}:\n${r.stderr}\n${r.stdout.slice(-3000)}`);
    assert.match(r.stdout, /Targets/);

    const report = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;
    assert.equal(report.options.quick, true);
    assert.match(report.machine.kernel, /^\d+\.\d+/);
    assert.ok(report.machine.cores >= 1);
    for (const [workload, operation] of [
      ['distro', 'import'],
      ['distro', 'remove'],
      ['smallfiles', 'import'],
      ['deep', 'mount'],
      ['deep', 'first read'],
      ['whiteouts', 'diff export'],
      ['whiteouts', 'changes'],
      ['bigfile', 'copy-up'],
      ['image', 'load'],
    ]) {
      const cells = report.results.filter((x) => x.workload === workload && x.operation === operation);
      assert.ok(
        cells.some((c) => c.kind === 'unionctl'),
        `a unionctl figure for ${workload} ${operation}`,
      );
      for (const c of cells) {
        assert.ok(c.seconds.length >= report.options.runs, `${c.subject} ${workload} ${operation} ran every run`);
        assert.ok(c.seconds.every((s) => s >= 0 && Number.isFinite(s)));
      }
    }
    for (const floor of ['GNU tar', 'kernel overlayfs (bare mount)'])
      assert.ok(
        report.results.some((x) => x.subject === floor),
        `floor ${floor} measured`,
      );

    // A unionctl driver that failed is an error; a peer that is missing or failed is reported, not fatal.
    const unionctlFailures = report.skipped.filter((s) => s.subject.startsWith('unionctl ') && /failed/.test(s.reason));
    assert.deepEqual(unionctlFailures, []);
    for (const s of report.skipped) assert.ok(s.reason.length > 0, `${s.subject} skipped with a reason`);

    const md = readFileSync(join(out, 'latest.md'), 'utf8');
    assert.match(md, /## Targets/);
    assert.match(md, /\| workload \| operation \|/);
    for (const plot of ['mount-latency.svg', 'apply-throughput.svg', 'copy-up-latency.svg']) {
      const svg = readFileSync(join(out, plot), 'utf8');
      assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
      assert.match(svg, /<\/svg>\n$/);
    }
    assert.equal(benchMounts().length, before, 'no benchmark filesystem or union left mounted');
    assert.equal(existsSync(json), true);
  });
});
