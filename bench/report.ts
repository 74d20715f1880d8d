/**
 * Turns a BenchReport into the Markdown table (every unionctl figure as a ratio to the best peer
 * and to the floor), the target checks, and the SVG plots. Pure: no I/O except writeReportFiles.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchReport, Result } from './results.js';
import { formatRate, formatRatio, formatSeconds, perSecond, ratio, summarize } from './stats.js';
import { renderBarChart, renderLineChart, type BarGroup } from './svg.js';

/** Cells of one comparison: same workload, operation and parameter. */
export interface Group {
  workload: string;
  operation: string;
  param?: string;
  results: Result[];
}

export function groupResults(results: Result[]): Group[] {
  const groups = new Map<string, Group>();
  for (const r of results) {
    const key = `${r.workload}\0${r.operation}\0${r.param ?? ''}`;
    let g = groups.get(key);
    if (g === undefined) groups.set(key, (g = { workload: r.workload, operation: r.operation, param: r.param, results: [] }));
    g.results.push(r);
  }
  return [...groups.values()];
}

const medianOf = (r: Result) => summarize(r.seconds).median;

/** The fastest non-unionctl subject of the group (the floor counts: GNU tar is a peer too). */
export function bestPeer(g: Group): Result | undefined {
  const peers = g.results.filter((r) => r.kind !== 'unionctl');
  return peers.length === 0 ? undefined : peers.reduce((a, b) => (medianOf(b) < medianOf(a) ? b : a));
}

export function floorOf(g: Group): Result | undefined {
  return g.results.find((r) => r.kind === 'floor');
}

export interface Row {
  workload: string;
  operation: string;
  param: string;
  subject: string;
  min: string;
  median: string;
  max: string;
  throughput: string;
  vsBestPeer: string;
  vsFloor: string;
}

const THROUGHPUT_OPERATIONS = new Set(['import', 'load', 'diff export', 'import chain']);

/** One table row per result; ratios to the best peer only on unionctl rows (a peer's is trivia). */
export function tableRows(results: Result[]): Row[] {
  const rows: Row[] = [];
  for (const g of groupResults(results)) {
    const best = bestPeer(g);
    const floor = floorOf(g);
    for (const r of g.results) {
      const s = summarize(r.seconds);
      // A rate means something where data streams through (import, load, export), not for one write.
      const rate = THROUGHPUT_OPERATIONS.has(g.operation)
        ? [formatRate(perSecond(r.bytes, s.median), 'MB'), formatRate(perSecond(r.files, s.median), 'files')]
            .filter((x) => x !== '–')
            .join(', ')
        : '';
      rows.push({
        workload: g.workload,
        operation: g.operation,
        param: g.param ?? '',
        subject: r.note ? `${r.subject} ¹` : r.subject,
        min: formatSeconds(s.min),
        median: formatSeconds(s.median),
        max: formatSeconds(s.max),
        throughput: rate || '–',
        vsBestPeer: r.kind === 'unionctl' && best ? `${formatRatio(ratio(s.median, medianOf(best)))} (${best.subject})` : '',
        vsFloor: floor && r !== floor ? formatRatio(ratio(s.median, medianOf(floor))) : r === floor ? 'floor' : '–',
      });
    }
  }
  return rows;
}

export function markdownTable(rows: Row[]): string {
  const head = ['workload', 'operation', 'param', 'subject', 'min', 'median', 'max', 'throughput (median)', 'vs best peer', 'vs floor'];
  const cells = rows.map((r) => [
    r.workload,
    r.operation,
    r.param,
    r.subject,
    r.min,
    r.median,
    r.max,
    r.throughput,
    r.vsBestPeer,
    r.vsFloor,
  ]);
  const esc = (c: string) => c.replace(/\|/g, '\\|');
  return (
    [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...cells.map((c) => `| ${c.map(esc).join(' | ')} |`)].join('\n') +
    '\n'
  );
}

/**
 * The compact table: one row per cell, the floor and the best peer, then each unionctl driver's
 * median with its ratio to the best peer (the one the README shows).
 */
export function summaryTable(results: Result[]): string {
  const groups = groupResults(results).filter((g) => g.results.some((r) => r.kind === 'unionctl'));
  const drivers = [...new Set(results.filter((r) => r.kind === 'unionctl').map((r) => r.subject))];
  const head = ['workload', 'operation', 'floor', 'best peer', ...drivers.map((d) => `${d} (vs best peer)`)];
  const rows = groups.map((g) => {
    const floor = floorOf(g);
    const best = bestPeer(g);
    const cell = (r: Result | undefined) => (r ? formatSeconds(medianOf(r)) : '–');
    return [
      g.workload,
      `${g.operation}${g.param ? ` (${g.param})` : ''}`,
      floor ? `${cell(floor)} ${floor.subject}` : '–',
      best && best !== floor ? `${cell(best)} ${best.subject}` : best ? 'the floor' : '–',
      ...drivers.map((d) => {
        const r = g.results.find((x) => x.subject === d);
        if (!r) return '–';
        return best ? `${cell(r)} (${formatRatio(ratio(medianOf(r), medianOf(best)))})` : cell(r);
      }),
    ];
  });
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((c) => `| ${c.join(' | ')} |`)].join('\n') + '\n';
}

// ---- targets -----------------------------------------------------------------------------

export interface TargetCheck {
  target: string;
  measured: string;
  /** undefined: not measured in this run (the reason is in `measured`). */
  met: boolean | undefined;
}

function find(results: Result[], workload: string, operation: string, subject: string | RegExp, param?: string): Result | undefined {
  return results.find(
    (r) =>
      r.workload === workload &&
      r.operation === operation &&
      (param === undefined || r.param === param) &&
      (typeof subject === 'string' ? r.subject === subject : subject.test(r.subject)),
  );
}

export function checkTargets(report: BenchReport): TargetCheck[] {
  const rs = report.results;
  const checks: TargetCheck[] = [];

  const tar = find(rs, 'distro', 'import', 'GNU tar');
  const ov = find(rs, 'distro', 'import', 'unionctl overlay2');
  const ovCli = find(rs, 'distro', 'import', 'unionctl overlay2 (CLI process)');
  if (tar && ov) {
    const r = medianOf(ov) / medianOf(tar);
    const cli = ovCli ? `; as a whole \`unionctl import\` process ${formatRatio(medianOf(ovCli) / medianOf(tar))}` : '';
    checks.push({
      target: 'overlay2 import of distro ≤ 1.5× GNU tar',
      measured: `${formatRatio(r)} (importLayer in-process)${cli}`,
      met: r <= 1.5,
    });
  } else checks.push({ target: 'overlay2 import of distro ≤ 1.5× GNU tar', measured: 'not measured in this run', met: undefined });

  const docker = find(rs, 'image', 'load', /^docker/);
  const podman = find(rs, 'image', 'load', /^podman/);
  const peers = [docker, podman].filter((r): r is Result => r !== undefined);
  const ucLoads = rs.filter((r) => r.workload === 'image' && r.operation === 'load' && r.kind === 'unionctl');
  const ucLoad = ucLoads.length ? ucLoads.reduce((a, b) => (medianOf(b) < medianOf(a) ? b : a)) : undefined;
  if (peers.length && ucLoad) {
    const fastest = peers.reduce((a, b) => (medianOf(b) < medianOf(a) ? b : a));
    const speedup = medianOf(fastest) / medianOf(ucLoad);
    const how = speedup >= 1 ? `${speedup.toFixed(2)}× faster` : `${(1 / speedup).toFixed(2)}× slower`;
    checks.push({
      target: 'image load ≥ 2× faster than the faster of docker/podman load',
      measured: `${how} (${ucLoad.subject} ${formatSeconds(medianOf(ucLoad))} vs ${fastest.subject} ${formatSeconds(medianOf(fastest))})`,
      met: speedup >= 2,
    });
  } else {
    const why = !ucLoad ? 'unionctl has no load subject in this run' : 'neither docker nor podman ran';
    checks.push({
      target: 'image load ≥ 2× faster than the faster of docker/podman load',
      measured: `not measured: ${why}`,
      met: undefined,
    });
  }

  const bare = find(rs, 'deep', 'mount', /bare mount/, 'depth 128');
  const ov128 = find(rs, 'deep', 'mount', 'unionctl overlay2', 'depth 128');
  if (bare && ov128) {
    const r = medianOf(ov128) / medianOf(bare);
    checks.push({
      target: 'overlay2 mount of a 128-layer chain ≤ 1.2× bare mount(2)',
      measured: `${formatRatio(r)} (${formatSeconds(medianOf(ov128))} vs ${formatSeconds(medianOf(bare))})`,
      met: r <= 1.2,
    });
  } else
    checks.push({
      target: 'overlay2 mount of a 128-layer chain ≤ 1.2× bare mount(2)',
      measured: 'not measured in this run',
      met: undefined,
    });

  const ov500 = find(rs, 'deep', 'mount', 'unionctl overlay2', 'depth 500');
  const failed500 = report.skipped.find((s) => s.subject === 'unionctl overlay2' && s.operation === 'mount' && /depth 500/.test(s.reason));
  checks.push({
    target: 'a 500-layer chain mounts (overlay2)',
    measured: ov500
      ? `mounted in ${formatSeconds(medianOf(ov500))}`
      : failed500
        ? failed500.reason
        : 'not measured in this run (--quick stops at 128)',
    met: ov500 ? true : failed500 ? false : undefined,
  });
  return checks;
}

// ---- the Markdown page -------------------------------------------------------------------

/**
 * How noisy this run was, from its own figures: the spread between a cell's slowest and fastest
 * run (median over the cells, and the worst cell), with the cores and the load at the start.
 */
export function noiseNote(report: BenchReport): string {
  const spreads = report.results
    .filter((r) => r.seconds.length > 1 && Math.min(...r.seconds) > 0)
    .map((r) => ({ r, spread: Math.max(...r.seconds) / Math.min(...r.seconds) }))
    .sort((a, b) => a.spread - b.spread);
  const m = report.machine;
  const host = `${m.cores} core${m.cores === 1 ? '' : 's'}, load average ${m.loadAverage[0]?.toFixed(2) ?? '?'} at the start`;
  if (spreads.length === 0)
    return `Noise: no cell ran more than once (${host}); compare ratios within this run, not absolute times across runs.`;
  const median = spreads[Math.floor((spreads.length - 1) / 2)]!.spread;
  const worst = spreads.at(-1)!;
  const cell = [worst.r.subject, worst.r.operation, worst.r.workload, worst.r.param].filter(Boolean).join(' ');
  return `Noise in this run (${host}): a cell's slowest run took a median ${median.toFixed(2)}× its fastest, at worst ${worst.spread.toFixed(2)}× (${cell}); compare ratios within this run, not absolute times across runs.`;
}

export const PLOTS = {
  mount: 'mount-latency.svg',
  apply: 'apply-throughput.svg',
  copyUp: 'copy-up-latency.svg',
} as const;

export function renderMarkdown(report: BenchReport): string {
  const m = report.machine;
  const o = report.options;
  const lines: string[] = [];
  lines.push(`# unionctl storage benchmarks — ${m.date}`, '');
  lines.push(
    `\`unionctl bench${o.quick ? ' --quick' : ''} --fs ${o.fs}\` · ${o.runs} runs per cell (min / median / max) · ${report.elapsed.toFixed(0)} s in all.`,
    '',
  );
  lines.push(
    `Kernel ${m.kernel} · ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB · ${m.filesystem} · Node ${m.node} · load average at start ${m.loadAverage.map((l) => l.toFixed(2)).join(' ')}.`,
  );
  lines.push(
    `Overlay: ${Object.entries(m.overlay)
      .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
      .join(', ')}.`,
  );
  lines.push(
    `Peers: ${
      Object.entries(m.peers)
        .map(([k, v]) => `${k} ${v}`)
        .join(' · ') || 'none'
    }.`,
    '',
  );
  lines.push(noiseNote(report));
  lines.push(
    'unionctl subjects are library calls timed inside the benchmark process (store.importLayer, store.mount, store.diff, …), except the rows marked "CLI process" and image load, which time a whole `unionctl` process like the peers\' commands.',
    '',
  );
  lines.push('## Targets', '', '| target | measured | met |', '|---|---|---|');
  // A --quick run uses smaller inputs and fewer runs: it shows where things stand, it does not judge.
  const missed = o.quick ? 'not judged (--quick)' : '**no**';
  for (const t of checkTargets(report))
    lines.push(`| ${t.target} | ${t.measured} | ${t.met === undefined ? 'n/a' : t.met ? 'yes' : missed} |`);
  lines.push('', '## Summary (medians)', '', summaryTable(report.results));
  lines.push('## Results', '');
  lines.push(
    'Ratios are of medians: "vs best peer" divides a unionctl figure by the fastest other tool of the same cell; "vs floor" by the cell\'s floor (GNU tar for import/load/diff, `rm -rf` for remove, a bare kernel overlay mount for mount/read/copy-up). Below 1 means unionctl is faster.',
    '',
  );
  lines.push(markdownTable(tableRows(report.results)));
  // One footnote line per distinct note, naming the subjects it is about.
  const bySubjects = new Map<string, Set<string>>();
  for (const r of report.results) if (r.note) bySubjects.set(r.note, (bySubjects.get(r.note) ?? new Set()).add(r.subject));
  for (const [note, subjects] of bySubjects) lines.push(`¹ ${[...subjects].join(', ')}: ${note}.`, '');
  lines.push(
    `Plots: [mount latency vs depth](${PLOTS.mount}) · [apply throughput](${PLOTS.apply}) · [copy-up latency](${PLOTS.copyUp}).`,
    '',
  );
  if (report.skipped.length) {
    lines.push('## Skipped', '');
    for (const s of report.skipped)
      lines.push(`- **${s.subject}**${s.operation ? ` (${[s.workload, s.operation].filter(Boolean).join(' ')})` : ''}: ${s.reason}`);
    lines.push('');
  }
  if (report.notes.length) {
    lines.push('## Notes', '');
    for (const n of report.notes) lines.push(`- ${n}`);
    lines.push('');
  }
  return lines.join('\n');
}

// ---- plots -------------------------------------------------------------------------------

const depthOf = (param: string | undefined) => Number(/depth (\d+)/.exec(param ?? '')?.[1]);

export function mountLatencyChart(results: Result[]): string {
  const mounts = results.filter((r) => r.workload === 'deep' && r.operation === 'mount');
  const depths = [...new Set(mounts.map((r) => depthOf(r.param)))].sort((a, b) => a - b);
  const subjects = [...new Set(mounts.map((r) => r.subject))];
  return renderLineChart({
    title: 'Mount latency vs chain depth (median)',
    xLabel: 'layers in the chain',
    yLabel: 'milliseconds (log)',
    logY: true,
    series: subjects.map((s) => ({
      label: s,
      points: depths.map((d) => {
        const r = mounts.find((x) => x.subject === s && depthOf(x.param) === d);
        return { x: d, y: r ? medianOf(r) * 1e3 : undefined };
      }),
    })),
  });
}

export function applyThroughputChart(results: Result[]): string {
  const groups: BarGroup[] = groupResults(results.filter((r) => r.operation === 'import' && r.bytes)).map((g) => ({
    label: `${g.workload}${g.param ? ` (${g.param})` : ''}`,
    bars: g.results.map((r) => {
      const mbps = r.bytes! / medianOf(r) / 1e6;
      const fps = r.files ? ` · ${Math.round(r.files / medianOf(r)).toLocaleString('en-US')} files/s` : '';
      return { label: r.subject, value: mbps, text: `${mbps.toFixed(0)} MB/s${fps}` };
    }),
  }));
  return renderBarChart({ title: 'Apply / import throughput (median)', unit: 'MB/s of layer tar, longer is faster', groups });
}

export function copyUpChart(results: Result[]): string {
  const groups: BarGroup[] = groupResults(results.filter((r) => r.operation === 'copy-up')).map((g) => ({
    label: `first write to a ${g.param ?? ''} lower file`,
    bars: g.results.map((r) => ({ label: r.subject, value: medianOf(r) * 1e3, text: formatSeconds(medianOf(r)) })),
  }));
  return renderBarChart({ title: 'Copy-up latency (median)', unit: 'milliseconds, shorter is faster', groups });
}

/** Writes <dir>/<base>.json, <base>.md and the three plots; returns the paths written. */
export function writeReportFiles(report: BenchReport, dir: string, base = 'latest'): string[] {
  mkdirSync(dir, { recursive: true });
  const files: Array<[string, string]> = [
    [`${base}.json`, JSON.stringify(report, null, 2) + '\n'],
    [`${base}.md`, renderMarkdown(report)],
    [PLOTS.mount, mountLatencyChart(report.results)],
    [PLOTS.apply, applyThroughputChart(report.results)],
    [PLOTS.copyUp, copyUpChart(report.results)],
  ];
  return files.map(([name, content]) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  });
}
