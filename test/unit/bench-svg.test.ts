import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyThroughputChart, copyUpChart, mountLatencyChart } from '../../bench/report.js';
import type { Result } from '../../bench/results.js';
import { escapeXml, renderBarChart, renderLineChart, shortNumber, subjectColour, ticks } from '../../bench/svg.js';

/**
 * Checks what an SVG viewer would refuse: unbalanced tags, an attribute given twice in one tag,
 * an unescaped & or < in text. (A real XML parser is not a dependency of the project.)
 */
function assertWellFormed(svg: string): void {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)([^>]*?)(\/?)>/g)) {
    const [, closing, name, attrs, selfClosing] = m;
    const names = [...attrs.matchAll(/\s([a-zA-Z:-]+)="[^"]*"/g)].map((a) => a[1]);
    assert.equal(new Set(names).size, names.length, `attribute repeated in <${name}${attrs}>`);
    if (closing) assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
    else if (!selfClosing) stack.push(name);
  }
  assert.deepEqual(stack, [], 'every element is closed');
  const textOnly = svg.replace(/<[^>]*>/g, '');
  assert.doesNotMatch(textOnly, /&(?!amp;|lt;|gt;|quot;)/, 'bare & in text');
  assert.ok(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
}

/** The y coordinates of the circles of a line chart, in drawing order. */
const circleYs = (svg: string) => [...svg.matchAll(/<circle cx="[\d.]+" cy="([\d.]+)"/g)].map((m) => Number(m[1]));

describe('bench SVG writer', () => {
  it('escapes text', () => {
    assert.equal(escapeXml('a<b & "c">'), 'a&lt;b &amp; &quot;c&quot;&gt;');
  });

  it('writes short numbers without exponents', () => {
    assert.equal(shortNumber(0), '0');
    assert.equal(shortNumber(0.001234), '0.00123');
    assert.equal(shortNumber(1.5), '1.5');
    assert.equal(shortNumber(240), '240');
    assert.equal(shortNumber(12000), '12000');
  });

  it('makes ticks that cover the range: powers of ten on a log axis, 1/2/5 steps otherwise', () => {
    assert.deepEqual(ticks(0.3, 45, true), [0.1, 1, 10, 100]);
    const lin = ticks(0, 23, false);
    assert.deepEqual(lin, [0, 5, 10, 15, 20, 25]);
    const odd = ticks(3, 7.3, false);
    assert.ok(odd[0] <= 3 && odd[odd.length - 1] >= 7.3, JSON.stringify(odd));
  });

  it('draws a well-formed line chart where larger values sit higher', () => {
    const svg = renderLineChart({
      title: 'Mount <latency> & depth',
      xLabel: 'layers',
      yLabel: 'ms',
      logY: true,
      series: [
        {
          label: 'a',
          points: [
            { x: 1, y: 1 },
            { x: 16, y: 10 },
            { x: 128, y: 100 },
          ],
        },
      ],
    });
    assertWellFormed(svg);
    assert.ok(svg.includes('Mount &lt;latency&gt; &amp; depth'));
    const [y1, y10, y100] = circleYs(svg);
    assert.ok(y1 > y10 && y10 > y100, `${y1} ${y10} ${y100}`);
    // On a log axis equal factors are equal distances.
    assert.ok(Math.abs(y1 - y10 - (y10 - y100)) < 0.5);
  });

  it('leaves out missing points and says so when there is no data at all', () => {
    const svg = renderLineChart({
      title: 't',
      xLabel: 'x',
      yLabel: 'y',
      series: [
        {
          label: 's',
          points: [
            { x: 1, y: 2 },
            { x: 2, y: undefined },
            { x: 3, y: 4 },
          ],
        },
      ],
    });
    assertWellFormed(svg);
    assert.equal(circleYs(svg).length, 2);
    const empty = renderLineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [] });
    assertWellFormed(empty);
    assert.match(empty, />no data</);
  });

  it('draws bars scaled to the largest of their group, labelled with their values', () => {
    const svg = renderBarChart({
      title: 'T',
      unit: 'MB/s',
      groups: [
        {
          label: 'g',
          bars: [
            { label: 'a', value: 50 },
            { label: 'b', value: 100, text: '100 MB/s' },
          ],
        },
      ],
    });
    assertWellFormed(svg);
    const widths = [...svg.matchAll(/<rect x="\d+" y="[\d.]+" width="([\d.]+)" height="18"/g)].map((m) => Number(m[1]));
    assert.equal(widths.length, 2);
    assert.ok(Math.abs(widths[1] - 2 * widths[0]) < 0.2, String(widths));
    assert.ok(svg.includes('>100 MB/s<'));
  });

  it('gives a driver one colour in every chart, whatever else the chart holds, and a peer a colour of its own', () => {
    const lineOf = (labels: string[]) =>
      renderLineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: labels.map((label) => ({ label, points: [{ x: 1, y: 1 }] })) });
    const strokeOf = (svg: string, label: string) => {
      const lines = svg.split('\n');
      const i = lines.findIndex((l) => l.includes(`>${label}</text>`));
      return /stroke="(#[0-9a-f]{6})"/.exec(lines[i - 1]!)?.[1];
    };
    const a = lineOf(['unionctl overlay2', 'unionctl vfs']);
    const b = lineOf(['fuse-overlayfs', 'unionctl vfs', 'unionctl overlay2 (CLI process)']);
    assert.equal(strokeOf(a, 'unionctl vfs'), strokeOf(b, 'unionctl vfs'));
    assert.equal(strokeOf(a, 'unionctl overlay2'), strokeOf(b, 'unionctl overlay2 (CLI process)'));
    assert.equal(subjectColour('unionctl overlay2'), subjectColour('unionctl overlay2 (CLI process)'));
    assert.notEqual(subjectColour('unionctl overlay'), subjectColour('unionctl overlay2'));
    const drivers = ['overlay2', 'overlay', 'aufs', 'vfs', 'devicemapper'].map((d) => subjectColour(`unionctl ${d}`));
    assert.equal(new Set(drivers).size, 5, 'five drivers, five colours');
    for (const peer of ['fuse-overlayfs', 'docker 20.10.24', 'GNU tar']) assert.ok(!drivers.includes(subjectColour(peer)), peer);
    const bars = renderBarChart({ title: 't', unit: 'u', groups: [{ label: 'g', bars: [{ label: 'unionctl vfs', value: 1 }] }] });
    assert.match(bars, new RegExp(`fill="${subjectColour('unionctl vfs')}"`));
  });

  it('is deterministic', () => {
    const c = { title: 't', unit: 'u', groups: [{ label: 'g', bars: [{ label: 'a', value: 1 }] }] };
    assert.equal(renderBarChart(c), renderBarChart(c));
  });

  it('plots benchmark results: one line per mount subject, one bar per import subject', () => {
    const results: Result[] = [
      { workload: 'deep', operation: 'mount', param: 'depth 16', subject: 'unionctl overlay2', kind: 'unionctl', seconds: [0.002] },
      { workload: 'deep', operation: 'mount', param: 'depth 128', subject: 'unionctl overlay2', kind: 'unionctl', seconds: [0.005] },
      {
        workload: 'deep',
        operation: 'mount',
        param: 'depth 128',
        subject: 'kernel overlayfs (bare mount)',
        kind: 'floor',
        seconds: [0.004],
      },
      { workload: 'distro', operation: 'import', subject: 'GNU tar', kind: 'floor', seconds: [1], bytes: 100e6, files: 10 },
      { workload: 'bigfile', operation: 'copy-up', param: '4 KiB', subject: 'unionctl overlay2', kind: 'unionctl', seconds: [0.001] },
    ];
    const mount = mountLatencyChart(results);
    assertWellFormed(mount);
    assert.equal(circleYs(mount).length, 3);
    assert.match(mount, />kernel overlayfs \(bare mount\)</);
    const apply = applyThroughputChart(results);
    assertWellFormed(apply);
    assert.match(apply, />100 MB\/s · 10 files\/s</);
    const copy = copyUpChart(results);
    assertWellFormed(copy);
    assert.match(copy, />first write to a 4 KiB lower file</);
  });
});
