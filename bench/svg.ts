/**
 * Two small SVG chart writers, enough for the benchmark report and no plotting dependency: a line
 * chart (one line per subject over a categorical x axis, optionally logarithmic y) and a horizontal
 * bar chart in groups (each group scaled to its own largest bar, every bar labelled with its value).
 * Output is deterministic for the same input: a fixed colour per subject (subjectColour), fixed number formatting.
 */

export interface LineSeries {
  label: string;
  /** y undefined = no point at that x (the subject did not run or failed there). */
  points: Array<{ x: string | number; y: number | undefined }>;
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  logY?: boolean;
  series: LineSeries[];
}

export interface BarGroup {
  label: string;
  bars: Array<{ label: string; value: number; text?: string }>;
}

export interface BarChart {
  title: string;
  /** Says what the bars measure ("MB/s, higher is better"). */
  unit: string;
  groups: BarGroup[];
}

/** unionctl's drivers: one colour each, the same in every chart of every report. */
const DRIVER_COLOURS: Readonly<Record<string, string>> = {
  overlay2: '#1f77b4',
  overlay: '#2ca02c',
  aufs: '#ff7f0e',
  vfs: '#9467bd',
  devicemapper: '#8c564b',
};
/** The peers (and anything else): a colour picked by the name, so it too is the same in every chart. */
const PEER_PALETTE = ['#d62728', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', '#393b79', '#8c6d31', '#843c39'];

/**
 * The colour of a subject: "unionctl <driver> …" gets its driver's, any other subject one chosen by
 * a hash of its label. Never by its position in a chart, so a driver is recognised at a glance.
 */
export function subjectColour(label: string): string {
  const driver = /^unionctl (\w+)/.exec(label)?.[1];
  if (driver !== undefined && DRIVER_COLOURS[driver] !== undefined) return DRIVER_COLOURS[driver]!;
  let hash = 0;
  for (const c of label) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return PEER_PALETTE[hash % PEER_PALETTE.length]!;
}
const FONT = 'font-family="DejaVu Sans, Arial, sans-serif"';

/** Escapes text for an SVG text node or attribute. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A number with at most 3 significant digits, no exponent: 0.00123, 1.5, 240, 12000. */
export function shortNumber(v: number): string {
  if (v === 0) return '0';
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(v))));
  return Number(v.toFixed(Math.min(digits, 6))).toString();
}

/** Round tick values covering [lo, hi]: powers of ten on a log axis, 1/2/5 steps on a linear one. */
export function ticks(lo: number, hi: number, log: boolean): number[] {
  if (log) {
    const out: number[] = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e);
    return out;
  }
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  if (out[out.length - 1] < hi) out.push(Number((out[out.length - 1] + step).toPrecision(12)));
  return out;
}

/** A text node; `attrs` may set its own font-size (default 12). */
function text(x: number, y: number, s: string, attrs = ''): string {
  const size = attrs.includes('font-size=') ? '' : ' font-size="12"';
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${FONT}${size} ${attrs}>${escapeXml(s)}</text>`;
}

export function renderLineChart(c: LineChart): string {
  const W = 860;
  const H = 420;
  const left = 70;
  const right = 260; // legend
  const top = 40;
  const bottom = 60;
  const xs = [...new Set(c.series.flatMap((s) => s.points.map((p) => String(p.x))))];
  const ys = c.series.flatMap((s) => s.points.map((p) => p.y)).filter((y): y is number => y !== undefined && (!c.logY || y > 0));
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(text(W / 2, 22, c.title, 'text-anchor="middle" font-size="15" font-weight="bold"'));
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  if (xs.length === 0 || ys.length === 0) {
    parts.push(text(W / 2, H / 2, 'no data', 'text-anchor="middle"'));
    parts.push('</svg>');
    return parts.join('\n') + '\n';
  }
  const yTicks = ticks(Math.min(...ys), Math.max(...ys), c.logY === true);
  const [y0, y1] = c.logY
    ? [Math.log10(yTicks[0]), Math.log10(yTicks[yTicks.length - 1])]
    : [Math.min(0, yTicks[0]), yTicks[yTicks.length - 1]];
  const yPos = (v: number) => top + plotH - (((c.logY ? Math.log10(v) : v) - y0) / (y1 - y0 || 1)) * plotH;
  const xPos = (x: string) => left + (xs.length === 1 ? plotW / 2 : (xs.indexOf(x) / (xs.length - 1)) * plotW);
  for (const t of yTicks) {
    const y = yPos(t);
    parts.push(`<line x1="${left}" y1="${y.toFixed(1)}" x2="${left + plotW}" y2="${y.toFixed(1)}" stroke="#ddd"/>`);
    parts.push(text(left - 6, y + 4, shortNumber(t), 'text-anchor="end"'));
  }
  for (const x of xs) parts.push(text(xPos(x), top + plotH + 18, x, 'text-anchor="middle"'));
  parts.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#444"/>`);
  parts.push(text(left + plotW / 2, H - 18, c.xLabel, 'text-anchor="middle"'));
  parts.push(text(16, top + plotH / 2, c.yLabel, `text-anchor="middle" transform="rotate(-90 16 ${(top + plotH / 2).toFixed(1)})"`));
  c.series.forEach((s, i) => {
    const colour = subjectColour(s.label);
    const pts = s.points.filter((p) => p.y !== undefined && (!c.logY || p.y > 0)).map((p) => [xPos(String(p.x)), yPos(p.y!)]);
    if (pts.length > 1)
      parts.push(
        `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`,
      );
    for (const [x, y] of pts) parts.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="${colour}"/>`);
    const ly = top + 10 + i * 20;
    parts.push(`<line x1="${W - right + 15}" y1="${ly}" x2="${W - right + 35}" y2="${ly}" stroke="${colour}" stroke-width="3"/>`);
    parts.push(text(W - right + 40, ly + 4, s.label));
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

export function renderBarChart(c: BarChart): string {
  const W = 860;
  const labelW = 250;
  const valueW = 210;
  const barH = 18;
  const gap = 6;
  const groupGap = 16;
  const top = 50;
  const rows = c.groups.reduce((n, g) => n + g.bars.length, 0);
  const H = top + rows * (barH + gap) + c.groups.length * (groupGap + 18) + 20;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(text(W / 2, 22, c.title, 'text-anchor="middle" font-size="15" font-weight="bold"'));
  parts.push(text(W / 2, 40, c.unit, 'text-anchor="middle" fill="#555"'));
  let y = top;
  for (const g of c.groups) {
    y += groupGap;
    parts.push(text(10, y, g.label, 'font-weight="bold"'));
    y += 6;
    const max = Math.max(...g.bars.map((b) => b.value), 0);
    for (const b of g.bars) {
      const w = max > 0 ? (b.value / max) * (W - labelW - valueW - 20) : 0;
      const colour = subjectColour(b.label);
      parts.push(text(labelW - 6, y + barH - 5, b.label, 'text-anchor="end"'));
      parts.push(`<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${colour}"/>`);
      parts.push(text(labelW + w + 6, y + barH - 5, b.text ?? shortNumber(b.value)));
      y += barH + gap;
    }
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
