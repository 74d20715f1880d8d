/**
 * Registry credentials and the two ways a registry asks for them (distribution's token spec and
 * RFC 7617):
 *
 * - `WWW-Authenticate: Basic realm="…"`: every request carries `Authorization: Basic base64(user:pass)`.
 * - `WWW-Authenticate: Bearer realm="https://auth…/token",service="…",scope="repository:x:pull"`:
 *   GET realm?service=…&scope=… (with Basic credentials when there are any, anonymous otherwise)
 *   answers `{"token": …}` (or `access_token`); requests then carry `Authorization: Bearer <token>`.
 *   Tokens are kept per scope set for the life of the client.
 *
 * Credentials come from `--creds user:pass`, else from the auth file: `$REGISTRY_AUTH_FILE`, else
 * `~/.docker/config.json` — the `auths` map of docker and podman (`{"auths": {"host": {"auth":
 * base64("user:pass")}}}`; Docker Hub's key is `https://index.docker.io/v1/` or `docker.io`).
 * `unionctl login` writes that file; `logout` removes the entry.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { UnionctlError } from '../../errors.js';
import { writeFileAtomic } from '../../sys/index.js';
import { DOCKER_HUB } from './reference.js';

export interface Credentials {
  username: string;
  password: string;
}

/** "user:pass" (the password may hold ':'); USAGE otherwise. */
export function parseCreds(text: string): Credentials {
  const colon = text.indexOf(':');
  if (colon <= 0) throw new UnionctlError('USAGE', '--creds must be USERNAME:PASSWORD', { hint: 'e.g. --creds alice:s3cret' });
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** The auth file unionctl reads and `login` writes. */
export function authFilePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.REGISTRY_AUTH_FILE || join(homedir(), '.docker', 'config.json');
}

interface AuthFile {
  auths?: Record<string, { auth?: string }>;
  [key: string]: unknown;
}

function readAuthFile(path: string): AuthFile {
  if (!existsSync(path)) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new UnionctlError('CORRUPT', `the auth file ${path} is not valid JSON`, {
      hint: 'fix or remove it, or give the credentials with --creds',
    });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new UnionctlError('CORRUPT', `the auth file ${path} is not a JSON object`, { hint: 'fix or remove it' });
  return parsed as AuthFile;
}

/** The keys a registry may be filed under. */
function authKeys(registry: string): string[] {
  if (registry === DOCKER_HUB) return ['https://index.docker.io/v1/', 'docker.io', 'index.docker.io', 'registry-1.docker.io'];
  return [registry, `https://${registry}`, `http://${registry}`];
}

/** The credentials the auth file holds for `registry`, if any. */
export function storedCredentials(registry: string, path = authFilePath()): Credentials | undefined {
  const auths = readAuthFile(path).auths ?? {};
  for (const key of authKeys(registry)) {
    const auth = auths[key]?.auth;
    if (typeof auth !== 'string' || auth === '') continue;
    const decoded = Buffer.from(auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0)
      throw new UnionctlError('CORRUPT', `the auth file ${path} holds a damaged entry for ${key}`, { hint: `unionctl login ${registry}` });
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  return undefined;
}

/** Files `creds` for `registry` in the auth file (made 0600, its dir 0700 when new); other entries and keys stay. */
export function storeCredentials(registry: string, creds: Credentials, path = authFilePath()): void {
  const file = readAuthFile(path);
  const auths = { ...(file.auths ?? {}) };
  for (const key of authKeys(registry)) delete auths[key];
  auths[authKeys(registry)[0]!] = { auth: userPassBase64(creds) };
  writeAuthFile(path, { ...file, auths });
}

/** Removes the registry's entries; false when there were none. */
export function removeCredentials(registry: string, path = authFilePath()): boolean {
  const file = readAuthFile(path);
  const auths = { ...(file.auths ?? {}) };
  const keys = authKeys(registry).filter((k) => k in auths);
  if (keys.length === 0) return false;
  for (const key of keys) delete auths[key];
  writeAuthFile(path, { ...file, auths });
  return true;
}

/** One challenge of a WWW-Authenticate header. */
export interface Challenge {
  scheme: 'basic' | 'bearer';
  params: Record<string, string>;
}

/** The Basic or Bearer challenge of a WWW-Authenticate header value (the first of those), if any. */
export function parseChallenge(header: string | null): Challenge | undefined {
  if (header === null) return undefined;
  const m = /^\s*(Basic|Bearer)\b\s*(.*)$/i.exec(header);
  if (m === null) return undefined;
  const params: Record<string, string> = {};
  for (const p of m[2]!.matchAll(/([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g)) {
    params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  }
  return { scheme: m[1]!.toLowerCase() as Challenge['scheme'], params };
}

export function basicAuthorization(creds: Credentials): string {
  return `Basic ${userPassBase64(creds)}`;
}

/** base64("user:password"): an auth file's `auth`, and what Basic authorization sends. */
function userPassBase64(creds: Credentials): string {
  return Buffer.from(`${creds.username}:${creds.password}`).toString('base64');
}

/** Replaces the auth file atomically (0600; its dir made 0700 when missing). */
function writeAuthFile(path: string, file: AuthFile): void {
  writeFileAtomic(path, `${JSON.stringify(file, null, 2)}\n`, { durable: true, makeDir: true, mode: 0o600 });
}
