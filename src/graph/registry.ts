/**
 * The driver registry: every driver registers one DriverEntry (the composition root, src/index.ts,
 * registers the built-in ones), the store looks drivers up by name or lets selectDriver pick one, and
 * parseStorageOpts turns `--storage-opt key=value` lists into checked maps.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { UnionctlError } from '../errors.js';
import type { Driver, DriverInit } from './driver.js';

export interface DriverEntry {
  name: string;
  create(init: DriverInit): Driver | Promise<Driver>;
  /** Why this kernel / filesystem cannot run the driver at `home`, or undefined when it can. */
  unsupportedReason(home: string): string | undefined;
  /** Driver-wide storage option keys, Docker's names ('overlay2.size', 'overlay2.override_kernel_check'). */
  optionKeys: string[];
}

const entries = new Map<string, DriverEntry>();

/**
 * Auto-selection order. Docker's list goes on with aufs, devicemapper, …; here anything that is
 * neither overlay2 nor vfs is only used when asked for by name.
 */
const AUTO_PRIORITY = ['overlay2', 'vfs'];

/** Adds a driver. Registering the same entry again does nothing; another entry under a taken name is a bug. */
export function registerDriver(e: DriverEntry): void {
  if (entries.get(e.name) === e) return;
  if (entries.has(e.name)) throw new Error(`storage driver ${e.name} is registered twice`);
  entries.set(e.name, e);
}

export function driverNames(): string[] {
  return [...entries.keys()].sort();
}

export function lookupDriver(name: string): DriverEntry {
  const entry = entries.get(name);
  if (entry === undefined) {
    throw new UnionctlError('BAD_OPTION', `unknown storage driver ${JSON.stringify(name)}`, {
      hint: `known drivers: ${driverNames().join(', ') || '(none registered)'}`,
    });
  }
  return entry;
}

function unsupported(entry: DriverEntry, root: string, reason: string): UnionctlError {
  return new UnionctlError('UNSUPPORTED', `storage driver ${entry.name} cannot be used for ${root}: ${reason}`, {
    hint: `choose another driver (${driverNames()
      .filter((n) => n !== entry.name)
      .join(', ')}) or another --root`,
  });
}

/**
 * Registered drivers that already hold layers under root (Docker's "prior drivers"): their home
 * <root>/<name> has a file, or a directory that is not empty. Empty skeleton dirs a driver makes
 * when it starts (vfs's dir/, overlay2's l/) do not count.
 */
function priorDrivers(root: string): string[] {
  return driverNames().filter((name) => {
    const home = join(root, name);
    try {
      return readdirSync(home, { withFileTypes: true }).some((e) => !e.isDirectory() || readdirSync(join(home, e.name)).length > 0);
    } catch {
      return false;
    }
  });
}

/**
 * The driver for the store at `root`: `preferred` when given (UNSUPPORTED with the reason when the
 * kernel or filesystem cannot run it); else the driver that already has data under root; else
 * overlay2 where it works (kernel overlay, d_type on the backing filesystem), else vfs.
 */
export function selectDriver(root: string, preferred?: string): DriverEntry {
  if (preferred !== undefined) {
    const entry = lookupDriver(preferred);
    const reason = entry.unsupportedReason(join(root, entry.name));
    if (reason !== undefined) throw unsupported(entry, root, reason);
    return entry;
  }

  const prior = priorDrivers(root);
  if (prior.length > 1) {
    throw new UnionctlError('BAD_OPTION', `${root} holds data of several storage drivers (${prior.join(', ')})`, {
      hint: 'choose one with --driver',
    });
  }
  if (prior.length === 1) return selectDriver(root, prior[0]);

  const reasons: string[] = [];
  for (const name of AUTO_PRIORITY) {
    const entry = entries.get(name);
    if (entry === undefined) continue;
    const reason = entry.unsupportedReason(join(root, name));
    if (reason === undefined) return entry;
    reasons.push(`${name}: ${reason}`);
  }
  throw new UnionctlError('UNSUPPORTED', `no storage driver can run on ${root}${reasons.length ? ` (${reasons.join('; ')})` : ''}`, {
    hint: `name one with --driver (${driverNames().join(', ')})`,
  });
}

/**
 * Splits "key=value" items (or takes a map) into a map. Keys are case-insensitive, as in Docker,
 * and are returned lower-cased; values are trimmed. Does not check the keys.
 */
export function splitStorageOpts(opts: string[] | Record<string, string> | undefined, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  const pairs: Array<[string, string]> = [];
  if (Array.isArray(opts)) {
    for (const item of opts) {
      const eq = item.indexOf('=');
      if (eq <= 0) {
        throw new UnionctlError('BAD_OPTION', `${what}: storage option ${JSON.stringify(item)} is not key=value`, {
          hint: 'write options as --storage-opt key=value',
        });
      }
      pairs.push([item.slice(0, eq), item.slice(eq + 1)]);
    }
  } else if (opts !== undefined) {
    pairs.push(...Object.entries(opts));
  }
  for (const [key, value] of pairs) out[key.trim().toLowerCase()] = String(value).trim();
  return out;
}

/**
 * The "key=value" items among `items` whose key is one of `allowed` (case-insensitive, as Docker's
 * keys): of a list meant for any driver (a configuration file's), what one driver takes.
 */
export function storageOptsFor(allowed: string[], items: readonly string[]): string[] {
  const known = new Set(allowed.map((k) => k.toLowerCase()));
  return items.filter((item) =>
    known.has(
      item
        .slice(0, Math.max(0, item.indexOf('=')))
        .trim()
        .toLowerCase(),
    ),
  );
}

/** splitStorageOpts, then BAD_OPTION for any key not in `allowed`, naming it and the allowed ones. */
export function parseStorageOpts(
  opts: string[] | Record<string, string> | undefined,
  allowed: string[],
  what: string,
): Record<string, string> {
  const parsed = splitStorageOpts(opts, what);
  const known = new Set(allowed.map((k) => k.toLowerCase()));
  for (const key of Object.keys(parsed)) {
    if (!known.has(key)) {
      throw new UnionctlError('BAD_OPTION', `${what}: unknown storage option ${JSON.stringify(key)}`, {
        hint: allowed.length > 0 ? `allowed options: ${allowed.join(', ')}` : `${what} accepts no storage options`,
      });
    }
  }
  return parsed;
}
