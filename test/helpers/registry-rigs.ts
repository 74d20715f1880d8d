/**
 * What the registry tests put around distribution: a token server for the Bearer flow, a proxy
 * that cuts a blob download part-way, and an htpasswd file. Each listens on 127.0.0.1 only.
 *
 * Token server (distribution's docs/spec/auth/token.md): GET /token?service=…&scope=…
 * answers `{"token": JWT}`, RS256-signed with a key whose self-signed certificate the registry
 * trusts (`rootcertbundle`), the certificate in the JWT's `x5c` header. With the right Basic
 * credentials it grants every action asked for; anonymous, only `pull`; wrong ones get a 401.
 */
import { execFileSync } from 'node:child_process';
import { createSign, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  certFile: string;
  /** The scopes asked for, one entry per token request, and whether it came with credentials. */
  requests: Array<{ scope: string[]; account: boolean }>;
  close(): Promise<void>;
}

const b64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');

export async function startTokenServer(dir: string, user: { username: string; password: string }): Promise<TokenServer> {
  const keyFile = join(dir, 'token-key.pem');
  const certFile = join(dir, 'token-cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '2',
      '-subj',
      '/CN=unionctl-test-token',
    ],
    {
      stdio: 'ignore',
    },
  );
  const key = readFileSync(keyFile);
  const certDer = readFileSync(certFile, 'utf8')
    .replace(/-----[^-]+-----/g, '')
    .replace(/\s+/g, '');
  const service = 'unionctl-test-registry';
  const issuer = 'unionctl-test-issuer';
  const requests: TokenServer['requests'] = [];
  const server: Server = createHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://token');
    const auth = req.headers.authorization;
    const account = auth !== undefined;
    if (account && auth !== `Basic ${Buffer.from(`${user.username}:${user.password}`).toString('base64')}`) {
      res.writeHead(401).end('{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}');
      return;
    }
    const scopes = url.searchParams
      .getAll('scope')
      .flatMap((s) => s.split(' '))
      .filter((s) => s !== '');
    requests.push({ scope: scopes, account });
    const access = scopes.map((s) => {
      const [type, name, actions] = s.split(':');
      const asked = (actions ?? '').split(',');
      return { type, name, actions: account ? asked : asked.filter((a) => a === 'pull') };
    });
    const now = Math.floor(Date.now() / 1000);
    const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', x5c: [certDer] }));
    const claims = b64url(
      JSON.stringify({
        iss: issuer,
        sub: account ? user.username : '',
        aud: service,
        exp: now + 600,
        nbf: now - 60,
        iat: now,
        jti: randomBytes(8).toString('hex'),
        access,
      }),
    );
    const signature = createSign('RSA-SHA256').update(`${header}.${claims}`).sign(key).toString('base64url');
    res
      .writeHead(200, { 'Content-Type': 'application/json' })
      .end(JSON.stringify({ token: `${header}.${claims}.${signature}`, expires_in: 600 }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certFile,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

export interface CuttingProxy {
  /** 127.0.0.1:port, forwarding to the registry. */
  address: string;
  /** How many downloads were cut so far. */
  cuts(): number;
  /** Requests for the blob that carried a Range header (the resumes). */
  rangeRequests(): number;
  /** Manifest GETs answered 503 by the proxy itself. */
  failedManifests(): number;
  close(): Promise<void>;
}

/**
 * A TCP proxy to `target` that, the first `times` times blob `digest` is fetched without a
 * Range header, passes `afterBytes` bytes of the answer (headers included) and then closes both
 * connections, as a network that drops does; and answers the first `failManifests` manifest GETs
 * itself with a 503, as a registry that fails for a moment does. With `stall`, the answer stops
 * after `afterBytes` instead, the connections left open: a download that hangs.
 */
export async function startCuttingProxy(
  target: string,
  opts: { digest: string; afterBytes: number; times: number; failManifests?: number; stall?: boolean },
): Promise<CuttingProxy> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  let cuts = 0;
  let ranges = 0;
  let failed = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(port, host);
    sockets.add(client).add(upstream);
    let budget: number | undefined;
    client.on('data', (data) => {
      const text = data.toString('latin1');
      if (failed < (opts.failManifests ?? 0) && /^GET \/v2\/\S+\/manifests\//.test(text)) {
        failed++; // answered here, not forwarded: the registry never sees it
        return void client.write('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 0\r\n\r\n');
      }
      if (text.includes(`/blobs/${opts.digest} HTTP/1.1`)) {
        if (/\r\nrange:/i.test(text)) ranges++;
        else if (cuts < opts.times) budget = opts.afterBytes;
      }
      upstream.write(data);
    });
    upstream.on('data', (data) => {
      if (budget === undefined) return void client.write(data);
      if (data.length < budget) {
        budget -= data.length;
        return void client.write(data);
      }
      client.write(data.subarray(0, budget));
      if (opts.stall === true) {
        budget = 0; // nothing more goes through
        return;
      }
      budget = undefined;
      cuts++;
      client.destroy();
      upstream.destroy();
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    address,
    cuts: () => cuts,
    rangeRequests: () => ranges,
    failedManifests: () => failed,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** An htpasswd file (bcrypt, as distribution requires) for one user, made with htpasswd(1). */
export function writeHtpasswd(dir: string, user: { username: string; password: string }): string {
  const file = join(dir, 'htpasswd');
  execFileSync('htpasswd', ['-Bbc', file, user.username, user.password], { stdio: 'ignore' });
  return file;
}
