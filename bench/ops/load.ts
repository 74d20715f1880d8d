/**
 * Load of a multi-layer image: the same docker-save archive (image workload) loaded by every peer
 * and by `unionctl load` (a whole CLI process per load, like `docker load` and `podman load`), all
 * on the benchmark filesystem, interleaved run by run. The floor is GNU tar extracting the
 * archive's layer tars one after the other into one directory.
 */
import { rmSync } from 'node:fs';
import { openStore } from '../../src/index.js';
import { freshDir, unionctlSubject, type BenchContext } from '../context.js';
import type { ImageArchive } from '../image-archive.js';
import { sh, time } from '../measure.js';
import { removeTree, tarExtract } from '../peers/gnu-tar.js';
import { dockerLoader, podmanLoader, umociLoader, type ImageLoader } from '../peers/images.js';
import { settle } from '../scratch-fs.js';
import type { LayerTar } from '../workloads.js';

function unionctlLoaders(ctx: BenchContext): ImageLoader[] {
  return ctx.drivers.map((driver) => {
    let root = freshDir(ctx, `load-${driver}`);
    return {
      subject: unionctlSubject(driver),
      load: (archive: string) => void sh(process.execPath, [ctx.cliMain, '--root', root, '--driver', driver, 'load', archive]),
      reset: async () => {
        await discard(root, driver);
        root = freshDir(ctx, `load-${driver}`);
      },
      close: () => discard(root, driver),
    };
  });
}

async function discard(root: string, driver: string): Promise<void> {
  const store = await openStore({ root, driver });
  await store.cleanup();
  await store.close();
  rmSync(root, { recursive: true, force: true });
}

async function peerLoaders(ctx: BenchContext, archive: ImageArchive): Promise<ImageLoader[]> {
  const out: ImageLoader[] = [];
  const missing = (subject: string, what: string) =>
    ctx.log.skip({
      subject,
      workload: 'image',
      operation: 'load',
      reason: `${what} is not installed (unionctl bench --peers installs it)`,
    });
  if (ctx.peers.has('dockerd') && ctx.peers.has('docker')) {
    const version = ctx.peers.get('dockerd')!;
    try {
      // The daemon's dirs go straight in the benchmark filesystem's root: containerd's socket path
      // under them must stay below the 108-byte limit of a unix socket address.
      const d = await dockerLoader(ctx.fs.target, archive.reference, version);
      if (typeof d === 'string') ctx.log.skip({ subject: 'docker load', workload: 'image', operation: 'load', reason: d });
      else out.push(d);
    } catch (e) {
      ctx.log.skip({
        subject: 'docker load',
        workload: 'image',
        operation: 'load',
        reason: `dockerd did not start: ${(e as Error).message}`,
      });
    }
  } else missing('docker load', 'docker.io (dockerd and docker)');
  const version = (name: 'podman' | 'umoci') => ctx.peers.get(name) ?? '';
  // Straight in the filesystem's root too: podman refuses a runroot path longer than 50 characters.
  if (ctx.peers.has('podman')) out.push(podmanLoader(ctx.fs.target, version('podman')));
  else missing('podman load', 'podman');
  if (ctx.peers.has('umoci') && ctx.peers.has('skopeo')) out.push(umociLoader(freshDir(ctx, 'umoci'), version('umoci')));
  else missing('umoci', 'umoci and skopeo');
  return out;
}

function tarFloor(ctx: BenchContext, layers: LayerTar[]): ImageLoader {
  let dest = freshDir(ctx, 'load-tar');
  return {
    subject: 'GNU tar',
    load: () => {
      for (const l of layers) tarExtract(l.path, dest);
    },
    reset: () => {
      removeTree(dest);
      dest = freshDir(ctx, 'load-tar');
    },
    close: () => removeTree(dest),
  };
}

export async function runLoad(ctx: BenchContext, archive: ImageArchive, layers: LayerTar[]): Promise<void> {
  ctx.say(`load: ${layers.length}-layer image archive, ${(archive.bytes / 1e6).toFixed(1)} MB`);
  const loaders = [tarFloor(ctx, layers), ...unionctlLoaders(ctx), ...(await peerLoaders(ctx, archive))];
  const seconds = new Map<ImageLoader, number[]>(loaders.map((l) => [l, []]));
  const failed = new Set<ImageLoader>();
  try {
    for (let run = 0; run < ctx.runs; run++) {
      for (const l of loaders) {
        if (failed.has(l)) continue;
        try {
          settle();
          seconds.get(l)!.push(await time(() => l.load(archive.path)));
          await l.reset();
        } catch (e) {
          failed.add(l);
          ctx.log.skip({ subject: l.subject, workload: 'image', operation: 'load', reason: `failed: ${(e as Error).message}` });
        }
      }
      ctx.fs.trim();
    }
  } finally {
    for (const l of loaders) {
      try {
        await l.close();
      } catch (e) {
        ctx.log.note(`cleaning up after ${l.subject}: ${(e as Error).message}`);
      }
    }
  }
  for (const l of loaders) {
    if (failed.has(l)) continue;
    const kind = l.subject === 'GNU tar' ? 'floor' : l.subject.startsWith('unionctl') ? 'unionctl' : 'peer';
    ctx.log.add({
      workload: 'image',
      operation: 'load',
      subject: l.subject,
      kind,
      seconds: seconds.get(l)!,
      bytes: archive.layerBytes,
      files: archive.layerEntries,
      note: kind === 'unionctl' ? 'a whole `unionctl load` process' : undefined,
    });
  }
}
