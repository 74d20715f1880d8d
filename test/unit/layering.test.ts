/**
 * The layering rule of src/ and the absence of import cycles, checked on the sources (see
 * test/helpers/layering.ts for the rule, what counts as an import, and why type-only imports count
 * for layering but not for cycles):
 *
 *   src/sys ← src/archive ← src/graph ← src/drivers | src/image ← src/serve ← src/cli
 *
 * Fails naming each offending import (file:line → target, which rule) and each cycle. The
 * violations present when the check was written are allowed below, edge by edge; the test also
 * fails when an allowed one has gone, so the list shrinks with the code until it is empty.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  buildImportGraph,
  describeCycle,
  describeEdge,
  findCycles,
  layeringViolations,
  readSources,
  type LayeringRule,
} from '../helpers/layering.js';

interface AllowedEdge {
  from: string;
  to: string;
  rule: LayeringRule;
  note: string;
}

interface AllowedCycle {
  /** The cycle's modules, sorted (the whole strongly connected component, exactly). */
  modules: string[];
  note: string;
}

/**
 * Layering violations tolerated for now: every import from `from` to `to` that breaks `rule`.
 * Remove an entry when its import goes (the test says when); add none.
 */
const ALLOWED_EDGES: AllowedEdge[] = [
  // `unionctl bench` finds bench/runner.js next to the build and loads it as a plugin (new URL +
  // import()), typed by the CLI's own BenchSuite interface: no static import of bench/ remains.
  {
    from: 'src/cli/bench-command.ts',
    to: 'bench/runner.ts',
    rule: 'outside-src',
    note: 'the bench command belongs to bench/, not the library',
  },
];

/** Runtime import cycles tolerated for now; same rules as ALLOWED_EDGES. */
const ALLOWED_CYCLES: AllowedCycle[] = [];

/** The repository (tests run from it, as everywhere in test/; UNIONCTL_REPO overrides). */
const REPO = process.env.UNIONCTL_REPO ?? process.cwd();

const edgeKey = (e: { from: string; to: string; rule: string }) => `${e.from} → ${e.to} [${e.rule}]`;

describe('the layering of src/', () => {
  assert.ok(existsSync(join(REPO, 'src', 'index.ts')), `run the tests from the repository (no src/index.ts in ${REPO})`);
  const graph = buildImportGraph(readSources(REPO));
  const violations = layeringViolations(graph);
  const cycles = findCycles(graph.edges);

  it('reads the whole import graph of src/', () => {
    // A parser that found nothing would make the checks below pass vacuously.
    assert.ok(graph.edges.length > 200, `only ${graph.edges.length} imports found in src/`);
    assert.ok(
      graph.edges.some((e) => e.from === 'src/cli/main.ts' && e.to === 'src/cli/commands.ts'),
      'the import of ./commands.js in src/cli/main.ts was not found',
    );
  });

  it('has no import that breaks the layering rule (beyond the allow-list)', (t) => {
    const allowed = new Set(ALLOWED_EDGES.map(edgeKey));
    const offending = violations.filter((v) => !allowed.has(edgeKey({ ...v.edge, rule: v.rule })));
    for (const v of violations.filter((x) => allowed.has(edgeKey({ ...x.edge, rule: x.rule })))) {
      t.diagnostic(`allowed for now: ${describeEdge(v.edge)} — ${v.rule}: ${v.why}`);
    }
    assert.deepEqual(
      offending.map((v) => `${describeEdge(v.edge)} — ${v.rule}: ${v.why}`),
      [],
      `imports that break the layering rule (sys ← archive ← graph ← drivers | image ← serve ← cli; see test/helpers/layering.ts):\n${offending
        .map((v) => `  ${describeEdge(v.edge)}\n    ${v.rule}: ${v.why}`)
        .join('\n')}`,
    );
  });

  it('has no runtime import cycle (beyond the allow-list)', (t) => {
    const allowed = new Set(ALLOWED_CYCLES.map((c) => c.modules.join(' ')));
    const offending = cycles.filter((c) => !allowed.has(c.modules.join(' ')));
    for (const c of cycles.filter((x) => allowed.has(x.modules.join(' ')))) t.diagnostic(`allowed for now: ${describeCycle(c)}`);
    assert.deepEqual(
      offending.map((c) => c.path.join(' → ')),
      [],
      `import cycles (runtime imports; write \`import type\` where only types are used):\n${offending.map((c) => `  ${describeCycle(c)}`).join('\n')}`,
    );
  });

  it('allows only violations that still exist (shrink the allow-list when one goes)', () => {
    const present = new Set(violations.map((v) => edgeKey({ ...v.edge, rule: v.rule })));
    const staleEdges = ALLOWED_EDGES.filter((a) => !present.has(edgeKey(a)));
    const presentCycles = new Set(cycles.map((c) => c.modules.join(' ')));
    const staleCycles = ALLOWED_CYCLES.filter((a) => !presentCycles.has(a.modules.join(' ')));
    const stale = [
      ...staleEdges.map((a) => `ALLOWED_EDGES: ${edgeKey(a)}`),
      ...staleCycles.map((a) => `ALLOWED_CYCLES: ${a.modules.join(' ⇄ ')}`),
    ];
    assert.deepEqual(stale, [], `allowed in test/unit/layering.test.ts but no longer in src/ — remove them:\n  ${stale.join('\n  ')}`);
  });
});
