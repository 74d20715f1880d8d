/**
 * `unionctl serve`: the SnapshotService (snapshots.ts) as containerd's proxy snapshotter, the
 * gRPC service containerd.services.snapshots.v1.Snapshots on a unix socket, from containerd's own
 * snapshots.proto and mount.proto (proto/containerd/, shipped with the package).
 *
 * Status codes are what containerd's errdefs.FromGRPC turns back into its errors: NOT_FOUND,
 * ALREADY_EXISTS, FAILED_PRECONDITION (a parent that is not committed, a snapshot with children,
 * something in use), INVALID_ARGUMENT, UNIMPLEMENTED; anything unexpected is UNKNOWN (and logged
 * as an error).
 */
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { isUnionctlError, UnionctlError, type ErrorCode } from '../../errors.js';
import type { MountSpec } from '../../graph/driver.js';
import type { Logger } from '../log.js';
import { claimSocketPath, releaseSocketPath, socketInode } from '../socket.js';
import { SnapshotService, type SnapshotInfo, type SnapshotKind } from './snapshots.js';

/** proto/ of the unionctl package: the nearest one above this file (dist/src/serve/containerd/ in a build). */
function protoDir(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'proto', 'containerd', 'snapshots.proto'))) return join(dir, 'proto', 'containerd');
  }
  throw new UnionctlError('CORRUPT', 'the unionctl package lacks proto/containerd/snapshots.proto', { hint: 'reinstall unionctl' });
}

const STATUS_OF: Partial<Record<ErrorCode, grpc.status>> = {
  NOT_FOUND: grpc.status.NOT_FOUND,
  EXISTS: grpc.status.ALREADY_EXISTS,
  WRONG_STATE: grpc.status.FAILED_PRECONDITION,
  HAS_CHILDREN: grpc.status.FAILED_PRECONDITION,
  IN_USE: grpc.status.FAILED_PRECONDITION,
  USAGE: grpc.status.INVALID_ARGUMENT,
  INVALID_ID: grpc.status.INVALID_ARGUMENT,
  BAD_OPTION: grpc.status.INVALID_ARGUMENT,
  UNSUPPORTED: grpc.status.UNIMPLEMENTED,
  LOCKED: grpc.status.UNAVAILABLE,
};

interface WireMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

interface WireTimestamp {
  seconds: string;
  nanos: number;
}

interface WireInfo {
  name: string;
  parent: string;
  kind: string;
  created_at: WireTimestamp;
  updated_at: WireTimestamp;
  labels: Record<string, string>;
}

const KIND_ON_WIRE: Record<SnapshotKind, string> = { active: 'ACTIVE', view: 'VIEW', committed: 'COMMITTED' };

function wireMounts(specs: MountSpec[]): { mounts: WireMount[] } {
  return { mounts: specs.map((m) => ({ type: m.type, source: m.source, target: '', options: m.options })) };
}

function timestamp(iso: string): WireTimestamp {
  const ms = Date.parse(iso);
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

function wireInfo(i: SnapshotInfo): WireInfo {
  return {
    name: i.name,
    parent: i.parent,
    kind: KIND_ON_WIRE[i.kind],
    created_at: timestamp(i.created),
    updated_at: timestamp(i.updated),
    labels: i.labels,
  };
}

/** The status an error gets on the wire, and whether it was expected (a refusal) or not (a failure). */
function statusOf(e: unknown): { code: grpc.status; details: string; expected: boolean } {
  if (isUnionctlError(e)) {
    const code = STATUS_OF[e.code] ?? grpc.status.UNKNOWN;
    return { code, details: e.hint ? `${e.message} (${e.hint})` : e.message, expected: code !== grpc.status.UNKNOWN };
  }
  return { code: grpc.status.UNKNOWN, details: e instanceof Error ? e.message : String(e), expected: false };
}

type Handler<Req, Res> = (req: Req) => Promise<Res>;

export interface SnapshotterServer {
  /** The socket it listens on. */
  readonly socket: string;
  /** Stops taking requests, waits for those running (at most `graceMs`), removes the socket. Mounts stay. */
  close(graceMs?: number): Promise<void>;
}

export interface ServeOptions {
  socket: string;
  log: Logger;
}

/**
 * Listens on `socket` (its directory is made; a stale socket there is replaced, a live one is
 * IN_USE, anything else USAGE) and serves `service` until close().
 */
export async function serveSnapshotter(service: SnapshotService, opts: ServeOptions): Promise<SnapshotterServer> {
  const definition = protoLoader.loadSync('snapshots.proto', {
    includeDirs: [protoDir()],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    containerd: { services: { snapshots: { v1: { Snapshots: { service: grpc.ServiceDefinition } } } } };
  };
  const server = new grpc.Server();
  server.addService(loaded.containerd.services.snapshots.v1.Snapshots.service, handlers(service, opts.log));
  mkdirSync(dirname(opts.socket), { recursive: true, mode: 0o700 });
  await claimSocketPath(opts.socket);
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix:${opts.socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
  chmodSync(opts.socket, 0o600); // containerd runs as root; nobody else may drive the store
  const ino = socketInode(opts.socket);
  return {
    socket: opts.socket,
    async close(graceMs = 10_000) {
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      releaseSocketPath(opts.socket, ino);
    },
  };
}

function handlers(s: SnapshotService, log: Logger): grpc.UntypedServiceImplementation {
  /** A unary RPC: logged at debug, errors turned into statuses. */
  function unary<Req, Res>(name: string, describe: (r: Req) => string, fn: Handler<Req, Res>): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const started = Date.now();
      const what = `${name}(${describe(call.request)})`;
      fn(call.request).then(
        (res) => {
          log.debug(`${what} ok ${Date.now() - started} ms`);
          callback(null, res);
        },
        (e: unknown) => {
          const st = statusOf(e);
          const line = `${what} → ${grpc.status[st.code]}: ${st.details}`;
          if (st.expected) log.debug(line);
          else log.error(`${line}${e instanceof Error && e.stack ? `\n${e.stack}` : ''}`);
          callback({ code: st.code, details: st.details });
        },
      );
    };
  }
  const empty = {};
  type KeyReq = { key: string };
  type CreateReq = { key: string; parent: string; labels: Record<string, string> };
  const keyOf = (r: KeyReq) => r.key;
  const createOf = (r: CreateReq) => `${r.key}, parent=${r.parent || '-'}`;
  return {
    Prepare: unary<CreateReq, unknown>('Prepare', createOf, async (r) => wireMounts(await s.prepare(r.key, r.parent, r.labels))),
    View: unary<CreateReq, unknown>('View', createOf, async (r) => wireMounts(await s.view(r.key, r.parent, r.labels))),
    Mounts: unary<KeyReq, unknown>('Mounts', keyOf, async (r) => wireMounts(await s.mounts(r.key))),
    Commit: unary<{ name: string; key: string; labels: Record<string, string> }, unknown>(
      'Commit',
      (r) => `${r.name} ← ${r.key}`,
      async (r) => {
        await s.commit(r.name, r.key, r.labels);
        return empty;
      },
    ),
    Remove: unary<KeyReq, unknown>('Remove', keyOf, async (r) => {
      await s.remove(r.key);
      return empty;
    }),
    Stat: unary<KeyReq, unknown>('Stat', keyOf, async (r) => ({ info: wireInfo(await s.stat(r.key)) })),
    Update: unary<{ info: WireInfo | null; update_mask: { paths: string[] } | null }, unknown>(
      'Update',
      (r) => `${r.info?.name ?? ''}, ${(r.update_mask?.paths ?? []).join(' ') || 'all'}`,
      async (r) => {
        if (r.info === null) throw new UnionctlError('USAGE', 'Update without an info');
        return { info: wireInfo(await s.update({ name: r.info.name, labels: r.info.labels }, r.update_mask?.paths ?? [])) };
      },
    ),
    Usage: unary<KeyReq, unknown>('Usage', keyOf, async (r) => {
      const u = await s.usage(r.key);
      return { size: String(u.size), inodes: String(u.inodes) };
    }),
    Cleanup: unary<unknown, unknown>(
      'Cleanup',
      () => '',
      async () => {
        const rolledBack = await s.cleanup();
        if (rolledBack.length > 0) log.info(`cleanup rolled back ${rolledBack.length} interrupted snapshot(s)`);
        return empty;
      },
    ),
    List: (call: grpc.ServerWritableStream<{ filters: string[] }, unknown>) => {
      const started = Date.now();
      s.list(call.request.filters).then(
        (infos) => {
          // Batches, as containerd's own service sends them (each message stays well under gRPC's 4 MiB).
          for (let i = 0; i < infos.length; i += 100) call.write({ info: infos.slice(i, i + 100).map(wireInfo) });
          log.debug(`List(${call.request.filters.join(' | ')}) ${infos.length} ok ${Date.now() - started} ms`);
          call.end();
        },
        (e: unknown) => {
          const st = statusOf(e);
          (st.expected ? log.debug : log.error)(`List → ${grpc.status[st.code]}: ${st.details}`);
          call.emit('error', { code: st.code, details: st.details }); // grpc-js: how a server stream ends with a status
        },
      );
    },
  };
}
