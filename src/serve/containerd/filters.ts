/**
 * containerd's filter syntax (its `filters` package), as List/Walk receive it:
 *
 *   filters   := filter, filter, …        (the request's list: any of them matches)
 *   filter    := selector ("," selector)*  (all of them match)
 *   selector  := fieldpath [ op value ]    (no op: the field is present and not empty)
 *   fieldpath := field ("." field)*        field: [A-Za-z_][A-Za-z0-9_]* or a "quoted string"
 *   op        := "==" | "!=" | "~="        (~= : the value is a regular expression)
 *   value     := "quoted string" | chars up to the next "," (no spaces)
 *
 * A snapshot's fields are name, parent, kind (Active, View, Committed; compared without case) and
 * labels.<key>. A filter that does not parse is USAGE naming where.
 */
import { UnionctlError } from '../../errors.js';

export interface SnapshotFields {
  name: string;
  parent: string;
  kind: string;
  labels: Record<string, string>;
}

type Op = '==' | '!=' | '~=';

interface Selector {
  path: string[];
  op?: Op;
  value?: string;
  regexp?: RegExp;
}

/** A matcher for "any of these filters"; no filters matches everything. */
export function compileFilters(filters: string[]): (s: SnapshotFields) => boolean {
  const parsed = filters.filter((f) => f.trim() !== '').map(parseFilter);
  if (parsed.length === 0) return () => true;
  return (s) => parsed.some((selectors) => selectors.every((sel) => matches(sel, s)));
}

function matches(sel: Selector, s: SnapshotFields): boolean {
  const actual = fieldValue(sel.path, s);
  if (sel.op === undefined) return actual !== undefined && actual !== '';
  const isKind = sel.path.length === 1 && sel.path[0] === 'kind';
  const a = isKind ? (actual ?? '').toLowerCase() : (actual ?? '');
  const v = isKind ? sel.value!.toLowerCase() : sel.value!;
  if (sel.op === '==') return actual !== undefined && a === v;
  if (sel.op === '!=') return a !== v;
  return actual !== undefined && sel.regexp!.test(actual);
}

function fieldValue(path: string[], s: SnapshotFields): string | undefined {
  const [head, ...rest] = path;
  if (rest.length === 0) {
    if (head === 'name') return s.name;
    if (head === 'parent') return s.parent;
    if (head === 'kind') return s.kind;
    return undefined;
  }
  if (head === 'labels') return s.labels[rest.join('.')];
  return undefined;
}

/** One filter string into its selectors. */
export function parseFilter(text: string): Selector[] {
  const p = new Parser(text);
  const selectors = [p.selector()];
  while (p.peek() === ',') {
    p.advance();
    selectors.push(p.selector());
  }
  p.expectEnd();
  return selectors;
}

class Parser {
  private pos = 0;

  constructor(private readonly text: string) {}

  peek(): string | undefined {
    this.skipSpace();
    return this.text[this.pos];
  }

  advance(n = 1): void {
    this.pos += n;
  }

  expectEnd(): void {
    if (this.peek() !== undefined) this.fail('unexpected text');
  }

  selector(): Selector {
    const path = [this.field()];
    while (this.peek() === '.') {
      this.advance();
      path.push(this.field());
    }
    const op = this.operator();
    if (op === undefined) return { path };
    const value = this.value();
    if (op !== '~=') return { path, op, value };
    try {
      return { path, op, value, regexp: new RegExp(value) };
    } catch {
      return this.fail(`bad regular expression ${JSON.stringify(value)}`);
    }
  }

  private field(): string {
    if (this.peek() === '"') return this.quoted();
    const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(this.text.slice(this.pos));
    if (m === null) return this.fail('expected a field name');
    this.advance(m[0].length);
    return m[0];
  }

  private operator(): Op | undefined {
    this.skipSpace();
    const two = this.text.slice(this.pos, this.pos + 2);
    if (two === '==' || two === '!=' || two === '~=') {
      this.advance(2);
      return two;
    }
    return undefined;
  }

  private value(): string {
    if (this.peek() === '"') return this.quoted();
    const m = /^[^,\s]+/.exec(this.text.slice(this.pos));
    if (m === null) return this.fail('expected a value');
    this.advance(m[0].length);
    return m[0];
  }

  /** A double-quoted string with backslash escapes (\" \\ \n \t and the like). */
  private quoted(): string {
    let out = '';
    for (let i = this.pos + 1; i < this.text.length; i++) {
      const c = this.text[i]!;
      if (c === '"') {
        this.pos = i + 1;
        return out;
      }
      if (c === '\\') {
        const next = this.text[++i];
        if (next === undefined) break;
        out += next === 'n' ? '\n' : next === 't' ? '\t' : next;
      } else out += c;
    }
    return this.fail('unterminated quoted string');
  }

  private skipSpace(): void {
    while (this.text[this.pos] === ' ' || this.text[this.pos] === '\t') this.pos++;
  }

  private fail(what: string): never {
    throw new UnionctlError('USAGE', `bad filter ${JSON.stringify(this.text)} at character ${this.pos + 1}: ${what}`, {
      hint: 'filters look like labels."containerd.io/snapshot.ref"==sha256:…,parent==name',
    });
  }
}
