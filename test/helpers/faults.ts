/**
 * Fault injection for the crash-consistency tests: a unionctl command run under strace, killed with
 * SIGKILL at the K-th call of one syscall.
 *
 *   const trace = await traceSyscalls(argv, { env, storeRoot, traceFile });  // an unkilled run: what it calls
 *   const points = killPoints(trace);                                       // every (syscall, K) it reaches
 *   const r = await runKilledAt(argv, { syscall: 'rename', k: 3 }, { env }); // r.killed: the kill happened
 *
 * How strace is used (6.1; checked by experiment):
 * - `-e inject=SYSCALL:signal=KILL:when=K` sends SIGKILL on entering the K-th call. The count is
 *   per syscall and per tracee (thread), so `-f` makes the kill hit whichever thread gets to its
 *   K-th call first. `-e trace=none` would switch the injection off (strace only injects into calls
 *   it traces), so the syscall is traced into `-o /dev/null` instead.
 * - `-b execve` detaches from children once they exec (fuse-overlayfs, which daemonizes and
 *   outlives the command, must not be traced, or be killed instead of unionctl, or keep strace
 *   waiting). A run that times out is killed as a process group (strace 6.1 has no --kill-on-exit:
 *   killing strace alone would leave the command running).
 * - UV_THREADPOOL_SIZE=1 for the traced command: the asynchronous fs calls then run in order on one
 *   thread, so K = 1..N walks through every call of the syscall in order instead of landing on
 *   whichever of four pool threads gets there first.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** The syscalls a kill is injected at: every call that creates, changes, removes or locks something, and openat. */
export const FAULT_SYSCALLS = [
  'openat',
  'write',
  'pwrite64',
  'fsync',
  'fdatasync',
  'rename',
  'renameat',
  'renameat2',
  'unlink',
  'unlinkat',
  'rmdir',
  'mkdir',
  'mkdirat',
  'symlink',
  'symlinkat',
  'link',
  'linkat',
  'mount',
  'umount2',
  'flock',
  'fsopen',
  'fsconfig',
  'fsmount',
  'move_mount',
] as const;
export type FaultSyscall = (typeof FAULT_SYSCALLS)[number];

export interface KillPoint {
  syscall: FaultSyscall;
  /** The kill lands on entering the K-th call (of one thread). */
  k: number;
  /**
   * The K-th call comes before the command first touched the store (module loading, option
   * parsing): all such points of a command are alike, and a sample takes few of them.
   */
  beforeStore: boolean;
}

export interface RunResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time, ms. */
  ms: number;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  /** Kill the run (SIGKILL) after this long; the result then has signal SIGKILL and timedOut. Default 120 s. */
  timeoutMs?: number;
}

/** The environment unionctl runs with in these tests: no colours, one libuv pool thread (see the module doc). */
export function testEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, UV_THREADPOOL_SIZE: '1', ...extra };
  delete env.FORCE_COLOR;
  delete env.NODE_OPTIONS;
  return env;
}

/** Runs a command to its end (or the timeout), collecting its output. */
export function runProcess(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult & { timedOut: boolean }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    // Its own process group, so a timeout kills the command under strace too (see the module doc).
    const child = spawn(cmd, args, { env: opts.env ?? testEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, opts.timeoutMs ?? 120_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, ms: Date.now() - started, timedOut });
    });
  });
}

/** `node dist/src/cli/main.js ARGS`, unkilled. */
export function unionctl(args: string[], opts: RunOptions = {}): Promise<RunResult & { timedOut: boolean }> {
  return runProcess(process.execPath, [MAIN, ...args], opts);
}

const STRACE_BASE = ['-f', '-b', 'execve', '-qq'];

/** What an unkilled run under strace called, per syscall and thread, in order. */
export interface SyscallTrace {
  result: RunResult;
  /** For each syscall: the trace line numbers of its calls, per thread (tid → line numbers, in order). */
  calls: Map<FaultSyscall, Map<number, number[]>>;
  /** Line number of the first call that names a path under the store root (Infinity: none). */
  firstStoreLine: number;
}

/**
 * Runs `node main.js ARGS` under strace, unkilled, tracing every FAULT_SYSCALL into `traceFile`
 * (deleted afterwards), and returns where each call happened.
 */
export async function traceSyscalls(args: string[], opts: RunOptions & { storeRoot: string; traceFile: string }): Promise<SyscallTrace> {
  const result = await runProcess(
    'strace',
    [...STRACE_BASE, '-o', opts.traceFile, '-e', `trace=${FAULT_SYSCALLS.join(',')}`, process.execPath, MAIN, ...args],
    opts,
  );
  const text = readFileSync(opts.traceFile, 'utf8');
  rmSync(opts.traceFile, { force: true });
  const calls = new Map<FaultSyscall, Map<number, number[]>>();
  let firstStoreLine = Infinity;
  const known = new Set<string>(FAULT_SYSCALLS);
  const lines = text.split('\n');
  for (const [i, line] of lines.entries()) {
    // "<tid> <name>(<args>…" starts a call; "<tid> <... name resumed>" finishes one; signals and exits are "---"/"+++".
    const m = /^(\d+) +([a-z0-9_]+)\(/.exec(line);
    if (m === null || !known.has(m[2]!)) continue;
    const tid = Number(m[1]);
    const name = m[2] as FaultSyscall;
    let perThread = calls.get(name);
    if (perThread === undefined) calls.set(name, (perThread = new Map()));
    let list = perThread.get(tid);
    if (list === undefined) perThread.set(tid, (list = []));
    list.push(i);
    if (firstStoreLine === Infinity && line.includes(`"${opts.storeRoot}`)) firstStoreLine = i;
  }
  return { result, calls, firstStoreLine };
}

/**
 * Every (syscall, K) the traced run reached: K = 1 … the most calls one thread made. A kill at K
 * lands where the first thread makes its K-th call; it is "before the store" when that comes
 * before the run first named a path under the store root.
 */
export function killPoints(trace: SyscallTrace): KillPoint[] {
  const out: KillPoint[] = [];
  for (const syscall of FAULT_SYSCALLS) {
    const perThread = trace.calls.get(syscall);
    if (perThread === undefined) continue;
    const max = Math.max(...[...perThread.values()].map((l) => l.length));
    for (let k = 1; k <= max; k++) {
      const at = Math.min(...[...perThread.values()].map((l) => l[k - 1] ?? Infinity));
      out.push({ syscall, k, beforeStore: at < trace.firstStoreLine });
    }
  }
  return out;
}

/** A small deterministic PRNG (xorshift32): the same seed, the same sample. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

/** A string's 32-bit FNV-1a hash: a per-case seed from a name. */
export function hashSeed(text: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * `n` of the points, chosen with `random`: at most one point before the store is touched (they are
 * all alike), the others spread over the syscalls (round robin, a random K of each in turn), so a
 * small sample still reaches renames, unlinks, mounts and fsyncs and not only the many openats.
 */
export function samplePoints(points: KillPoint[], n: number, random: () => number): KillPoint[] {
  const pick = <T>(list: T[]): T => list.splice(Math.floor(random() * list.length), 1)[0]!;
  const early = points.filter((p) => p.beforeStore);
  const bySyscall = new Map<string, KillPoint[]>();
  for (const p of points) {
    if (p.beforeStore) continue;
    const list = bySyscall.get(p.syscall) ?? [];
    list.push(p);
    bySyscall.set(p.syscall, list);
  }
  const out: KillPoint[] = [];
  if (early.length > 0 && n > 0) out.push(pick(early));
  const queues = [...bySyscall.values()];
  // A random order of syscalls, then one K from each in turn.
  for (let i = queues.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [queues[i], queues[j]] = [queues[j]!, queues[i]!];
  }
  while (out.length < n && queues.some((q) => q.length > 0)) {
    for (const q of queues) if (q.length > 0 && out.length < n) out.push(pick(q));
  }
  return out;
}

/** The run under strace with SIGKILL injected at the point. `killed`: the kill happened (else the command ran to its end). */
export async function runKilledAt(
  args: string[],
  point: Pick<KillPoint, 'syscall' | 'k'>,
  opts: RunOptions = {},
): Promise<RunResult & { killed: boolean; timedOut: boolean }> {
  const r = await runProcess(
    'strace',
    [
      ...STRACE_BASE,
      '-o',
      '/dev/null',
      '-e',
      `trace=${point.syscall}`,
      '-e',
      `inject=${point.syscall}:signal=KILL:when=${point.k}`,
      process.execPath,
      MAIN,
      ...args,
    ],
    opts,
  );
  // strace ends itself with the signal that ended the command.
  return { ...r, killed: !r.timedOut && (r.signal === 'SIGKILL' || r.status === 137) };
}
