/**
 * Diff IDs of the layers containerd commits, recorded right after the Commit has answered.
 *
 * containerd does not pass a layer's diff ID to its snapshotter: the server works it out itself,
 * as the sha256 of the tar unionctl exports for the layer (what `unionctl save` then writes). That
 * means reading and hashing the whole layer, about as long as containerd took to write it; done
 * inside Commit it would hold up containerd's unpacking of the next layer, so Commit records a big
 * layer without one (a small one it hashes itself) and this queue hashes it meanwhile, one layer
 * at a time, and records it in a store transaction. A layer removed or given a diff ID meanwhile
 * is skipped. A server stopped or killed before the queue ran dry leaves layers without a diff
 * ID: the next start queues them again.
 */
import { sha256Of } from '../../archive/stream-digest.js';
import { isUnionctlError } from '../../errors.js';
import type { LayerStore } from '../../graph/store.js';

export class DiffIdRecorder {
  private readonly queue: string[] = [];
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly store: LayerStore) {}

  /** Queues image layers of the store that have no diff ID yet (those a stopped server left). */
  async resume(): Promise<void> {
    for (const l of await this.store.list()) if (!l.writable && l.diffId === undefined) this.add(l.id);
  }

  /** Queues layer `id`; its diff ID is recorded soon after. */
  add(id: string): void {
    if (this.stopped || this.queue.includes(id)) return;
    this.queue.push(id);
    this.running ??= this.drain().finally(() => (this.running = undefined));
  }

  /** Resolves once every queued layer has its diff ID (or was skipped). */
  async settled(): Promise<void> {
    while (this.running !== undefined) await this.running;
  }

  /** Takes nothing more; waits for the layer being hashed now. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.length = 0;
    await this.settled();
  }

  private async drain(): Promise<void> {
    for (let id = this.queue.shift(); id !== undefined; id = this.queue.shift()) {
      try {
        await this.record(id);
      } catch (e) {
        // The layer went (the GC removed it meanwhile) or cannot be read now: the next start tries again.
        const gone = isUnionctlError(e) && e.code === 'NOT_FOUND';
        if (!gone) this.store.report('warn', `could not record the diff ID of layer ${id}: ${(e as Error).message}`);
      }
    }
  }

  private async record(id: string): Promise<void> {
    const before = await this.store.layer(id);
    if (before.writable || before.diffId !== undefined) return;
    const diffId = await exportDiffId(this.store, id, before.parent);
    await this.store.transaction(async (tx) => {
      const now = tx.record(id);
      if (now === undefined || now.state !== 'complete' || now.writable || now.diffId !== undefined) return;
      tx.putRecord({ ...now, diffId });
    });
  }
}

/**
 * The diff ID of layer `id`: the sha256 of the tar the driver exports for it against `parent`.
 * The driver's diff, not the store's: the store's hold on the layer is given back only after
 * 'close', and the commit that follows a hash inside Commit refuses a layer still held.
 */
export async function exportDiffId(store: LayerStore, id: string, parent: string | undefined): Promise<string> {
  return sha256Of(await store.driver.diff(id, parent));
}
