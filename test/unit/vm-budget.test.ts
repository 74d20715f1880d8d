/**
 * The VM's time limits (scripts/vm/budget.mjs): how they scale with the calibration and where the
 * floors are, and the watchdog run.mjs puts on qemu, tried on small child processes (one that
 * spins, one that sleeps) in place of a guest.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { budget, type VmLimits } from '../helpers/vm.js';

const QUIET_HOST = { speed: 1, contention: 1, probeCpuMs: NaN, probeWallMs: NaN, source: 'test' };

describe('VM time limits', () => {
  it('scale the quiet time by the margin and the speed; the wall bound also by the contention', () => {
    const { MARGIN, WALL_STRETCH } = budget;
    assert.deepEqual(budget.vmLimits(280, QUIET_HOST), {
      workSec: 280 * MARGIN,
      idleSec: budget.IDLE_FLOOR,
      wallSec: 280 * MARGIN * WALL_STRETCH,
    });
    const slow = budget.vmLimits(280, { ...QUIET_HOST, speed: 1.5, contention: 3 });
    assert.equal(slow.workSec, Math.ceil(280 * MARGIN * 1.5));
    assert.equal(slow.idleSec, Math.ceil(budget.IDLE_FLOOR * 1.5));
    assert.equal(slow.wallSec, slow.workSec * WALL_STRETCH * 3);
  });

  it('never go below the floors', () => {
    const tiny = budget.vmLimits(1, QUIET_HOST);
    assert.equal(tiny.workSec, budget.WORK_FLOOR);
    assert.equal(tiny.idleSec, budget.IDLE_FLOOR);
  });

  it('take the calibration from UNIONCTL_VM_CALIBRATION when set, and refuse a factor below 1', () => {
    assert.deepEqual(
      { ...budget.calibrate({ UNIONCTL_VM_CALIBRATION: '1.5,2' }), probeCpuMs: 0, probeWallMs: 0 },
      { speed: 1.5, contention: 2, probeCpuMs: 0, probeWallMs: 0, source: 'UNIONCTL_VM_CALIBRATION' },
    );
    assert.throws(() => budget.calibrate({ UNIONCTL_VM_CALIBRATION: '0.5,1' }), /both >= 1/);
  });

  it('measure this host: both factors at least 1, the probe a fraction of a second', () => {
    const cal = budget.calibrate({});
    assert.equal(cal.source, 'probe');
    assert.ok(cal.speed >= 1 && cal.contention >= 1, JSON.stringify(cal));
    assert.ok(cal.probeCpuMs > 0 && cal.probeCpuMs < 5000, JSON.stringify(cal));
    assert.match(budget.describeLimits(cal, budget.vmLimits(100, cal)), /^vm limits: \d+ s of qemu CPU, \d+ s idle, \d+ s wall \(speed ×/);
  });

  it('pass as run.mjs options', () => {
    assert.deepEqual(budget.limitArgs({ workSec: 1, idleSec: 2, wallSec: 3 }), ['--timeout', '1', '--idle', '2', '--max-wall', '3']);
  });
});

/** Starts `node -e code`, watches it with `limits`; resolves to the first kill reason (or undefined once it exits). */
async function watched(code: string, limits: VmLimits, feedOutput = false): Promise<{ reason?: string; cpu: number }> {
  const child: ChildProcess = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  let reason: string | undefined;
  const watch = budget.watchGuest(
    child.pid!,
    limits,
    (why) => {
      reason ??= why;
      child.kill('SIGKILL');
    },
    { intervalMs: 50 },
  );
  if (feedOutput) child.stdout!.on('data', () => watch.output());
  await once(child, 'close');
  watch.stop();
  return { reason, cpu: watch.usage() };
}

describe('the guest watchdog', () => {
  it('counts the CPU time of a process', () => {
    const cpu = budget.processCpuSeconds(process.pid);
    assert.ok(cpu !== undefined && cpu > 0);
    assert.equal(budget.processCpuSeconds(2 ** 22 + 1), undefined);
  });

  it('stops a guest that spins past its CPU budget', async () => {
    const { reason, cpu } = await watched('for (;;) {}', { workSec: 0.3, idleSec: 60, wallSec: 60 });
    assert.match(reason ?? '', /used its 0.3 s of CPU/);
    assert.ok(cpu >= 0.3);
  });

  it('stops a guest that neither prints nor computes', async () => {
    const { reason } = await watched('setTimeout(() => {}, 30_000)', { workSec: 60, idleSec: 0.5, wallSec: 60 });
    assert.match(reason ?? '', /printed nothing and used almost no CPU for 0.5 s/);
  });

  it('lets a guest that prints run on past the idle limit, and stops it at the wall limit', async () => {
    const code = 'setInterval(() => console.log("tick"), 50); setTimeout(() => process.exit(0), 30_000)';
    const { reason } = await watched(code, { workSec: 60, idleSec: 0.3, wallSec: 1 }, true);
    assert.match(reason ?? '', /did not finish within 1 s/);
  });

  it('leaves a guest that finishes in time alone', async () => {
    const { reason } = await watched('console.log("done")', { workSec: 60, idleSec: 60, wallSec: 60 });
    assert.equal(reason, undefined);
  });
});
