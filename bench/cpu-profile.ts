/**
 * Per-phase time of a `node --cpu-prof` profile (the .cpuprofile JSON V8 writes): every sample is
 * given to one phase by its stack, so the phases add up to the thread's sampled time.
 *
 * The phases are those of a layer import. A sample goes, in this order, to: a system call made
 * from JS, by the call's name (reading the input; creating and writing files; metadata: mkdir,
 * symlink, times, modes, owners, xattrs); the digest worker's sha256; then the innermost module of
 * ours on the stack (tar-split recording, hashing, tar parsing, apply, the image-archive check);
 * module loading and compiling (start-up); the garbage collector; the rest ("other": commander,
 * the store's records, Node internals).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const PHASES = [
  'start-up (module loading, compile)',
  'image-archive check',
  'reading the input',
  'tar parsing',
  'hashing (main thread)',
  'hashing (digest worker, sha256)',
  'tar-split recording',
  'apply logic (JS)',
  'file create + write + close',
  'metadata syscalls',
  'garbage collector',
  'other',
] as const;
export type Phase = (typeof PHASES)[number];

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const FILE_SYSCALLS = new Set(['open', 'writeBuffer', 'writeBuffers', 'writeString', 'close', 'openFileHandle']);
const METADATA_SYSCALLS = new Set([
  'mkdir',
  'symlink',
  'link',
  'futimes',
  'lutimes',
  'utimes',
  'chmod',
  'fchmod',
  'chown',
  'fchown',
  'lchown',
  'lstat',
  'stat',
  'fstat',
  'unlink',
  'rmdir',
  'rename',
]);
/** Our modules (compiled file names under dist/src) by phase; the innermost on the stack wins. */
const MODULE_PHASES: Array<[RegExp, Phase]> = [
  [/\/archive\/tar-split\.js$/, 'tar-split recording'],
  [/\/archive\/(stream-digest|digest-ring)\.js$/, 'hashing (main thread)'],
  [/\/archive\/(tar-reader|tar-header)\.js$/, 'tar parsing'],
  [/\/archive\/decompress\.js$/, 'reading the input'],
  [/\/archive\/(apply|metadata|whiteout|layer-stack)\.js$/, 'apply logic (JS)'],
  [/\/sys\/syscalls\.js$/, 'metadata syscalls'],
  [/\/image\/archive\.js$/, 'image-archive check'],
];

function phaseOfStack(stack: ProfileNode[], worker: boolean): Phase | undefined {
  const leaf = stack[0]!.callFrame;
  if (worker) return leaf.functionName === 'update' || leaf.functionName === 'digest' ? 'hashing (digest worker, sha256)' : undefined;
  if (leaf.url === '') {
    if (leaf.functionName === '(idle)') return undefined;
    if (leaf.functionName === '(garbage collector)') return 'garbage collector';
    if (leaf.functionName === 'read') return 'reading the input';
    if (FILE_SYSCALLS.has(leaf.functionName)) return 'file create + write + close';
    if (METADATA_SYSCALLS.has(leaf.functionName)) return 'metadata syscalls';
  }
  for (const node of stack) {
    const url = node.callFrame.url;
    for (const [re, phase] of MODULE_PHASES) if (re.test(url)) return phase;
    // The tap's closures in store.js feed the tar-split recorder.
    if (/\/graph\/store\.js$/.test(url) && /^(raw|content|entry)$/.test(node.callFrame.functionName)) return 'tar-split recording';
  }
  for (const node of stack) {
    const { url, functionName } = node.callFrame;
    if (
      url.startsWith('node:internal/modules') ||
      functionName === 'compileSourceTextModule' ||
      functionName === 'compileForInternalLoader'
    )
      return 'start-up (module loading, compile)';
  }
  return 'other';
}

/** Milliseconds per phase of one profile file (a thread). `worker`: the profile of the digest worker thread. */
export function phaseTimes(file: string): Map<Phase, number> {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const isWorker = profile.nodes.some((n) => n.callFrame.url.endsWith('/digest-worker.js'));
  const perNode = new Map<number, number>();
  profile.samples.forEach((id, i) => perNode.set(id, (perNode.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const out = new Map<Phase, number>();
  for (const [id, us] of perNode) {
    const stack: ProfileNode[] = [];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) stack.push(byId.get(at)!);
    const phase = phaseOfStack(stack, isWorker);
    if (phase !== undefined) out.set(phase, (out.get(phase) ?? 0) + us / 1e3);
  }
  return out;
}

/** The phases of every profile in `dir` (one per thread), summed. */
export function phaseTimesOfDir(dir: string): Map<Phase, number> {
  const total = new Map<Phase, number>();
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))) {
    for (const [phase, ms] of phaseTimes(join(dir, f))) total.set(phase, (total.get(phase) ?? 0) + ms);
  }
  return total;
}

/** A Markdown table of per-phase milliseconds, medians over several profiled runs. */
export function phaseTable(runs: Array<Map<Phase, number>>): string {
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const rows = PHASES.map((p) => ({ p, ms: median(runs.map((r) => r.get(p) ?? 0)) })).filter((r) => r.ms >= 0.5);
  const sum = rows.reduce((s, r) => s + r.ms, 0);
  return [
    '| phase | ms (median) | share |',
    '|---|---|---|',
    ...rows.map((r) => `| ${r.p} | ${r.ms.toFixed(0)} | ${((100 * r.ms) / sum).toFixed(0)}% |`),
    `| all sampled (both threads) | ${sum.toFixed(0)} | 100% |`,
  ].join('\n');
}
