/**
 * Docker's legacy plugin protocol, the transport half: HTTP/1.1 on a unix socket, every call a
 * `POST /<Service>.<Method>` (moby v20.10 pkg/plugins). Request bodies are JSON (empty for calls
 * without arguments), except where a handler reads the raw body as a stream (GraphDriver.ApplyDiff
 * sends a tar, with its arguments in the query string). Responses are JSON, or a raw stream
 * (GraphDriver.Diff's tar). A failure is HTTP 500 with `{"Err": "<message>"}`: dockerd's plugin
 * client reads the Err of any non-200 answer, and a 200 on a streaming call would be taken as
 * the stream itself.
 *
 * This module knows nothing of graph drivers: it routes method names to handlers (graphdriver.ts).
 */
import { chmodSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isUnionctlError, UnionctlError } from '../../errors.js';
import type { Logger } from '../log.js';
import { claimSocketPath, releaseSocketPath, socketInode } from '../socket.js';

/** Docker's plugin API media type (pkg/plugins: VersionMimetype). */
export const PLUGIN_MEDIA_TYPE = 'application/vnd.docker.plugins.v1.2+json';
/** The most a JSON request body may hold: every graphdriver argument is a few ids and options. */
const MAX_JSON_BODY = 1 << 20;

export interface PluginRequest {
  /** "GraphDriver.Create" */
  method: string;
  query: URLSearchParams;
  /** The JSON body as an object (`{}` when empty). USAGE when it is not a JSON object. */
  json(): Promise<Record<string, unknown>>;
  /** The raw body, for a handler that streams it (read it or not: the server drains what is left). */
  body: Readable;
}

/** A handler's answer: a value sent as JSON, or a stream sent as the raw body. */
export type PluginResponse = { json: unknown } | { stream: Readable; contentType: string };

export type PluginHandler = (req: PluginRequest) => Promise<PluginResponse>;

export interface PluginServerOptions {
  handlers: ReadonlyMap<string, PluginHandler>;
  log: Logger;
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_JSON_BODY) throw new UnionctlError('USAGE', `request body of more than ${MAX_JSON_BODY} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '' || text === 'null') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new UnionctlError('USAGE', 'request body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new UnionctlError('USAGE', 'request body is not a JSON object');
  return value as Record<string, unknown>;
}

/** The message dockerd is given: a UnionctlError's own words (and hint); anything else is a bug, said so. */
export function errorText(e: unknown): string {
  if (isUnionctlError(e)) return e.hint === undefined ? e.message : `${e.message} (${e.hint})`;
  return `internal error in the unionctl plugin: ${e instanceof Error ? e.message : String(e)}`;
}

/**
 * The server on a unix socket. `close()` stops listening, lets the requests in flight finish,
 * closes the connections and removes the socket file.
 */
export class PluginServer {
  private readonly server: Server;
  private readonly handlers: ReadonlyMap<string, PluginHandler>;
  private readonly log: Logger;
  private inFlight = 0;
  private closing = false;
  private drained: (() => void) | undefined;
  private socketPath: string | undefined;
  private socketIno: number | undefined;

  constructor(opts: PluginServerOptions) {
    this.handlers = opts.handlers;
    this.log = opts.log;
    // dockerd keeps its connections open, and an ApplyDiff upload of a big layer may take minutes:
    // neither an idle connection nor a long request is cut (Node's default requestTimeout is 5 min).
    this.server = createServer({ keepAliveTimeout: 0, requestTimeout: 0 }, (req, res) => void this.handle(req, res));
  }

  /** Listens on `path`: a stale socket there (nobody answers) is replaced; a live one is IN_USE, anything else USAGE. */
  async listen(path: string): Promise<void> {
    await claimSocketPath(path);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    chmodSync(path, 0o600); // dockerd runs as root; nobody else may drive the store
    this.socketPath = path;
    this.socketIno = socketInode(path);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.inFlight++;
    if (this.closing) res.setHeader('Connection', 'close');
    const started = process.hrtime.bigint();
    const url = new URL(req.url ?? '/', 'http://plugin');
    const method = url.pathname.replace(/^\//, '');
    let outcome = 'ok';
    let parsed: Record<string, unknown> | undefined;
    try {
      const handler = req.method === 'POST' ? this.handlers.get(method) : undefined;
      if (handler === undefined) {
        outcome = 'unknown method';
        this.sendJson(res, 404, { Err: `unionctl plugin: no method ${req.method ?? '?'} ${url.pathname}` });
        return;
      }
      const json = async () => (parsed = await readJson(req));
      const answer = await handler({ method, query: url.searchParams, json, body: req });
      if ('json' in answer) this.sendJson(res, 200, answer.json);
      else {
        res.writeHead(200, { 'Content-Type': answer.contentType });
        await pipeline(answer.stream, res);
      }
    } catch (e) {
      outcome = `error: ${errorText(e)}`;
      if (!res.headersSent) this.sendJson(res, 500, { Err: errorText(e) });
      else res.destroy(e as Error); // a stream failed half-way: the connection is cut, dockerd sees a short read
      if (!isUnionctlError(e)) this.log.error(`${method}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    } finally {
      if (this.log.debugEnabled) {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        const ids = ['ID', 'Parent']
          .filter((k) => typeof parsed?.[k] === 'string' && parsed[k] !== '')
          .map((k) => `${k}=${String(parsed?.[k])}`);
        const args = [...ids, ...[...url.searchParams].map(([k, v]) => `${k}=${v}`)].join(' ');
        this.log.debug(`${method}${args ? ` ${args}` : ''} → ${outcome} (${ms.toFixed(1)} ms)`);
      }
      if (--this.inFlight === 0) this.drained?.();
    }
  }

  private sendJson(res: ServerResponse, status: number, value: unknown): void {
    const body = `${JSON.stringify(value ?? {})}\n`;
    res.writeHead(status, { 'Content-Type': PLUGIN_MEDIA_TYPE, 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  /** Stops listening, waits for the requests in flight, closes every connection, removes the socket. Idempotent. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    this.server.closeAllConnections();
    await closed;
    this.removeSocket();
  }

  /** Removes the socket file this server made (not one another process put there since). */
  private removeSocket(): void {
    if (this.socketPath !== undefined && this.socketIno !== undefined) releaseSocketPath(this.socketPath, this.socketIno);
  }
}
