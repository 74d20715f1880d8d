/**
 * `unionctl doctor` (the kernel and filesystem facts that decide what works: src/drivers/doctor.ts)
 * and the human form of `unionctl mount --explain` (LayerStore.explainMount). Neither mounts
 * anything that outlives the call: doctor's test mounts are detached, explain makes none.
 */
import { Command } from 'commander';
import { resolve } from 'node:path';
import { doctor } from '../drivers/doctor.js';
import type { MountExplanation } from '../graph/store.js';
import { doctorJson } from './json-shapes.js';
import { out, printJson, println, printTable } from './output.js';

/** Prints the report: the facts as a table (one line per driver consequence), then which drivers can run here. */
function doctorCommand(_opts: unknown, cmd: Command): void {
  const g = cmd.optsWithGlobals<{ root: string; json?: boolean }>();
  // Not withStore: doctor must work where no store can be opened (that is when it is needed).
  const report = doctor(resolve(g.root));
  if (g.json === true) return printJson(doctorJson(report));
  println(`facts for ${report.root} (probes ran in ${report.scratch}, removed again)`);
  println('');
  const rows: string[][] = [];
  for (const fact of report.facts) {
    for (const [i, c] of fact.consequences.entries()) {
      rows.push([i === 0 ? fact.name : '', i === 0 ? fact.value : '', c.drivers.join(', '), c.effect]);
    }
    if (fact.action !== undefined) rows.push(['', '', 'to do', fact.action]);
  }
  printTable(['FACT', 'VALUE', 'DRIVER', 'MEANS'], rows);
  println('');
  printTable(
    ['DRIVER', 'USABLE', 'WHY NOT'],
    report.drivers.map((d) => [d.name, d.usable ? 'yes' : 'no', d.reason ?? '']),
  );
}

/** The human form of an explanation: the method, what is handed to the kernel, and each decision with its reason. */
export function printExplanation(e: MountExplanation): void {
  const label = (s: string) => out.bold(s.padEnd(10));
  const plan = e.plan;
  println(`${label('layer')}${e.id}${e.readOnly ? ' (read-only view)' : ''}`);
  println(`${label('method')}${plan.method}${plan.fsType === undefined ? '' : ` (${plan.fsType})`}`);
  println(`${label('view')}${plan.path}`);
  if (plan.cwd !== undefined) println(`${label('from')}${plan.cwd}`);
  if (plan.dataBytes !== undefined && plan.pageSize !== undefined)
    println(`${label('size')}${plan.dataBytes} of ${plan.pageSize} bytes (one page)`);
  for (const d of plan.data) println(`${label('data')}${d}`);
  if (e.bind !== undefined) println(`${label('then')}bind ${e.bind.source} on ${e.bind.target}, read-only`);
  if (e.mounted) println(`${label('now')}already mounted: mount would count one more mount and make none`);
  println('');
  printTable(
    ['DECISION', 'VALUE', 'WHY'],
    plan.decisions.map((d) => [d.name, d.value, d.why]),
  );
  println(e.path);
}

export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description('probe the kernel and the filesystem of the store root: what each fact means for each driver and what to do')
    .action(doctorCommand);
}
