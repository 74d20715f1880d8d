/**
 * `unionctl serve`: the store served to a container runtime until SIGTERM or SIGINT —
 * containerd's proxy snapshotter (src/serve/containerd/, the default) or, with
 * `--docker-plugin NAME`, Docker's legacy graphdriver plugin (src/serve/docker-plugin/). Stopping
 * stops listening, lets the requests in flight finish and removes the socket; every mount stays
 * (running containers keep their root filesystems), and a restarted server serves on.
 */
import { Command } from 'commander';
import type { WithStore } from './store-access.js';
import { assertValidId } from '../errors.js';
import { splitStorageOpts } from '../graph/registry.js';
import { serveSnapshotter } from '../serve/containerd/server.js';
import { SnapshotService } from '../serve/containerd/snapshots.js';
import { serveDockerPlugin } from '../serve/docker-plugin/index.js';
import { makeLogger, type Logger } from '../serve/log.js';
import { currentLogLevel } from './log-level.js';
import { nonEmpty } from './args.js';

export const DEFAULT_SNAPSHOTTER_SOCKET = '/run/unionctl/snapshotter.sock';

interface ServeOptions {
  dockerPlugin?: string;
  socket?: string;
}

/** Resolves at the first SIGTERM or SIGINT. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals) => {
      process.off('SIGTERM', on);
      process.off('SIGINT', on);
      resolve(signal);
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
}

/** Serves until a signal, then closes: what both modes share. */
async function serveUntilSignal(log: Logger, start: () => Promise<{ socket: string; close(): Promise<void> }>): Promise<void> {
  const stop = untilSignal(); // before listening: a signal in between still stops it cleanly
  const server = await start();
  const signal = await stop;
  log.info(`${signal}: stopping (requests in flight finish; mounts stay)`);
  await server.close();
  log.info(`stopped; ${server.socket} removed`);
}

async function serveCommand(withStore: WithStore, opts: ServeOptions, cmd: Command): Promise<void> {
  const name = opts.dockerPlugin;
  if (name !== undefined) assertValidId(name, 'plugin name'); // before the store is opened: a typo changes nothing on disk
  // The global --log-level; at debug, one line per request.
  const log = makeLogger(currentLogLevel());
  await withStore(
    cmd,
    async (store, g) => {
      if (name !== undefined) {
        const storageOpt = splitStorageOpts(g.storageOpt, 'driver');
        return serveUntilSignal(log, () => serveDockerPlugin(store, { name, socket: opts.socket, storageOpt, log }));
      }
      const service = new SnapshotService(store); // UNSUPPORTED for a driver that cannot serve containerd
      const socket = opts.socket ?? DEFAULT_SNAPSHOTTER_SOCKET;
      return serveUntilSignal(log, async () => {
        const server = await serveSnapshotter(service, { socket, log });
        log.info(`serving the ${store.driver.name} store at ${store.root} as containerd snapshotter on ${socket}`);
        return {
          socket,
          async close() {
            await server.close();
            await service.close();
          },
        };
      });
    },
    { creates: true },
  );
}

export function registerServeCommand(program: Command, withStore: WithStore): void {
  program
    .command('serve')
    .description('serve the store to a container runtime: a containerd snapshotter, or with --docker-plugin a Docker graphdriver plugin')
    .option(
      '--docker-plugin <name>',
      'be Docker legacy graphdriver plugin NAME (dockerd --storage-driver NAME)',
      nonEmpty('the plugin name'),
    )
    .option(
      '--socket <path>',
      `listen on PATH (default ${DEFAULT_SNAPSHOTTER_SOCKET}; for a plugin /run/docker/plugins/NAME.sock)`,
      nonEmpty('the socket path'),
    )
    .action((opts: ServeOptions, cmd: Command) => serveCommand(withStore, opts, cmd));
}
