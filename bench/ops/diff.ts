/**
 * Diff export (the layer's changes as a tar: native where the driver has it, and the shared naive
 * diff for every driver) and changes (the A/C/D list), on a layer imported untimed. The floor for
 * export is GNU tar creating a tar of overlay2's diff dir of the same layer.
 */
import { createWriteStream, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { NaiveDiff } from '../../src/graph/naive-diff.js';
import { openStore, type LayerStore } from '../../src/index.js';
import { freshDir, unionctlSubject, type BenchContext } from '../context.js';
import { timeRuns } from '../measure.js';
import { tarCreate } from '../peers/gnu-tar.js';
import type { LayerTar } from '../workloads.js';

export interface DiffWorkload {
  name: string;
  tar: LayerTar;
  base?: LayerTar;
}

/** Writes the export to a file on the input tmpfs (as the tar floor does) and returns its size. */
async function drainTo(stream: Readable, path: string): Promise<void> {
  await pipeline(stream, createWriteStream(path));
}

export async function runDiff(ctx: BenchContext, w: DiffWorkload): Promise<void> {
  ctx.say(`diff: ${w.name}`);
  const out = join(ctx.fs.tmp, 'diff-out.tar');
  let overlay2Diff: string | undefined;
  const stores: LayerStore[] = [];
  try {
    for (const driver of ctx.drivers) {
      const subject = unionctlSubject(driver);
      try {
        const store = await openStore({ root: freshDir(ctx, `diff-${driver}`), driver });
        stores.push(store);
        const parent = w.base ? (await store.importLayer(w.base.path)).id : undefined;
        const layer = await store.importLayer(w.tar.path, { parent });
        const add = (operation: string, param: string | undefined, seconds: number[]) =>
          ctx.log.add({
            workload: w.name,
            operation,
            param,
            subject,
            kind: 'unionctl',
            seconds,
            bytes: operation === 'diff export' ? w.tar.bytes : undefined,
            files: w.tar.entries,
          });
        const native = store.driver.capabilities().nativeDiff;
        if (native)
          add('diff export', 'native', await timeRuns({ runs: ctx.runs, measure: async () => drainTo(await store.diff(layer.id), out) }));
        const naive = new NaiveDiff(store.driver);
        add(
          'diff export',
          'naive',
          await timeRuns({ runs: ctx.runs, measure: async () => drainTo(await naive.diff(layer.id, parent), out) }),
        );
        add('changes', undefined, await timeRuns({ runs: ctx.runs, measure: () => store.changes(layer.id) }));
        if (driver === 'overlay2') overlay2Diff = (await store.driver.metadata(layer.id)).UpperDir;
      } catch (e) {
        ctx.log.skip({ subject, workload: w.name, operation: 'diff export', reason: `failed: ${(e as Error).message}` });
      }
    }
    if (overlay2Diff !== undefined) {
      const seconds = await timeRuns({ runs: ctx.runs, measure: () => tarCreate(overlay2Diff!, out) });
      for (const param of ['native', 'naive'])
        ctx.log.add({
          workload: w.name,
          operation: 'diff export',
          param,
          subject: 'GNU tar',
          kind: 'floor',
          seconds,
          bytes: w.tar.bytes,
          files: w.tar.entries,
        });
    } else {
      ctx.log.skip({
        subject: 'GNU tar',
        workload: w.name,
        operation: 'diff export',
        reason: "tars overlay2's diff dir: run with overlay2 among --drivers",
      });
    }
  } finally {
    for (const s of stores) {
      await s.cleanup();
      await s.close();
    }
    rmSync(out, { force: true });
    ctx.fs.trim();
  }
}
