/**
 * `unionctl check [--repair [--remove-orphans]]`: fsck for a store (src/graph/check.ts). Lists
 * every problem with its code and the repair it would make; with --repair makes the repairs that
 * lose nothing, printing each; --remove-orphans also deletes what no record accounts for. Exits
 * EXIT_PROBLEMS while problems remain.
 */
import type { Command } from 'commander';
import { UnionctlError } from '../errors.js';
import { checkStore, type CheckReport, type ReportedFinding } from '../graph/check.js';
import { EXIT_PROBLEMS } from './exit-codes.js';
import { eprintln, escapeControls, FailuresReported, out, printJson, println } from './output.js';
import type { WithStore } from './store-access.js';

interface CheckCommandOptions {
  repair?: boolean;
  removeOrphans?: boolean;
  quick?: boolean;
}

/** How the human output says when a repair is made. */
const WHEN_LABEL: Record<ReportedFinding['when'], string> = {
  default: 'repair',
  'remove-orphans': 'repair with --remove-orphans',
  never: 'no repair',
};

function printFinding(f: ReportedFinding): void {
  const status = f.repaired ? out.green(' (repaired)') : '';
  println(`${out.bold(f.code)} ${escapeControls(f.subject)}${status}`);
  println(`  ${escapeControls(f.message)}`);
  println(`  ${out.dim(`${WHEN_LABEL[f.when]}:`)} ${escapeControls(f.repair)}`);
}

function printReport(report: CheckReport, repairing: boolean): void {
  for (const f of report.findings) printFinding(f);
  const found = report.findings.length;
  if (found === 0) return println('no problems found');
  const repaired = report.findings.filter((f) => f.repaired).length;
  const left = report.remaining.length;
  const summary = `${found} problem${found === 1 ? '' : 's'} found${repairing ? `, ${repaired} repaired` : ''}, ${left} remaining`;
  println(left === 0 ? out.green(summary) : summary);
  const orphans = report.remaining.filter((f) => f.when === 'remove-orphans').length;
  if (!repairing && report.remaining.some((f) => f.when === 'default')) println(out.dim('unionctl check --repair makes the repairs'));
  else if (orphans > 0)
    println(out.dim(`unionctl check --repair --remove-orphans also deletes the ${orphans} orphan${orphans === 1 ? '' : 's'}`));
}

async function checkCommand(opts: CheckCommandOptions, cmd: Command, withStore: WithStore): Promise<void> {
  if (opts.removeOrphans && !opts.repair) {
    throw new UnionctlError('USAGE', '--remove-orphans is an option of --repair', { hint: 'unionctl check --repair --remove-orphans' });
  }
  await withStore(cmd, async (store, g) => {
    // The actions go where they do not mix with the one JSON document.
    const say = g.json ? eprintln : println;
    const report = await checkStore(store, {
      repair: opts.repair,
      removeOrphans: opts.removeOrphans,
      skipContent: opts.quick,
      onRepair: (f, action, failed) =>
        say(
          escapeControls(
            failed === undefined
              ? `repaired ${f.code} ${f.subject}: ${action}`
              : `could not repair ${f.code} ${f.subject} (${action}): ${failed.message}`,
          ),
        ),
    });
    if (g.json) printJson({ driver: store.driver.name, root: store.root, clean: report.remaining.length === 0, ...report });
    else printReport(report, opts.repair === true);
    if (report.remaining.length > 0) throw new FailuresReported(report.remaining.length, EXIT_PROBLEMS);
  });
}

export function registerCheckCommand(program: Command, withStore: WithStore): void {
  program
    .command('check')
    .description(
      "check the store (records, the driver's layout, mounts, image records, each imported layer's tar) and, with --repair, repair it",
    )
    .option('--repair', 'make the repairs that lose nothing (links, lower and layers files, marks, leaked mounts), printing each')
    .option(
      '--remove-orphans',
      "with --repair: also delete what no record accounts for (layers in the driver's home, records without storage)",
    )
    .option('--quick', "skip rebuilding each imported layer's tar from its tar-split (that reads every file)")
    .action((opts: CheckCommandOptions, cmd: Command) => checkCommand(opts, cmd, withStore));
}
