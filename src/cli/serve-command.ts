/**
 * `unionctl serve`: the store served to a container runtime. This branch has one mode,
 * `--docker-plugin NAME` (src/serve/docker-plugin/): Docker's legacy graphdriver plugin protocol.
 * The process serves until SIGTERM or SIGINT, then stops listening, lets the requests in flight
 * finish and removes its socket; mounts stay (dockerd's containers may be running on them).
 */
import { Command, Option } from 'commander';
import { assertValidId } from '../errors.js';
import type { LayerStore } from '../graph/store.js';
import { splitStorageOpts } from '../graph/registry.js';
import { LOG_LEVELS, makeLogger, serveDockerPlugin, type LogLevel } from '../serve/docker-plugin/index.js';
import { nonEmpty } from './args.js';

type WithStore = (cmd: Command, fn: (store: LayerStore, g: { storageOpt?: string[] }) => Promise<void>) => Promise<void>;

interface ServeOptions {
  dockerPlugin?: string;
  socket?: string;
  logLevel: LogLevel;
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

async function serveCommand(withStore: WithStore, opts: ServeOptions, cmd: Command): Promise<void> {
  if (opts.dockerPlugin === undefined) {
    // A usage error (exit 2), the way commander reports its own.
    cmd.error('serve needs --docker-plugin NAME: the containerd snapshotter mode is not built in this branch', {
      exitCode: 2,
      code: 'unionctl.serveMode',
    });
  }
  const name = opts.dockerPlugin;
  assertValidId(name, 'plugin name'); // before the store is opened: a typo changes nothing on disk
  const log = makeLogger(opts.logLevel);
  await withStore(cmd, async (store, g) => {
    const stop = untilSignal(); // before listening: a signal in between still stops it cleanly
    const plugin = await serveDockerPlugin(store, {
      name,
      socket: opts.socket,
      storageOpt: splitStorageOpts(g.storageOpt, 'driver'),
      log,
    });
    const signal = await stop;
    log.info(`${signal}: stopping (requests in flight finish; mounts stay)`);
    await plugin.close();
    log.info(`stopped; ${plugin.socket} removed`);
  });
}

export function registerServeCommand(program: Command, withStore: WithStore): void {
  program
    .command('serve')
    .description('serve the store to a container runtime: --docker-plugin NAME is a Docker graphdriver plugin')
    .option('--docker-plugin <name>', 'Docker legacy graphdriver plugin NAME (dockerd --storage-driver NAME)', nonEmpty('the plugin name'))
    .option('--socket <path>', 'listen on PATH instead of /run/docker/plugins/NAME.sock', nonEmpty('the socket path'))
    .addOption(new Option('--log-level <level>', 'debug logs one line per request').choices(LOG_LEVELS).default('info'))
    .action((opts: ServeOptions, cmd: Command) => serveCommand(withStore, opts, cmd));
}
