/**
 * One driver under test, on its own tmpfs: the store (for store-level rules such as HAS_CHILDREN),
 * its driver, and the small helpers every scenario uses (make a layer from a tar, look at a layer
 * through get/put, find where the driver keeps a layer's own files).
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Driver, DriverCapabilities } from '../../src/graph/driver.js';
import { openStore, registerDriver, type DriverEntry, type LayerStore } from '../../src/index.js';
import { mountsBelow } from '../helpers/mounts.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { tarOf, tarStream, type EntrySpec } from './tars.js';

export interface FixtureOptions {
  /** Driver-wide storage options. */
  driverOptions?: Record<string, string>;
  /** tmpfs size for the store, default 4g (pages are only used when written). */
  scratchSize?: string;
  /**
   * Where the driver keeps a layer's own files (its upper / diff dir), to check whiteouts in the
   * driver's own format. Default: metadata UpperDir, else metadata Dir.
   */
  layerFilesDir?: (driver: Driver, id: string) => Promise<string>;
  /**
   * The layer's own files are only there while it is mounted (devicemapper: a thin device's
   * filesystem): every look at them takes a get/put around it, and they are the path get returns.
   */
  layerFilesThroughGet?: boolean;
  /**
   * Paths below the store root that change with any write to any layer (devicemapper's pool
   * files and device-id counters): left out when a scenario checks "the store is as it was".
   */
  storeStateFiles?: string[];
  /**
   * Image layers are hardlink farms sharing file inodes with their parents (overlay v1): a file's
   * link count seen through a layer also counts the names it has in the other layers' farms.
   */
  hardlinkFarms?: boolean;
}

/** Knobs of runDriverConformance (see suite.ts). */
export interface ConformanceOptions extends FixtureOptions {
  /** Layers in the deep-read chain (Docker's graphtest reads through 50; default 130, past Docker's 128). */
  deepChain?: number;
  /** Further chain lengths to read through after deepChain, e.g. 210 for overlay2's new mount API. */
  deeperChains?: number[];
  /** Writable siblings of one parent mounted and unmounted all at once (default 12). */
  siblings?: number;
  /**
   * Build the chain up to the driver's maxDepth and check that one more layer is refused, when
   * maxDepth is at most this (default 600; vfs has no limit, so it is skipped there).
   */
  depthLimitUpTo?: number;
}

async function defaultLayerFilesDir(driver: Driver, id: string): Promise<string> {
  const meta = await driver.metadata(id);
  const dir = meta.UpperDir ?? meta.Dir;
  assert.ok(dir, `${driver.name}: metadata(${id}) names neither UpperDir nor Dir; pass layerFilesDir to the conformance suite`);
  return dir;
}

export class DriverFixture {
  private counter = 0;

  private constructor(
    readonly driverName: string,
    readonly scratch: Scratch,
    /** The store root, on the scratch tmpfs. */
    readonly root: string,
    readonly store: LayerStore,
    private readonly opts: FixtureOptions,
  ) {}

  /** A store on a fresh tmpfs, with the driver `driver` names (registering a DriverEntry first). */
  static async open(driver: string | DriverEntry, opts: FixtureOptions = {}): Promise<DriverFixture> {
    if (typeof driver !== 'string') registerDriver(driver);
    const driverName = typeof driver === 'string' ? driver : driver.name;
    const scratch = makeScratch({ size: opts.scratchSize });
    try {
      const root = join(scratch.dir, 'store');
      const store = await openStore({ root, driver: driverName, storageOpt: opts.driverOptions });
      return new DriverFixture(driverName, scratch, root, store, opts);
    } catch (e) {
      scratch.dispose();
      throw e;
    }
  }

  get driver(): Driver {
    return this.store.driver;
  }

  get caps(): DriverCapabilities {
    return this.driver.capabilities();
  }

  /** A fresh layer id, unique within the fixture. */
  id(prefix = 'layer'): string {
    this.counter += 1;
    return `${prefix}-${this.counter}`;
  }

  /** A scratch dir for test inputs (tars, victims), outside the store root. */
  workDir(): string {
    return join(this.scratch.dir, 'work');
  }

  /**
   * Creates a layer (driver level) on `parent` and applies the given entries as a layer tar.
   * Returns the new id.
   */
  async layer(parent: string | undefined, entries: EntrySpec[], opts: { id?: string; writable?: boolean } = {}): Promise<string> {
    const id = opts.id ?? this.id();
    if (opts.writable) await this.driver.createReadWrite(id, parent);
    else await this.driver.create(id, parent);
    if (entries.length > 0) await this.driver.applyDiff(id, parent, tarStream(tarOf(entries)));
    return id;
  }

  /** get → fn(path) → put, even when fn throws. */
  async view<T>(id: string, fn: (path: string) => T | Promise<T>): Promise<T> {
    const path = await this.driver.get(id);
    try {
      return await fn(path);
    } finally {
      await this.driver.put(id);
    }
  }

  /** See FixtureOptions.hardlinkFarms. */
  get hardlinkFarms(): boolean {
    return this.opts.hardlinkFarms === true;
  }

  /** The directory holding the layer's own files, in the driver's own format. */
  async ownFilesDir(id: string): Promise<string> {
    return (this.opts.layerFilesDir ?? defaultLayerFilesDir)(this.driver, id);
  }

  /** Paths below the store root a scenario must not expect to stay unchanged (see storeStateFiles). */
  get storeStateFiles(): string[] {
    return this.opts.storeStateFiles ?? [];
  }

  /** fn(the layer's own files dir), with the layer mounted around it when the driver needs that. */
  async withOwnFiles<T>(id: string, fn: (dir: string) => T | Promise<T>): Promise<T> {
    if (this.opts.layerFilesThroughGet) return this.view(id, fn);
    return fn(await this.ownFilesDir(id));
  }

  /** Relative paths below `dir` (dirs end with "/"), sorted: Docker's readDirContents. */
  static tree(dir: string): string[] {
    const out: string[] = [];
    const walk = (d: string) => {
      for (const entry of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, entry.name);
        const rel = relative(dir, p);
        if (entry.isDirectory()) {
          out.push(`${rel}/`);
          walk(p);
        } else out.push(rel);
      }
    };
    walk(dir);
    return out.sort();
  }

  /** The merged view's tree, through get/put. */
  async treeOf(id: string): Promise<string[]> {
    return this.view(id, (p) => DriverFixture.tree(p));
  }

  /** Unmounts what the driver mounted, checks nothing was left mounted below the scratch fs, disposes it. */
  async close(): Promise<void> {
    let leftover: string[] = [];
    try {
      leftover = mountsBelow(this.scratch.dir).map((m) => m.mountPoint);
      await this.store.cleanup();
      await this.store.close();
    } finally {
      this.scratch.dispose();
    }
    assert.deepEqual(leftover, [], `${this.driverName}: mounts still there when the suite ended (every get needs its put)`);
  }
}
