import type { Readable } from 'node:stream';
import type { TarTap } from '../archive/tar-reader.js';
import type { ApplyResult, Change, ChangeKind, WhiteoutFormat } from '../archive/types.js';

export type { ApplyResult, Change, ChangeKind, WhiteoutFormat };

/**
 * The Driver interface, modelled on Docker's graphdriver (see DESIGN.md §2). A driver stores layers
 * under its home directory and knows how to mount a layer's merged view. It does not know about
 * parent/child bookkeeping, digests or locking: the LayerStore (store.ts) does that on top.
 */

export type BranchMode = 'rw' | 'ro' | 'ro+wh';

/** One branch of a layer's union, as the kernel sees it. */
export interface Branch {
  path: string;
  /** The layer this branch belongs to. */
  layer: string;
  mode: BranchMode;
}

/** What applyDiff passes on to the tar engine (applyLayer), whatever the driver. */
export interface ApplyDiffOpts {
  /** Bytes of the uncompressed tar read so far. */
  onProgress?: (bytes: number) => void;
  /** Sees every byte of the stream that is not file content (the store's tar-split recorder). */
  tap?: TarTap;
}

export interface CreateOpts {
  /** Per-layer storage options (only createReadWrite accepts any, e.g. size). */
  storageOpt?: Record<string, string>;
  mountLabel?: string;
}

export interface GetOpts {
  /** SELinux context label for the mount (context="…"). */
  mountLabel?: string;
}

/** What a driver can and cannot do, for the store and `unionctl info`. */
export interface DriverCapabilities {
  whiteoutFormat: WhiteoutFormat;
  /** The driver computes diffs from its own layer dirs instead of comparing two trees. */
  nativeDiff: boolean;
  /** Most ancestors a layer may have (Docker's meaning: overlay2 refuses a child past it). */
  maxDepth: number;
}

export interface Driver {
  readonly name: string;
  /** The driver's home directory, <root>/<name>. */
  readonly home: string;
  capabilities(): DriverCapabilities;
  /** Empty image (read-only) layer on top of parent. */
  create(id: string, parent?: string, opts?: CreateOpts): Promise<void>;
  /** Empty writable layer on top of parent. Only here are per-layer storage options accepted. */
  createReadWrite(id: string, parent?: string, opts?: CreateOpts): Promise<void>;
  /** Delete the layer's storage. The caller makes sure it is not mounted and has no children. */
  remove(id: string): Promise<void>;
  /** Mount the merged view if needed (reference-counted across processes) and return its path. */
  get(id: string, opts?: GetOpts): Promise<string>;
  /** Release one get; unmount at zero. */
  put(id: string): Promise<void>;
  exists(id: string): Promise<boolean>;
  /** Ordered [key, value] pairs as Docker names them. */
  status(): Promise<Array<[string, string]>>;
  metadata(id: string): Promise<Record<string, string>>;
  /** rw/ro state of every branch of the layer's union, top first, read from the kernel where it says it. */
  branches(id: string): Promise<Branch[]>;
  /**
   * Extract an uncompressed (or gzip/zstd: sniffed) layer tar into the layer. `tar` is a stream or
   * the path of a file (read straight into the tar engine's buffers: the fast way in).
   */
  applyDiff(id: string, parent: string | undefined, tar: Readable | string, opts?: ApplyDiffOpts): Promise<ApplyResult>;
  /** The layer's changes against parent as an OCI layer tar. */
  diff(id: string, parent?: string): Promise<Readable>;
  changes(id: string, parent?: string): Promise<Change[]>;
  diffSize(id: string, parent?: string): Promise<number>;
  /** Unmount everything this driver mounted, release pools and loop devices. */
  cleanup(): Promise<void>;
}

/** What the store hands a driver constructor. */
export interface DriverInit {
  /** <root>/<driver name> */
  home: string;
  /** Store root. */
  root: string;
  /** Driver-wide storage options (already split into key/value; unknown keys must be refused). */
  options: Record<string, string>;
}
