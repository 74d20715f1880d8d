/**
 * Benchmark filesystems: a tmpfs for inputs and a loop-mounted ext4 image (its backing file on that
 * tmpfs) for the stores. Never the root ext4, where each new inode costs ~0.7 ms.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export interface BenchFs {
  /** tmpfs: inputs and the loop image live here */
  tmp: string;
  /** loop-mounted ext4: what is measured writes here */
  target: string;
  dispose(): void;
}

const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim();

export function makeBenchFs(imageSize = '6G'): BenchFs {
  const base = mkdtempSync('/tmp/unionctl-bench-');
  const tmp = join(base, 'tmp');
  const target = join(base, 'ext4');
  mkdirSync(tmp);
  mkdirSync(target);
  const undo: Array<() => void> = [() => rmSync(base, { recursive: true, force: true })];
  const dispose = () => {
    for (const step of undo.reverse()) {
      try {
        step();
      } catch (e) {
        console.error(`bench cleanup: ${(e as Error).message}`);
      }
    }
  };
  try {
    run('mount', ['-t', 'tmpfs', '-o', 'size=16g', 'bench-tmp', tmp]);
    undo.push(() => run('umount', [tmp]));
    const image = join(tmp, 'ext4.img');
    run('truncate', ['-s', imageSize, image]);
    run('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', image]);
    run('mount', ['-o', 'loop', image, target]); // mount(8) allocates the loop device and frees it on umount
    undo.push(() => run('umount', [target]));
    return { tmp, target, dispose };
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
