/**
 * The two things every gRPC test client here does: load a proto file into a package of service
 * constructors, and make a unary call as a promise.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** The package tree of `file` (found in `includeDir`): field names as in the proto, enums as names, 64-bit ints as strings. */
export function loadProto(file: string, includeDir: string): grpc.GrpcObject {
  const def = protoLoader.loadSync(file, { includeDirs: [includeDir], keepCase: true, longs: String, enums: String, defaults: true });
  return grpc.loadPackageDefinition(def);
}

type Unary = (req: unknown, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;

/** Calls unary `method` of `client`; rejects with the grpc.ServiceError (its `code` is a grpc.status). */
export function unaryCall<T>(client: grpc.Client, method: string, request: Record<string, unknown>): Promise<T> {
  return new Promise((resolve, reject) => {
    const fn = (client as unknown as Record<string, Unary>)[method];
    if (typeof fn !== 'function') return reject(new Error(`the client has no method ${method}`));
    fn.call(client, request, (err, res) => (err ? reject(err) : resolve(res as T)));
  });
}
