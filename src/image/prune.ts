/**
 * prune: what nothing uses goes — images without names (dangling, as `docker image prune` removes
 * them) and then every layer that no image, mount, running process, running load or extension (a
 * containerd snapshot) uses and that has no child layer that stays. Layers are removed top down in
 * one transaction, as rm removes them (crash safe: an interrupted prune is finished or rolled back
 * by the next open). With dryRun, the same is worked out and nothing is changed.
 */
import type { LayerStore, StoreTx } from '../graph/store.js';
import { removeImage } from './images.js';
import { diskDocuments, readImageRecords } from './records.js';

export interface PruneResult {
  /** Ids of the images removed (dangling: no names). */
  images: string[];
  /** Ids of the layers removed, top first (the dangling images' own layers included). */
  layers: string[];
}

export async function prune(store: LayerStore, opts: { dryRun?: boolean } = {}): Promise<PruneResult> {
  const dangling = readImageRecords(diskDocuments(store)).filter((i) => i.names.length === 0);
  if (opts.dryRun === true) {
    return store.transaction(async (tx) => ({
      images: dangling.map((i) => i.id),
      layers: unusedLayers(tx, new Set(dangling.map((i) => i.id))),
    }));
  }
  const result: PruneResult = { images: [], layers: [] };
  for (const image of dangling) {
    const removed = await removeImage(store, image.id);
    result.images.push(image.id);
    result.layers.push(...removed.layers);
  }
  const layers = await store.transaction(async (tx) => {
    const unused = unusedLayers(tx);
    for (const id of unused) tx.removeLayer(id, { onInUse: 'finish-later' });
    return unused;
  });
  result.layers.push(...layers);
  return result;
}

/**
 * The layers nothing uses, top first: a layer goes when nothing guards it (an image, a load, an
 * extension: `removeGuardOf`), nothing holds it (mounts, processes) and every child goes too.
 * `removedImages`: images counted as gone already (those a dry run would remove first): a layer
 * only they use is free of images.
 */
function unusedLayers(tx: StoreTx, removedImages: ReadonlySet<string> = new Set()): string[] {
  const { records: all, damaged } = tx.scanRecords();
  const records = all.filter((r) => r.state === 'complete');
  // Children of each layer, read once, as StoreTx.children counts them: those being removed do
  // not count, a damaged record naming its parent does, one that cannot name it is CORRUPT.
  const unknown = damaged.find((d) => d.parent === null);
  if (unknown !== undefined) throw unknown.error;
  const childrenOf = new Map<string, string[]>();
  const addChild = (parent: string, id: string) => childrenOf.set(parent, [...(childrenOf.get(parent) ?? []), id]);
  for (const r of all) if (r.parent !== undefined && r.state !== 'removing') addChild(r.parent, r.id);
  for (const d of damaged) if (typeof d.parent === 'string') addChild(d.parent, d.id);
  const children = (id: string) => childrenOf.get(id) ?? [];
  const images = readImageRecords(tx);
  const ofRemoved = new Set(images.filter((i) => removedImages.has(i.id)).flatMap((i) => i.layers.map((l) => l.id)));
  const ofKept = new Set(images.filter((i) => !removedImages.has(i.id)).flatMap((i) => i.layers.map((l) => l.id)));
  const unguarded = (id: string) => (ofRemoved.has(id) ? !ofKept.has(id) : tx.removeGuardOf(id) === undefined);
  const free = (id: string) => unguarded(id) && tx.keptByExtension(id) === undefined && !held(tx, id);
  const going = new Set<string>();
  // Top down: a layer can go once all its children go; repeat until nothing more can.
  for (let changed = true; changed;) {
    changed = false;
    for (const r of records) {
      if (going.has(r.id) || !free(r.id)) continue;
      if (children(r.id).every((c) => going.has(c))) {
        going.add(r.id);
        changed = true;
      }
    }
  }
  // Children before parents: the order removeLayer needs.
  const order: string[] = [];
  const visit = (id: string) => {
    if (order.includes(id)) return;
    for (const c of children(id)) if (going.has(c)) visit(c);
    order.push(id);
  };
  for (const id of going) visit(id);
  return order;
}

function held(tx: StoreTx, id: string): boolean {
  const refs = tx.store.references(id);
  return refs.total > 0 || refs.mounted || tx.store.mountCount(id) > 0;
}
