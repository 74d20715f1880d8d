/**
 * `unionctl serve`: the store as containerd's proxy snapshotter (src/serve/containerd/) on a unix
 * socket, until SIGTERM or SIGINT. Stopping keeps every mount (running containers keep their
 * root filesystems); a restarted server serves the same snapshots.
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import type { LayerStore } from '../graph/store.js';
import { serveSnapshotter } from '../serve/containerd/grpc.js';
import { SnapshotService } from '../serve/containerd/snapshots.js';
import { createLogger, LOG_LEVELS, type LogLevel } from '../serve/log.js';
import { nonEmpty } from './args.js';

export const DEFAULT_SNAPSHOTTER_SOCKET = '/run/unionctl/snapshotter.sock';

type WithStore = (cmd: Command, fn: (store: LayerStore) => Promise<void>) => Promise<void>;

interface ServeOptions {
  socket: string;
  logLevel: LogLevel;
}

/** Resolves on the first SIGTERM or SIGINT. */
function untilStopped(): Promise<string> {
  return new Promise((resolve) => {
    const stop = (signal: string) => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve(signal);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}

export function registerServeCommand(program: Command, withStore: WithStore): void {
  program
    .command('serve')
    .description('serve the store to containerd as a snapshotter (proxy plugin) on a unix socket, until SIGTERM')
    .option('--socket <path>', 'the socket to listen on', nonEmpty('the socket path'), DEFAULT_SNAPSHOTTER_SOCKET)
    .addOption(new Option('--log-level <level>', 'least important log lines shown (stderr)').choices(LOG_LEVELS).default('info'))
    .action(async (opts: ServeOptions, cmd: Command) => {
      const log = createLogger(opts.logLevel);
      await withStore(cmd, async (store) => {
        const service = new SnapshotService(store);
        const stopped = untilStopped();
        const server = await serveSnapshotter(service, { socket: opts.socket, log });
        log.info(`serving the ${store.driver.name} store at ${store.root} as containerd snapshotter on ${server.socket}`);
        const signal = await stopped;
        log.info(`${signal}: stopping (mounts stay)`);
        await server.close();
        log.info('stopped');
      });
    });
}
