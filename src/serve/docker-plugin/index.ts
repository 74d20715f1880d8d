/**
 * `unionctl serve --docker-plugin NAME`: a Docker legacy graphdriver plugin backed by a
 * LayerStore. dockerd (20.10–26 with --experimental; 27 also with
 * DOCKERD_DEPRECATED_GRAPHDRIVER_PLUGINS=1; 28 has no graphdriver plugins) finds it as
 * `--storage-driver NAME` through the socket /run/docker/plugins/NAME.sock.
 *
 *   const plugin = await serveDockerPlugin(store, { name: 'unionctl', log });
 *   …
 *   await plugin.close();   // stop listening, finish the requests in flight, remove the socket; mounts stay
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { LayerStore } from '../../graph/store.js';
import { GraphDriverPlugin } from './graphdriver.js';
import type { Logger } from '../log.js';
import { PluginServer } from './server.js';
import { PluginState } from './state.js';

/** Where dockerd looks for legacy plugin sockets (pkg/plugins: hardcoded, whatever --exec-root says). */
export const DOCKER_PLUGIN_DIR = '/run/docker/plugins';

export interface DockerPluginOptions {
  /** The plugin's name: dockerd's --storage-driver. */
  name: string;
  /** Socket path; default /run/docker/plugins/<name>.sock. */
  socket?: string;
  /** The plugin's driver-wide storage options, which dockerd's Init Opts must agree with. */
  storageOpt?: Record<string, string>;
  log: Logger;
}

export interface DockerPlugin {
  socket: string;
  /** Stops listening, waits for the requests in flight, removes the socket. Mounts stay. Idempotent. */
  close(): Promise<void>;
}

export async function serveDockerPlugin(store: LayerStore, opts: DockerPluginOptions): Promise<DockerPlugin> {
  const state = PluginState.open(store.root, opts.name);
  const socket = opts.socket ?? `${DOCKER_PLUGIN_DIR}/${opts.name}.sock`;
  if (opts.socket === undefined) mkdirSync(dirname(socket), { recursive: true, mode: 0o755 });
  const plugin = new GraphDriverPlugin({ store, state, storageOpt: opts.storageOpt ?? {}, log: opts.log });
  const server = new PluginServer({ handlers: plugin.handlers(), log: opts.log });
  await server.listen(socket);
  const resumed = state.init === undefined ? "waiting for dockerd's Init" : `serving on from dockerd's Init (home ${state.init.Home})`;
  opts.log.info(`docker graphdriver plugin ${opts.name} on ${socket} (store ${store.root}, driver ${store.driver.name}): ${resumed}`);
  return { socket, close: () => server.close() };
}
