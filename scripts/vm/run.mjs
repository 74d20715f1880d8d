#!/usr/bin/env node
// Runs one command inside a throw-away qemu VM with Debian's kernel (device-mapper, dm-thin-pool,
// loop, ext4, xfs as modules) and passes its output and exit status through:
//
//   npm run vm -- [--timeout SEC] [--idle SEC] [--max-wall SEC] [--mem MB] [--share DIR]... [--] <command…>
//   node scripts/vm/run.mjs uname -a
//
// The guest sees the host's root read-only over 9p (so it runs the host's node, dmsetup, mkfs),
// a fresh tmpfs on /tmp and /run, and read-write 9p shares at the same paths as on the host: the
// project directory (always) and every --share DIR. The command runs in the current directory
// (when it lies inside a share, else in the project directory), with DM_DISABLE_UDEV=1 (there is
// no udev in the guest: without it dmsetup waits for /dev/mapper nodes that never appear).
//
// Only software emulation works on these machines (/dev/kvm is a PVM host that cannot run a stock
// kernel), so the VM is `-accel tcg -smp 1` (smp 2 is twice as slow on 2 host cores). A guest that
// hangs is killed and the run fails with 124; the limits (budget.mjs) are counted so that a busy
// host slows the guest down without killing it:
//   --timeout SEC   CPU seconds qemu may use (the guest's work; env UNIONCTL_VM_TIMEOUT);
//   --idle SEC      wall seconds with no console output and (almost) no qemu CPU;
//   --max-wall SEC  wall seconds in all.
// Each one not given comes from a calibration of the host (budget.mjs) for a command that takes
// QUIET_SECONDS.command on a quiet machine.
// Exit status: the command's, 124 on timeout, 125 when the VM itself failed.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { calibrate, describeLimits, QUIET_SECONDS, vmLimits, watchGuest } from './budget.mjs';
import { ensureInitramfs } from './initramfs.mjs';
import { ensureKernel } from './kernel.mjs';

const PROJECT = realpathSync(new URL('../..', import.meta.url).pathname);

/**
 * Environment passed into the guest command (the rest of the host's environment is not — in
 * particular not NODE_TEST_CONTEXT: a node --test inside the guest started from a host test would
 * take itself for a child of the host's runner and run nothing).
 */
const PASS_ENV = ['TERM', 'NODE_OPTIONS', 'CI', 'NO_COLOR', 'FORCE_COLOR'];

function usage(message) {
  process.stderr.write(
    `vm: ${message}\nusage: npm run vm -- [--timeout SEC] [--idle SEC] [--max-wall SEC] [--mem MB] [--share DIR]... [--] <command…>\n`,
  );
  process.exit(2);
}

function parseArgs(argv) {
  const env = process.env.UNIONCTL_VM_TIMEOUT;
  const opts = { timeoutSec: env === undefined ? undefined : Number(env), memMb: 2048, shares: [], command: [] };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      i += 1;
      break;
    }
    if (a === '--timeout') opts.timeoutSec = Number(argv[++i]);
    else if (a === '--idle') opts.idleSec = Number(argv[++i]);
    else if (a === '--max-wall') opts.wallSec = Number(argv[++i]);
    else if (a === '--mem') opts.memMb = Number(argv[++i]);
    else if (a === '--share') opts.shares.push(argv[++i]);
    else break;
  }
  opts.command = argv.slice(i);
  if (opts.command.length === 0) usage('no command given');
  for (const [flag, v] of [
    ['--timeout', opts.timeoutSec],
    ['--idle', opts.idleSec],
    ['--max-wall', opts.wallSec],
  ]) {
    if (v !== undefined && !(v > 0)) usage(`${flag} needs a positive number of seconds`);
  }
  if (!(opts.memMb >= 256)) usage('--mem needs at least 256 (MB)');
  return opts;
}

/** POSIX shell single-quoting. */
function shq(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

function isInside(dir, path) {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith('/'));
}

function commandScript(command, cwd) {
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    DM_DISABLE_UDEV: '1',
    UNIONCTL_IN_VM: '1',
  };
  for (const k of PASS_ENV) if (process.env[k] !== undefined) env[k] = process.env[k];
  return [
    'set -e',
    ...Object.entries(env).map(([k, v]) => `export ${k}=${shq(v)}`),
    `cd ${shq(cwd)}`,
    'set +e',
    command.map(shq).join(' '),
    '',
  ].join('\n');
}

/**
 * The limits of one run: those given, the rest from a calibration of the host (budget.mjs) for a
 * command that takes QUIET_SECONDS.command on a quiet machine.
 */
function limitsFor({ timeoutSec, idleSec, wallSec }, log) {
  if (timeoutSec !== undefined && idleSec !== undefined && wallSec !== undefined) return { workSec: timeoutSec, idleSec, wallSec };
  const cal = calibrate();
  const derived = vmLimits(QUIET_SECONDS.command, cal);
  const limits = { workSec: timeoutSec ?? derived.workSec, idleSec: idleSec ?? derived.idleSec, wallSec: wallSec ?? derived.wallSec };
  if (process.env.UNIONCTL_VM_VERBOSE) log(describeLimits(cal, limits));
  return limits;
}

/**
 * Boots the VM, runs `command`, streams the guest's console to `out` (a writable stream) and
 * resolves to { status, timedOut, seconds, cpuSeconds }. Limits: `timeoutSec` (qemu CPU seconds),
 * `idleSec`, `wallSec` (see the top of this file); those not given come from budget.mjs.
 */
export async function runInVm(
  command,
  {
    timeoutSec,
    idleSec,
    wallSec,
    memMb = 2048,
    shares = [],
    cwd = process.cwd(),
    out = process.stdout,
    log = (m) => process.stderr.write(`${m}\n`),
  } = {},
) {
  const limits = limitsFor({ timeoutSec, idleSec, wallSec }, log);
  const kernel = ensureKernel({ log });
  const initrd = ensureInitramfs(kernel);
  const shareDirs = [PROJECT, ...shares.map((s) => realpathSync(resolve(s)))];
  for (const dir of shareDirs) {
    if (/[\s,:]/.test(dir))
      throw new Error(`vm: cannot share ${JSON.stringify(dir)}: paths with spaces, commas or colons are not supported`);
  }
  const realCwd = realpathSync(cwd);
  const guestCwd = shareDirs.some((d) => isInside(d, realCwd)) ? realCwd : PROJECT;

  const runDir = mkdtempSync(join(tmpdir(), 'unionctl-vm-'));
  try {
    writeFileSync(join(runDir, 'cmd.sh'), commandScript(command, guestCwd));
    const virtfs = (path, tag, extra = '') => [
      '-virtfs',
      `local,path=${path},mount_tag=${tag},security_model=passthrough,multidevs=remap${extra}`,
    ];
    const args = [
      '-accel',
      'tcg',
      '-smp',
      '1',
      '-m',
      String(memMb),
      '-nodefaults',
      '-display',
      'none',
      '-no-reboot',
      '-chardev',
      'stdio,id=console,signal=off',
      '-serial',
      'chardev:console',
      '-kernel',
      kernel.vmlinux,
      '-initrd',
      initrd,
      '-append',
      `console=ttyS0 quiet loglevel=${process.env.UNIONCTL_VM_LOGLEVEL ?? '1'} panic=-1 unionctl.shares=${shareDirs.map((d, i) => `share${i}:${d}`).join(',')}`,
      ...virtfs('/', 'hostroot', ',readonly=on'),
      ...virtfs(runDir, 'rundir'),
      ...shareDirs.flatMap((d, i) => virtfs(d, `share${i}`)),
    ];
    const started = Date.now();
    const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let timedOut;
    const watch = watchGuest(qemu.pid, limits, (reason) => {
      timedOut ??= reason;
      qemu.kill('SIGKILL');
    });
    // The serial line turns \n into \r\n; hand the host plain lines.
    qemu.stdout.on('data', (chunk) => {
      watch.output();
      out.write(chunk.toString('latin1').replace(/\r\n/g, '\n').replace(/\r/g, ''), 'latin1');
    });
    let qemuErr = '';
    qemu.stderr.on('data', (chunk) => (qemuErr += chunk));
    // If this process is told to stop (a test runner's timeout, Ctrl-C), the guest goes with it.
    const stopGuest = (signal) => {
      qemu.kill('SIGKILL');
      rmSync(runDir, { recursive: true, force: true });
      process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    };
    process.once('SIGTERM', stopGuest);
    process.once('SIGINT', stopGuest);
    const exit = await new Promise((res) => qemu.on('close', (code, signal) => res({ code, signal })));
    watch.stop();
    process.off('SIGTERM', stopGuest);
    process.off('SIGINT', stopGuest);
    const seconds = (Date.now() - started) / 1000;
    const cpuSeconds = watch.usage();
    if (timedOut !== undefined) {
      log(`vm: ${timedOut} and was killed (after ${seconds.toFixed(0)} s, ${cpuSeconds.toFixed(0)} s of CPU)`);
      return { status: 124, timedOut: true, seconds, cpuSeconds };
    }
    let statusText;
    try {
      statusText = readFileSync(join(runDir, 'status'), 'utf8').trim();
    } catch {
      log(`vm: the guest ended without an exit status (qemu exit ${exit.code ?? exit.signal})${qemuErr ? `:\n${qemuErr.trim()}` : ''}`);
      return { status: 125, timedOut: false, seconds, cpuSeconds };
    }
    return { status: Number(statusText), timedOut: false, seconds, cpuSeconds };
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const opts = parseArgs(process.argv.slice(2));
  try {
    const { status, seconds, cpuSeconds } = await runInVm(opts.command, opts);
    if (process.env.UNIONCTL_VM_VERBOSE) {
      process.stderr.write(`vm: exit ${status} after ${seconds.toFixed(1)} s (${cpuSeconds.toFixed(1)} s of qemu CPU)\n`);
    }
    process.exit(status);
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exit(125);
  }
}
