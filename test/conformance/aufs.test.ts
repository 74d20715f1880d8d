import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { it } from 'node:test';
import { aufsEntry } from '../../src/drivers/aufs/index.js';
import { SCRATCH_PREFIX } from '../helpers/scratch.js';
import { runDriverConformance } from './suite.js';

// On kernels without aufs (all mainline kernels, this machine) the aufs layout is mounted with
// fuse-overlayfs. 500 layers read through one FUSE mount; the depth-limit test then grows the
// chain to the driver's maxDepth (about 1000 here: the lowerdir argument must fit 128 KiB with
// the longest ids) and checks that one more layer is refused, naming the limit.
runDriverConformance(aufsEntry, { deeperChains: [500], depthLimitUpTo: 1100 });

/** fuse-overlayfs processes (zombies excluded) serving a mount point of a conformance store. */
function suiteFuseProcesses(): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const zombie = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
      if (!zombie && argv[0].endsWith('fuse-overlayfs') && argv.some((a) => a.startsWith(SCRATCH_PREFIX) && a.includes('/store/aufs/mnt/')))
        found.push(`${pid}: ${argv.join(' ')}`);
    } catch {
      /* exited meanwhile */
    }
  }
  return found;
}

// Runs after the suite (and its fixture's clean-up): every mount's FUSE process must be gone too.
it('leaves no fuse-overlayfs process behind', () => {
  assert.deepEqual(suiteFuseProcesses(), []);
});
