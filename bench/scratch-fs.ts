/**
 * Benchmark filesystems: a tmpfs for inputs, and the filesystem that is measured — by default an
 * ext4 image on a loop device (its backing file on that tmpfs), or xfs the same way, or the tmpfs
 * itself. Never the root ext4, where each new inode costs ~0.7 ms and drowns every figure.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { mountsUnder } from '../src/sys/mountinfo.js';

export type BenchFsType = 'ext4' | 'xfs' | 'tmpfs';
export const BENCH_FS_TYPES: BenchFsType[] = ['ext4', 'xfs', 'tmpfs'];

export interface BenchFs {
  type: BenchFsType;
  /** tmpfs: inputs and the loop image live here */
  tmp: string;
  /** the measured filesystem: stores and peers write here */
  target: string;
  /** "ext4 on a loop device backed by tmpfs" */
  description: string;
  /** Gives freed blocks back to the tmpfs under the loop image (fstrim), so deleted runs do not pile up in memory. */
  trim(): void;
  dispose(): void;
}

const run = (cmd: string, args: string[]) =>
  execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    .toString()
    .trim();

export interface BenchFsOptions {
  type?: BenchFsType;
  /** Size of the loop image (sparse: only written blocks use memory). */
  imageSize?: string;
  /** Size cap of the tmpfs. */
  tmpfsSize?: string;
}

export function makeBenchFs(opts: BenchFsOptions = {}): BenchFs {
  const type = opts.type ?? 'ext4';
  const base = mkdtempSync('/tmp/unionctl-bench-');
  const tmp = join(base, 'tmp');
  const target = type === 'tmpfs' ? join(tmp, 'target') : join(base, type);
  mkdirSync(tmp);
  const undo: Array<() => void> = [() => rmSync(base, { recursive: true, force: true })];
  // Whatever a subject left mounted inside (an interrupted run), deepest first, so the fs can go.
  const unmountLeftovers = () => {
    const inside = mountsUnder(target).filter((m) => m.mountPoint !== target);
    for (const m of inside.sort((a, b) => b.mountPoint.length - a.mountPoint.length)) run('umount', ['-l', m.mountPoint]);
  };
  const dispose = () => {
    for (const step of undo.reverse()) {
      try {
        step();
      } catch (e) {
        console.error(`bench cleanup: ${(e as Error).message}`);
      }
    }
    undo.length = 0;
  };
  try {
    run('mount', ['-t', 'tmpfs', '-o', `size=${opts.tmpfsSize ?? '20g'}`, 'unionctl-bench-tmp', tmp]);
    undo.push(() => run('umount', [tmp]));
    mkdirSync(target);
    if (type !== 'tmpfs') {
      const image = join(tmp, `${type}.img`);
      run('truncate', ['-s', opts.imageSize ?? '12G', image]);
      if (type === 'ext4') run('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', image]);
      else run('mkfs.xfs', ['-q', '-f', image]);
      run('mount', ['-o', 'loop', image, target]); // mount(8) allocates the loop device and frees it on umount
      undo.push(() => run('umount', [target]));
    }
    undo.push(unmountLeftovers);
    const description = type === 'tmpfs' ? 'tmpfs' : `${type} on a loop device backed by tmpfs`;
    const trim = () => {
      if (type === 'tmpfs') return;
      try {
        run('fstrim', [target]);
      } catch {
        /* not fatal: only costs memory */
      }
    };
    return { type, tmp, target, description, trim, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}

/** Flush dirty pages and drop clean caches so one run's writeback does not land in the next. */
export function settle(): void {
  run('sync', []);
  try {
    execFileSync('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches']);
  } catch {
    /* not fatal: only makes runs noisier */
  }
}
