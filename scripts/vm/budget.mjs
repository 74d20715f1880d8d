// How long a test-VM run may take: every limit of the VM path (scripts/vm/run.mjs's watchdog, the
// host tests' node:test timeouts in test/vm/) comes from here, scaled by a calibration of the host
// measured when the run starts, so a slow or busy machine stretches the limits instead of failing.
//
// The guest runs under qemu TCG (software emulation, one vCPU): its progress is the CPU time the
// host gives qemu. So the main limit is counted in qemu's own CPU seconds (the "work" budget), not in
// wall-clock seconds: other load on the host slows the guest down in wall time but leaves the CPU
// seconds it needs about the same, and cannot make it run out. The other limits catch what the work
// budget cannot see:
//
//   work   qemu's CPU seconds (user + system, all its threads, the 9p server included):
//          max(WORK_FLOOR, quiet × MARGIN × speed) — a guest spinning in a loop ends here;
//   idle   wall seconds in which the guest printed nothing and qemu used under IDLE_SHARE of a
//          core — a guest stuck waiting (no output, no CPU) ends here, whatever the load (an idle
//          guest uses about 0.5 % of a core; a working one, even on a busy host, far more);
//   wall   a last bound in wall seconds: work × WALL_STRETCH × contention — the guest would have
//          had to run at under 1/WALL_STRETCH of the speed measured at the start for the whole run.
//
// `quiet` is what the run takes on a quiet machine of this kind (QUIET_SECONDS, measured); the
// calibration (calibrate()) times a fixed CPU-bound loop: `speed` is its CPU time against the
// reference machine's (a slower CPU needs more CPU seconds for the same guest work; floor 1),
// `contention` its wall time against its CPU time (the share of a core this process gets now;
// floor 1). UNIONCTL_VM_CALIBRATION="speed,contention" skips the measurement and uses those.
import { readFileSync } from 'node:fs';

/**
 * Wall seconds from qemu start to exit on a quiet 2-core machine of this kind (there about equal
 * to qemu's CPU seconds). Measured: devicemapper full 278 s quiet; on a busy host (load 4-11) full
 * 622 s wall / 436 s CPU, quick 344-412 s wall / 331 s CPU, overlay2 82 s wall / 77 s CPU. A busy host
 * costs qemu about 1.6 times the CPU seconds of a quiet one for the same work (436 against ~275).
 * Both devicemapper runs include the snapshot service test since (about 20 s more: 16 s measured).
 */
export const QUIET_SECONDS = {
  /** scripts/vm/dm-suite.sh full: the whole devicemapper conformance suite, dm-specific tests, the CLI. */
  devicemapperFull: 300,
  /** scripts/vm/dm-suite.sh quick (the default test run): see dm-suite.sh for what it leaves out. */
  devicemapperQuick: 230,
  /** test/vm/overlay2-vm.test.ts: the overlay2 conformance and specific tests on the VM's kernel. */
  overlay2: 90,
  /** `npm run vm -- CMD` by hand, when no --timeout is given. */
  command: 300,
};

/** Work budget: this many times what a quiet run needs. */
export const MARGIN = 3;
/** No run gets less work budget than this (CPU seconds), nor less idle allowance (wall seconds). */
export const WORK_FLOOR = 120;
export const IDLE_FLOOR = 300;
/** qemu using under this share of a core through the idle window (and printing nothing) is stuck. */
export const IDLE_SHARE = 0.05;
/** The wall bound allows the guest to run this many times slower than the calibration measured. */
export const WALL_STRETCH = 4;

/** CPU milliseconds of the probe loop on the reference machine (quiet, 2 cores), measured. */
const PROBE_REFERENCE_CPU_MS = 105;
const PROBE_ITERATIONS = 60_000_000;
const PROBE_ROUNDS = 5;

function probeLoop(n) {
  let x = 0x9e3779b9 | 0;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    sum = (sum + (x & 0xff)) | 0;
  }
  return sum;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * The host's speed and the CPU share this process gets, from PROBE_ROUNDS runs of a fixed loop
 * (about half a second on a quiet machine): { speed, contention, probeCpuMs, probeWallMs, source }.
 */
export function calibrate(env = process.env) {
  const given = env.UNIONCTL_VM_CALIBRATION;
  if (given !== undefined && given !== '') {
    const [speed, contention] = given.split(',').map(Number);
    if (!(speed >= 1 && contention >= 1)) throw new Error(`UNIONCTL_VM_CALIBRATION=${given}: want "speed,contention", both >= 1`);
    return { speed, contention, probeCpuMs: NaN, probeWallMs: NaN, source: 'UNIONCTL_VM_CALIBRATION' };
  }
  const cpu = [];
  const wall = [];
  let sink = 0;
  for (let r = 0; r < PROBE_ROUNDS; r++) {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    sink ^= probeLoop(PROBE_ITERATIONS);
    wall.push(performance.now() - t0);
    const used = process.cpuUsage(cpu0);
    cpu.push((used.user + used.system) / 1000);
  }
  if (sink === 0x7fffffff) process.stderr.write(''); // keeps the loop from being optimised away
  const probeCpuMs = median(cpu);
  const probeWallMs = median(wall);
  return {
    speed: Math.max(1, probeCpuMs / PROBE_REFERENCE_CPU_MS),
    contention: Math.max(1, probeWallMs / Math.max(probeCpuMs, 1)),
    probeCpuMs,
    probeWallMs,
    source: 'probe',
  };
}

/** The limits for a run that takes `quietSeconds` on a quiet machine: { workSec, idleSec, wallSec }. */
export function vmLimits(quietSeconds, cal) {
  const workSec = Math.ceil(Math.max(WORK_FLOOR, quietSeconds * MARGIN * cal.speed));
  const idleSec = Math.ceil(IDLE_FLOOR * cal.speed);
  const wallSec = Math.ceil(workSec * WALL_STRETCH * cal.contention);
  return { workSec, idleSec, wallSec };
}

/** The limits as run.mjs's options. */
export function limitArgs(limits) {
  return ['--timeout', String(limits.workSec), '--idle', String(limits.idleSec), '--max-wall', String(limits.wallSec)];
}

/** One line for logs: what was measured and what it allows. */
export function describeLimits(cal, limits) {
  const probe = cal.source === 'probe' ? `probe ${cal.probeCpuMs.toFixed(0)} ms CPU / ${cal.probeWallMs.toFixed(0)} ms wall` : cal.source;
  return (
    `vm limits: ${limits.workSec} s of qemu CPU, ${limits.idleSec} s idle, ${limits.wallSec} s wall ` +
    `(speed ×${cal.speed.toFixed(2)}, contention ×${cal.contention.toFixed(2)}; ${probe})`
  );
}

/**
 * Watches the guest's qemu process `pid` every `intervalMs`: calls `kill(reason)` once it has used
 * `workSec` CPU seconds, or has printed nothing for `idleSec` while using under IDLE_SHARE of a
 * core, or has run `wallSec` in all (kill may be called again on later checks until stop()).
 * `output()` is to be called on every chunk of console output. Returns { output, stop, usage() }
 * (usage: the CPU seconds seen last).
 */
export function watchGuest(pid, { workSec, idleSec, wallSec }, kill, { intervalMs = 1000 } = {}) {
  const started = Date.now();
  let cpu = 0;
  let quietSince = { at: started, cpu: 0 };
  const check = () => {
    cpu = processCpuSeconds(pid) ?? cpu;
    const now = Date.now();
    if (cpu >= workSec) return kill(`the guest used its ${workSec} s of CPU without finishing`);
    if ((now - started) / 1000 >= wallSec) return kill(`the guest did not finish within ${wallSec} s`);
    const quietSec = (now - quietSince.at) / 1000;
    if (quietSec < idleSec) return;
    if (cpu - quietSince.cpu < quietSec * IDLE_SHARE) return kill(`the guest printed nothing and used almost no CPU for ${idleSec} s`);
    quietSince = { at: now, cpu }; // silent but working: a new window
  };
  const timer = setInterval(check, intervalMs);
  return {
    output: () => {
      quietSince = { at: Date.now(), cpu };
    },
    stop: () => clearInterval(timer),
    usage: () => cpu,
  };
}

/** CPU seconds (user + system, every thread) a process has used so far; undefined once it is gone. */
export function processCpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}
/** USER_HZ: 100 on every Linux this runs on (getconf CLK_TCK). */
const CLOCK_TICKS = 100;
