/**
 * docs/json.md as a schema: its object tables (### Name, then | field | type | meaning |) and each
 * command's "Prints `TYPE`." line, parsed, so a test can check a command's real --json output
 * against what the documentation says it is — every field there, no field undocumented, each of
 * the documented type.
 *
 * Types are written the TypeScript way: string, number, boolean, null, object (any JSON object),
 * "literal", Name (an object table), T[], [A, B] (a tuple), A | B, ( T ), { a: T, b: U } (exactly
 * those fields). A field named `x?` may be left out.
 */
import { readFileSync } from 'node:fs';

export type DocType =
  | { kind: 'primitive'; name: 'string' | 'number' | 'boolean' | 'null' | 'object' }
  | { kind: 'literal'; value: string }
  | { kind: 'named'; name: string }
  | { kind: 'list'; of: DocType }
  | { kind: 'tuple'; items: DocType[] }
  | { kind: 'union'; options: DocType[] }
  | { kind: 'object'; fields: Map<string, { type: DocType; optional: boolean }> };

export interface JsonDocs {
  shapes: Map<string, DocType>;
  /** By command name ("ls", "export-storage"); undefined type: the command prints no JSON. */
  commands: Map<string, DocType | undefined>;
}

export function readJsonDocs(path: string): JsonDocs {
  const shapes = new Map<string, DocType>();
  const commands = new Map<string, DocType | undefined>();
  const sections = readFileSync(path, 'utf8').split(/^### /m).slice(1);
  for (const section of sections) {
    const [title, ...lines] = section.split('\n');
    const command = /^unionctl (\S+)$/.exec(title!.trim());
    if (command !== null) {
      const prints = lines.find((l) => l.startsWith('Prints '));
      const type = prints === undefined ? undefined : /^Prints `([^`]+)`/.exec(prints)?.[1];
      commands.set(command[1]!, type === undefined ? undefined : parseType(type));
      continue;
    }
    const fields = new Map<string, { type: DocType; optional: boolean }>();
    for (const row of lines.filter((l) => l.startsWith('| `'))) {
      // | `name` | `type` | meaning |   (a | inside a type cell is written \|)
      const cells = row.split(/(?<!\\)\|/).map((c) => c.trim());
      const name = /^`([^`]+)`$/.exec(cells[1]!)![1]!;
      const type = /^`(.+)`$/.exec(cells[2]!)![1]!.replace(/\\\|/g, '|');
      fields.set(name.replace(/\?$/, ''), { type: parseType(type), optional: name.endsWith('?') });
    }
    shapes.set(title!.trim(), { kind: 'object', fields });
  }
  return { shapes, commands };
}

/** Parses a type expression; throws naming it when it cannot. */
export function parseType(text: string): DocType {
  const tokens = text.match(/"[^"]*"|[A-Za-z_][A-Za-z0-9_]*\??|\[\]|[[\]{}(),:|]/g) ?? [];
  let pos = 0;
  const peek = () => tokens[pos];
  const take = (want?: string) => {
    const t = tokens[pos++];
    if (t === undefined || (want !== undefined && t !== want)) throw new Error(`bad type ${text}: expected ${want ?? 'more'} at ${t}`);
    return t;
  };
  const union = (): DocType => {
    const options = [postfix()];
    while (peek() === '|') {
      take('|');
      options.push(postfix());
    }
    return options.length === 1 ? options[0]! : { kind: 'union', options };
  };
  const postfix = (): DocType => {
    let t = primary();
    while (peek() === '[]') {
      take('[]');
      t = { kind: 'list', of: t };
    }
    return t;
  };
  const primary = (): DocType => {
    const t = take();
    if (t === '(') {
      const inner = union();
      take(')');
      return inner;
    }
    if (t === '[') {
      const items = [union()];
      while (peek() === ',') {
        take(',');
        items.push(union());
      }
      take(']');
      return { kind: 'tuple', items };
    }
    if (t === '{') {
      const fields = new Map<string, { type: DocType; optional: boolean }>();
      while (peek() !== '}') {
        const name = take();
        take(':');
        fields.set(name.replace(/\?$/, ''), { type: union(), optional: name.endsWith('?') });
        if (peek() === ',') take(',');
      }
      take('}');
      return { kind: 'object', fields };
    }
    if (t.startsWith('"')) return { kind: 'literal', value: t.slice(1, -1) };
    if (['string', 'number', 'boolean', 'null', 'object'].includes(t))
      return { kind: 'primitive', name: t as 'string' | 'number' | 'boolean' | 'null' | 'object' };
    return { kind: 'named', name: t };
  };
  const type = union();
  if (pos !== tokens.length) throw new Error(`bad type ${text}: left over from ${tokens[pos]}`);
  return type;
}

/** Why `value` is not of `type` (a path to the first mismatch), or undefined when it is. */
export function mismatch(docs: JsonDocs, type: DocType, value: unknown, at = '$'): string | undefined {
  switch (type.kind) {
    case 'primitive':
      if (type.name === 'null') return value === null ? undefined : `${at}: ${JSON.stringify(value)} is not null`;
      if (type.name === 'object')
        return typeof value === 'object' && value !== null && !Array.isArray(value) ? undefined : `${at}: not an object`;
      return typeof value === type.name ? undefined : `${at}: ${JSON.stringify(value)} is not a ${type.name}`;
    case 'literal':
      return value === type.value ? undefined : `${at}: ${JSON.stringify(value)} is not "${type.value}"`;
    case 'named': {
      const shape = docs.shapes.get(type.name);
      if (shape === undefined) return `${at}: docs/json.md has no object ${type.name}`;
      return mismatch(docs, shape, value, `${at}<${type.name}>`);
    }
    case 'list':
      if (!Array.isArray(value)) return `${at}: not a list`;
      for (const [i, item] of value.entries()) {
        const why = mismatch(docs, type.of, item, `${at}[${i}]`);
        if (why !== undefined) return why;
      }
      return undefined;
    case 'tuple':
      if (!Array.isArray(value) || value.length !== type.items.length) return `${at}: not a tuple of ${type.items.length}`;
      for (const [i, item] of type.items.entries()) {
        const why = mismatch(docs, item, value[i], `${at}[${i}]`);
        if (why !== undefined) return why;
      }
      return undefined;
    case 'union': {
      const whys = type.options.map((o) => mismatch(docs, o, value, at));
      return whys.includes(undefined) ? undefined : whys.join('; or ');
    }
    case 'object': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return `${at}: not an object`;
      const record = value as Record<string, unknown>;
      for (const key of Object.keys(record)) if (!type.fields.has(key)) return `${at}: field ${key} is not documented`;
      for (const [key, field] of type.fields) {
        if (!(key in record)) {
          if (field.optional) continue;
          return `${at}: documented field ${key} is missing`;
        }
        const why = mismatch(docs, field.type, record[key], `${at}.${key}`);
        if (why !== undefined) return why;
      }
      return undefined;
    }
  }
}
