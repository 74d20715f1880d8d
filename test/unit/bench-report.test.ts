import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bestPeer, checkTargets, floorOf, groupResults, markdownTable, noiseNote, renderMarkdown, tableRows } from '../../bench/report.js';
import type { BenchReport, Result } from '../../bench/results.js';

const r = (subject: string, kind: Result['kind'], seconds: number[], extra: Partial<Result> = {}): Result => ({
  workload: 'distro',
  operation: 'import',
  subject,
  kind,
  seconds,
  ...extra,
});

function report(results: Result[], skipped: BenchReport['skipped'] = []): BenchReport {
  return {
    machine: {
      date: '2026-01-01T00:00:00.000Z',
      kernel: '6.18',
      cpu: 'cpu',
      cores: 2,
      memoryGiB: 8,
      node: 'v20',
      filesystem: 'ext4',
      overlay: {},
      peers: {},
      loadAverage: [0, 0, 0],
    },
    options: { quick: true, runs: 3, drivers: ['overlay2'], workloads: ['distro'], fs: 'ext4' },
    results,
    skipped,
    notes: [],
    elapsed: 10,
  };
}

describe('bench report table', () => {
  const tar = r('GNU tar', 'floor', [1.0, 1.2, 0.8], { bytes: 100e6, files: 1000 });
  const docker = r('docker 20.10', 'peer', [3, 3, 3]);
  const ov = r('unionctl overlay2', 'unionctl', [1.4, 1.5, 1.6], { bytes: 100e6, files: 1000 });
  const other = r('unionctl vfs', 'unionctl', [2], { operation: 'remove' });

  it('groups results by workload, operation and parameter', () => {
    const groups = groupResults([tar, docker, ov, other, r('GNU tar', 'floor', [1], { param: 'x' })]);
    assert.equal(groups.length, 3);
    assert.deepEqual(
      groups[0].results.map((x) => x.subject),
      ['GNU tar', 'docker 20.10', 'unionctl overlay2'],
    );
    assert.equal(groups[2].param, 'x');
  });

  it('finds the best peer by median (the floor is a peer too) and the floor', () => {
    const [g] = groupResults([docker, tar, ov]);
    assert.equal(bestPeer(g), tar);
    assert.equal(floorOf(g), tar);
    const [noFloor] = groupResults([docker, ov]);
    assert.equal(bestPeer(noFloor), docker);
    assert.equal(floorOf(noFloor), undefined);
  });

  it('gives unionctl rows ratios of medians to the best peer and the floor', () => {
    const rows = tableRows([tar, docker, ov]);
    const row = rows.find((x) => x.subject === 'unionctl overlay2')!;
    assert.equal(row.median, '1.50 s');
    assert.equal(row.min, '1.40 s');
    assert.equal(row.max, '1.60 s');
    assert.equal(row.vsBestPeer, '1.50× (GNU tar)');
    assert.equal(row.vsFloor, '1.50×');
    assert.equal(row.throughput, '66.7 MB/s, 667 files/s');
    assert.equal(rows.find((x) => x.subject === 'GNU tar')!.vsFloor, 'floor');
    assert.equal(rows.find((x) => x.subject === 'docker 20.10')!.vsBestPeer, '', 'peers get no best-peer ratio');
    assert.equal(rows.find((x) => x.subject === 'docker 20.10')!.vsFloor, '3.00×');
  });

  it('renders a Markdown table with one row per result and escaped pipes', () => {
    const md = markdownTable(tableRows([tar, r('a|b', 'peer', [1])]));
    const lines = md.trim().split('\n');
    assert.equal(lines.length, 4);
    assert.match(lines[0], /^\| workload \| operation \|/);
    assert.ok(lines[3].includes('a\\|b'));
    for (const line of lines) assert.equal(line.replace(/\\\|/g, '').split('|').length, 12, line);
  });
});

describe('bench targets', () => {
  it('reports the import target as met or missed from the medians', () => {
    const met = checkTargets(report([r('GNU tar', 'floor', [1]), r('unionctl overlay2', 'unionctl', [1.4])]));
    assert.equal(met[0].met, true);
    assert.match(met[0].measured, /1\.40×/);
    const missed = checkTargets(report([r('GNU tar', 'floor', [1]), r('unionctl overlay2', 'unionctl', [2])]));
    assert.equal(missed[0].met, false);
  });

  it('compares image load against the faster of docker and podman', () => {
    const load = (subject: string, kind: Result['kind'], s: number) => r(subject, kind, [s], { workload: 'image', operation: 'load' });
    const [, loadCheck] = checkTargets(
      report([load('docker 20.10.24', 'peer', 4), load('podman 4.3.1', 'peer', 3), load('unionctl overlay2', 'unionctl', 1)]),
    );
    assert.equal(loadCheck.met, true);
    assert.match(loadCheck.measured, /3\.00× faster .*podman/);
    const [, faster] = checkTargets(report([load('podman 4.3.1', 'peer', 3), load('unionctl overlay2', 'unionctl', 2)]));
    assert.equal(faster.met, false, '1.5× faster is not 2×');
    assert.match(faster.measured, /1\.50× faster/);
    const [, slow] = checkTargets(report([load('podman 4.3.1', 'peer', 3), load('unionctl overlay2', 'unionctl', 4.5)]));
    assert.equal(slow.met, false);
    assert.match(slow.measured, /1\.50× slower/);
  });

  it('says "not measured" instead of guessing when a subject is missing', () => {
    const checks = checkTargets(report([]));
    assert.equal(checks.length, 4);
    for (const c of checks) assert.equal(c.met, undefined);
    assert.match(checks[1].measured, /unionctl has no load subject/);
  });

  it('checks the mount targets at depth 128 and 500, a failed 500 as missed', () => {
    const m = (subject: string, kind: Result['kind'], depth: number, s: number) =>
      r(subject, kind, [s], { workload: 'deep', operation: 'mount', param: `depth ${depth}` });
    const checks = checkTargets(
      report(
        [m('kernel overlayfs (bare mount)', 'floor', 128, 0.01), m('unionctl overlay2', 'unionctl', 128, 0.013)],
        [{ subject: 'unionctl overlay2', operation: 'mount', workload: 'deep', reason: 'depth 500 failed: EINVAL' }],
      ),
    );
    assert.equal(checks[2].met, false);
    assert.match(checks[2].measured, /1\.30×/);
    assert.equal(checks[3].met, false);
    assert.match(checks[3].measured, /EINVAL/);
    const ok = checkTargets(report([m('unionctl overlay2', 'unionctl', 500, 0.02)]));
    assert.equal(ok[3].met, true);
  });

  it('says how noisy the run was from its own figures', () => {
    const note = noiseNote(
      report([r('GNU tar', 'floor', [1, 1.1]), r('unionctl overlay2', 'unionctl', [1, 3], { param: 'p' }), r('x', 'peer', [2, 2.2])]),
    );
    assert.equal(
      note,
      "Noise in this run (2 cores, load average 0.00 at the start): a cell's slowest run took a median 1.10× its fastest, at worst 3.00× (unionctl overlay2 import distro p); compare ratios within this run, not absolute times across runs.",
    );
    assert.match(noiseNote(report([r('GNU tar', 'floor', [1])])), /^Noise: no cell ran more than once/);
  });

  it('puts targets, table and skipped subjects in the Markdown page', () => {
    const md = renderMarkdown(
      report([r('GNU tar', 'floor', [1]), r('unionctl overlay2', 'unionctl', [2])], [{ subject: 'docker load', reason: 'not installed' }]),
    );
    assert.match(md, /## Targets/);
    assert.match(md, /\| overlay2 import of distro ≤ 1\.5× GNU tar \| 2\.00× .*\| not judged \(--quick\) \|/, 'a quick run judges nothing');
    const full = report([r('GNU tar', 'floor', [1]), r('unionctl overlay2', 'unionctl', [2])]);
    const fullMd = renderMarkdown({ ...full, options: { ...full.options, quick: false } });
    assert.match(fullMd, /\| overlay2 import of distro ≤ 1\.5× GNU tar \| 2\.00× .*\| \*\*no\*\* \|/);
    assert.match(md, /## Skipped\n\n- \*\*docker load\*\*: not installed/);
  });
});
