/**
 * Copy-up: the first write to a file that lives in a lower layer (bigfile workload: a 4 KiB and a
 * 1 GiB file). Each run mounts a fresh writable view on the image layer (timed on its own as
 * "mount rw": for vfs that is where the whole copy happens), then opens each file for writing and
 * writes 4 KiB at its start — overlayfs copies the whole file up at that open.
 * Peers: a bare kernel overlayfs mount (the floor) and fuse-overlayfs, over the same overlay2 layer
 * directory with a fresh upper dir each run.
 */
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { UnionPaths } from '../../src/drivers/overlayfs/mount.js';
import { openStore, type LayerStore } from '../../src/index.js';
import { freshDir, unionctlSubject, type BenchContext } from '../context.js';
import { time } from '../measure.js';
import { bareOverlayMounter, bareUnmount, fuseOverlayMount, fuseUnmount } from '../peers/kernel-overlay.js';
import { settle } from '../scratch-fs.js';
import { COPY_UP_FILES, type LayerTar } from '../workloads.js';

const BLOCK = Buffer.alloc(4096, 0x5a);

/** Opens a lower file for writing and writes 4 KiB at offset 0: the write that triggers copy-up. */
function firstWrite(path: string): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, BLOCK, 0, BLOCK.length, 0);
  } finally {
    closeSync(fd);
  }
}

/** One writable view: how to make it, and how to take it away again (untimed). */
interface RwView {
  path: string;
  release(): Promise<void> | void;
}

interface CopyUpSubject {
  subject: string;
  kind: 'unionctl' | 'floor' | 'peer';
  mountRw(): Promise<RwView> | RwView;
}

export async function runCopyUp(ctx: BenchContext, layer: LayerTar, bigBytes: number): Promise<void> {
  const bigLabel = bigBytes >= 1024 ** 3 ? `${bigBytes / 1024 ** 3} GiB` : `${bigBytes / 1024 ** 2} MiB`;
  ctx.say(`copy-up: 4 KiB and ${bigLabel} lower files`);
  const stores: LayerStore[] = [];
  const subjects: CopyUpSubject[] = [];
  try {
    for (const driver of ctx.drivers) {
      const store = await openStore({ root: freshDir(ctx, `copyup-${driver}`), driver });
      stores.push(store);
      try {
        const base = await store.importLayer(layer.path);
        subjects.push(storeSubject(driver, store, base.id));
        if (driver === 'overlay2') subjects.push(...peerSubjects(ctx, store.driver.home, base.id));
      } catch (e) {
        ctx.log.skip({
          subject: unionctlSubject(driver),
          workload: 'bigfile',
          operation: 'copy-up',
          reason: `import failed: ${(e as Error).message}`,
        });
      }
    }
    await measure(ctx, subjects, bigLabel, bigBytes);
  } finally {
    for (const s of stores) {
      await s.cleanup();
      await s.close();
    }
    ctx.fs.trim();
  }
}

function storeSubject(driver: string, store: LayerStore, baseId: string): CopyUpSubject {
  return {
    subject: unionctlSubject(driver),
    kind: 'unionctl',
    mountRw: async () => {
      const m = await store.mount(baseId, { rw: true });
      return {
        path: m.path,
        release: async () => {
          await store.unmount(m.id);
          await store.remove(m.id);
        },
      };
    },
  };
}

function peerSubjects(ctx: BenchContext, home: string, baseId: string): CopyUpSubject[] {
  const peer = (
    subject: string,
    kind: 'floor' | 'peer',
    mount: (target: string, p: UnionPaths) => void,
    unmount: (target: string) => void,
  ): CopyUpSubject => ({
    subject,
    kind,
    mountRw: () => {
      const dir = freshDir(ctx, 'copyup-peer');
      for (const d of ['upper', 'work', 'merged']) mkdirSync(join(dir, d), { recursive: true });
      // Paths relative to the overlay2 home, as mountUnion wants them.
      const rel = (d: string) => relative(home, join(dir, d));
      const target = join(dir, 'merged');
      mount(target, { lowers: [join(baseId, 'diff')], upper: rel('upper'), work: rel('work') });
      return {
        path: target,
        release: () => {
          unmount(target);
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  });
  const out = [peer('kernel overlayfs (bare mount)', 'floor', bareOverlayMounter(home), bareUnmount)];
  if (ctx.peers.has('fuse-overlayfs')) out.push(peer('fuse-overlayfs', 'peer', (t, p) => fuseOverlayMount(home, t, p), fuseUnmount));
  else ctx.log.skip({ subject: 'fuse-overlayfs', reason: 'fuse-overlayfs is not installed (unionctl bench --peers installs it)' });
  return out;
}

async function measure(ctx: BenchContext, subjects: CopyUpSubject[], bigLabel: string, bigBytes: number): Promise<void> {
  const cells = new Map<string, number[]>();
  const push = (key: string, s: number) => cells.set(key, [...(cells.get(key) ?? []), s]);
  const failed = new Set<CopyUpSubject>();
  for (let run = 0; run < ctx.runs; run++) {
    for (const s of subjects) {
      if (failed.has(s)) continue;
      try {
        settle();
        let view: RwView | undefined;
        push(`${s.subject}\0mount rw`, await time(async () => (view = await s.mountRw())));
        try {
          settle();
          push(`${s.subject}\0copy-up\x004 KiB`, await time(() => firstWrite(join(view!.path, COPY_UP_FILES.small))));
          settle();
          push(`${s.subject}\0copy-up\0${bigLabel}`, await time(() => firstWrite(join(view!.path, COPY_UP_FILES.big))));
        } finally {
          await view!.release();
        }
      } catch (e) {
        failed.add(s);
        ctx.log.skip({ subject: s.subject, workload: 'bigfile', operation: 'copy-up', reason: `failed: ${(e as Error).message}` });
      }
    }
    ctx.fs.trim();
  }
  for (const s of subjects) {
    if (failed.has(s)) continue;
    for (const [key, seconds] of cells) {
      const [subject, operation, param] = key.split('\0');
      if (subject !== s.subject) continue;
      const bytes = param === '4 KiB' ? 4096 : param === bigLabel ? bigBytes : undefined;
      const note =
        subject === 'unionctl vfs'
          ? 'vfs copies the whole layer when the writable layer is made ("mount rw"): a write then copies nothing'
          : undefined;
      ctx.log.add({ workload: 'bigfile', operation, param, subject, kind: s.kind, seconds, bytes, note });
    }
  }
}
