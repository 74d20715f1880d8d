/**
 * CPU time of processes, from /proc: for benchmarks that time whole commands and the daemons
 * (dockerd, containerd, `unionctl serve`) that do part of the work while the command runs.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const TICK_MS = 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

/** Fields of /proc/<pid>/stat after the command name, 0-based from field 3. */
function statFields(pid: number | 'self'): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** CPU time (ms) of the waited-for children of this process (cutime + cstime). */
export function childrenCpuMs(): number {
  const f = statFields('self');
  return (Number(f[13]) + Number(f[14])) * TICK_MS;
}

/**
 * CPU time (ms) of a running process, all its threads (utime + stime), plus its reaped children
 * (cutime + cstime): dockerd applies each layer in a re-executed child of itself.
 */
export function processCpuMs(pid: number): number {
  const f = statFields(pid);
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * TICK_MS;
}
