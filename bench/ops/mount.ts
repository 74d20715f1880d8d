/**
 * Mount (get) latency against chain depth (warm dentry cache), and the first read through the top
 * of the chain: the file of the bottom layer, looked up through every layer above it, with cold caches.
 *
 * Each driver gets one chain of one-file layers (deep workload) imported untimed; every depth of
 * the plan is a layer of that chain. Peers mount the same overlay2 layers: a bare kernel overlayfs
 * mount (the floor: overlay2's own mount call without the store around it) and fuse-overlayfs.
 */
import { existsSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { UnionPaths } from '../../src/drivers/overlayfs/mount.js';
import { openStore, type LayerStore } from '../../src/index.js';
import { freshDir, unionctlSubject, type BenchContext } from '../context.js';
import { time } from '../measure.js';
import { bareOverlayMounter, bareUnmount, fuseOverlayMount, fuseUnmount, overlay2LowersOf } from '../peers/kernel-overlay.js';
import { settle } from '../scratch-fs.js';
import { buildDeepChain, deepFileOf, type LayerTar } from '../workloads.js';

const BARE = 'kernel overlayfs (bare mount)';
const FUSE = 'fuse-overlayfs';

interface Chain {
  store: LayerStore;
  /** ids[i] is the layer at depth i + 1. */
  ids: string[];
}

export async function runMount(ctx: BenchContext): Promise<void> {
  const depths = ctx.sizes.depths;
  const maxDepth = Math.max(...depths);
  ctx.say(`mount: chains of one-file layers, depths ${depths.join(', ')}`);
  const tars = buildDeepChain(ctx.fs.tmp, maxDepth);
  try {
    for (const driver of ctx.drivers) {
      const chain = await buildChain(ctx, driver, tars);
      if (chain === undefined) continue;
      try {
        const peers = driver === 'overlay2' ? peerMounters(ctx, chain) : [];
        for (const depth of depths) {
          if (chain.ids[depth - 1] === undefined) continue; // the chain stopped short: reported by buildChain
          // A base layer is not mounted by overlay2, and overlayfs refuses one lowerdir without an upper.
          const mountable = depth > 1 ? peers : [];
          if (depth === 1)
            for (const p of peers)
              ctx.log.skip({
                subject: p.subject,
                workload: 'deep',
                operation: 'mount',
                reason:
                  'depth 1: nothing to mount (a single read-only layer is its own directory; overlayfs needs two lowers without an upper)',
              });
          await measureAt(ctx, [storeMounter(driver, chain), ...mountable], depth);
        }
      } finally {
        await chain.store.cleanup();
        await chain.store.close();
      }
      ctx.fs.trim();
    }
    if (!ctx.drivers.includes('overlay2')) {
      for (const subject of [BARE, FUSE])
        ctx.log.skip({
          subject,
          workload: 'deep',
          operation: 'mount',
          reason: 'mounts the overlay2 chain: run with overlay2 among --drivers',
        });
    }
  } finally {
    for (const t of tars) rmSync(t.path, { force: true });
  }
}

async function buildChain(ctx: BenchContext, driver: string, tars: LayerTar[]): Promise<Chain | undefined> {
  const store = await openStore({ root: freshDir(ctx, `deep-${driver}`), driver });
  const ids: string[] = [];
  const subject = unionctlSubject(driver);
  try {
    const seconds = await time(async () => {
      for (const t of tars) ids.push((await store.importLayer(t.path, { parent: ids[ids.length - 1] })).id);
    });
    ctx.log.add({
      workload: 'deep',
      operation: 'import chain',
      param: `depth ${tars.length}`,
      subject,
      kind: 'unionctl',
      seconds: [seconds],
      bytes: tars.reduce((n, t) => n + t.bytes, 0),
      files: tars.length,
      note: 'one run: the chain every mount is measured on, one importLayer per layer',
    });
    return { store, ids };
  } catch (e) {
    ctx.log.skip({
      subject,
      workload: 'deep',
      operation: 'mount',
      reason: `could not build the depth ${tars.length} chain (${ids.length} layers imported): ${(e as Error).message}`,
    });
    if (ids.length === 0) {
      await store.close();
      return undefined;
    }
    return { store, ids };
  }
}

/** One way to mount a layer of the chain: unionctl's store, or a peer given the same directories. */
interface Mounter {
  subject: string;
  kind: 'unionctl' | 'floor' | 'peer';
  /** Mounts the layer at `depth` and returns the merged view's path. */
  mount(depth: number): Promise<string> | string;
  unmount(depth: number, path: string): Promise<void> | void;
}

function storeMounter(driver: string, chain: Chain): Mounter {
  return {
    subject: unionctlSubject(driver),
    kind: 'unionctl',
    mount: async (depth) => (await chain.store.mount(chain.ids[depth - 1])).path,
    unmount: (depth) => chain.store.unmount(chain.ids[depth - 1]),
  };
}

/** The union overlay2 would mount for layer `id`: committed layers read-only, the top one with its upper. */
function overlay2Union(home: string, id: string): UnionPaths {
  const lowers = overlay2LowersOf(home, id);
  if (existsSync(join(home, id, 'committed'))) return { lowers };
  return { lowers: lowers.slice(1), upper: join(id, 'diff'), work: join(id, 'work') };
}

function peerMounters(ctx: BenchContext, chain: Chain): Mounter[] {
  const home = chain.store.driver.home;
  const union = (depth: number) => overlay2Union(home, chain.ids[depth - 1]);
  const peer = (
    subject: string,
    kind: 'floor' | 'peer',
    mount: (t: string, p: UnionPaths) => void,
    unmount: (t: string) => void,
  ): Mounter => ({
    subject,
    kind,
    mount: (depth) => {
      const target = freshDir(ctx, 'peer-mnt');
      mount(target, union(depth));
      return target;
    },
    unmount: (_depth, target) => {
      unmount(target);
      rmdirSync(target);
    },
  });
  const out = [peer(BARE, 'floor', bareOverlayMounter(home), bareUnmount)];
  if (ctx.peers.has('fuse-overlayfs')) out.push(peer(FUSE, 'peer', (t, p) => fuseOverlayMount(home, t, p), fuseUnmount));
  else ctx.log.skip({ subject: FUSE, reason: 'fuse-overlayfs is not installed (unionctl bench --peers installs it)' });
  return out;
}

/**
 * Every mounter at `depth`, interleaved run by run (mounter A, B, C, then A, B, C …) so that
 * background noise falls on all of them alike. A run first mounts with cold caches (synced, caches
 * dropped) and times one read of the bottom layer's file through the union — the first read — and
 * unmounts; then it times a second mount, with the layer directories in the dentry cache as they are
 * on a busy host: that is the mount latency, the store's work plus the kernel's, without the disk.
 * Mounts are cheap, so these cells get twice the runs (+1) of the others.
 */
async function measureAt(ctx: BenchContext, mounters: Mounter[], depth: number): Promise<void> {
  const mounts = new Map<Mounter, number[]>(mounters.map((m) => [m, []]));
  const reads = new Map<Mounter, number[]>(mounters.map((m) => [m, []]));
  const failed = new Set<Mounter>();
  const once = async (m: Mounter, whileMounted: (path: string) => Promise<void>) => {
    const path = await m.mount(depth);
    try {
      await whileMounted(path);
    } finally {
      await m.unmount(depth, path);
    }
  };
  for (let run = 0; run < 2 * ctx.runs + 1; run++) {
    for (const m of mounters) {
      if (failed.has(m)) continue;
      try {
        settle();
        await once(m, async (path) => void reads.get(m)!.push(await time(() => readFileSync(join(path, deepFileOf(1))))));
        let path = '';
        mounts.get(m)!.push(await time(async () => (path = await m.mount(depth))));
        await m.unmount(depth, path);
      } catch (e) {
        failed.add(m);
        ctx.log.skip({
          subject: m.subject,
          workload: 'deep',
          operation: 'mount',
          reason: `depth ${depth} failed: ${(e as Error).message}`,
        });
      }
    }
  }
  const param = `depth ${depth}`;
  for (const m of mounters) {
    if (failed.has(m)) continue;
    ctx.log.add({ workload: 'deep', operation: 'mount', param, subject: m.subject, kind: m.kind, seconds: mounts.get(m)! });
    ctx.log.add({ workload: 'deep', operation: 'first read', param, subject: m.subject, kind: m.kind, seconds: reads.get(m)! });
  }
}
