/**
 * How a command gets at the store: the global options (--root, --driver, --storage-opt, --json)
 * name it, withStore opens it, runs the command and always closes it. Only the commands that put
 * something into a store (import, create, load, pull, serve) make one where there is none; every
 * other command refuses a root that holds no store ("no store at …"), so a mistyped --root never
 * turns into an empty store. The options' values may come from a configuration file
 * (src/cli/settings.ts): storage options from one reach only the driver they are for.
 */
import type { Command } from 'commander';
import { lookupDriver, openStore, storageOptsFor, type LayerStore } from '../index.js';
import { logs, type LogLevel } from './log-level.js';
import { eprintln, printDebug } from './output.js';
import { storageOptFromConfig } from './settings.js';

/** Options every command accepts (before or after the command name). */
export interface GlobalOptions {
  root: string;
  driver?: string;
  storageOpt?: string[];
  json?: boolean;
  logLevel?: LogLevel;
}

export interface StoreAccess {
  /** The command puts something into the store: make the store when the root has none. */
  creates?: boolean;
}

export type WithStore = (cmd: Command, fn: (store: LayerStore, g: GlobalOptions) => Promise<void>, access?: StoreAccess) => Promise<void>;

/**
 * What the store says on its own (what crash recovery rolled back or finished, what it could not
 * do): one line each on stderr, so it never mixes with a command's output.
 */
export function storeLog(level: 'info' | 'warn', message: string): void {
  if (!logs(level)) return;
  eprintln(level === 'info' ? `unionctl: ${message}` : `unionctl: warning: ${message}`);
}

/** Opens the store the global options name, runs `fn` on it and always closes it again. */
export const withStore: WithStore = async (cmd, fn, access = {}) => {
  const g = cmd.optsWithGlobals<GlobalOptions>();
  const opening = performance.now();
  const fromConfig = storageOptFromConfig(cmd);
  const store = await openStore({
    root: g.root,
    driver: g.driver,
    storageOpt: fromConfig ? [] : (g.storageOpt ?? []),
    anyDriverStorageOpt: fromConfig ? g.storageOpt : [],
    log: storeLog,
    mustExist: access.creates !== true,
  });
  const opened = performance.now();
  printDebug(`opened the ${store.driver.name} store at ${store.root} in ${(opened - opening).toFixed(1)} ms`);
  try {
    // A command sees the options the driver took: of a file's, only those for this driver.
    const storageOpt = fromConfig ? storageOptsFor(lookupDriver(store.driver.name).optionKeys, g.storageOpt ?? []) : g.storageOpt;
    await fn(store, { ...g, storageOpt });
    printDebug(`${cmd.name()} ran in ${(performance.now() - opened).toFixed(1)} ms`);
  } finally {
    await store.close();
  }
};
