/**
 * The devicemapper run, from the host: boots the test VM once (scripts/vm/run.mjs: Debian's
 * kernel under qemu TCG, the host root read-only over 9p, the project read-write) and runs
 * scripts/vm/dm-suite.sh in it — the devicemapper conformance suite with the breakout shapes, the
 * devicemapper-specific tests (crash recovery, pool exhaustion, status, branches), the containerd
 * snapshot service (devicemapper-snapshots.test.ts) and the CLI on a real thin-pool. Fails when
 * the guest fails, skips its tests, or does not finish in time.
 *
 * `npm test` (and so CI) runs the quick form (dm-suite.sh quick: everything but the longest
 * repetitions, see there); `npm run test:vm:full` (UNIONCTL_VM_FULL=1) runs all of it. The time
 * limits come from scripts/vm/budget.mjs, calibrated on the host when this file loads, and are
 * counted in qemu's CPU time: a busy host makes the run slower, not failed.
 *
 * Also here, on the host itself: `--driver devicemapper` on a kernel without device-mapper gives
 * one clear error.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { devicemapperEntry } from '../../src/drivers/devicemapper/index.js';
import { DIST, QUIET_SECONDS, runInVm, tailOf, tapSummary, vmMissing, vmRunLimits } from '../helpers/vm.js';

const CLI = join(DIST, 'src', 'cli', 'main.js');
const FULL = process.env.UNIONCTL_VM_FULL === '1';
const MISSING = vmMissing(['dmsetup']);
const RUN = MISSING === undefined ? vmRunLimits(FULL ? QUIET_SECONDS.devicemapperFull : QUIET_SECONDS.devicemapperQuick) : undefined;

describe('devicemapper in the VM', () => {
  it(
    `runs the devicemapper conformance suite, the breakout shapes, the dm-specific tests and the CLI on a real thin-pool (${FULL ? 'full' : 'quick'})`,
    { skip: MISSING, timeout: RUN?.testTimeoutMs },
    async (t) => {
      const { limits, description } = RUN!;
      t.diagnostic(description);
      const { status, out, seconds, cpuSeconds } = await runInVm(['sh', 'scripts/vm/dm-suite.sh', DIST, FULL ? 'full' : 'quick'], {
        limits,
      });
      const tail = tailOf(out);
      assert.notEqual(status, 124, `the guest was stopped (${description}):\n${tail}`);
      assert.equal(status, 0, `the guest run failed (exit ${status}):\n${tail}`);
      const summary = tapSummary(out);
      assert.equal(summary.fail, 0, tail);
      // Inside the VM nothing may be skipped for want of device-mapper: the only skip allowed is
      // the conformance suite's depth-limit test (devicemapper has no depth limit).
      assert.ok(summary.skipped <= 1, `tests were skipped in the guest:\n${tail}`);
      assert.ok(summary.tests > 0, `the guest printed no test summary:\n${tail}`);
      assert.equal(summary.pass, summary.tests - summary.skipped, `not every test passed in the guest:\n${tail}`);
      assert.match(out, /devicemapper driver conformance/);
      assert.match(out, /withstands shape 20/);
      assert.match(out, /rolls back a create killed at create:after-message/);
      assert.match(out, /dm-cli: check ok/);
      assert.match(out, /dm-cli: ok/);
      assert.match(out, /ok \d+ - Prepare, Commit, View, Mounts: binds of the mounted thin devices/);
      t.diagnostic(
        `devicemapper VM run (${FULL ? 'full' : 'quick'}): ${summary.pass} passed, ${summary.skipped} skipped, ${seconds.toFixed(0)} s from qemu start to exit, ${cpuSeconds.toFixed(0)} s of qemu CPU`,
      );
    },
  );
});

describe('devicemapper on a kernel without device-mapper', () => {
  const reason = devicemapperEntry.unsupportedReason('/');
  it(
    '--driver devicemapper gives one clear error and writes nothing',
    { skip: reason === undefined ? 'this kernel has device-mapper' : undefined },
    () => {
      const root = mkdtempSync(join(tmpdir(), 'unionctl-dmcheck-'));
      try {
        let stderr = '';
        let status = 0;
        try {
          execFileSync(process.execPath, [CLI, '--root', root, '--driver', 'devicemapper', 'create'], {
            stdio: ['ignore', 'pipe', 'pipe'],
          });
        } catch (e) {
          const err = e as { status: number; stderr: Buffer };
          status = err.status;
          stderr = err.stderr.toString();
        }
        assert.notEqual(status, 0);
        const lines = stderr.trim().split('\n');
        assert.match(lines[0], /^unionctl: storage driver devicemapper cannot be used for .*: this kernel has no device-mapper/);
        assert.ok(lines.length <= 2, `one error line (and a hint), no stack:\n${stderr}`);
        assert.doesNotMatch(stderr, /\n\s+at /);
        assert.equal(existsSync(join(root, 'devicemapper')), false);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    },
  );
});
