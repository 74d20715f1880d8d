/**
 * The image-loading peers: Docker (`docker load`, overlay2, a daemon started by hand on the
 * benchmark filesystem through the tests' startDockerd helper), podman (`podman load` into its own
 * overlay store on the benchmark filesystem, through the tests' startPodman helper) and umoci (`skopeo copy docker-archive:… oci:…`, then
 * `umoci raw unpack`). Each returns a loader whose load() is what is timed and whose reset() makes
 * the next load start from an empty store.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DOCKER_CLI, DOCKERD, dockerdAvailable, startDockerd } from './dockerd.js';
import { startPodman, type Podman } from './podman.js';
import { sh } from '../measure.js';

export interface ImageLoader {
  subject: string;
  load(archive: string): void;
  /** Untimed: throw away what load made. */
  reset(): Promise<void> | void;
  /** Untimed: stop daemons, remove dirs. */
  close(): Promise<void> | void;
}

/**
 * A private dockerd (bench/peers/dockerd.ts: its own data root on the benchmark filesystem, no
 * networking), or the reason there cannot be one.
 */
export async function dockerLoader(dir: string, reference: string, version: string): Promise<ImageLoader | string> {
  if (!dockerdAvailable()) return `${DOCKERD} or ${DOCKER_CLI} (Docker 20.10) is missing`;
  const d = await startDockerd({ storageDriver: 'overlay2', dir });
  return {
    subject: `docker ${version}`,
    load: (archive) => void d.docker(['load', '-q', '-i', archive]),
    reset: () => {
      d.docker(['rmi', '-f', reference]);
    },
    close: () => d.stop(), // removes the daemon's own dirs under `dir`
  };
}

/**
 * podman load into a private store (bench/peers/podman.ts: its own root, runroot and TMPDIR on the
 * benchmark filesystem — podman copies the archive to TMPDIR first), a fresh store for every load.
 */
export function podmanLoader(dir: string, version: string): ImageLoader {
  let p: Podman = startPodman({ storageDriver: 'overlay', dir });
  return {
    subject: `podman ${version}`,
    load: (archive) => void p.podman(['load', '-q', '-i', archive]),
    reset: () => {
      p.stop();
      p = startPodman({ storageDriver: 'overlay', dir });
    },
    close: () => p.stop(), // removes the store's own dirs under `dir`
  };
}

export function umociLoader(dir: string, version: string): ImageLoader {
  const oci = join(dir, 'oci');
  const bundle = join(dir, 'rootfs');
  return {
    subject: `umoci ${version} (skopeo copy + raw unpack)`,
    load: (archive) => {
      mkdirSync(dir, { recursive: true });
      sh('skopeo', ['--insecure-policy', 'copy', '-q', `docker-archive:${archive}`, `oci:${oci}:latest`]);
      sh('umoci', ['raw', 'unpack', '--image', `${oci}:latest`, bundle]);
    },
    reset: () => {
      rmSync(oci, { recursive: true, force: true });
      rmSync(bundle, { recursive: true, force: true });
    },
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}
