/**
 * A gRPC client of containerd's Snapshots service (the proto files unionctl ships), to call
 * `unionctl serve` directly: what containerd's own metadata layer would refuse before asking the
 * snapshotter (duplicate keys, say) reaches the server this way, so its status codes can be seen.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { loadProto, unaryCall } from './grpc.js';

const PROTO_DIR = fileURLToPath(new URL('../../../proto/containerd', import.meta.url));

export interface WireInfo {
  name: string;
  parent: string;
  kind: string;
  labels: Record<string, string>;
}

export interface WireMount {
  type: string;
  source: string;
  options: string[];
}

/** A failed call: the gRPC status code (grpc.status) and details. */
export interface CallError {
  code: number;
  details: string;
}

export interface SnapshotsClient {
  call<T = Record<string, unknown>>(method: string, request: Record<string, unknown>): Promise<T>;
  /** The status of a call expected to fail (rejects if it succeeds). */
  failure(method: string, request: Record<string, unknown>): Promise<CallError>;
  list(filters?: string[]): Promise<WireInfo[]>;
  close(): void;
}

export function snapshotsClient(socket: string): SnapshotsClient {
  const pkg = loadProto('snapshots.proto', PROTO_DIR) as unknown as {
    containerd: { services: { snapshots: { v1: { Snapshots: grpc.ServiceClientConstructor } } } };
  };
  const client = new pkg.containerd.services.snapshots.v1.Snapshots(`unix:${socket}`, grpc.credentials.createInsecure()) as grpc.Client &
    Record<string, (req: unknown) => grpc.ClientReadableStream<{ info: WireInfo[] }>>;
  const call = <T>(method: string, request: Record<string, unknown>): Promise<T> =>
    unaryCall<T>(client, method, { snapshotter: 'unionctl', ...request });
  return {
    call,
    async failure(method, request) {
      try {
        await call(method, request);
      } catch (e) {
        const err = e as grpc.ServiceError;
        return { code: err.code, details: err.details };
      }
      throw new Error(`${method} succeeded; it should have failed`);
    },
    list(filters = []) {
      return new Promise((resolve, reject) => {
        const infos: WireInfo[] = [];
        const stream = (client.List as (req: unknown) => grpc.ClientReadableStream<{ info: WireInfo[] }>).call(client, { filters });
        stream.on('data', (m: { info: WireInfo[] }) => infos.push(...m.info));
        stream.on('error', reject);
        stream.on('end', () => resolve(infos));
      });
    },
    close: () => client.close(),
  };
}
