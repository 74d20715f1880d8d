/**
 * The layering checker behind test/unit/layering.test.ts: reads the TypeScript sources of src/,
 * collects every module-to-module import, and reports (1) imports that break the layering rule and
 * (2) import cycles.
 *
 * The layering rule (left = lower; a module may import its own folder and folders to its left):
 *
 *   src/sys ← src/archive ← src/graph ← src/drivers | src/image ← src/cli
 *
 * - drivers and image are siblings: neither may import the other;
 * - inside drivers, each driver's folder (drivers/overlay2/, drivers/aufs/, …) is its own package:
 *   it may import itself and drivers/overlayfs/ (the code drivers share), not another driver;
 *   drivers/overlayfs/ imports no driver; modules directly in drivers/ (the built-in list) may
 *   import any of them;
 * - src/errors.ts is a leaf: everyone may import it, it imports nothing of src/;
 * - src/index.ts is the composition root: it may import anything; only src/cli may import it;
 * - nothing in src/ imports a module outside src/ (bench/, test/): the library ships without them;
 * - a module in any other place under src/ is reported until the rule says where it belongs.
 *
 * What counts as an import: `import … from`, `import '…'`, `export … from`, `import x = require()`,
 * `import('…')` and `require('…')` with a literal path, `typeof import('…')` in a type, and
 * `new URL('./x.js', import.meta.url)` naming a module (how code finds a module it then loads by
 * path, e.g. cli/bench-command.ts → bench/runner.js). Only relative specifiers: packages and node:
 * builtins are not modules of the project.
 *
 * Type-only imports (`import type`, `export type … from`, `import { type A, type B }`, `typeof
 * import()`):
 * - COUNT for layering: a type from a higher layer still ties the lower layer's API to it;
 * - do NOT count for cycles: tsc erases them, so they cannot make a module see another half-loaded
 *   (the thing a runtime cycle does). An import without `type` counts as runtime even when tsc
 *   would elide it because only types are used: write `import type` for those — the checker stays
 *   purely syntactic and errs on the safe side.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import ts from 'typescript';

/** One source file: its path from the repository root ("src/graph/store.ts") and its text. */
export interface SourceModule {
  path: string;
  text: string;
}

export type ImportKind = 'import' | 'side-effect' | 're-export' | 'dynamic' | 'require' | 'import-type' | 'module-url';

/** One import as written in a file. */
export interface ImportRef {
  specifier: string;
  /** 1-based line of the specifier. */
  line: number;
  kind: ImportKind;
  /** Erased by tsc: `import type`, all-`type` specifiers, `export type … from`, `typeof import()`. */
  typeOnly: boolean;
}

/** One module-to-module edge; `to` is a path from the repository root. */
export interface ImportEdge extends ImportRef {
  from: string;
  to: string;
}

/** Every relative import/export-from/require/import() of one file, in source order. */
export function parseImports(fileName: string, text: string): ImportRef[] {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const refs: ImportRef[] = [];
  const add = (lit: ts.Node, kind: ImportKind, typeOnly: boolean) => {
    if (!ts.isStringLiteralLike(lit)) return;
    if (!lit.text.startsWith('./') && !lit.text.startsWith('../') && lit.text !== '.' && lit.text !== '..') return;
    const line = sf.getLineAndCharacterOfPosition(lit.getStart(sf)).line + 1;
    refs.push({ specifier: lit.text, line, kind, typeOnly });
  };
  const isImportMetaUrl = (n: ts.Node) =>
    ts.isPropertyAccessExpression(n) &&
    n.name.text === 'url' &&
    ts.isMetaProperty(n.expression) &&
    n.expression.keywordToken === ts.SyntaxKind.ImportKeyword;

  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      const clause = node.importClause;
      if (clause === undefined) add(node.moduleSpecifier, 'side-effect', false);
      else {
        const named = clause.namedBindings;
        const allNamedAreTypes =
          clause.name === undefined &&
          named !== undefined &&
          ts.isNamedImports(named) &&
          named.elements.length > 0 &&
          named.elements.every((e) => e.isTypeOnly);
        add(node.moduleSpecifier, 'import', clause.isTypeOnly || allNamedAreTypes);
      }
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier !== undefined) {
      const clause = node.exportClause;
      const allNamedAreTypes =
        clause !== undefined && ts.isNamedExports(clause) && clause.elements.length > 0 && clause.elements.every((e) => e.isTypeOnly);
      add(node.moduleSpecifier, 're-export', node.isTypeOnly || allNamedAreTypes);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      add(node.moduleReference.expression, 'require', node.isTypeOnly);
    } else if (ts.isImportTypeNode(node)) {
      const arg = node.argument;
      if (ts.isLiteralTypeNode(arg)) add(arg.literal, 'import-type', true);
    } else if (ts.isCallExpression(node) && node.arguments.length >= 1) {
      if (node.expression.kind === ts.SyntaxKind.ImportKeyword) add(node.arguments[0], 'dynamic', false);
      else if (ts.isIdentifier(node.expression) && node.expression.text === 'require') add(node.arguments[0], 'require', false);
    } else if (
      ts.isNewExpression(node) &&
      ts.isIdentifier(node.expression) &&
      node.expression.text === 'URL' &&
      node.arguments?.length === 2 &&
      isImportMetaUrl(node.arguments[1]) &&
      ts.isStringLiteralLike(node.arguments[0]) &&
      /\.(m|c)?[jt]s$/.test(node.arguments[0].text)
    ) {
      add(node.arguments[0], 'module-url', false);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return refs;
}

/**
 * The module a relative specifier names, as a path from the repository root: `./x.js` is the
 * source `./x.ts` when that exists (NodeNext style), else the file itself, else `./x/index.ts`.
 * Outside the known sources (bench/, test/) the `.js` → `.ts` mapping is assumed. Undefined when
 * the import points inside the known source tree at nothing that exists.
 */
export function resolveImport(from: string, specifier: string, known: ReadonlySet<string>, knownRoot = 'src/'): string | undefined {
  const base = posix.normalize(posix.join(posix.dirname(from), specifier));
  const candidates = [
    base
      .replace(/\.js$/, '.ts')
      .replace(/\.mjs$/, '.mts')
      .replace(/\.cjs$/, '.cts'),
    base.replace(/\.js$/, '.tsx'),
    base,
    `${base}.ts`,
    posix.join(base, 'index.ts'),
  ];
  const found = candidates.find((c) => known.has(c));
  if (found !== undefined) return found;
  if (base.startsWith(knownRoot) || base === knownRoot.replace(/\/$/, '')) return undefined;
  return candidates[0];
}

/** Every edge between the given modules (and out of them), plus the imports that resolve to nothing. */
export function buildImportGraph(modules: SourceModule[]): { edges: ImportEdge[]; unresolved: ImportEdge[] } {
  const known = new Set(modules.map((m) => m.path));
  const edges: ImportEdge[] = [];
  const unresolved: ImportEdge[] = [];
  for (const m of modules) {
    for (const ref of parseImports(m.path, m.text)) {
      const to = resolveImport(m.path, ref.specifier, known);
      if (to === undefined)
        unresolved.push({ ...ref, from: m.path, to: posix.normalize(posix.join(posix.dirname(m.path), ref.specifier)) });
      else edges.push({ ...ref, from: m.path, to });
    }
  }
  return { edges, unresolved };
}

// ---- the layering rule -------------------------------------------------------------------------

/** The layers of src/, lowest first; equal ranks are siblings. */
export const LAYER_RANK: Readonly<Record<string, number>> = {
  sys: 0,
  archive: 1,
  graph: 2,
  drivers: 3,
  image: 3,
  serve: 4,
  cli: 5,
};
/** The folder of code the drivers share. */
export const SHARED_DRIVER_PACKAGE = 'overlayfs';

type Place =
  | { kind: 'layer'; layer: string; driverPackage?: string }
  | { kind: 'errors' }
  | { kind: 'root' }
  | { kind: 'outside' }
  | { kind: 'unknown'; folder: string };

function placeOf(path: string): Place {
  if (!path.startsWith('src/')) return { kind: 'outside' };
  const parts = path.slice('src/'.length).split('/');
  if (parts.length === 1) {
    if (parts[0] === 'errors.ts') return { kind: 'errors' };
    if (parts[0] === 'index.ts') return { kind: 'root' };
    return { kind: 'unknown', folder: 'src/' };
  }
  const layer = parts[0];
  if (!(layer in LAYER_RANK)) return { kind: 'unknown', folder: `src/${layer}/` };
  return { kind: 'layer', layer, driverPackage: layer === 'drivers' && parts.length > 2 ? parts[1] : undefined };
}

export type LayeringRule =
  | 'backward' // a lower layer imports a higher one
  | 'sibling' // drivers ↔ image
  | 'driver-package' // one driver's folder imports another's
  | 'errors-leaf' // src/errors.ts imports something of src/
  | 'composition-root' // something other than cli imports src/index.ts
  | 'outside-src' // src/ imports bench/, test/, …
  | 'unplaced' // a module in a folder the rule does not know
  | 'unresolved'; // a relative import of src/ that names no file

export interface LayeringViolation {
  edge: ImportEdge;
  rule: LayeringRule;
  /** "graph (layer 2) must not import drivers (layer 3)". */
  why: string;
}

/** Which rule (if any) the edge breaks. */
export function checkEdge(edge: ImportEdge): { rule: LayeringRule; why: string } | undefined {
  const from = placeOf(edge.from);
  const to = placeOf(edge.to);
  if (from.kind === 'outside') return undefined; // only src/ is checked
  if (from.kind === 'unknown')
    return { rule: 'unplaced', why: `${edge.from} is in ${from.folder}, which has no place in the layering rule` };
  if (to.kind === 'outside') return { rule: 'outside-src', why: `src/ must not import ${edge.to} (outside src/: not part of the library)` };
  if (from.kind === 'errors') return { rule: 'errors-leaf', why: 'src/errors.ts is a leaf and imports nothing of src/' };
  if (from.kind === 'root') return undefined; // the composition root may import anything
  if (to.kind === 'errors') return undefined;
  if (to.kind === 'unknown') return { rule: 'unplaced', why: `${edge.to} is in ${to.folder}, which has no place in the layering rule` };
  if (to.kind === 'root') {
    return from.layer === 'cli'
      ? undefined
      : { rule: 'composition-root', why: `only src/cli may import the composition root src/index.ts, not ${from.layer}` };
  }
  if (from.layer === to.layer) {
    if (from.layer !== 'drivers') return undefined;
    const a = from.driverPackage;
    const b = to.driverPackage;
    if (a === undefined) return undefined; // drivers/index.ts: the list of built-in drivers
    if (a === b) return undefined;
    if (b === SHARED_DRIVER_PACKAGE && a !== SHARED_DRIVER_PACKAGE) return undefined;
    if (b === undefined) {
      return {
        rule: 'driver-package',
        why: `drivers/${a}/ must not import ${edge.to} (the modules directly in drivers/ sit above every driver)`,
      };
    }
    return {
      rule: 'driver-package',
      why:
        a === SHARED_DRIVER_PACKAGE
          ? `drivers/${SHARED_DRIVER_PACKAGE}/ (shared driver code) must not import the driver drivers/${b}/`
          : `drivers/${a}/ must not import another driver, drivers/${b}/ (shared code belongs in drivers/${SHARED_DRIVER_PACKAGE}/)`,
    };
  }
  const ra = LAYER_RANK[from.layer];
  const rb = LAYER_RANK[to.layer];
  if (rb < ra) return undefined;
  if (rb === ra) return { rule: 'sibling', why: `${from.layer} and ${to.layer} are siblings and must not import each other` };
  return { rule: 'backward', why: `${from.layer} (layer ${ra}) must not import ${to.layer} (layer ${rb}): imports go only leftwards` };
}

export function layeringViolations(graph: { edges: ImportEdge[]; unresolved: ImportEdge[] }): LayeringViolation[] {
  const out: LayeringViolation[] = [];
  for (const edge of graph.edges) {
    const broken = checkEdge(edge);
    if (broken !== undefined) out.push({ edge, ...broken });
  }
  for (const edge of graph.unresolved) out.push({ edge, rule: 'unresolved', why: `${edge.specifier} names no module` });
  return out;
}

// ---- cycles ------------------------------------------------------------------------------------

export interface ImportCycle {
  /** The modules of one strongly connected component, sorted: the cycle's identity. */
  modules: string[];
  /** One concrete closed path through it, first module repeated at the end. */
  path: string[];
  /** The edges along `path`. */
  edges: ImportEdge[];
}

/**
 * The import cycles: one per strongly connected component of more than one module (or a module
 * importing itself), over runtime edges only unless `includeTypeOnly`.
 */
export function findCycles(edges: ImportEdge[], opts: { includeTypeOnly?: boolean } = {}): ImportCycle[] {
  const used = edges.filter((e) => opts.includeTypeOnly === true || !e.typeOnly);
  const next = new Map<string, ImportEdge[]>();
  for (const e of used) {
    if (!next.has(e.from)) next.set(e.from, []);
    next.get(e.from)!.push(e);
    if (!next.has(e.to)) next.set(e.to, []);
  }
  // Tarjan's strongly connected components (iterative enough for a few hundred modules).
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const components: string[][] = [];
  let counter = 0;
  const strong = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter += 1;
    stack.push(v);
    onStack.add(v);
    for (const e of next.get(v)!) {
      if (!index.has(e.to)) {
        strong(e.to);
        low.set(v, Math.min(low.get(v)!, low.get(e.to)!));
      } else if (onStack.has(e.to)) low.set(v, Math.min(low.get(v)!, index.get(e.to)!));
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      components.push(comp);
    }
  };
  for (const v of [...next.keys()].sort()) if (!index.has(v)) strong(v);

  const cycles: ImportCycle[] = [];
  for (const comp of components) {
    const members = new Set(comp);
    const selfLoop = comp.length === 1 && next.get(comp[0])!.some((e) => e.to === comp[0]);
    if (comp.length < 2 && !selfLoop) continue;
    const modules = [...comp].sort();
    cycles.push({ modules, ...shortestCycleThrough(modules[0], members, next) });
  }
  return cycles.sort((a, b) => a.modules[0].localeCompare(b.modules[0]));
}

/** Breadth-first: the shortest path from `start` back to itself inside the component. */
function shortestCycleThrough(
  start: string,
  members: Set<string>,
  next: Map<string, ImportEdge[]>,
): { path: string[]; edges: ImportEdge[] } {
  const via = new Map<string, ImportEdge>();
  const queue = [start];
  for (let i = 0; i < queue.length; i++) {
    const v = queue[i];
    for (const e of next.get(v)!) {
      if (!members.has(e.to)) continue;
      if (e.to === start) {
        const edges = [e];
        for (let at = v; at !== start; at = via.get(at)!.from) edges.unshift(via.get(at)!);
        return { path: [start, ...edges.map((x) => x.to)], edges };
      }
      if (!via.has(e.to)) {
        via.set(e.to, e);
        queue.push(e.to);
      }
    }
  }
  throw new Error(`no cycle through ${start}`); // cannot happen for a strongly connected component
}

// ---- reading the tree and reporting -----------------------------------------------------------

/** The .ts sources (not .d.ts) under `repo`/src, paths from the repository root. */
export function readSources(repo: string, dir = 'src'): SourceModule[] {
  const out: SourceModule[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(repo, rel)).sort()) {
      const p = posix.join(rel, name);
      if (statSync(join(repo, p)).isDirectory()) walk(p);
      else if (/\.(m|c)?tsx?$/.test(name) && !/\.d\.(m|c)?ts$/.test(name)) out.push({ path: p, text: readFileSync(join(repo, p), 'utf8') });
    }
  };
  walk(dir);
  return out;
}

/** "src/graph/store.ts:34 → src/drivers/index.ts (import '../drivers/index.js')". */
export function describeEdge(e: ImportEdge): string {
  const how = e.kind === 'import' || e.kind === 'side-effect' ? 'import' : e.kind;
  return `${e.from}:${e.line} → ${e.to} (${e.typeOnly ? 'type-only ' : ''}${how} '${e.specifier}')`;
}

export function describeCycle(c: ImportCycle): string {
  return `cycle ${c.path.join(' → ')}\n${c.edges.map((e) => `      ${describeEdge(e)}`).join('\n')}`;
}
