/**
 * `commit --change`: the Dockerfile instructions `docker commit -c` and `podman commit -c` accept,
 * applied to an image config's `config` object (the OCI image config's "config" field: Env, Cmd,
 * Entrypoint, …). Only instructions that change the config and not the files are allowed: CMD,
 * ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR. ONBUILD, which Docker
 * accepts too, is refused: OCI configs have no field for it.
 */
import { posix } from 'node:path';
import { UnionctlError } from '../errors.js';

/** The runtime part of an image config, as far as --change touches it. Other fields pass through. */
export interface RuntimeConfig {
  Env?: string[];
  Cmd?: string[];
  Entrypoint?: string[];
  ExposedPorts?: Record<string, object>;
  Labels?: Record<string, string>;
  StopSignal?: string;
  User?: string;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  [field: string]: unknown;
}

const INSTRUCTIONS = ['CMD', 'ENTRYPOINT', 'ENV', 'EXPOSE', 'LABEL', 'STOPSIGNAL', 'USER', 'VOLUME', 'WORKDIR'] as const;
type Instruction = (typeof INSTRUCTIONS)[number];

/**
 * `config` with each of `changes` applied in order (a new object; `config` is not changed).
 * Refuses USAGE, naming the change, for an unknown instruction, a missing argument, a malformed
 * KEY=VALUE, port or JSON array.
 */
export function applyConfigChanges(config: RuntimeConfig, changes: readonly string[]): RuntimeConfig {
  let next: RuntimeConfig = { ...config };
  for (const change of changes) next = applyOne(next, change);
  return next;
}

function applyOne(config: RuntimeConfig, change: string): RuntimeConfig {
  const match = /^\s*(\S+)\s*(.*?)\s*$/s.exec(change);
  const word = match?.[1]?.toUpperCase() ?? '';
  const rest = match?.[2] ?? '';
  if (!(INSTRUCTIONS as readonly string[]).includes(word)) {
    throw badChange(change, word === '' ? 'it is empty' : `${word} is not an instruction commit can apply`);
  }
  if (rest === '') throw badChange(change, `${word} needs an argument`);
  const instruction = word as Instruction;
  switch (instruction) {
    case 'CMD':
      return { ...config, Cmd: commandForm(rest, change) };
    case 'ENTRYPOINT':
      return { ...config, Entrypoint: commandForm(rest, change) };
    case 'ENV':
      return { ...config, Env: withEnv(config.Env ?? [], keyValues(rest, change, 'ENV')) };
    case 'LABEL':
      return { ...config, Labels: { ...(config.Labels ?? {}), ...Object.fromEntries(keyValues(rest, change, 'LABEL')) } };
    case 'EXPOSE':
      return { ...config, ExposedPorts: { ...(config.ExposedPorts ?? {}), ...setOf(words(rest, change).map((p) => port(p, change))) } };
    case 'VOLUME':
      return { ...config, Volumes: { ...(config.Volumes ?? {}), ...setOf(listForm(rest, change)) } };
    case 'USER':
      return { ...config, User: single(rest, change) };
    case 'STOPSIGNAL':
      return { ...config, StopSignal: single(rest, change) };
    case 'WORKDIR':
      // A relative WORKDIR is relative to the one before it, as in a Dockerfile.
      return { ...config, WorkingDir: posix.resolve(config.WorkingDir || '/', single(rest, change)) };
  }
}

function badChange(change: string, why: string): UnionctlError {
  return new UnionctlError('USAGE', `bad --change ${JSON.stringify(change)}: ${why}`, {
    hint: `write a Dockerfile instruction: ${INSTRUCTIONS.join(', ')} (e.g. --change 'ENV PATH=/usr/bin')`,
  });
}

/** CMD/ENTRYPOINT: the JSON (exec) form, or the shell form run by /bin/sh -c. */
function commandForm(rest: string, change: string): string[] {
  const exec = jsonArray(rest, change);
  return exec ?? ['/bin/sh', '-c', rest];
}

/** VOLUME: a JSON array, or paths separated by spaces. */
function listForm(rest: string, change: string): string[] {
  return jsonArray(rest, change) ?? words(rest, change);
}

/** A JSON array of strings when `rest` starts with "[" (undefined otherwise); USAGE when it is not a valid one. */
function jsonArray(rest: string, change: string): string[] | undefined {
  if (!rest.startsWith('[')) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(rest);
  } catch {
    throw badChange(change, 'the [ … ] form must be a JSON array of strings, e.g. ["/bin/sh", "-c", "true"]');
  }
  if (!Array.isArray(parsed) || !parsed.every((p) => typeof p === 'string'))
    throw badChange(change, 'the [ … ] form must be a JSON array of strings');
  return parsed;
}

function single(rest: string, change: string): string {
  const parts = words(rest, change);
  if (parts.length !== 1) throw badChange(change, 'it takes one argument');
  return parts[0]!;
}

/**
 * The words of `rest`, split at unquoted white space; "…" and '…' quote (the quotes go), and a
 * backslash outside single quotes takes the next character as it is.
 */
function words(rest: string, change: string): string[] {
  const out: string[] = [];
  let current: string | undefined;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < rest.length; i++) {
    const c = rest[i]!;
    if (quote === undefined && /\s/.test(c)) {
      if (current !== undefined) out.push(current);
      current = undefined;
      continue;
    }
    current ??= '';
    if (c === '\\' && quote !== "'" && i + 1 < rest.length) current += rest[++i];
    else if (quote === undefined && (c === '"' || c === "'")) quote = c;
    else if (c === quote) quote = undefined;
    else current += c;
  }
  if (quote !== undefined) throw badChange(change, `a ${quote} is not closed`);
  if (current !== undefined) out.push(current);
  return out;
}

/** ENV and LABEL: KEY=VALUE pairs, or the older `ENV KEY VALUE…` form (one pair, the value the rest of the line). */
function keyValues(rest: string, change: string, instruction: 'ENV' | 'LABEL'): Array<[string, string]> {
  const key = /^\S+/.exec(rest)![0];
  if (instruction === 'ENV' && !key.includes('=')) {
    // The older form: the value is the rest of the line, as it is (Docker does not unquote it).
    const value = rest.slice(key.length).trim();
    if (value === '') throw badChange(change, 'ENV KEY VALUE needs a value');
    return [[key, value]];
  }
  return words(rest, change).map((p) => {
    const eq = p.indexOf('=');
    if (eq <= 0) throw badChange(change, `${JSON.stringify(p)} is not KEY=VALUE`);
    return [p.slice(0, eq), p.slice(eq + 1)];
  });
}

/** Env with each KEY set to its new value, in place where it was, else appended. */
function withEnv(env: readonly string[], pairs: Array<[string, string]>): string[] {
  const next = [...env];
  for (const [key, value] of pairs) {
    const at = next.findIndex((e) => e === key || e.startsWith(`${key}=`));
    if (at === -1) next.push(`${key}=${value}`);
    else next[at] = `${key}=${value}`;
  }
  return next;
}

/** "80" → "80/tcp"; "53/udp" stays. */
function port(spec: string, change: string): string {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?(?:\/(tcp|udp|sctp))?$/i.exec(spec);
  if (m === null) throw badChange(change, `${JSON.stringify(spec)} is not a port (PORT or PORT/tcp|udp|sctp)`);
  const range = m[2] === undefined ? m[1] : `${m[1]}-${m[2]}`;
  return `${range}/${(m[3] ?? 'tcp').toLowerCase()}`;
}

/** Docker writes sets (ExposedPorts, Volumes) as objects with empty-object values. */
function setOf(keys: readonly string[]): Record<string, object> {
  return Object.fromEntries(keys.map((k) => [k, {}]));
}
