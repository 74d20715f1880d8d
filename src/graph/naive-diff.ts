/**
 * The one naive diff every driver without a valid native diff uses (Docker's NaiveDiffDriver):
 * get the merged views of the layer and of its parent, compare the two trees, and tar up what
 * differs. Slower than reading a driver's own upper dir, but right for every driver.
 */
import { lstatSync } from 'node:fs';
import { Readable } from 'node:stream';
import { applyLayer } from '../archive/apply.js';
import { changesBetween } from '../archive/changes.js';
import { exportChanges } from '../archive/export.js';
import { changesSize } from '../archive/size.js';
import type { ApplyDiffOpts, ApplyResult, Change, Driver } from './driver.js';

/**
 * The mtime given to the .wh. entries of deletions. Docker stamps them with the time of the
 * export, which makes two exports of one layer differ; the layer root's mtime is just as
 * meaningful and the same every time.
 */
function whiteoutTime(layerView: string): number {
  return Math.floor(lstatSync(layerView).mtimeMs / 1000);
}

export type ViewSource = Pick<Driver, 'get' | 'put'>;

/** The two views a comparison needs; `release` puts back whatever was taken. */
interface Views {
  layer: string;
  parent?: string;
  release: () => Promise<void>;
}

export class NaiveDiff {
  private readonly driver: ViewSource;

  constructor(driver: ViewSource) {
    this.driver = driver;
  }

  /**
   * The layer's changes against `parent` as a layer tar. Both views stay taken while the tar is
   * read from them (lazily) and are given back before the stream ends, or when it fails or is
   * destroyed: a caller that has seen 'end' can remove the layers at once.
   */
  async diff(id: string, parent?: string): Promise<Readable> {
    const views = await this.takeViews(id, parent);
    let stream: Readable;
    try {
      const changes = await changesBetween(views.layer, views.parent);
      stream = exportChanges(views.layer, changes, { whiteoutMtime: whiteoutTime(views.layer) });
    } catch (e) {
      await views.release();
      throw e;
    }
    let released: Promise<void> | undefined;
    const release = () => (released ??= releaseViews(views, id));
    const out = Readable.from(drainThenRelease(stream, release), { objectMode: false });
    // Destroyed before it was read to the end (or before it was read at all): give back now.
    out.once('close', () => {
      stream.destroy();
      void release();
    });
    return out;
  }

  async changes(id: string, parent?: string): Promise<Change[]> {
    return this.withViews(id, parent, (v) => changesBetween(v.layer, v.parent));
  }

  /** Bytes of the files the layer added or changed (Docker's DiffSize). */
  async diffSize(id: string, parent?: string): Promise<number> {
    return this.withViews(id, parent, async (v) => changesSize(v.layer, await changesBetween(v.layer, v.parent)));
  }

  /**
   * Applies a layer tar into the layer's mounted view with real deletions (whiteout format
   * 'plain'), for drivers whose layer is a filesystem holding the whole tree (devicemapper).
   */
  async applyDiff(id: string, _parent: string | undefined, tar: Readable | string, opts: ApplyDiffOpts = {}): Promise<ApplyResult> {
    const path = await this.driver.get(id);
    try {
      return await applyLayer(tar, path, { ...opts, whiteoutFormat: 'plain' });
    } finally {
      await this.driver.put(id);
    }
  }

  private async withViews<T>(id: string, parent: string | undefined, fn: (v: Views) => T | Promise<T>): Promise<T> {
    const views = await this.takeViews(id, parent);
    try {
      return await fn(views);
    } finally {
      await views.release();
    }
  }

  private async takeViews(id: string, parent: string | undefined): Promise<Views> {
    const layer = await this.driver.get(id);
    if (parent === undefined) return { layer, release: () => this.driver.put(id) };
    let parentView: string;
    try {
      parentView = await this.driver.get(parent);
    } catch (e) {
      await this.driver.put(id);
      throw e;
    }
    return {
      layer,
      parent: parentView,
      release: async () => {
        try {
          await this.driver.put(parent);
        } finally {
          await this.driver.put(id);
        }
      },
    };
  }
}

/** The stream's chunks; once it is drained the views are given back, before the caller sees 'end'. */
async function* drainThenRelease(stream: Readable, release: () => Promise<void>): AsyncGenerator<Buffer, void, undefined> {
  for await (const chunk of stream) yield chunk as Buffer;
  await release();
}

/** Gives the views back; a failure is reported, not turned into a failed diff: the data went out whole. */
async function releaseViews(views: Views, id: string): Promise<void> {
  try {
    await views.release();
  } catch (e) {
    process.emitWarning(`unionctl: releasing the views of layer ${id} failed: ${(e as Error).message}`);
  }
}
