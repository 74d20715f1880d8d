/**
 * unionctl's configuration files, in the spirit of containers-storage's storage.conf and
 * containers-registries.conf: `/etc/unionctl/storage.conf` for the machine, then
 * `$XDG_CONFIG_HOME/unionctl/storage.conf` (default `~/.config/unionctl/storage.conf`) for the
 * user, a later file overriding an earlier one key by key. `UNIONCTL_CONFIG=FILE` reads that one
 * file instead of both (as CONTAINERS_STORAGE_CONF does); it must exist. The environment
 * (UNIONCTL_ROOT, UNIONCTL_DRIVER) and flags override both: src/cli/settings.ts puts them together.
 *
 *   [storage]
 *   driver = "overlay2"
 *   root = "/var/lib/unionctl"        # graphroot, containers-storage's name, is the same key
 *   [storage.options]                 # Docker's option names, as --storage-opt takes them
 *   overlay2.size = "10G"             # the same as [storage.options.overlay2] size = "10G"
 *   [[registry]]
 *   location = "127.0.0.1:5000"
 *   insecure = true                   # plain HTTP without --insecure
 *
 * A file is only read: nothing here creates or writes anything, and a file that is wrong (bad
 * TOML, an unknown key, a value of the wrong type) is an error naming the file and the key before
 * any command does anything. Unknown keys are errors, not warnings as podman's: a misspelt
 * `insecure` would otherwise quietly mean TLS, a misspelt `root` another store.
 */
import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { UnionctlError } from '../errors.js';
import { driverNames, lookupDriver, parseReference } from '../index.js';

export const SYSTEM_CONFIG = '/etc/unionctl/storage.conf';
/** The environment variable that names the one configuration file to read. */
export const CONFIG_ENV = 'UNIONCTL_CONFIG';

/** A registry as the configuration describes it. */
export interface RegistryConfig {
  /** host[:port], as an image reference names it. */
  location: string;
  /** Plain HTTP, no TLS, without --insecure. */
  insecure: boolean;
}

/** What one file says; keys it does not set are undefined. */
export interface FileConfig {
  root?: string;
  driver?: string;
  /** "key=value" items, Docker's option names. */
  storageOpt?: string[];
  registries: RegistryConfig[];
}

/** A value and the file that set it. */
export interface Setting<T> {
  value: T;
  source: string;
}

export interface ConfigFileStatus {
  path: string;
  /** False when the file is not there. */
  loaded: boolean;
  /** Why the path could not be looked at (EACCES): then it counts as not there. */
  unreachable?: string;
}

/** The files together. */
export interface StorageConfig {
  files: ConfigFileStatus[];
  root?: Setting<string>;
  driver?: Setting<string>;
  storageOpt?: Setting<string[]>;
  registries: Array<RegistryConfig & { source: string }>;
}

type Env = Record<string, string | undefined>;
type Table = Record<string, unknown>;

/** The per-user file: $XDG_CONFIG_HOME/unionctl/storage.conf, else ~/.config/unionctl/storage.conf. */
export function userConfigPath(env: Env = process.env): string {
  const base = env.XDG_CONFIG_HOME ? env.XDG_CONFIG_HOME : join(env.HOME || homedir(), '.config');
  return join(base, 'unionctl', 'storage.conf');
}

/** The files to read, earliest (weakest) first, and whether a missing one is an error. */
export function configPaths(env: Env = process.env): { paths: string[]; required: boolean } {
  const named = env[CONFIG_ENV];
  if (named) return { paths: [named], required: true };
  return { paths: [SYSTEM_CONFIG, userConfigPath(env)], required: false };
}

/** Reads the configuration the environment points at (configPaths): the files merged, later over earlier. */
export function loadConfig(env: Env = process.env): StorageConfig {
  const { paths, required } = configPaths(env);
  return mergeConfigs(paths.map((path) => ({ path, ...readConfigFile(path, required) })));
}

/** What reading one file gave: its settings, or none and, when the path could not even be looked at, why. */
export interface ConfigFileRead {
  config?: FileConfig;
  unreachable?: string;
}

/**
 * Reads one file. Not there: no settings (an error when `required`). A path that cannot be looked
 * at (a HOME the user may not enter: EACCES on the way there) counts as not there, as
 * containers-storage counts it, unless `required`; a file that is there but cannot be read is an
 * error.
 */
export function readConfigFile(path: string, required = false): ConfigFileRead {
  try {
    statSync(path);
  } catch (e) {
    const code = errorCode(e);
    if (!required) return code === 'ENOENT' ? {} : { unreachable: code };
    throw unreadable(path, code, e);
  }
  try {
    return { config: parseConfig(readFileSync(path, 'utf8'), path) };
  } catch (e) {
    if (e instanceof UnionctlError) throw e;
    throw unreadable(path, errorCode(e), e);
  }
}

function errorCode(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? String(e);
}

function unreadable(path: string, code: string, cause: unknown): UnionctlError {
  return new UnionctlError('USAGE', `cannot read config file ${path}: ${code}`, {
    hint:
      code === 'ENOENT'
        ? `${CONFIG_ENV} names a file that does not exist: create it or unset ${CONFIG_ENV}`
        : `make it a readable file, or point ${CONFIG_ENV} at another one`,
    cause,
  });
}

/** A configuration error: "bad config file FILE: …". */
function badConfig(path: string, what: string, hint = 'see the Configuration section of the README'): UnionctlError {
  return new UnionctlError('USAGE', `bad config file ${path}: ${what}`, { hint });
}

/** Parses a file's text (`path` for messages) and checks every key and type. */
export function parseConfig(text: string, path: string): FileConfig {
  let doc: Table;
  try {
    doc = parse(text);
  } catch (e) {
    if (!(e instanceof TomlError)) throw e;
    const why = e.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
    throw badConfig(path, `line ${e.line}, column ${e.column}: ${why}`, 'fix the TOML syntax (toml.io)');
  }
  refuseUnknownKeys(doc, ['storage', 'registry'], '', path);
  const storage = optionalTable(doc, 'storage', '', path) ?? {};
  return { ...storageSettings(storage, path), registries: registrySettings(doc.registry, path) };
}

function storageSettings(storage: Table, path: string): Omit<FileConfig, 'registries'> {
  refuseUnknownKeys(storage, ['driver', 'root', 'graphroot', 'options'], 'storage.', path);
  if (storage.root !== undefined && storage.graphroot !== undefined)
    throw badConfig(path, 'storage.root and storage.graphroot are the same setting: give one');
  const rootKey = storage.graphroot === undefined ? 'root' : 'graphroot';
  const root = optionalString(storage, rootKey, 'storage.', path);
  if (root !== undefined && !isAbsolute(root)) throw badConfig(path, `storage.${rootKey} ${JSON.stringify(root)} is not an absolute path`);
  const driver = optionalString(storage, 'driver', 'storage.', path);
  if (driver !== undefined && !driverNames().includes(driver))
    throw badConfig(path, `storage.driver ${JSON.stringify(driver)} is not a storage driver`, `known drivers: ${driverNames().join(', ')}`);
  const options = optionalTable(storage, 'options', 'storage.', path);
  return { root, driver, storageOpt: options === undefined ? undefined : storageOptions(options, path) };
}

/** Every storage option key some driver knows (lower case: Docker's keys are case-insensitive). */
function knownStorageOptions(): Set<string> {
  return new Set(driverNames().flatMap((name) => lookupDriver(name).optionKeys.map((k) => k.toLowerCase())));
}

/** [storage.options] as "key=value" items: nested tables are dotted keys (TOML's `overlay2.size` is [overlay2] size). */
function storageOptions(options: Table, path: string): string[] {
  const known = knownStorageOptions();
  const items: string[] = [];
  const walk = (table: Table, prefix: string) => {
    for (const [key, value] of Object.entries(table)) {
      const name = `${prefix}${key}`;
      if (isTable(value)) {
        walk(value, `${name}.`);
        continue;
      }
      if (!['string', 'number', 'boolean'].includes(typeof value))
        throw badConfig(path, `storage.options.${name} is ${typeName(value)}; it must be a string, a number or a boolean`);
      if (!known.has(name.toLowerCase()))
        throw badConfig(path, `unknown storage option storage.options.${name}`, `options drivers know: ${[...known].join(', ')}`);
      items.push(`${name}=${String(value)}`);
    }
  };
  walk(options, '');
  return items;
}

function registrySettings(value: unknown, path: string): RegistryConfig[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every(isTable))
    throw badConfig(path, `registry is ${typeName(value)}; it must be an array of tables ([[registry]])`);
  return value.map((entry, i) => {
    const at = `registry[${i}].`;
    refuseUnknownKeys(entry, ['location', 'insecure'], at, path);
    const location = optionalString(entry, 'location', at, path);
    if (location === undefined) throw badConfig(path, `${at}location is missing`, 'e.g. location = "registry.example.com:5000"');
    if (!isRegistryHost(location))
      throw badConfig(
        path,
        `${at}location ${JSON.stringify(location)} is not a registry host[:port]`,
        'a host has a "." or a ":port", or is localhost',
      );
    const insecure = entry.insecure ?? false;
    if (typeof insecure !== 'boolean') throw badConfig(path, `${at}insecure is ${typeName(insecure)}; it must be a boolean`);
    return { location, insecure };
  });
}

/** True when `location` is what an image reference takes for its registry part. */
function isRegistryHost(location: string): boolean {
  try {
    return parseReference(`${location}/probe`).registry === location;
  } catch {
    return false;
  }
}

/** The files' settings, a later file's over an earlier one's; registries by location. */
export function mergeConfigs(files: Array<{ path: string } & ConfigFileRead>): StorageConfig {
  const status = ({ path, config, unreachable }: (typeof files)[number]): ConfigFileStatus => ({
    path,
    loaded: config !== undefined,
    ...(unreachable === undefined ? {} : { unreachable }),
  });
  const merged: StorageConfig = { files: files.map(status), registries: [] };
  for (const { path, config } of files) {
    if (config === undefined) continue;
    if (config.root !== undefined) merged.root = { value: config.root, source: path };
    if (config.driver !== undefined) merged.driver = { value: config.driver, source: path };
    if (config.storageOpt !== undefined) merged.storageOpt = { value: config.storageOpt, source: path };
    for (const registry of config.registries) {
      merged.registries = [...merged.registries.filter((r) => r.location !== registry.location), { ...registry, source: path }];
    }
  }
  return merged;
}

// ---- checking what the TOML parser returned ------------------------------------------------

function isTable(value: unknown): value is Table {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

/** The TOML type of a value, for messages: "an integer (3)". */
function typeName(value: unknown): string {
  if (typeof value === 'string') return `a string (${JSON.stringify(value)})`;
  if (typeof value === 'number') return Number.isInteger(value) ? `an integer (${value})` : `a float (${value})`;
  if (typeof value === 'boolean') return `a boolean (${value})`;
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Date) return 'a date-time';
  return 'a table';
}

function refuseUnknownKeys(table: Table, known: string[], prefix: string, path: string): void {
  const unknown = Object.keys(table).find((k) => !known.includes(k));
  if (unknown !== undefined)
    throw badConfig(path, `unknown key ${prefix}${unknown}`, `known here: ${known.map((k) => `${prefix}${k}`).join(', ')}`);
}

function optionalString(table: Table, key: string, prefix: string, path: string): string | undefined {
  const value = table[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw badConfig(path, `${prefix}${key} is ${typeName(value)}; it must be a string`);
  if (value === '') throw badConfig(path, `${prefix}${key} is empty`);
  return value;
}

function optionalTable(table: Table, key: string, prefix: string, path: string): Table | undefined {
  const value = table[key];
  if (value === undefined) return undefined;
  if (!isTable(value)) throw badConfig(path, `${prefix}${key} is ${typeName(value)}; it must be a table ([${prefix}${key}])`);
  return value;
}
