/**
 * The registry client's one HTTP transport, on node:http / node:https (keep-alive agents): a
 * request, its answer's status and headers, and the body as a Node stream. Not fetch: reading a
 * body through fetch's web streams costs a promise per chunk (a 320 MB pull took 0.4–0.8 s longer
 * with fetch, measured on a busy machine).
 *
 * Redirects (301, 302, 303, 307, 308; registries send blob GETs to object storage) are followed up
 * to 5 times; Authorization is not sent to another origin. A request body is a Buffer or a
 * stream; a redirect of a request with a stream body is not followed (it cannot be sent twice).
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';

const httpAgent = new HttpAgent({ keepAlive: true });
const httpsAgent = new HttpsAgent({ keepAlive: true });
const MAX_REDIRECTS = 5;

export interface HttpAnswer {
  status: number;
  /** A header's value (the first, lowercase name), or null. */
  header(name: string): string | null;
  /** The body as it arrives; read it, or call discard(). */
  body: IncomingMessage;
  /** The whole body. */
  bytes(): Promise<Buffer>;
  /** Drops the body (so the connection can be reused). */
  discard(): void;
  /** The URL that answered (after redirects). */
  url: string;
}

export interface HttpRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: Buffer | Readable;
  signal?: AbortSignal;
}

/** Sends the request (following redirects); rejects on a connection that fails or is aborted. */
export async function send(req: HttpRequest): Promise<HttpAnswer> {
  let url = new URL(req.url);
  let headers = { ...req.headers };
  for (let redirects = 0; ; redirects++) {
    const res = await sendOnce(req.method, url, headers, req.body, req.signal);
    const location = res.headers.location;
    const redirect = [301, 302, 303, 307, 308].includes(res.statusCode ?? 0) && location !== undefined;
    const canFollow = req.body === undefined || Buffer.isBuffer(req.body);
    if (!redirect || !canFollow || redirects >= MAX_REDIRECTS) return answer(res, url.href);
    res.resume();
    const next = new URL(location, url);
    if (next.origin !== url.origin) {
      const { Authorization: _dropped, ...rest } = headers;
      headers = rest;
    }
    url = next;
  }
}

function sendOnce(
  method: string,
  url: URL,
  headers: Record<string, string>,
  body: Buffer | Readable | undefined,
  signal?: AbortSignal,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const https = url.protocol === 'https:';
    const options = { method, headers, agent: https ? httpsAgent : httpAgent, ...(signal === undefined ? {} : { signal }) };
    const req = (https ? httpsRequest : httpRequest)(url, options, resolve);
    req.on('error', reject);
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else {
      body.on('error', (e) => req.destroy(e));
      body.pipe(req);
    }
  });
}

function answer(res: IncomingMessage, url: string): HttpAnswer {
  return {
    status: res.statusCode ?? 0,
    header(name) {
      const v = res.headers[name.toLowerCase()];
      return v === undefined ? null : Array.isArray(v) ? (v[0] ?? null) : v;
    },
    body: res,
    async bytes() {
      const chunks: Buffer[] = [];
      for await (const chunk of res) chunks.push(chunk as Buffer);
      // A body cut short: node:http ends the stream, flagging it; a Content-Length tells.
      const expected = Number(res.headers['content-length']);
      const total = chunks.reduce((n, c) => n + c.length, 0);
      if (!res.complete || (Number.isFinite(expected) && total < expected)) throw new Error(`the answer's body ended after ${total} bytes`);
      return Buffer.concat(chunks);
    },
    discard() {
      res.resume();
    },
    url,
  };
}
