/**
 * Scratch filesystems for tests that write real layers: a fresh tmpfs mounted at a mkdtemp dir
 * under /tmp (never the root ext4, where every inode is slow), and a loop-mounted xfs with project
 * quotas for overlay2.size. Names start with /tmp/unionctl-test- so scripts/run-tests.mjs's leak
 * check recognises them.
 *
 *   const dir = await withScratchFs(t);          // inside it(…, async (t) => …) or with { after }
 *   const s = makeScratch(); … s.dispose();      // manual form
 *
 * dispose() unmounts whatever is still mounted below the scratch dir, unmounts the scratch fs and
 * removes the dir; if it had to unmount leftovers it throws afterwards, naming them, so a test that
 * leaks a mount fails even though the machine is cleaned up.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isMountedAt, unmountAllBelow } from './mounts.js';
import { rootMissing } from './requires.js';

/**
 * Why no scratch filesystem can be made here (mounting needs root), or undefined: the `{ skip }`
 * of every test or suite that calls makeScratch, withScratchFs or makeXfsScratch.
 */
export const scratchMissing = rootMissing('mounts a tmpfs scratch filesystem');

export interface Scratch {
  /** The mount point: an empty, writable filesystem. */
  dir: string;
  /** Idempotent. Throws (after cleaning up) when mounts were left below `dir`. */
  dispose(): void;
}

export interface ScratchOptions {
  /** tmpfs size (mount option syntax), default 4g. Pages are only used when written. */
  size?: string;
  /** Throw from dispose() when something was still mounted below the scratch dir. Default true. */
  failOnLeaks?: boolean;
}

/** Anything with node:test's `after` registration: a TestContext, or `{ after }` from node:test. */
export interface CleanupRegistrar {
  after(fn: () => void | Promise<void>): void;
}

/**
 * Scratch dirs are /tmp/unionctl-test-*; with UNIONCTL_TEST_SCOPE=NAME, /tmp/unionctl-test-NAME-*,
 * so that scripts/run-tests.mjs's leak check (scoped the same way) can tell this run's mounts from
 * those of another run on the same machine.
 */
export const SCRATCH_PREFIX = process.env.UNIONCTL_TEST_SCOPE
  ? `/tmp/unionctl-test-${process.env.UNIONCTL_TEST_SCOPE}-`
  : '/tmp/unionctl-test-';

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    .toString()
    .trim();
}

/**
 * Runs the undo steps newest first; collects every failure instead of stopping at the first so
 * one stuck step does not leave the rest behind.
 */
function makeDisposer(undo: Array<() => void>, leakCheckDir: string | undefined, failOnLeaks: boolean): () => void {
  let disposed = false;
  return () => {
    if (disposed) return;
    disposed = true;
    const leaks = leakCheckDir === undefined ? [] : unmountAllBelow(leakCheckDir);
    const errors: string[] = [];
    for (const step of undo.reverse()) {
      try {
        step();
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    if (errors.length > 0) throw new Error(`scratch cleanup failed: ${errors.join('; ')}`);
    if (leaks.length > 0 && failOnLeaks) throw new Error(`mounts were left behind (now unmounted): ${leaks.join(', ')}`);
  };
}

/** A fresh tmpfs at /tmp/unionctl-test-XXXXXX. */
export function makeScratch(opts: ScratchOptions = {}): Scratch {
  if (scratchMissing !== undefined) throw new Error(`makeScratch: ${scratchMissing}; give the test { skip: scratchMissing }`);
  const dir = mkdtempSync(SCRATCH_PREFIX);
  const undo: Array<() => void> = [() => rmSync(dir, { recursive: true, force: true })];
  const dispose = makeDisposer(undo, dir, opts.failOnLeaks ?? true);
  try {
    run('mount', ['-t', 'tmpfs', '-o', `size=${opts.size ?? '4g'},mode=0755`, 'unionctl-test', dir]);
    undo.push(() => {
      if (isMountedAt(dir)) run('umount', [dir]);
    });
    return { dir, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}

/** makeScratch() whose dispose runs in the test's (or suite's) after hook. */
export async function withScratchFs(t: CleanupRegistrar, opts: ScratchOptions = {}): Promise<string> {
  const scratch = makeScratch(opts);
  t.after(() => scratch.dispose());
  return scratch.dir;
}

export interface XfsScratchOptions {
  /** Image size for truncate(1); sparse, so it costs only what is written. Default 512M (mkfs.xfs wants >= 300M). */
  size?: string;
  /** Mount with prjquota (project quotas enforced), as overlay2.size needs. Default true. */
  prjquota?: boolean;
}

/**
 * A loop-mounted xfs whose image lives on its own tmpfs, mounted at <tmpfs>/xfs. mount(8) allocates
 * the loop device (autoclear) and frees it on umount, so no loop device outlives dispose().
 */
export function makeXfsScratch(opts: XfsScratchOptions = {}): Scratch {
  const holder = makeScratch({ size: '2g' });
  const image = join(holder.dir, 'xfs.img');
  const dir = join(holder.dir, 'xfs');
  const undo: Array<() => void> = [() => holder.dispose()];
  const dispose = makeDisposer(undo, dir, true);
  try {
    mkdirSync(dir);
    run('truncate', ['-s', opts.size ?? '512M', image]);
    run('mkfs.xfs', ['-q', '-f', image]);
    const mountOpts = (opts.prjquota ?? true) ? ['-o', 'loop,prjquota'] : ['-o', 'loop'];
    run('mount', [...mountOpts, image, dir]);
    undo.push(() => {
      if (isMountedAt(dir)) run('umount', [dir]);
    });
    return { dir, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}

/** True when mkfs.xfs and loop devices are usable here (the overlay2.size tests need both). */
export function xfsAvailable(): boolean {
  try {
    run('sh', ['-c', 'command -v mkfs.xfs && command -v xfs_quota && test -e /dev/loop-control']);
    return true;
  } catch {
    return false;
  }
}
