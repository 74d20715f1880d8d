/**
 * Fuzzed layer tars (test/helpers/tarfuzz.ts: a corpus of valid tars, byte flips, truncations,
 * header-field and pax mutations, splices, trailing data, compression) imported into real stores
 * on a tmpfs — through store.importLayer for vfs, overlay2, overlay and aufs, and through the CLI
 * (`unionctl import`). Every case must either apply cleanly (the layer mounts, reads and goes away
 * again) or be refused with a UnionctlError (exit code 1 from the CLI, never 70 "internal error"),
 * with the store exactly as it was and nothing outside it touched.
 *
 * UNIONCTL_FUZZ_CASES=3000 runs more; UNIONCTL_FUZZ_SEED=<n>|random another seed; a failure
 * prints the seed and case, and UNIONCTL_FUZZ_SEED=<seed> UNIONCTL_FUZZ_CASE=<i> runs just it.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openStore, UnionctlError, type LayerStore } from '../../src/index.js';
import { snapshot } from '../conformance/inspect.js';
import { tarStream } from '../conformance/tars.js';
import { runCliAsync } from '../helpers/cli.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { buildTar } from '../helpers/tarbuild.js';
import { fuzzCase, fuzzSettings, PARENT_LAYER, reproduce, type FuzzCase } from '../helpers/tarfuzz.js';

const { seed, cases, only } = fuzzSettings();
const INDICES = only !== undefined ? [only] : [...Array(cases).keys()];
const DRIVERS = ['vfs', 'overlay2', 'overlay', 'aufs'] as const;
/** Store files that change with any command (the lock, mount references). */
const VOLATILE = ['store.lock', 'driver-state'];
/** A BAD_TAR message names what is wrong and where. */
const NAMES_THE_PLACE = /offset \d+|entry "|corrupt (gzip|zstd) stream/;

/** Saves a failing case's bytes where the message says, for a look with tar -tv or a hex dump. */
function keep(c: FuzzCase): string {
  const path = `/tmp/unionctl-fuzz-${seed}-${c.index}.tar`;
  writeFileSync(path, c.bytes);
  return path;
}

function failure(c: FuzzCase, driver: string, problem: string): string {
  return `case ${c.index} of seed ${seed} (${driver}; ${c.name}): ${problem}\n  rerun: ${reproduce(seed, c.index)}; input kept in ${keep(c)}`;
}

/** Runs every case through `run`, collecting failures (the first few: one bug tends to fail many cases). */
async function fuzz(driver: string, run: (c: FuzzCase) => Promise<string | undefined>): Promise<Map<string, number>> {
  const outcomes = new Map<string, number>();
  const failures: string[] = [];
  for (const index of INDICES) {
    const c = fuzzCase(seed, index);
    let outcome: string | undefined;
    try {
      outcome = await run(c);
    } catch (e) {
      failures.push(failure(c, driver, (e as Error).stack ?? String(e)));
      if (failures.length >= 5) break;
      continue;
    }
    if (outcome !== undefined) outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  if (failures.length > 0) assert.fail(`fuzzing failed (seed ${seed}):\n${failures.join('\n')}`);
  return outcomes;
}

const summary = (outcomes: Map<string, number>) => `seed ${seed}: ${[...outcomes].map(([k, n]) => `${n} ${k}`).join(', ')}`;

for (const driver of DRIVERS) {
  describe(`fuzzed layer tars through store.importLayer (${driver})`, () => {
    let scratch: Scratch;
    let store: LayerStore;
    let root = '';
    let victim = '';
    let inputs = '';
    before(async () => {
      scratch = makeScratch({ size: '1g' });
      root = join(scratch.dir, 'store');
      victim = join(scratch.dir, 'victim');
      inputs = join(scratch.dir, 'inputs');
      mkdirSync(join(victim, 'sub'), { recursive: true });
      writeFileSync(join(victim, 'hello'), 'hello');
      mkdirSync(inputs);
      store = await openStore({ root, driver });
      await store.importLayer(tarStream(buildTar(PARENT_LAYER)), { id: 'parent' });
      // A parent that has had a child is "committed" (overlay2 marks it, as Docker does) for good: be there before the cases.
      await store.importLayer(tarStream(buildTar([])), { id: 'first-child', parent: 'parent' });
      await store.remove('first-child');
    });
    after(async () => {
      await store?.close();
      scratch?.dispose();
    });

    it(`applies or refuses cleanly each of ${INDICES.length} cases`, { timeout: 30 * 60_000 }, async (t) => {
      const state = () => ({ store: snapshot(root, VOLATILE), victim: snapshot(victim) });
      const outcomes = await fuzz(driver, async (c) => {
        const id = `fuzz-${c.index}`;
        const before = state();
        // Half the cases as a stream, half as a file path (the file reader sniffs and hashes differently).
        let input: string | ReturnType<typeof tarStream> = tarStream(c.bytes);
        if (c.index % 2 === 1) {
          input = join(inputs, `${c.index}.tar`);
          writeFileSync(input, c.bytes);
        }
        let outcome = 'applied';
        try {
          await store.importLayer(input, { id, parent: c.parent ? 'parent' : undefined, onWarning: () => {} });
        } catch (e) {
          if (!(e instanceof UnionctlError)) throw new Error(`not a UnionctlError: ${(e as Error).stack ?? String(e)}`);
          if (e.code === 'BAD_TAR') assert.match(e.message, NAMES_THE_PLACE, 'a BAD_TAR message names the entry or offset');
          outcome = e.code;
        }
        if (outcome === 'applied') {
          const { path } = await store.mount(id);
          try {
            readdirSync(path);
          } finally {
            await store.unmount(id);
          }
          await store.remove(id);
        } else {
          assert.equal(await store.driver.exists(id), false, 'the refused layer is gone');
        }
        assert.deepEqual(state(), before, 'the store (and what is outside it) is as it was');
        return outcome;
      });
      t.diagnostic(summary(outcomes));
      assert.ok((outcomes.get('applied') ?? 0) > 0 && (outcomes.get('BAD_TAR') ?? 0) > 0, `both outcomes occur: ${summary(outcomes)}`);
    });
  });
}

describe('fuzzed layer tars through the CLI (unionctl import)', () => {
  let scratch: Scratch;
  const roots = new Map<string, string>();
  let inputs = '';
  const initial = new Map<string, string[]>();
  before(async () => {
    scratch = makeScratch({ size: '1g' });
    inputs = join(scratch.dir, 'inputs');
    mkdirSync(inputs);
    const parentTar = join(inputs, 'parent.tar');
    writeFileSync(parentTar, buildTar(PARENT_LAYER));
    for (const driver of DRIVERS) {
      const root = join(scratch.dir, driver);
      roots.set(driver, root);
      for (const args of [
        ['import', '--id', 'parent', parentTar],
        ['import', '--id', 'first-child', '--parent', 'parent', parentTar],
        ['rm', 'first-child'],
      ]) {
        const r = await runCliAsync(['--root', root, '--driver', driver, ...args]);
        assert.equal(r.status, 0, r.stderr);
      }
      initial.set(driver, snapshot(root, VOLATILE));
    }
  });
  after(() => scratch?.dispose());

  it(`never exits 70 on any of ${INDICES.length} cases, and leaves the stores as they were`, { timeout: 30 * 60_000 }, async (t) => {
    // A few processes at a time: most of a case is node starting up.
    const queue = [...INDICES];
    const outcomes = new Map<string, number>();
    const failures: string[] = [];
    const worker = async () => {
      for (let index = queue.shift(); index !== undefined && failures.length < 5; index = queue.shift()) {
        const c = fuzzCase(seed, index);
        const driver = DRIVERS[index % DRIVERS.length]!;
        const root = roots.get(driver)!;
        const viaStdin = index % 3 === 0;
        const file = join(inputs, `${index}.tar`);
        if (!viaStdin) writeFileSync(file, c.bytes);
        const args = ['--root', root, '--driver', driver, 'import', '--id', `cli-${index}`, ...(c.parent ? ['--parent', 'parent'] : [])];
        const r = await runCliAsync([...args, viaStdin ? '-' : file], viaStdin ? c.bytes : undefined);
        const problem =
          r.status === 70 || /internal error/.test(r.stderr)
            ? 'an internal error (exit 70)'
            : r.status !== 0 && r.status !== 1
              ? `exit ${r.status ?? r.signal}`
              : r.status === 1 && (!r.stderr.startsWith('unionctl: ') || /\n\s+at /.test(r.stderr) || r.stdout !== '')
                ? 'a failure that is not one error line'
                : undefined;
        if (problem !== undefined) {
          failures.push(failure(c, driver, `${problem}\n${r.stderr}`));
          continue;
        }
        const outcome = r.status === 0 ? 'applied' : 'refused';
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
        if (r.status === 0) applied.get(driver)!.push(`cli-${index}`);
      }
    };
    const applied = new Map<string, string[]>(DRIVERS.map((d) => [d, []]));
    await Promise.all([worker(), worker(), worker()]);
    if (failures.length > 0) assert.fail(`fuzzing failed (seed ${seed}):\n${failures.join('\n')}`);
    // The applied layers are there, complete; the refused ones left nothing: once the applied ones
    // are removed, each store is as it began.
    for (const driver of DRIVERS) {
      const store = await openStore({ root: roots.get(driver)!, driver });
      try {
        const ids = (await store.list()).map((l) => l.id).sort();
        assert.deepEqual(ids, ['parent', ...applied.get(driver)!].sort(), `${driver}: exactly the applied layers were added`);
        for (const id of applied.get(driver)!) await store.remove(id);
      } finally {
        await store.close();
      }
      assert.deepEqual(snapshot(roots.get(driver)!, VOLATILE), initial.get(driver), `${driver}: the store is as it was before the cases`);
    }
    t.diagnostic(summary(outcomes));
  });
});
