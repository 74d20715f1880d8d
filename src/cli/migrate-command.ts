/**
 * `unionctl migrate --to DRIVER`: moves the store to another storage driver in place
 * (src/graph/migrate.ts), or finishes a migration that was interrupted; `--abort` undoes one that
 * stopped before its switch. One progress line per layer on stderr; with --json the result on
 * stdout.
 */
import type { Command } from 'commander';
import { abortMigration, migrateStore, type MigrateProgress } from '../index.js';
import { UnionctlError } from '../errors.js';
import { nonEmpty } from './args.js';
import { logs } from './log-level.js';
import { eprintln, printJson, println, shownName } from './output.js';
import { storeLog, type GlobalOptions } from './store-access.js';

interface MigrateCommandOptions {
  to?: string;
  abort?: boolean;
}

function progressLine(e: MigrateProgress): string {
  switch (e.step) {
    case 'layer':
      return `migrating layer ${e.index}/${e.total} ${e.id.slice(0, 12)}${e.writable ? ' (writable)' : ''}`;
    case 'switch':
      return `all layers copied and verified: switching the store from ${e.from} to ${e.to}`;
    case 'remove-old':
      return `removing the ${e.driver} driver home ${shownName(e.home)}`;
  }
}

async function migrateCommand(opts: MigrateCommandOptions, cmd: Command): Promise<void> {
  const g = cmd.optsWithGlobals<GlobalOptions>();
  const common = { root: g.root, storageOpt: g.storageOpt ?? [], log: storeLog };
  if (opts.abort === true) {
    if (opts.to !== undefined) throw new UnionctlError('USAGE', '--abort takes no --to', { hint: 'unionctl migrate --abort' });
    const r = await abortMigration(common);
    if (g.json) return printJson({ root: r.root, from: r.from, to: r.to, aborted: true, layers: null, copied: null, resumed: false });
    return println(`aborted the migration to ${r.to}: the store is ${r.from}'s as before`);
  }
  if (opts.to === undefined) throw new UnionctlError('USAGE', 'migrate needs --to DRIVER', { hint: 'unionctl migrate --to overlay2' });
  const onProgress = (e: MigrateProgress) => {
    if (logs('info')) eprintln(`unionctl: ${progressLine(e)}`);
  };
  const r = await migrateStore({ ...common, to: opts.to, onProgress });
  if (g.json)
    return printJson({ root: r.root, from: r.from, to: r.to, aborted: false, layers: r.layers, copied: r.copied, resumed: r.resumed });
  println(
    `migrated ${r.layers} layer${r.layers === 1 ? '' : 's'} from ${r.from} to ${r.to}${r.resumed ? ` (finished an interrupted migration: ${r.copied} copied now)` : ''}`,
  );
}

export function registerMigrateCommand(program: Command): void {
  program
    .command('migrate')
    .description('move the whole store to another storage driver, in place (run it again to finish an interrupted one)')
    .option('--to <driver>', 'the driver to move to', nonEmpty('the driver'))
    .option('--abort', 'undo a migration that stopped before its switch: the store stays with its old driver')
    .action(migrateCommand);
}
