/**
 * serveSnapshotter, with grpc-js and proto-loader loaded only when a server is started. They take
 * ~80 ms to load, which every CLI command and every `import 'unionctl'` paid before, serving or
 * not (`unionctl --version` took 0.18 s, node itself 0.05 s).
 */
import type { ServeOptions, SnapshotterServer } from './grpc.js';
import type { SnapshotService } from './snapshots.js';

export type { ServeOptions, SnapshotterServer } from './grpc.js';

/** Serves containerd's snapshots API for `service` on opts.socket: see grpc.ts. */
export async function serveSnapshotter(service: SnapshotService, opts: ServeOptions): Promise<SnapshotterServer> {
  const grpc = await import('./grpc.js');
  return grpc.serveSnapshotter(service, opts);
}
