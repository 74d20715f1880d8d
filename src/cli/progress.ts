/**
 * A one-line progress bar on stderr for long imports: bytes read (of the total, when the input's
 * size is known), a bar and the rate. It only draws on a TTY, waits a moment before the first draw
 * so quick imports print nothing, redraws at most every REDRAW_MS, and erases itself when done so
 * the id printed on stdout stays the only trace.
 */
import { err, humanBytes } from './output.js';

const SHOW_AFTER_MS = 400;
const REDRAW_MS = 100;
const BAR_WIDTH = 24;

export interface Progress {
  /** False when nothing will ever be drawn (stderr is not a terminal): skip counting bytes. */
  readonly active: boolean;
  /** Total bytes processed so far. */
  update(bytes: number): void;
  /** Erase the bar (safe to call more than once, and when nothing was drawn). */
  done(): void;
}

const SILENT: Progress = { active: false, update() {}, done() {} };

export function startProgress(label: string, totalBytes?: number): Progress {
  const stream = process.stderr;
  if (!stream.isTTY) return SILENT;
  const started = Date.now();
  let lastDraw = 0;
  let drawn = false;

  const draw = (bytes: number): void => {
    const elapsed = (Date.now() - started) / 1000;
    const rate = elapsed > 0 ? `${humanBytes(bytes / elapsed)}/s` : '';
    // The total is the input file's size; a compressed input yields more bytes than that, so the
    // bar only makes sense while the count stays below it.
    const known = totalBytes !== undefined && totalBytes > 0 && bytes <= totalBytes;
    const parts = [err.bold(label)];
    if (known) {
      const fraction = bytes / totalBytes;
      const filled = Math.round(fraction * BAR_WIDTH);
      parts.push(
        `${humanBytes(bytes)} / ${humanBytes(totalBytes)}`,
        `[${err.cyan('#'.repeat(filled))}${'-'.repeat(BAR_WIDTH - filled)}]`,
        `${Math.floor(fraction * 100)}%`.padStart(4),
      );
    } else {
      parts.push(humanBytes(bytes));
    }
    parts.push(rate);
    stream.write(`\r\x1b[2K${parts.join('  ')}`);
    drawn = true;
  };

  return {
    active: true,
    update(bytes: number): void {
      const now = Date.now();
      if (now - started < SHOW_AFTER_MS || now - lastDraw < REDRAW_MS) return;
      lastDraw = now;
      draw(bytes);
    },
    done(): void {
      if (drawn) stream.write('\r\x1b[2K');
      drawn = false;
    },
  };
}

/** What load and pull report: bytes of layer `layer` of `layers`. */
export interface LayerBytes {
  layer: number;
  layers: number;
  bytes: number;
}

/**
 * One progress line per layer under way ("pulling layer 2/4", its bytes and rate) for a command
 * that reports LayerBytes, several layers at once when they run in parallel: the lines are redrawn
 * in place, a finished layer's line stays until the whole command ends, then all are erased.
 * `onProgress` is undefined when nothing would be drawn (no terminal).
 */
export function startLayerProgress(verb: string): { onProgress: ((p: LayerBytes) => void) | undefined; done(): void } {
  const stream = process.stderr;
  if (!stream.isTTY) return { onProgress: undefined, done() {} };
  const started = Date.now();
  const layers = new Map<number, { bytes: number; since: number; of: number }>();
  let lastDraw = 0;
  let drawnLines = 0;
  const draw = (): void => {
    const now = Date.now();
    const lines = [...layers]
      .sort(([a], [b]) => a - b)
      .map(([n, l]) => {
        const seconds = (now - l.since) / 1000;
        const rate = seconds > 0 ? `${humanBytes(l.bytes / seconds)}/s` : '';
        return `${err.bold(`${verb} layer ${n}/${l.of}`)}  ${humanBytes(l.bytes)}  ${rate}`;
      });
    // Back to the first line drawn last time, then each line afresh.
    const up = drawnLines > 1 ? `\x1b[${drawnLines - 1}A` : '';
    stream.write(`${up}\r${lines.map((l) => `\x1b[2K${l}`).join('\n')}`);
    drawnLines = lines.length;
  };
  const onProgress = (p: LayerBytes): void => {
    const now = Date.now();
    const layer = layers.get(p.layer);
    if (layer === undefined) layers.set(p.layer, { bytes: p.bytes, since: now, of: p.layers });
    else layer.bytes = p.bytes;
    if (now - started < SHOW_AFTER_MS || now - lastDraw < REDRAW_MS) return;
    lastDraw = now;
    draw();
  };
  return {
    onProgress,
    done(): void {
      if (drawnLines === 0) return;
      const up = drawnLines > 1 ? `\x1b[${drawnLines - 1}A` : '';
      stream.write(`${up}\r\x1b[J`); // erase from the first line down
      drawnLines = 0;
    },
  };
}
