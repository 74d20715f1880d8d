/**
 * A client of one repository of a registry, over the OCI distribution API (distribution's
 * docs/spec/api.md, the OCI distribution spec): manifests, blobs, uploads. HTTPS, or plain HTTP
 * only when asked (`insecure`).
 *
 * What every request gets:
 * - authentication on demand: a 401 with a Basic or Bearer challenge is answered once (auth.ts)
 *   and the request repeated; a second 401, or a 403, is DENIED naming the registry and repository;
 * - retries with exponential backoff (4 attempts) for what may pass: a connection that fails, a
 *   5xx, a 429 (after its Retry-After, capped); then REGISTRY;
 * - errors that name the registry, the repository and the thing asked for (a tag, a digest):
 *   404 is NOT_FOUND.
 *
 * Digests are checked here for manifests (the body's sha256 against the digest asked for and the
 * Docker-Content-Digest header) and small blobs; layer blobs stream out (blobChunks) and are
 * checked by the loader that hashes them on their way into the store.
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnionctlError } from '../../errors.js';
import { sha256Digest, MEDIA } from '../manifest.js';
import { basicAuthorization, parseChallenge, type Challenge, type Credentials } from './auth.js';
import { send, type HttpAnswer } from './http.js';
import { apiHost } from './reference.js';

/** Every manifest type we read, in the order we prefer them (distribution 2.8 converts a tag to schema 1 without one). */
export const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.dockerManifestList, MEDIA.ociManifest, MEDIA.dockerManifest].join(', ');

const ATTEMPTS = 4;
const FIRST_BACKOFF_MS = 250;
const MAX_RETRY_AFTER_MS = 10_000;
/** How many times a blob download cut off mid-way is resumed (a Range request from where it stopped). */
const BLOB_RESUMES = 5;

export interface RegistryClientOptions {
  registry: string;
  repository: string;
  /** Plain HTTP (no TLS): only for registries the user says so of. */
  insecure?: boolean;
  creds?: Credentials;
  /** 'pull' or 'pull,push': the scope a Bearer token is asked for. */
  actions: 'pull' | 'pull,push';
  /** Other repositories a token must also let us pull from (cross-repository blob mounts). */
  alsoPull?: string[];
  signal?: AbortSignal;
}

interface RequestOptions {
  headers?: Record<string, string>;
  /** Made afresh for each attempt (a stream can be sent once). */
  body?: () => Buffer | Readable | undefined;
  /** Statuses that are an answer; anything else is an error (or a retry). */
  expect: number[];
  /** What is asked for, for messages: "manifest latest", "blob sha256:…". */
  what: string;
}

export interface FetchedManifest {
  mediaType: string;
  body: Buffer;
  digest: string;
}

/**
 * What a client on another thread needs to go on where one is (a worker thread that fetches a
 * blob itself, blob-source.ts): the options but the signal, and the authorization it holds.
 */
export interface RegistryClientState {
  opts: Omit<RegistryClientOptions, 'signal'>;
  authorization?: string;
}

export class RegistryClient {
  readonly description: string;
  private readonly base: string;
  private authorization: string | undefined;
  private readonly scope: string;

  constructor(private readonly opts: RegistryClientOptions) {
    this.description = `registry ${opts.registry}, repository ${opts.repository}`;
    this.base = `${opts.insecure ? 'http' : 'https'}://${apiHost(opts.registry)}`;
    this.scope = [`repository:${opts.repository}:${opts.actions}`, ...(opts.alsoPull ?? []).map((r) => `repository:${r}:pull`)].join(' ');
  }

  /** This client's state, for a client on another thread (RegistryClient.fromState); cloneable. */
  state(): RegistryClientState {
    const { signal: _signal, ...opts } = this.opts;
    return { opts, ...(this.authorization === undefined ? {} : { authorization: this.authorization }) };
  }

  /** A client that goes on from `state`: it answers a 401 again itself when its authorization runs out. */
  static fromState(state: RegistryClientState): RegistryClient {
    const client = new RegistryClient(state.opts);
    client.authorization = state.authorization;
    return client;
  }

  // ---- manifests ----------------------------------------------------------------------------

  /** The manifest (or index) at `reference` (a tag or a digest), its digest checked. */
  async getManifest(reference: string): Promise<FetchedManifest> {
    const what = reference.startsWith('sha256:') ? `manifest ${reference}` : `tag ${reference}`;
    const { res, body } = await this.requestBytes(this.path('manifests', reference), {
      headers: { Accept: MANIFEST_ACCEPT },
      expect: [200],
      what,
    });
    const digest = sha256Digest(body);
    const claimed = res.header('docker-content-digest');
    if (reference.startsWith('sha256:') && digest !== reference) throw this.corrupt(what, `its body has the digest ${digest}`);
    if (claimed !== null && claimed !== digest) throw this.corrupt(what, `Docker-Content-Digest says ${claimed}, the body has ${digest}`);
    const mediaType = (res.header('content-type') ?? '').split(';')[0]!.trim() || mediaTypeInBody(body);
    return { mediaType, body, digest };
  }

  /** PUTs a manifest under `reference` (a tag or its digest); returns its digest, checked against what the registry says. */
  async putManifest(reference: string, mediaType: string, body: Buffer): Promise<string> {
    const what = `manifest ${reference}`;
    const res = await this.request('PUT', this.path('manifests', reference), {
      headers: { 'Content-Type': mediaType },
      body: () => body,
      expect: [201],
      what,
    });
    res.discard();
    const digest = sha256Digest(body);
    const claimed = res.header('docker-content-digest');
    if (claimed !== null && claimed !== digest) throw this.corrupt(what, `the registry stored it as ${claimed}, not ${digest}`);
    return digest;
  }

  // ---- blobs --------------------------------------------------------------------------------

  /** A small blob (a config) whole, checked against its digest. */
  async getBlob(digest: string, what = `blob ${digest}`): Promise<Buffer> {
    const { body } = await this.requestBytes(this.path('blobs', digest), { expect: [200], what });
    if (sha256Digest(body) !== digest) throw this.corrupt(what, `it has the digest ${sha256Digest(body)}`);
    return body;
  }

  /**
   * The blob's bytes as they arrive. A download cut off part-way (the connection reset, or closed
   * before `size` bytes) is resumed with `Range: bytes=<received>-` (a registry that answers 200
   * instead of 206 sends it all again: the bytes already given are skipped), up to BLOB_RESUMES
   * times. The digest is not checked here: the caller hashes what it reads.
   */
  async *blobChunks(digest: string, size: number | undefined): AsyncGenerator<Buffer, void, undefined> {
    const what = `blob ${digest}`;
    let received = 0;
    for (let resumes = 0; ; resumes++) {
      const headers: Record<string, string> = received > 0 ? { Range: `bytes=${received}-` } : {};
      const res = await this.request('GET', this.path('blobs', digest), { headers, expect: [200, 206], what });
      let skip = res.status === 200 ? received : 0;
      const body = res.body;
      try {
        for await (const part of body) {
          let chunk = part as Buffer;
          if (skip > 0) {
            const dropped = Math.min(skip, chunk.length);
            chunk = chunk.subarray(dropped);
            skip -= dropped;
            if (chunk.length === 0) continue;
          }
          received += chunk.length;
          yield chunk;
        }
        if (size === undefined ? body.complete : received >= size) return;
        throw new Error(`the connection closed after ${received}${size === undefined ? '' : ` of ${size}`} bytes`);
      } catch (e) {
        body.destroy();
        if (this.opts.signal?.aborted || e instanceof UnionctlError) throw e;
        if (resumes >= BLOB_RESUMES) {
          throw new UnionctlError(
            'REGISTRY',
            `${this.description}: ${what}: the download failed ${resumes + 1} times: ${(e as Error).message}`,
            {
              hint: 'check the network and the registry, then pull again (layers already in the store are not fetched again)',
              cause: e,
            },
          );
        }
        await sleep(FIRST_BACKOFF_MS * 2 ** Math.min(resumes, 4), undefined, { signal: this.opts.signal });
      }
    }
  }

  /** Whether the repository has the blob (HEAD). */
  async hasBlob(digest: string): Promise<boolean> {
    const res = await this.request('HEAD', this.path('blobs', digest), { expect: [200, 404], what: `blob ${digest}` });
    res.discard(); // an answer not read keeps its connection from being reused
    return res.status === 200;
  }

  /**
   * Uploads the blob in `file` (`size` bytes, digest `digest`): first, when `mountFrom` names
   * another repository of this registry that has it, a cross-repository mount (no bytes sent);
   * else one POST and one PUT with the whole blob (monolithic), or PATCHes of `chunkSize` bytes
   * then the closing PUT (chunked). Returns whether it was mounted. `onSent` hears the bytes of
   * the blob sent so far (again from a lower count when a request is retried).
   */
  async uploadBlob(
    digest: string,
    size: number,
    file: string | Buffer,
    opts: { mountFrom?: string; chunkSize?: number; onSent?: (bytes: number) => void } = {},
  ): Promise<'mounted' | 'uploaded'> {
    const what = `upload of blob ${digest}`;
    const mount = opts.mountFrom === undefined ? '' : `?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(opts.mountFrom)}`;
    const started = await this.request('POST', `${this.path('blobs', 'uploads/')}${mount}`, { expect: [201, 202], what });
    started.discard();
    if (started.status === 201) return 'mounted';
    let location = this.location(started, what);
    const body = (start: number, end: number) => () => {
      if (typeof file !== 'string') {
        opts.onSent?.(end);
        return file.subarray(start, end);
      }
      const stream = createReadStream(file, { start, end: end - 1 });
      let at = start;
      if (opts.onSent !== undefined) stream.on('data', (chunk) => opts.onSent!((at += chunk.length)));
      return stream;
    };
    const chunkSize = opts.chunkSize;
    let sent = 0;
    if (chunkSize !== undefined && chunkSize > 0) {
      while (sent < size) {
        const end = Math.min(size, sent + chunkSize);
        const res = await this.request('PATCH', location, {
          headers: {
            'Content-Type': 'application/octet-stream',
            'Content-Range': `${sent}-${end - 1}`,
            'Content-Length': String(end - sent),
          },
          body: body(sent, end),
          expect: [202],
          what,
        });
        res.discard();
        location = this.location(res, what);
        sent = end;
      }
    }
    const closing = withQuery(location, `digest=${encodeURIComponent(digest)}`);
    const res = await this.request('PUT', closing, {
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size - sent) },
      body: sent < size ? body(sent, size) : undefined,
      expect: [201],
      what,
    });
    res.discard();
    const claimed = res.header('docker-content-digest');
    if (claimed !== null && claimed !== digest) throw this.corrupt(what, `the registry stored it as ${claimed}`);
    return 'uploaded';
  }

  /** GET /v2/: reachable, and (with credentials) logged in. */
  async ping(): Promise<void> {
    const res = await this.request('GET', '/v2/', { expect: [200], what: 'the API root /v2/' });
    res.discard();
  }

  // ---- the request ----------------------------------------------------------------------------

  private path(kind: 'manifests' | 'blobs', reference: string): string {
    return `/v2/${this.opts.repository}/${kind}/${reference}`;
  }

  private location(res: HttpAnswer, what: string): string {
    const location = res.header('location');
    if (location === null) throw this.protocolError(what, `the ${res.status} answer has no Location header`);
    return new URL(location, this.base).href;
  }

  /** A GET whose whole body is wanted: a body cut off on its way is fetched again (as a failed connection is). */
  private async requestBytes(path: string, opts: RequestOptions): Promise<{ res: HttpAnswer; body: Buffer }> {
    for (let attempt = 1; ; attempt++) {
      const res = await this.request('GET', path, opts);
      try {
        return { res, body: await res.bytes() };
      } catch (e) {
        if (this.opts.signal?.aborted) throw e;
        if (attempt >= ATTEMPTS) throw this.unreachable(opts.what, e, attempt);
        await this.backoff(attempt);
      }
    }
  }

  /** One request, with authentication on demand and retries (see the module doc). */
  private async request(method: string, pathOrUrl: string, opts: RequestOptions): Promise<HttpAnswer> {
    const url = pathOrUrl.startsWith('/') ? `${this.base}${pathOrUrl}` : pathOrUrl;
    let answeredChallenge = false;
    for (let attempt = 1; ; attempt++) {
      const headers: Record<string, string> = { ...opts.headers };
      if (this.authorization !== undefined) headers.Authorization = this.authorization;
      let res: HttpAnswer;
      try {
        res = await send({ method, url, headers, body: opts.body?.(), signal: this.opts.signal });
      } catch (e) {
        if (this.opts.signal?.aborted) throw e;
        if (attempt >= ATTEMPTS || isTlsFailure(e)) throw this.unreachable(opts.what, e, attempt);
        await this.backoff(attempt);
        continue;
      }
      if (res.status === 401 && !answeredChallenge) {
        answeredChallenge = true;
        res.discard();
        await this.answer(parseChallenge(res.header('www-authenticate')), opts.what);
        attempt--; // the challenge is not a failed attempt
        continue;
      }
      if (opts.expect.includes(res.status)) return res;
      const detail = await errorDetail(res);
      if ((res.status >= 500 || res.status === 429) && attempt < ATTEMPTS) {
        await this.backoff(attempt, res.header('retry-after'));
        continue;
      }
      if (res.status === 401) throw this.refused(parseChallenge(res.header('www-authenticate')), opts.what, detail);
      throw this.statusError(res.status, opts.what, detail);
    }
  }

  /**
   * A 401 after the challenge was answered: the credentials are wrong, or (Bearer
   * `error="insufficient_scope"`) right but not allowed what was asked, such as an anonymous push.
   */
  private refused(challenge: Challenge | undefined, what: string, detail: string): UnionctlError {
    const said = detail === '' ? '' : `: ${detail}`;
    if (challenge?.params.error !== 'insufficient_scope') return this.denied(what, `the registry refused the credentials (401${said})`);
    const who = this.opts.creds === undefined ? 'anonymous users' : `user ${this.opts.creds.username}`;
    return this.denied(
      what,
      `the registry does not grant ${who} the access ${challenge.params.scope ?? this.scope} (401 insufficient_scope${said})`,
    );
  }

  /** Takes up a 401's challenge: Basic with the credentials, Bearer with a token from its realm. */
  private async answer(challenge: Challenge | undefined, what: string): Promise<void> {
    if (challenge === undefined) throw this.denied(what, 'the registry asks to authenticate (401) without a Basic or Bearer challenge');
    if (challenge.scheme === 'basic') {
      if (this.opts.creds === undefined) throw this.denied(what, 'the registry asks for credentials (401) and none were given');
      this.authorization = basicAuthorization(this.opts.creds);
      return;
    }
    this.authorization = `Bearer ${await this.token(challenge, what)}`;
  }

  private async token(challenge: Challenge, what: string): Promise<string> {
    const realm = challenge.params.realm;
    if (realm === undefined) throw this.protocolError(what, 'its Bearer challenge has no realm');
    const url = new URL(realm);
    if (challenge.params.service !== undefined) url.searchParams.set('service', challenge.params.service);
    const scopes = new Set([...(challenge.params.scope ?? '').split(' '), ...this.scope.split(' ')].filter((s) => s !== ''));
    for (const scope of scopes) url.searchParams.append('scope', scope);
    if (this.opts.creds !== undefined) url.searchParams.set('account', this.opts.creds.username);
    const headers: Record<string, string> = this.opts.creds === undefined ? {} : { Authorization: basicAuthorization(this.opts.creds) };
    let res: HttpAnswer;
    try {
      res = await send({ method: 'GET', url: url.href, headers, signal: this.opts.signal });
    } catch (e) {
      if (this.opts.signal?.aborted) throw e;
      throw this.unreachable(`a token from ${url.origin}`, e);
    }
    if (res.status === 401 || res.status === 403) {
      res.discard();
      throw this.denied(
        what,
        `the token server ${url.origin} refused ${this.opts.creds === undefined ? 'an anonymous token' : 'the credentials'} (${res.status})`,
      );
    }
    if (res.status !== 200) {
      res.discard();
      throw this.protocolError(what, `the token server ${url.origin} answered ${res.status}`);
    }
    const body = parseJsonObject(await res.bytes().catch(() => Buffer.alloc(0))) as { token?: unknown; access_token?: unknown };
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined;
    if (token === undefined || token === '') throw this.protocolError(what, `the token server ${url.origin} answered no token`);
    return token;
  }

  private async backoff(attempt: number, retryAfter?: string | null): Promise<void> {
    const seconds = retryAfter === null || retryAfter === undefined ? NaN : Number(retryAfter);
    const ms = Number.isFinite(seconds) ? Math.min(seconds * 1000, MAX_RETRY_AFTER_MS) : FIRST_BACKOFF_MS * 2 ** (attempt - 1);
    await sleep(ms, undefined, { signal: this.opts.signal });
  }

  // ---- errors -------------------------------------------------------------------------------

  private statusError(status: number, what: string, detail: string): UnionctlError {
    const said = detail === '' ? '' : `: ${detail}`;
    if (status === 404)
      return new UnionctlError('NOT_FOUND', `${this.description}: ${what} not found (404${said})`, {
        hint: 'check the name, the tag or digest, and the registry',
      });
    if (status === 403) return this.denied(what, `access denied (403${said})`);
    if (status === 429)
      return new UnionctlError(
        'REGISTRY',
        `${this.description}: ${what}: too many requests (429${said}), still after ${ATTEMPTS} attempts`,
        { hint: 'wait a while, then try again' },
      );
    return new UnionctlError(
      'REGISTRY',
      `${this.description}: ${what}: the registry answered ${status}${said}${status >= 500 ? ` ${ATTEMPTS} times` : ''}`,
      {
        hint: status >= 500 ? 'the registry is failing: try again later' : 'the registry does not accept this request',
      },
    );
  }

  private denied(what: string, why: string): UnionctlError {
    return new UnionctlError('DENIED', `${this.description}: ${what}: ${why}`, {
      hint:
        this.opts.creds === undefined
          ? `give credentials: --creds USER:PASSWORD, or unionctl login ${this.opts.registry}`
          : 'check the user name and password, and that the user may access this repository',
    });
  }

  private unreachable(what: string, e: unknown, attempts = 1): UnionctlError {
    const why = errorCode(e) ?? (e as Error).message;
    const tried = attempts > 1 ? `, ${attempts} attempts` : '';
    return new UnionctlError('REGISTRY', `${this.description}: ${what}: cannot reach ${this.base} (${why})${tried}`, {
      hint: this.opts.insecure
        ? 'check the address and that the registry runs'
        : 'check the address; a registry without TLS needs --insecure (or insecure = true for it in storage.conf)',
      cause: e,
    });
  }

  private corrupt(what: string, why: string): UnionctlError {
    return new UnionctlError('CORRUPT', `${this.description}: ${what}: digest mismatch: ${why}`, {
      hint: 'the registry serves damaged data (or something between altered it); nothing was stored',
    });
  }

  private protocolError(what: string, why: string): UnionctlError {
    return new UnionctlError('REGISTRY', `${this.description}: ${what}: ${why}`, {
      hint: 'the server does not speak the registry API as expected',
    });
  }
}

/** The code node:http's (or a wrapped) error carries: ECONNREFUSED, ERR_SSL_WRONG_VERSION_NUMBER, … */
function errorCode(e: unknown): string | undefined {
  const { code, cause } = e as { code?: unknown; cause?: { code?: unknown } };
  const found = code ?? cause?.code;
  return typeof found === 'string' ? found : undefined;
}

/**
 * A TLS handshake that failed (plain HTTP spoken to: node:https says EPROTO; a bad certificate):
 * trying again cannot help.
 */
function isTlsFailure(e: unknown): boolean {
  return /^(EPROTO$|ERR_SSL|ERR_TLS|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED)/.test(errorCode(e) ?? '');
}

function parseJsonObject(data: Buffer): Record<string, unknown> {
  try {
    const v = JSON.parse(data.toString('utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function withQuery(url: string, query: string): string {
  return `${url}${url.includes('?') ? '&' : '?'}${query}`;
}

function mediaTypeInBody(body: Buffer): string {
  const { mediaType } = parseJsonObject(body);
  return typeof mediaType === 'string' ? mediaType : '';
}

/** The first error of a registry's JSON error body ("MANIFEST_UNKNOWN: manifest unknown"), or ''. */
async function errorDetail(res: HttpAnswer): Promise<string> {
  const { errors } = parseJsonObject(await res.bytes().catch(() => Buffer.alloc(0)));
  const first = (Array.isArray(errors) ? errors[0] : undefined) as { code?: unknown; message?: unknown } | undefined;
  if (typeof first !== 'object' || first === null) return '';
  return [first.code, first.message].filter((v) => typeof v === 'string' && v !== '').join(': ');
}
