/**
 * A private registry for tests and benchmarks: Debian's docker-registry (distribution 2.8) started
 * by hand on 127.0.0.1 with its own config and data dir under a directory you give, no auth, its
 * access log (one line per request) kept in a file so a test can count what was fetched.
 *
 *   const reg = await startRegistry({ dir: scratch.dir });
 *   try {
 *     reg.push('docker-archive:fixtures/sample-docker.tar', 'sample/app:1');   // skopeo copy
 *     … pull `${reg.address}/sample/app:1` …
 *     reg.blobGets();   // digests of every blob GET so far
 *   } finally {
 *     await reg.stop();
 *   }
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { sh } from '../measure.js';
import { logTail, sleep, stopDaemon } from './processes.js';

export const REGISTRY = '/usr/bin/docker-registry';
export const SKOPEO = '/usr/bin/skopeo';

export interface Registry {
  /** host:port, e.g. 127.0.0.1:40123 (plain HTTP). */
  address: string;
  logFile: string;
  /** `skopeo copy <source> docker://<address>/<name>` (plain HTTP, `creds` user:password if given); throws with the end of skopeo's stderr. */
  push(source: string, name: string, creds?: string): void;
  /** Where the registry keeps blob `digest` on disk (distribution's filesystem driver layout): a test may damage it. */
  blobFile(digest: string): string;
  /** The digests (sha256:…) of every `GET /v2/<repo>/blobs/<digest>` answered so far, in order. */
  blobGets(): string[];
  stop(): Promise<void>;
}

export function registryAvailable(): boolean {
  return existsSync(REGISTRY) && existsSync(SKOPEO);
}

/** A port the kernel says is free on 127.0.0.1 now (the registry takes an address, not a listening socket). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** How clients must authenticate: none (the default), an htpasswd file (Basic), or tokens from a token server (Bearer). */
export type RegistryAuth =
  | { htpasswd: string }
  | {
      token: {
        realm: string;
        service: string;
        issuer: string;
        /** PEM certificate(s) whose keys sign the tokens. */
        rootCertBundle: string;
      };
    };

function authYaml(auth: RegistryAuth | undefined): string[] {
  if (auth === undefined) return [];
  if ('htpasswd' in auth) return ['auth:', '  htpasswd:', '    realm: unionctl-test', `    path: ${auth.htpasswd}`];
  const t = auth.token;
  return [
    'auth:',
    '  token:',
    `    realm: ${t.realm}`,
    `    service: ${t.service}`,
    `    issuer: ${t.issuer}`,
    `    rootcertbundle: ${t.rootCertBundle}`,
  ];
}

function configYaml(data: string, address: string, auth: RegistryAuth | undefined): string {
  return [
    'version: 0.1',
    'log:',
    '  level: info',
    '  accesslog:',
    '    disabled: false',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${data}`,
    '  delete:',
    '    enabled: true',
    ...authYaml(auth),
    'http:',
    `  addr: ${address}`,
    '',
  ].join('\n');
}

export async function startRegistry(opts: { dir: string; auth?: RegistryAuth; readyTimeoutMs?: number }): Promise<Registry> {
  if (!registryAvailable()) throw new Error('startRegistry: docker-registry or skopeo is missing (apt-get install docker-registry skopeo)');
  mkdirSync(opts.dir, { recursive: true });
  const base = mkdtempSync(join(opts.dir, 'registry-'));
  const configFile = join(base, 'config.yml');
  const logFile = join(base, 'registry.log');
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  for (;;) {
    const address = `127.0.0.1:${await freePort()}`;
    writeFileSync(configFile, configYaml(join(base, 'data'), address, opts.auth));
    const log = openSync(logFile, 'a');
    const child = spawn(REGISTRY, ['serve', configFile], { stdio: ['ignore', log, log], detached: true });
    closeSync(log);
    child.unref();
    const pid = child.pid ?? -1;
    let exited = false;
    child.on('exit', () => (exited = true));
    const stop = () => stopDaemon('docker-registry', pid, base);
    while (!exited && Date.now() < deadline) {
      try {
        const res = await fetch(`http://${address}/v2/`);
        // 401: up, and asking for the credentials it was configured for.
        if (res.status === 200 || (opts.auth !== undefined && res.status === 401))
          return registryAt(address, join(base, 'data'), logFile, stop);
      } catch {
        /* not listening yet */
      }
      await sleep(50);
    }
    // Another process took the port between freePort() and the registry's bind: try another one.
    if (exited && /address already in use/.test(logTail(logFile)) && Date.now() < deadline) continue;
    const tail = logTail(logFile);
    await stop().catch(() => {});
    throw new Error(`docker-registry did not start on ${address}:\n${tail}`);
  }
}

function registryAt(address: string, dataDir: string, logFile: string, stop: () => Promise<void>): Registry {
  return {
    address,
    logFile,
    blobFile: (digest) => join(dataDir, 'docker/registry/v2/blobs/sha256', digest.slice(7, 9), digest.slice(7), 'data'),
    push(source, name, creds) {
      sh(SKOPEO, [
        'copy',
        '--quiet',
        '--dest-tls-verify=false',
        ...(creds ? ['--dest-creds', creds] : []),
        source,
        `docker://${address}/${name}`,
      ]);
    },
    blobGets() {
      // Access log lines, combined log format: … "GET /v2/sample/app/blobs/sha256:… HTTP/1.1" 200 …
      const text = readFileSync(logFile, 'utf8');
      return [...text.matchAll(/"GET \/v2\/\S+\/blobs\/(sha256:[0-9a-f]{64}) HTTP\/[\d.]+" 20[06] /g)].map((m) => m[1]!);
    },
    stop,
  };
}
