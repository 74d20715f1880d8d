/**
 * Who a process is, in a form that survives the process: its pid, when it started and the boot it
 * ran in. A pid alone is not an identity — pids are reused — but pid + start time + boot id is.
 * The store records one for every operation in progress and every in-process reference, so a later
 * process can tell "still running" from "died and left this behind".
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

/** The process that owns a record or a reference. */
export interface ProcessIdentity {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: start time in clock ticks since boot. */
  start: string;
  /** The kernel's random id of the boot the process ran in. */
  boot: string;
}

let cachedBootId: string | undefined;
let cachedSelf: ProcessIdentity | undefined;

/** The kernel's random id for this boot; changes at every reboot. */
export function bootId(): string {
  cachedBootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  return cachedBootId;
}

/** Start time of a running process (clock ticks since boot), or undefined when there is no such process. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: count after the last ")".
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** This process. */
export function currentProcess(): ProcessIdentity {
  cachedSelf ??= { pid: process.pid, start: processStartTime(process.pid) ?? '', boot: bootId() };
  return cachedSelf;
}

/** Is that process still running (same pid, same start time, this boot)? */
export function processAlive(p: ProcessIdentity | undefined): boolean {
  if (p === undefined || p.boot !== bootId()) return false;
  if (p.pid === process.pid) return p.start === currentProcess().start;
  return processStartTime(p.pid) === p.start;
}

/**
 * A process with this pid is running (or a zombie). For names that carry only a pid (temp files,
 * spools, probe dirs): a pid reused by another process reads as running, so what such a name
 * marks is kept a while longer, never removed too early.
 */
export function pidRunning(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Deletes the entries of `dir` (files or whole trees) whose name `pattern` matches with the pid of
 * a process that is not running as its first group: what a killed process left under a name that
 * carries its pid (temp files, probe dirs, spools). `remove` deletes one entry by name (default:
 * rm -rf of it). Returns the names; a missing dir has none.
 */
export function removeEntriesOfDeadProcesses(
  dir: string,
  pattern: RegExp,
  remove: (name: string) => void = (name) => rmSync(join(dir, name), { recursive: true, force: true }),
): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed = names.filter((name) => {
    const pid = pattern.exec(name)?.[1];
    return pid !== undefined && !pidRunning(Number(pid));
  });
  for (const name of removed) remove(name);
  return removed;
}

/** "1234 (unionctl diff …)": a pid with its command line, for messages; best effort. */
export function describeProcess(pid: number): string {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    return argv.length > 0 ? `${pid} (${argv.join(' ').slice(0, 200)})` : String(pid);
  } catch {
    return String(pid);
  }
}

/**
 * A worker thread for `url` (one of our modules), started with node options it accepts.
 *
 * By default a worker inherits this process's options, which is what we want (--cpu-prof reaches
 * it), except --input-type: a worker refuses it for a file (ERR_INPUT_TYPE_NOT_ALLOWED, when the
 * library runs under `node --input-type=module -e …`). Only then are options given explicitly,
 * without it; and as Node refuses V8 and per-process options given that way
 * (ERR_WORKER_INVALID_EXEC_ARGV: `--max-old-space-size`, `--trace-gc`), the worker starts with
 * none at all when those are among them.
 */
export function startWorker(url: URL, workerData: unknown): Worker {
  const inputType = (arg: string) => arg === '--input-type' || arg.startsWith('--input-type=');
  if (!process.execArgv.some(inputType)) return new Worker(url, { workerData });
  const args: string[] = [];
  for (let i = 0; i < process.execArgv.length; i++) {
    const arg = process.execArgv[i]!;
    if (arg === '--input-type') i++;
    else if (!inputType(arg)) args.push(arg);
  }
  try {
    return new Worker(url, { workerData, execArgv: args });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw e;
    return new Worker(url, { workerData, execArgv: [] });
  }
}
