/**
 * `--format TEMPLATE`: the Go-template subset docker and podman users write, rendered over the
 * JSON objects the command would print with --json (json-shapes.ts).
 *
 *   {{.id}} {{.Size}}            a field (matched without regard to case: .ID is .id); {{.a.b}} nests
 *   {{.}}                        the object itself
 *   {{json .}} {{.names | json}} a value as compact JSON; a pipe hands its value to the next function
 *   {{join .names ","}}          functions: json, join, upper, lower, title, len, index, truncate, split
 *   {{range .layers}}{{.id}} {{end}}   {{if .writable}}rw{{else}}ro{{end}}
 *   {{- / -}}                    trim the white space before / after the action
 *   table {{.id}}\t{{.size}}     a table: a header row made of the field names, columns at the tabs
 *
 * `\t` and `\n` written as two characters are a tab and a newline (docker does the same), and
 * `--format json` is `{{json .}}`. A value that is null prints as nothing, a list as [a b], an
 * object as JSON. Not supported, refused with USAGE when parsed: variables ($x), `with`,
 * `define`/`template`/`block`, comparison functions.
 */
import { UnionctlError } from '../errors.js';

type Node =
  | { kind: 'text'; text: string }
  | { kind: 'print'; pipeline: Command[] }
  | { kind: 'range' | 'if'; pipeline: Command[]; body: Node[]; otherwise: Node[] };

/** One stage of a pipeline: a function with arguments, or a single value. */
type Command = Operand[];

type Operand = { kind: 'field'; path: string[] } | { kind: 'literal'; value: unknown } | { kind: 'function'; name: string };

export interface Template {
  /** The source as the user wrote it, for messages. */
  source: string;
  nodes: Node[];
  /** `table …`: render as a table with a header row. */
  table: boolean;
  /** The header cells of a table (the field each column shows, in capitals). */
  header: string[];
}

const FUNCTIONS: Record<string, (...args: unknown[]) => unknown> = {
  json: (v) => JSON.stringify(v ?? null),
  join: (list, sep) =>
    asList(list, 'join')
      .map(show)
      .join(String(sep ?? '')),
  upper: (v) => show(v).toUpperCase(),
  lower: (v) => show(v).toLowerCase(),
  title: (v) => show(v).replace(/(^|\s)\S/g, (c) => c.toUpperCase()),
  len: (v) => (typeof v === 'string' ? v.length : Array.isArray(v) ? v.length : isObject(v) ? Object.keys(v).length : 0),
  index: (v, ...keys) =>
    keys.reduce((at: unknown, k) => (Array.isArray(at) ? at[Number(k)] : isObject(at) ? at[String(k)] : null), v) ?? null,
  // Either order: {{truncate .id 12}}, and {{.id | truncate 12}} (where the pipe hands the value in last).
  truncate: (v, n) => (typeof v === 'number' ? show(n).slice(0, v) : show(v).slice(0, Number(n))),
  split: (v, sep) => show(v).split(String(sep)),
};

/** Parses a --format template. Refuses USAGE, naming the place, for one it cannot parse. */
export function parseTemplate(source: string): Template {
  let text = source.replace(/\\t/g, '\t').replace(/\\n/g, '\n');
  if (text.trim() === 'json') text = '{{json .}}';
  const table = /^table\s/.test(text);
  if (table) text = text.replace(/^table\s+/, '');
  const parser = new Parser(text, source);
  const nodes = parser.parseNodes(new Set());
  return { source, nodes, table, header: table ? headerOf(text) : [] };
}

/** Renders the template over one object. Refuses USAGE for a field the object does not have (naming the ones it has). */
export function renderTemplate(template: Template, value: unknown): string {
  return renderNodes(template, template.nodes, value);
}

function renderNodes(t: Template, nodes: Node[], dot: unknown): string {
  let out = '';
  for (const node of nodes) {
    if (node.kind === 'text') out += node.text;
    else if (node.kind === 'print') out += show(evaluate(t, node.pipeline, dot));
    else if (node.kind === 'if') out += renderNodes(t, truthy(evaluate(t, node.pipeline, dot)) ? node.body : node.otherwise, dot);
    else {
      const items = evaluate(t, node.pipeline, dot);
      const list = Array.isArray(items)
        ? items
        : isObject(items)
          ? Object.keys(items)
              .sort()
              .map((k) => items[k])
          : [];
      if (list.length === 0) out += renderNodes(t, node.otherwise, dot);
      for (const item of list) out += renderNodes(t, node.body, item);
    }
  }
  return out;
}

function evaluate(t: Template, pipeline: Command[], dot: unknown): unknown {
  let carried: unknown[] = [];
  for (const command of pipeline) {
    const [head, ...rest] = command;
    const args = rest.map((o) => operandValue(t, o, dot));
    if (head!.kind === 'function') carried = [FUNCTIONS[head!.name]!(...args, ...carried)];
    else if (rest.length > 0 || carried.length > 0) throw usage(t, 'only a function takes arguments or a piped value');
    else carried = [operandValue(t, head!, dot)];
  }
  return carried[0];
}

function operandValue(t: Template, operand: Operand, dot: unknown): unknown {
  if (operand.kind === 'literal') return operand.value;
  if (operand.kind === 'function') return FUNCTIONS[operand.name]!();
  let at = dot;
  for (const name of operand.path) {
    if (at === null || at === undefined) return null;
    if (!isObject(at)) throw usage(t, `.${operand.path.join('.')}: ${JSON.stringify(at)} has no field ${name}`);
    const key = name in at ? name : Object.keys(at).find((k) => k.toLowerCase() === name.toLowerCase());
    if (key === undefined) throw usage(t, `no field ${name} (the fields are: ${Object.keys(at).join(', ')})`);
    at = at[key];
  }
  return at;
}

/** How a value prints: strings as they are, null as nothing, lists as [a b] (as Go prints them), objects as JSON. */
function show(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return `[${v.map(show).join(' ')}]`;
  if (isObject(v)) return JSON.stringify(v);
  return String(v);
}

/** Go's truth: false, 0, "", null, and empty lists and objects are false. */
function truthy(v: unknown): boolean {
  if (Array.isArray(v)) return v.length > 0;
  if (isObject(v)) return Object.keys(v).length > 0;
  return Boolean(v);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function asList(v: unknown, fn: string): unknown[] {
  if (Array.isArray(v)) return v;
  if (v === null || v === undefined) return [];
  throw new UnionctlError('USAGE', `--format: ${fn} needs a list, not ${JSON.stringify(v)}`);
}

function usage(t: Template | string, why: string): UnionctlError {
  const source = typeof t === 'string' ? t : t.source;
  return new UnionctlError('USAGE', `--format ${JSON.stringify(source)}: ${why}`, {
    hint: 'fields are those of the --json output, e.g. --format "{{.id}} {{.size}}" or --format "{{json .}}"',
  });
}

/** A table's header: each action's field name in capitals (its last path segment), the text around it dropped. */
function headerOf(text: string): string[] {
  return text.split('\t').map((cell) => {
    const fields = [...cell.matchAll(/\{\{-?\s*(?:[a-z]+\s+)?\.([A-Za-z0-9_.]*)[^}]*\}\}/g)].map((m) => m[1]!.split('.').at(-1)!);
    return (fields.length > 0 ? fields.join(' ') : cell.replace(/\{\{[^}]*\}\}/g, '').trim()).toUpperCase();
  });
}

/** A recursive-descent parser over the template text: text runs and {{ actions }}. */
class Parser {
  private pos = 0;

  constructor(
    private readonly text: string,
    private readonly source: string,
  ) {}

  /** Nodes up to the end, or up to an action named in `stops` (left for the caller to read). */
  parseNodes(stops: Set<string>): Node[] {
    const nodes: Node[] = [];
    while (this.pos < this.text.length) {
      const open = this.text.indexOf('{{', this.pos);
      const textEnd = open === -1 ? this.text.length : open;
      let text = this.text.slice(this.pos, textEnd);
      if (open !== -1 && this.text.startsWith('{{-', open)) text = text.trimEnd();
      if (text !== '') nodes.push({ kind: 'text', text });
      if (open === -1) {
        this.pos = this.text.length;
        break;
      }
      const action = this.readAction(open);
      const word = /^(\S+)/.exec(action.body)?.[1] ?? '';
      if (stops.has(word)) {
        this.pos = open; // the caller reads it again
        return nodes;
      }
      this.pos = action.end;
      if (word === 'end' || word === 'else') throw usage(this.source, `{{${word}}} without {{if}} or {{range}}`);
      if (word === 'if' || word === 'range') nodes.push(this.parseBlock(word, action.body.slice(word.length)));
      else nodes.push({ kind: 'print', pipeline: this.parsePipeline(action.body) });
    }
    if (stops.size > 0) throw usage(this.source, `{{${[...stops].join('}} or {{')}}} is missing`);
    return nodes;
  }

  private parseBlock(kind: 'if' | 'range', head: string): Node {
    const pipeline = this.parsePipeline(head);
    const body = this.parseNodes(new Set(['else', 'end']));
    let otherwise: Node[] = [];
    const next = this.readAction(this.pos);
    this.pos = next.end;
    if (next.body.trim() === 'else') {
      otherwise = this.parseNodes(new Set(['end']));
      this.pos = this.readAction(this.pos).end;
    }
    return { kind, pipeline, body, otherwise };
  }

  /** The action starting at `open` ("{{"): its body without the braces and trim markers, and where it ends. */
  private readAction(open: number): { body: string; end: number } {
    const close = this.text.indexOf('}}', open + 2);
    if (close === -1) throw usage(this.source, `the {{ at ${open + 1} is not closed`);
    let body = this.text.slice(open + 2, close);
    let end = close + 2;
    if (body.startsWith('-')) body = body.slice(1);
    if (body.endsWith('-')) {
      body = body.slice(0, -1);
      while (end < this.text.length && /\s/.test(this.text[end]!)) end++;
    }
    return { body: body.trim(), end };
  }

  private parsePipeline(body: string): Command[] {
    const stages = splitOutsideQuotes(body.trim(), '|');
    if (stages.some((s) => s.trim() === '')) throw usage(this.source, `{{${body.trim()}}} is empty or has an empty pipe stage`);
    return stages.map((stage) => this.parseCommand(stage.trim()));
  }

  private parseCommand(stage: string): Command {
    return tokens(stage, this.source).map((token, i): Operand => {
      if (token.startsWith('"') || token.startsWith('`')) return { kind: 'literal', value: token.slice(1, -1).replace(/\\"/g, '"') };
      if (/^-?\d+$/.test(token)) return { kind: 'literal', value: Number(token) };
      if (token === '.') return { kind: 'field', path: [] };
      if (token.startsWith('.')) return { kind: 'field', path: token.slice(1).split('.') };
      if (token.startsWith('$')) throw usage(this.source, `variables (${token}) are not supported`);
      if (!(token in FUNCTIONS)) throw usage(this.source, `unknown function ${token} (there are: ${Object.keys(FUNCTIONS).join(', ')})`);
      if (i > 0) throw usage(this.source, `${token} is a function: call it first, or in a pipe stage of its own`);
      return { kind: 'function', name: token };
    });
  }
}

/** Splits at `sep` where it is not inside "…" or `…`. */
function splitOutsideQuotes(text: string, sep: string): string[] {
  const parts: string[] = [];
  let quote: string | undefined;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote !== undefined) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === '`') quote = c;
    else if (c === sep) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts;
}

/** The words of a pipeline stage: quoted strings stay whole. */
function tokens(stage: string, source: string): string[] {
  const out: string[] = [];
  const re = /"(?:[^"\\]|\\.)*"|`[^`]*`|\S+/g;
  for (const m of stage.matchAll(re)) {
    const token = m[0];
    if ((token.startsWith('"') && (token.length < 2 || !token.endsWith('"'))) || (token.startsWith('`') && !token.endsWith('`')))
      throw usage(source, `the string ${token} is not closed`);
    out.push(token);
  }
  return out;
}
