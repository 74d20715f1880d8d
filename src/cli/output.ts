/**
 * Everything the CLI prints goes through here: colours, tables, sizes, JSON and error lines.
 * Command code decides *what* to print; this file decides *how*.
 */
import { Chalk, supportsColor, supportsColorStderr, type ChalkInstance } from 'chalk';
import { damagedFilesError, type UnionctlError } from '../errors.js';
import { logs } from './log-level.js';
import { renderTemplate, type Template } from './template.js';

/**
 * Colour level for one output stream. chalk already turns colour off when the stream is not a TTY
 * (and honours FORCE_COLOR / TERM=dumb), but it ignores NO_COLOR (https://no-color.org: set and not
 * empty means no colour), so that check is ours.
 */
function colourLevel(detected: typeof supportsColor): 0 | 1 | 2 | 3 {
  if (process.env.NO_COLOR) return 0;
  return detected === false ? 0 : detected.level;
}

/** Colours for text written to stdout. */
export const out: ChalkInstance = new Chalk({ level: colourLevel(supportsColor) });
/** Colours for text written to stderr (errors, hints, the progress bar). */
export const err: ChalkInstance = new Chalk({ level: colourLevel(supportsColorStderr) });

// ---- control characters -------------------------------------------------------------------

/*
 * Characters a terminal acts on instead of showing them: the C0 controls (ESC starts an escape
 * sequence; newline and tab would break a one-line message or a table), DEL, the C1 controls (0x9b
 * is a CSI by itself on some terminals), and the Unicode controls that reorder or break what is
 * shown (bidirectional overrides and isolates, line and paragraph separators). Names, paths and
 * tags come from stores and archives that anybody may have written, so none of them reaches the
 * terminal raw. --json output is left exact: JSON.stringify already escapes the C0 controls.
 */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
// eslint-disable-next-line no-control-regex
const CONTROL_BUT_TAB = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const NAMED_ESCAPES: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  return NAMED_ESCAPES[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`);
}

/** `text` with every control character written as an escape (\x1b, \n, \u202e); nothing else changes. For messages. */
export function escapeControls(text: string, opts: { keepTabs?: boolean } = {}): string {
  return text.replace(opts.keepTabs ? CONTROL_BUT_TAB : CONTROL, escapeChar);
}

/**
 * A name, tag or path from a store or an input, as shown in a table or a line: unchanged when it
 * has no control characters; otherwise in double quotes, with the controls escaped and \ and "
 * backslashed, so what is shown cannot be mistaken for another name (git quotes paths the same way).
 * A name that itself starts with " is quoted too.
 */
export function shownName(text: string): string {
  if (text.replace(CONTROL, '') === text && !text.startsWith('"')) return text;
  return `"${text.replace(/[\\"]/g, '\\$&').replace(CONTROL, escapeChar)}"`;
}

// ---- printing -------------------------------------------------------------------------------

export function println(line = ''): void {
  process.stdout.write(`${line}\n`);
}

export function eprintln(line = ''): void {
  process.stderr.write(`${line}\n`);
}

/** The --format template, when one was given (setOutputTemplate, from the program's preAction hook). */
let outputTemplate: Template | undefined;

export function setOutputTemplate(template: Template | undefined): void {
  outputTemplate = template;
}

/**
 * A command's result on stdout: pretty JSON, one document per command; or, with --format, the
 * template rendered over each element of a list (over the value itself when it is not a list), one
 * per line. Every element is rendered before anything is printed: a template that names a field
 * the objects lack fails without half an output.
 */
export function printJson(value: unknown): void {
  if (outputTemplate === undefined) return println(JSON.stringify(value, null, 2));
  const template = outputTemplate;
  const lines = (Array.isArray(value) ? value : [value]).map((item) => renderTemplate(template, item));
  if (template.table)
    return printTable(
      template.header,
      lines.map((l) => l.split('\t')),
    );
  for (const line of lines) println(line);
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.5 KiB"; exact below 1 KiB. */
export function humanBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`;
}

/**
 * "4 days ago": how long ago `when` was, as docker's tables say it (units.HumanDuration). An
 * unreadable time is shown as it is; --json output carries the ISO time instead.
 */
export function timeAgo(when: string | number | Date, now: number = Date.now()): string {
  const time = new Date(when).getTime();
  if (Number.isNaN(time)) return String(when);
  const seconds = Math.max(0, Math.floor((now - time) / 1000));
  return `${humanDuration(seconds)} ago`;
}

function humanDuration(seconds: number): string {
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.floor(seconds / 60);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(minutes / 60);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  const days = Math.floor(hours / 24);
  if (days < 7 * 2) return `${days} days`;
  if (days < 30 * 2) return `${Math.floor(days / 7)} weeks`;
  if (days < 365 * 2) return `${Math.floor(days / 30)} months`;
  return `${Math.floor(days / 365)} years`;
}

/**
 * How wide a table may be: the terminal's width when stdout is one, else $COLUMNS when it is set
 * (as `ls` honours it), else no limit: a pipe gets whole cells.
 */
export function tableWidth(): number | undefined {
  if (process.stdout.isTTY && process.stdout.columns > 0) return process.stdout.columns;
  const columns = Number(process.env.COLUMNS);
  return Number.isInteger(columns) && columns > 0 ? columns : undefined;
}

/** The narrowest a cell is cut to when a table must fit a width. */
const MIN_CELL = 12;

/**
 * Column widths that fit `limit`: the widest column is narrowed first, a character at a time, but
 * never below MIN_CELL (or its header); a table that cannot fit then stays wider than the limit.
 */
function fitWidths(widths: number[], header: string[], limit: number | undefined): number[] {
  if (limit === undefined) return widths;
  const fitted = [...widths];
  const total = () => fitted.reduce((n, w) => n + w, 0) + 2 * (fitted.length - 1);
  while (total() > limit) {
    let widest = -1;
    for (const [i, w] of fitted.entries()) if (w > Math.max(MIN_CELL, header[i]!.length) && (widest < 0 || w > fitted[widest]!)) widest = i;
    if (widest < 0) break;
    fitted[widest]!--;
  }
  return fitted;
}

/** `text` cut to `width` characters, the cut marked with "…" (a path keeps its end: the part that differs). */
function cutTo(text: string, width: number): string {
  if (text.length <= width) return text;
  return text.startsWith('/') ? `…${text.slice(text.length - width + 1)}` : `${text.slice(0, width - 1)}…`;
}

/** A cell: its plain text (for width) and how to colour it once padded. */
export interface Cell {
  text: string;
  style?: (s: string) => string;
}

/**
 * Left-aligned columns separated by two spaces, header in bold. Widths are measured on the plain
 * text, colour is applied after padding so escape codes do not skew the alignment. A table wider
 * than the terminal (tableWidth) has its widest cells cut, marked with "…".
 */
export function printTable(header: string[], rows: Array<Array<string | Cell>>): void {
  // Cells hold names and paths from the store: shown quoted and escaped when they have control characters.
  const cells: Cell[][] = rows.map((row) =>
    row.map((c) => (typeof c === 'string' ? { text: shownName(c) } : { ...c, text: shownName(c.text) })),
  );
  const widths = fitWidths(
    header.map((h, i) => Math.max(h.length, ...cells.map((row) => row[i]?.text.length ?? 0))),
    header,
    tableWidth(),
  );
  for (const row of cells) for (const [i, cell] of row.entries()) if (i < widths.length) cell.text = cutTo(cell.text, widths[i]!);
  const render = (row: Cell[]): string =>
    row
      .map((cell, i) => {
        // A row with more cells than the header: the extra ones have no column width to pad to.
        const padded = i === row.length - 1 ? cell.text : cell.text.padEnd(widths[i] ?? 0);
        return cell.style ? cell.style(padded) : padded;
      })
      .join('  ');
  println(render(header.map((h) => ({ text: h, style: out.bold }))));
  for (const row of cells) println(render(row));
}

/** One change line, "A /path", coloured by kind. */
export function changeStyle(kind: string): (s: string) => string {
  switch (kind) {
    case 'A':
      return out.green;
    case 'D':
      return out.red;
    default:
      return out.yellow;
  }
}

/** Branch modes: the writable branch stands out, read-only ones recede. */
export function branchModeStyle(mode: string): (s: string) => string {
  if (mode === 'rw') return out.green;
  if (mode === 'ro+wh') return out.yellow;
  return out.dim;
}

/**
 * The error line(s) every failure ends in: `unionctl: <message>` and an optional hint line. Control
 * characters in them (a name from an archive, an argument) are escaped: the message stays one line.
 */
export function printError(message: string, hint?: string): void {
  eprintln(`${err.red.bold('unionctl:')} ${escapeControls(message)}`);
  if (hint) eprintln(`  ${err.dim('hint:')} ${escapeControls(hint)}`);
}

/** A UnionctlError the one way the CLI prints it: its line and hint, and its stack at --log-level debug. */
export function printUnionctlError(e: UnionctlError): void {
  printError(e.message, e.hint);
  if (logs('debug')) eprintln(e.stack);
}

/**
 * Thrown by a command that went on past failures (rm a b c) once it has printed each of them with
 * printError: the CLI then exits with `exitCode` without printing anything more.
 */
export class FailuresReported extends Error {
  constructor(
    readonly failures: number,
    readonly exitCode = 1,
  ) {
    super(`${failures} failure${failures === 1 ? '' : 's'}, each reported`);
    this.name = 'FailuresReported';
  }
}

/** A warning line on stderr: `unionctl: warning: <message>`, control characters escaped. */
export function printWarning(message: string): void {
  if (!logs('warn')) return;
  eprintln(`unionctl: warning: ${escapeControls(message)}`);
}

/**
 * For listings (ls, images): damaged records are left out of the listing, which is printed, and
 * the command then fails naming them (exit 1) — as ls(1) lists what it can read and fails on the rest.
 */
export class DamagedFiles {
  private readonly errors: UnionctlError[] = [];
  readonly onDamaged = (e: UnionctlError): void => {
    this.errors.push(e);
  };
  /** Throws one CORRUPT naming every damaged file seen, if any. */
  throwIfAny(): void {
    if (this.errors.length > 0) throw damagedFilesError(this.errors);
  }
}

/** A generated id: 12 or more hex digits first (a random layer id, a chain ID's hex). */
const GENERATED_ID = /^[0-9a-f]{12}./;

/**
 * How a table shows the ids in it: a generated id cut to its first 12 characters, as docker and
 * podman show them (every command takes such a prefix), unless another id in the same table would
 * then look the same: those stay whole. Ids users chose (`--id web`) are never cut. With
 * `noTrunc` (the --no-trunc flag), every id stays whole.
 */
export function idShortener(ids: Iterable<string>, noTrunc = false): (id: string) => string {
  if (noTrunc) return (id) => id;
  const byShort = new Map<string, Set<string>>();
  for (const id of ids) {
    if (!GENERATED_ID.test(id)) continue;
    const short = id.slice(0, 12);
    byShort.set(short, (byShort.get(short) ?? new Set()).add(id));
  }
  return (id) => (GENERATED_ID.test(id) && byShort.get(id.slice(0, 12))?.size === 1 ? id.slice(0, 12) : id);
}

/** An image id as tables and messages show it: the first 12 hex digits. */
export function shortImageId(id: string): string {
  return id.replace(/^sha256:/, '').slice(0, 12);
}

/** "4 layers" or "4 layers, 3 already present": what a load or pull of an image did. */
export function layersDone(layers: ReadonlyArray<{ reused: boolean }>): string {
  const reused = layers.filter((l) => l.reused).length;
  return `${layers.length} layer${layers.length === 1 ? '' : 's'}${reused > 0 ? `, ${reused} already present` : ''}`;
}

/** A debug line on stderr (`unionctl: debug: …`), written only at --log-level debug. */
export function printDebug(message: string): void {
  if (logs('debug')) eprintln(`unionctl: debug: ${escapeControls(message)}`);
}
