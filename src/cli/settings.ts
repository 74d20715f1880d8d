/**
 * The global settings (--root, --driver, --storage-opt) with what they came from. Commander knows
 * flags (source 'cli'), the environment (UNIONCTL_ROOT, UNIONCTL_DRIVER: 'env') and built-in
 * defaults ('default'); before a command runs, applyConfig fills in what neither a flag nor the
 * environment set from the configuration files (src/cli/config.ts) as source 'config', and keeps
 * the loaded files beside the program so `info` can say which file that was and the registry
 * commands can ask which registries are plain HTTP.
 *
 * Storage options do not add up across sources: --storage-opt replaces the files' options (as
 * podman's --storage-opt replaces storage.conf's), and the files' options reach only the driver
 * they are for (openStore's anyDriverStorageOpt).
 */
import type { Command, OptionValueSource } from 'commander';
import { loadConfig, type StorageConfig } from './config.js';

/** The global options a configuration file can set, by commander's key, with their flag and environment variable. */
const SETTINGS = {
  root: { flag: '--root', env: 'UNIONCTL_ROOT' },
  driver: { flag: '--driver', env: 'UNIONCTL_DRIVER' },
  storageOpt: { flag: '--storage-opt', env: undefined },
} as const;

export type SettingKey = keyof typeof SETTINGS;

const configs = new WeakMap<Command, StorageConfig>();

function rootCommand(cmd: Command): Command {
  let top = cmd;
  while (top.parent !== null) top = top.parent;
  return top;
}

/** Loads the configuration files and sets, as source 'config', each global option no flag or environment variable set. */
export function applyConfig(program: Command, env: Record<string, string | undefined> = process.env): void {
  const config = loadConfig(env);
  configs.set(program, config);
  for (const key of Object.keys(SETTINGS) as SettingKey[]) {
    const setting = config[key];
    const source = program.getOptionValueSource(key);
    if (setting !== undefined && (source === undefined || source === 'default'))
      program.setOptionValueWithSource(key, setting.value, 'config');
  }
}

/** The configuration applyConfig loaded for the program `cmd` belongs to (none: no files, nothing set). */
export function configOf(cmd: Command): StorageConfig {
  return configs.get(rootCommand(cmd)) ?? { files: [], registries: [] };
}

/** Where a global option's value came from: "default", a config file's path, "env UNIONCTL_ROOT" or "flag --root". */
export function settingSource(cmd: Command, key: SettingKey): string {
  const source: OptionValueSource | undefined = cmd.getOptionValueSourceWithGlobals(key);
  if (source === 'cli') return `flag ${SETTINGS[key].flag}`;
  if (source === 'env') return `env ${SETTINGS[key].env ?? ''}`;
  if (source === 'config') return configOf(cmd)[key]?.source ?? 'config';
  return 'default';
}

/** True when the storage options came from a configuration file (they then go to whichever driver knows them). */
export function storageOptFromConfig(cmd: Command): boolean {
  return cmd.getOptionValueSourceWithGlobals('storageOpt') === 'config';
}

/** The registries the configuration says to speak plain HTTP to. */
export function insecureRegistries(cmd: Command): string[] {
  return configOf(cmd)
    .registries.filter((r) => r.insecure)
    .map((r) => r.location);
}
