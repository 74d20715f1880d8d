/**
 * The devicemapper run, from the host: boots the test VM once (scripts/vm/run.mjs: Debian's
 * kernel under qemu TCG, the host root read-only over 9p, the project read-write) and runs
 * scripts/vm/dm-suite.sh in it — the devicemapper conformance suite with the breakout shapes, the
 * devicemapper-specific tests (crash recovery, pool exhaustion, status, branches) and the CLI on a
 * real thin-pool. Fails when the guest fails, skips its tests, or does not finish in time.
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
import { DIST, runInVm, tailOf, tapSummary, vmMissing } from '../helpers/vm.js';

const CLI = join(DIST, 'src', 'cli', 'main.js');
/** The guest's hard limit; the whole run takes about 5-7 minutes under TCG on 2 cores. */
const GUEST_TIMEOUT_SEC = 840;

describe('devicemapper in the VM', () => {
  it(
    'runs the devicemapper conformance suite, the breakout shapes, the dm-specific tests and the CLI on a real thin-pool',
    { skip: vmMissing(['dmsetup']), timeout: (GUEST_TIMEOUT_SEC + 60) * 1000 },
    async () => {
      const { status, out, seconds } = await runInVm(['sh', 'scripts/vm/dm-suite.sh', DIST], { timeoutSec: GUEST_TIMEOUT_SEC });
      const tail = tailOf(out);
      assert.notEqual(status, 124, `the guest timed out after ${GUEST_TIMEOUT_SEC} s:\n${tail}`);
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
      assert.match(out, /dm-cli: ok/);
      process.stdout.write(
        `# devicemapper VM run: ${summary.pass} passed, ${summary.skipped} skipped, ${seconds.toFixed(0)} s from qemu start to exit\n`,
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
          execFileSync(process.execPath, [CLI, '--root', root, '--driver', 'devicemapper', 'info'], { stdio: ['ignore', 'pipe', 'pipe'] });
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
