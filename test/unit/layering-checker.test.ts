/**
 * The layering checker (test/helpers/layering.ts) on small made-up module graphs: what it parses as
 * an import, each rule, and cycle detection with and without type-only imports.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  buildImportGraph,
  checkEdge,
  describeCycle,
  findCycles,
  layeringViolations,
  parseImports,
  type ImportEdge,
  type SourceModule,
} from '../helpers/layering.js';

/** Modules from { path: source text }. */
const tree = (files: Record<string, string>): SourceModule[] => Object.entries(files).map(([path, text]) => ({ path, text }));

/** "from → to rule" of every violation, for compact assertions. */
function violationsOf(files: Record<string, string>): string[] {
  return layeringViolations(buildImportGraph(tree(files))).map((v) => `${v.edge.from} → ${v.edge.to} ${v.rule}`);
}

/** The import edges of a made-up tree. */
const edgesOf = (files: Record<string, string>): ImportEdge[] => buildImportGraph(tree(files)).edges;

/** Each cycle as its modules joined by spaces. */
const cycleNames = (edges: ImportEdge[], includeTypeOnly = false): string[] =>
  findCycles(edges, { includeTypeOnly }).map((c) => c.modules.join(' '));

const edge = (from: string, to: string, typeOnly = false): ImportEdge => ({ from, to, specifier: to, line: 1, kind: 'import', typeOnly });

describe('parseImports', () => {
  it('finds every kind of relative import and tells type-only ones apart', () => {
    const text = [
      "import { a } from './a.js';",
      "import type { B } from './b.js';",
      "import { type C, type D } from './c.js';",
      "import { type E, e } from './e.js';",
      "import './side.js';",
      "export * from './star.js';",
      "export type { T } from './t.js';",
      "export { u } from './u.js';",
      "import fs from 'node:fs';",
      "import { Command } from 'commander';",
      '// import { no } from "./comment.js";',
      'const s = "import { no } from \'./string.js\'";',
      'export async function f() {',
      "  const m = await import('./dyn.js');",
      '  const n = await import(`./tmpl.js`);',
      '  const computed = await import(s);',
      "  let t: typeof import('./typeof.js') | undefined;",
      "  const url = new URL('../../bench/runner.js', import.meta.url);",
      "  const dir = new URL('../..', import.meta.url);",
      '  return [m, n, computed, t, url, dir];',
      '}',
      "import old = require('./old.js');",
    ].join('\n');
    const refs = parseImports('src/x/y.ts', text).map((r) => `${r.line} ${r.kind}${r.typeOnly ? ' type' : ''} ${r.specifier}`);
    assert.deepEqual(refs, [
      '1 import ./a.js',
      '2 import type ./b.js',
      '3 import type ./c.js',
      '4 import ./e.js',
      '5 side-effect ./side.js',
      '6 re-export ./star.js',
      '7 re-export type ./t.js',
      '8 re-export ./u.js',
      '14 dynamic ./dyn.js',
      '15 dynamic ./tmpl.js',
      '17 import-type type ./typeof.js',
      '18 module-url ../../bench/runner.js',
      '22 require ./old.js',
    ]);
  });
});

describe('the layering rule', () => {
  it('accepts imports leftwards, within a folder, of errors.ts, and anything from the composition root', () => {
    assert.deepEqual(
      violationsOf({
        'src/errors.ts': 'export class E {}',
        'src/sys/a.ts': "import './b.js'; import { E } from '../errors.js';",
        'src/sys/b.ts': '',
        'src/archive/a.ts': "import '../sys/a.js';",
        'src/graph/a.ts': "import '../archive/a.js'; import '../sys/b.js';",
        'src/drivers/index.ts': "import './x/index.js'; import './y/index.js';",
        'src/drivers/x/index.ts': "import '../overlayfs/m.js'; import '../../graph/a.js'; import './d.js';",
        'src/drivers/x/d.ts': '',
        'src/drivers/y/index.ts': "import '../overlayfs/m.js';",
        'src/drivers/overlayfs/m.ts': "import '../../sys/a.js';",
        'src/image/a.ts': "import '../graph/a.js';",
        'src/cli/a.ts': "import '../image/a.js'; import '../drivers/index.js'; import '../index.js';",
        'src/index.ts': "export * from './cli/a.js'; export * from './drivers/x/d.js';",
      }),
      [],
    );
  });

  it('reports a backward edge, with the rule named', () => {
    const files = {
      'src/sys/a.ts': "import { g } from '../graph/g.js';",
      'src/graph/g.ts': "import type { C } from '../cli/c.js';\nexport const g = 1;",
      'src/cli/c.ts': 'export interface C {}',
    };
    // The type-only import counts for layering too.
    assert.deepEqual(violationsOf(files), ['src/sys/a.ts → src/graph/g.ts backward', 'src/graph/g.ts → src/cli/c.ts backward']);
    const [v] = layeringViolations(buildImportGraph(tree(files)));
    assert.equal(v.edge.line, 1);
    assert.match(v.why, /sys \(layer 0\) must not import graph \(layer 2\)/);
  });

  /** Made-up trees and the violations each must give (`from → to rule`, in source order). */
  const cases: { name: string; files: Record<string, string>; expected: string[] }[] = [
    {
      name: 'reports a sibling edge between drivers and image, both ways',
      files: {
        'src/drivers/x/d.ts': "import '../../image/i.js';",
        'src/image/i.ts': "const m = () => import('../drivers/x/d.js');",
      },
      expected: ['src/drivers/x/d.ts → src/image/i.ts sibling', 'src/image/i.ts → src/drivers/x/d.ts sibling'],
    },
    {
      name: 'keeps drivers apart: only drivers/overlayfs is shared, and it imports no driver',
      files: {
        'src/drivers/index.ts': "import './a/a.js';",
        'src/drivers/a/a.ts': "import '../b/b.js'; import '../overlayfs/s.js';",
        'src/drivers/b/b.ts': "import '../index.js';",
        'src/drivers/overlayfs/s.ts': "import '../a/a.js';",
      },
      expected: [
        'src/drivers/a/a.ts → src/drivers/b/b.ts driver-package',
        'src/drivers/b/b.ts → src/drivers/index.ts driver-package',
        'src/drivers/overlayfs/s.ts → src/drivers/a/a.ts driver-package',
      ],
    },
    {
      name: 'keeps errors.ts a leaf, index.ts for cli only, and src/ to itself',
      files: {
        'src/errors.ts': "import './sys/a.js';",
        'src/sys/a.ts': "import '../index.js';",
        'src/cli/c.ts': "import '../index.js'; const r = new URL('../../bench/runner.js', import.meta.url);",
        'src/index.ts': '',
      },
      expected: [
        'src/errors.ts → src/sys/a.ts errors-leaf',
        'src/sys/a.ts → src/index.ts composition-root',
        'src/cli/c.ts → bench/runner.ts outside-src',
      ],
    },
    {
      name: 'reports modules in unknown folders and imports of missing files',
      files: {
        'src/util/u.ts': "import '../sys/a.js';",
        'src/sys/a.ts': "import '../util/u.js';",
        'src/graph/g.ts': "import './missing.js';",
      },
      expected: [
        'src/util/u.ts → src/sys/a.ts unplaced',
        'src/sys/a.ts → src/util/u.ts unplaced',
        'src/graph/g.ts → src/graph/missing.js unresolved',
      ],
    },
  ];
  for (const c of cases) it(c.name, () => assert.deepEqual(violationsOf(c.files), c.expected));

  it('resolves .js to the .ts source, and a folder import to its index.ts', () => {
    const { edges, unresolved } = buildImportGraph(
      tree({ 'src/sys/a.ts': "import './b.js'; import './c';", 'src/sys/b.ts': '', 'src/sys/c/index.ts': '' }),
    );
    assert.deepEqual(
      edges.map((e) => e.to),
      ['src/sys/b.ts', 'src/sys/c/index.ts'],
    );
    assert.deepEqual(unresolved, []);
  });

  it('checks edges out of src/ only', () => {
    assert.equal(checkEdge(edge('bench/x.ts', 'src/cli/main.ts')), undefined);
    assert.equal(checkEdge(edge('src/cli/main.ts', 'bench/x.ts'))?.rule, 'outside-src');
  });
});

describe('cycle detection', () => {
  it('finds a cycle and names it by its modules, with one closed path', () => {
    const edges = edgesOf({
      'src/graph/a.ts': "import './b.js';",
      'src/graph/b.ts': "import './c.js';",
      'src/graph/c.ts': "import './a.js'; import './d.js';",
      'src/graph/d.ts': '',
    });
    const cycles = findCycles(edges);
    assert.equal(cycles.length, 1);
    assert.deepEqual(cycles[0].modules, ['src/graph/a.ts', 'src/graph/b.ts', 'src/graph/c.ts']);
    assert.deepEqual(cycles[0].path, ['src/graph/a.ts', 'src/graph/b.ts', 'src/graph/c.ts', 'src/graph/a.ts']);
    assert.match(describeCycle(cycles[0]), /src\/graph\/c\.ts:1 → src\/graph\/a\.ts \(import '\.\/a\.js'\)/);
  });

  /** Made-up trees and their cycles: over runtime imports, and counting type-only ones too. */
  const cases: { name: string; files: Record<string, string>; runtime: string[]; withTypes: string[] }[] = [
    {
      name: 'finds two separate cycles, a module importing itself, and a cycle through a dynamic import',
      files: {
        'src/sys/a.ts': "import './b.js';",
        'src/sys/b.ts': "export * from './a.js';",
        'src/sys/self.ts': "import './self.js';",
        'src/graph/x.ts': "import '../image/y.js';",
        'src/image/y.ts': "export const f = () => import('../graph/x.js');",
      },
      runtime: ['src/graph/x.ts src/image/y.ts', 'src/sys/a.ts src/sys/b.ts', 'src/sys/self.ts'],
      withTypes: ['src/graph/x.ts src/image/y.ts', 'src/sys/a.ts src/sys/b.ts', 'src/sys/self.ts'],
    },
    {
      name: 'leaves out type-only imports, unless asked to count them',
      files: {
        'src/graph/driver.ts': "import type { Entry } from './registry.js';\nexport interface Driver { e?: Entry }",
        'src/graph/registry.ts': "import { type Driver } from './driver.js';\nexport interface Entry { d?: Driver }",
        'src/graph/p.ts': "import { q } from './q.js';",
        'src/graph/q.ts': "let t: typeof import('./p.js') | undefined; export const q = t;",
      },
      runtime: [],
      withTypes: ['src/graph/driver.ts src/graph/registry.ts', 'src/graph/p.ts src/graph/q.ts'],
    },
    {
      name: 'counts an import without `type` as runtime even when only types are used',
      files: {
        'src/graph/a.ts': "import { B } from './b.js';\nexport interface A { b: B }",
        'src/graph/b.ts': "import { A } from './a.js';\nexport interface B { a: A }",
      },
      runtime: ['src/graph/a.ts src/graph/b.ts'],
      withTypes: ['src/graph/a.ts src/graph/b.ts'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const edges = edgesOf(c.files);
      assert.deepEqual(cycleNames(edges), c.runtime);
      assert.deepEqual(cycleNames(edges, true), c.withTypes);
    });
  }
});
