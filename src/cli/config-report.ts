/**
 * What `unionctl info` says about the configuration: each global setting with where it came from
 * (a flag, the environment, a config file, the built-in default), the registries the files list,
 * and which config files were read and which were not there. `info --json` has it as `config`.
 */
import type { Command } from 'commander';
import { configOf, settingSource, type SettingKey } from './settings.js';
import type { GlobalOptions } from './store-access.js';
import { out, println, shownName } from './output.js';

export interface SettingReport<T> {
  value: T;
  /** "default", a config file's path, "env UNIONCTL_ROOT" or "flag --root". */
  source: string;
}

/** A config file looked for; every field always there (docs/json.md). */
export interface ConfigFileReport {
  path: string;
  loaded: boolean;
  /** Why a path that could not be looked at counts as not there (EACCES), else null. */
  unreachable: string | null;
}

export interface ConfigReport {
  files: ConfigFileReport[];
  settings: {
    root: SettingReport<string>;
    /** null: none set (the store's driver, else the best this kernel supports). */
    driver: SettingReport<string | null>;
    storageOpt: SettingReport<string[]>;
  };
  registries: Array<{ location: string; insecure: boolean; source: string }>;
}

export function configReport(cmd: Command): ConfigReport {
  const g = cmd.optsWithGlobals<GlobalOptions>();
  const config = configOf(cmd);
  const setting = <T>(key: SettingKey, value: T): SettingReport<T> => ({ value, source: settingSource(cmd, key) });
  return {
    files: config.files.map((f) => ({ path: f.path, loaded: f.loaded, unreachable: f.unreachable ?? null })),
    settings: {
      root: setting('root', g.root),
      driver: setting('driver', g.driver ?? null),
      storageOpt: setting('storageOpt', g.storageOpt ?? []),
    },
    registries: config.registries,
  };
}

/** The human form: a "Configuration:" block after the rest of info. */
export function printConfigReport(report: ConfigReport): void {
  const { root, driver, storageOpt } = report.settings;
  const from = (source: string) => out.dim(`(from ${shownName(source)})`);
  println(out.bold('Configuration:'));
  println(`  root: ${shownName(root.value)} ${from(root.source)}`);
  println(
    `  driver: ${driver.value === null ? "the store's, else the best this kernel supports" : shownName(driver.value)} ${from(driver.source)}`,
  );
  println(
    `  storage options: ${storageOpt.value.length === 0 ? 'none' : storageOpt.value.map(shownName).join(' ')} ${from(storageOpt.source)}`,
  );
  for (const r of report.registries)
    println(`  registry: ${shownName(r.location)}${r.insecure ? ' insecure (plain HTTP)' : ''} ${from(r.source)}`);
  for (const f of report.files) println(`  config file: ${shownName(f.path)} ${fileState(f)}`);
}

function fileState(file: ConfigFileReport): string {
  if (file.loaded) return 'read';
  return out.dim(file.unreachable === null ? '(not there)' : `(cannot be looked at: ${file.unreachable}; counted as not there)`);
}
