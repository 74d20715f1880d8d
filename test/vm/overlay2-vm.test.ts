/**
 * overlay2 on another kernel, in the test VM (Debian 12's 6.1, see test/helpers/vm.ts): the whole
 * conformance suite and the overlay2-specific tests. Two things only the VM can show:
 * - overlay2.size really limits a writable layer: the VM's kernel has XFS quota support, this
 *   machine's does not (UNIONCTL_REQUIRE_PRJQUOTA=1 turns the quota test's skip into a failure);
 * - the driver on a kernel without lowerdir+ (before 6.8): relative l/ paths, the 128-layer limit.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DIST, QUIET_SECONDS, runInVm, tailOf, tapSummary, vmMissing, vmRunLimits } from '../helpers/vm.js';

const MISSING = vmMissing();
/** The time limits (scripts/vm/budget.mjs, calibrated when this file loads). */
const RUN = MISSING === undefined ? vmRunLimits(QUIET_SECONDS.overlay2) : undefined;

describe('overlay2 in the VM (Debian 12 kernel)', () => {
  it(
    'passes the conformance suite and enforces overlay2.size with xfs project quotas',
    { skip: MISSING, timeout: RUN?.testTimeoutMs },
    async (t) => {
      const { limits, description } = RUN!;
      t.diagnostic(description);
      const tests = ['overlay2.test.js', 'overlay2-specific.test.js'].map((f) => join(DIST, 'test', 'conformance', f));
      const { status, out, seconds, cpuSeconds } = await runInVm(
        ['node', '--test', '--test-concurrency=1', '--test-reporter=tap', ...tests],
        {
          limits,
          env: { UNIONCTL_REQUIRE_PRJQUOTA: '1' },
        },
      );
      const tail = tailOf(out);
      assert.notEqual(status, 124, `the guest was stopped (${description}):\n${tail}`);
      assert.equal(status, 0, `the guest run failed (exit ${status}):\n${tail}`);
      const summary = tapSummary(out);
      assert.equal(summary.fail, 0, tail);
      assert.ok(summary.pass >= 50, `only ${summary.pass} tests passed in the guest:\n${tail}`);
      // The only skips allowed: chains longer than this kernel's 128 lowers.
      const skips = [...out.matchAll(/# SKIP (.*)$/gm)].map((m) => m[1]);
      assert.ok(
        skips.every((why) => /maxDepth here is 128/.test(why)),
        `unexpected skips in the guest: ${skips.join('; ')}`,
      );
      assert.match(out, /^ *ok \d+ - limits a writable layer with overlay2\.size on xfs with prjquota$/m);
      assert.match(out, /^ *ok \d+ - reports upper rw \+ 120 lowers ro when mounted with relative l\/ paths/m);
      t.diagnostic(
        `overlay2 VM run: ${summary.pass} passed, ${summary.skipped} skipped, ${seconds.toFixed(0)} s from qemu start to exit, ${cpuSeconds.toFixed(0)} s of qemu CPU`,
      );
    },
  );
});
