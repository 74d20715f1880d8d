/**
 * Which peer tools this machine has, their versions, and installing the missing ones (--peers).
 * A peer that is missing and not installed is reported as skipped by the operations that need it.
 */
import { spawnSync } from 'node:child_process';

export interface PeerTool {
  /** Command looked up on PATH. */
  command: string;
  /** Debian package that provides it. */
  pkg: string;
  versionArgs: string[];
}

export const PEER_TOOLS = {
  tar: { command: 'tar', pkg: 'tar', versionArgs: ['--version'] },
  dockerd: { command: 'dockerd', pkg: 'docker.io', versionArgs: ['--version'] },
  // Docker 20.10's own CLI: a newer client elsewhere in PATH may refuse the old daemon's API.
  docker: { command: '/usr/bin/docker', pkg: 'docker.io', versionArgs: ['--version'] },
  podman: { command: 'podman', pkg: 'podman', versionArgs: ['--version'] },
  skopeo: { command: 'skopeo', pkg: 'skopeo', versionArgs: ['--version'] },
  umoci: { command: 'umoci', pkg: 'umoci', versionArgs: ['--version'] },
  'fuse-overlayfs': { command: 'fuse-overlayfs', pkg: 'fuse-overlayfs', versionArgs: ['--version'] },
} satisfies Record<string, PeerTool>;

export type PeerName = keyof typeof PEER_TOOLS;

/** The tool's version ("1.34"), or undefined when it is not installed. */
export function toolVersion(name: PeerName): string | undefined {
  const t = PEER_TOOLS[name];
  const r = spawnSync(t.command, t.versionArgs, { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) return undefined;
  // fuse-overlayfs prints fusermount3's version first: prefer the line that names the tool.
  const lines = `${r.stdout}${r.stderr}`.split('\n').filter((l) => /\d+\.\d+/.test(l));
  const line = lines.find((l) => l.includes(t.command)) ?? lines[0];
  return /(\d+\.\d+(?:\.\d+)?)/.exec(line ?? '')?.[1] ?? 'unknown version';
}

export function installedPeers(): Map<PeerName, string> {
  const found = new Map<PeerName, string>();
  for (const name of Object.keys(PEER_TOOLS) as PeerName[]) {
    const v = toolVersion(name);
    if (v !== undefined) found.set(name, v);
  }
  return found;
}

/** apt-get installs the packages of the missing peers; returns what it could not install and why. */
export function installPeers(missing: PeerName[], say: (line: string) => void): string | undefined {
  return aptInstall([...new Set(missing.map((n) => PEER_TOOLS[n].pkg))], say);
}

/** apt-get update, then install `pkgs` (no recommends); returns what failed and why, or undefined. */
export function aptInstall(pkgs: string[], say: (line: string) => void): string | undefined {
  if (pkgs.length === 0) return undefined;
  say(`installing: apt-get install ${pkgs.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const update = spawnSync('apt-get', ['update', '-q'], { encoding: 'utf8', env });
  if (update.error) return `apt-get: ${update.error.message}`;
  const r = spawnSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...pkgs], { encoding: 'utf8', env });
  if (r.error) return `apt-get: ${r.error.message}`;
  if (r.status !== 0) return `apt-get install ${pkgs.join(' ')} failed: ${r.stderr.trim().split('\n').slice(-2).join(' / ')}`;
  return undefined;
}
