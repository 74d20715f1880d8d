/**
 * vfs: the simplest driver and the reference for the others. Docker's layout, `<home>/dir/<id>/`
 * holding the layer's whole tree: a new layer starts as a copy of its parent (reflinked where the
 * filesystem can, so it costs no data blocks), and a layer tar is applied with real deletions.
 * Nothing is ever mounted, and every layer is its own merged view.
 *
 * In use / removal: get() takes a shared flock on the layer directory for as long as this process
 * holds a reference, and remove() needs the exclusive lock, so a layer cannot be deleted under a
 * reader in another process (`unionctl diff` in one shell, `unionctl rm` in another); the kernel
 * drops the lock if the reader dies, so a crash never pins a layer. References that must outlive
 * the process (`unionctl mount` … `unionctl umount`) are counted by the LayerStore, above the driver.
 *
 * Writable layers: vfs dirs are plain directories, so "writable" only tells branches() what to
 * report; it is kept as an empty marker file <home>/rw/<id> (Docker's vfs has no such file and
 * ignores it).
 */
import { closeSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { applyLayer } from '../../archive/apply.js';
import { copyTree } from '../../archive/copytree.js';
import { assertValidId, UnionctlError } from '../../errors.js';
import type {
  ApplyDiffOpts,
  ApplyResult,
  Branch,
  Change,
  CreateOpts,
  Driver,
  DriverCapabilities,
  DriverInit,
  GetOpts,
} from '../../graph/driver.js';
import { NaiveDiff } from '../../graph/naive-diff.js';
import { parseStorageOpts } from '../../graph/registry.js';
import { backingFs, flock, LOCK_EX, LOCK_NB, LOCK_SH, reflinkSupported } from '../../sys/index.js';

/** Driver-wide options vfs understands: none (Docker's vfs.size needs quota support we do not offer). */
export const VFS_OPTION_KEYS: string[] = [];
/** Per-layer options createReadWrite understands: none, for the same reason. */
const VFS_LAYER_OPTION_KEYS: string[] = [];

/** This process's references to one layer, and the fd that holds the shared lock for them. */
interface Held {
  count: number;
  fd: number;
}

function isWouldBlock(e: unknown): boolean {
  const errno = (e as { errno?: unknown }).errno;
  return errno === 'EAGAIN' || errno === 'EWOULDBLOCK';
}

function isMissing(e: unknown): boolean {
  return (e as NodeJS.ErrnoException).code === 'ENOENT';
}

export class VfsDriver implements Driver {
  readonly name = 'vfs';
  readonly home: string;
  private readonly layersDir: string;
  private readonly writableMarks: string;
  private readonly copyMode: 'reflink' | 'copy';
  private readonly held = new Map<string, Held>();
  private readonly naive: NaiveDiff;

  constructor(init: DriverInit) {
    parseStorageOpts(init.options, VFS_OPTION_KEYS, 'vfs driver');
    this.home = init.home;
    this.layersDir = join(init.home, 'dir');
    this.writableMarks = join(init.home, 'rw');
    mkdirSync(this.layersDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.writableMarks, { recursive: true, mode: 0o700 });
    this.copyMode = reflinkSupported(this.layersDir) ? 'reflink' : 'copy';
    this.naive = new NaiveDiff({ get: (id) => this.get(id), put: (id) => this.put(id) });
  }

  capabilities(): DriverCapabilities {
    // Every layer is a full tree: a chain of any depth is one directory, so there is no limit.
    // (A finite number, because JSON has no Infinity.)
    return { whiteoutFormat: 'plain', nativeDiff: false, maxDepth: Number.MAX_SAFE_INTEGER };
  }

  /** <home>/dir/<id>: the layer's files. */
  layerDir(id: string): string {
    assertValidId(id);
    return join(this.layersDir, id);
  }

  // ---- create / remove -----------------------------------------------------------------------

  async create(id: string, parent?: string, opts: CreateOpts = {}): Promise<void> {
    if (opts.storageOpt !== undefined && Object.keys(opts.storageOpt).length > 0) {
      throw new UnionctlError(
        'BAD_OPTION',
        `vfs: per-layer storage options are only accepted for writable layers (got ${Object.keys(opts.storageOpt).join(', ')})`,
        {
          hint: 'drop the option, or create a writable layer',
        },
      );
    }
    await this.makeLayer(id, parent);
  }

  async createReadWrite(id: string, parent?: string, opts: CreateOpts = {}): Promise<void> {
    parseStorageOpts(opts.storageOpt, VFS_LAYER_OPTION_KEYS, 'vfs layer');
    await this.makeLayer(id, parent);
    writeFileSync(join(this.writableMarks, id), '');
  }

  /** A copy of the parent's tree, or an empty 0755 directory for a base layer. */
  private async makeLayer(id: string, parent: string | undefined): Promise<void> {
    const dir = this.layerDir(id);
    if (this.existsSync(id)) throw new UnionctlError('EXISTS', `vfs layer ${id} already exists`, { hint: 'choose another id' });
    if (parent === undefined) {
      mkdirSync(dir, { mode: 0o755 });
      return;
    }
    if (!this.existsSync(parent)) {
      throw new UnionctlError('NOT_FOUND', `parent layer ${parent} does not exist in ${this.layersDir}`, {
        hint: 'create or import the parent first',
      });
    }
    try {
      await copyTree(this.layerDir(parent), dir, { mode: this.copyMode });
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /**
   * Deletes the layer's tree. Tolerates a half-made or already removed layer (crash recovery
   * relies on that). Refuses while any process holds a reference from get().
   */
  async remove(id: string): Promise<void> {
    const dir = this.layerDir(id);
    if ((this.held.get(id)?.count ?? 0) > 0) throw this.inUse(id, `this process (pid ${process.pid}) still uses it`);
    let fd: number;
    try {
      fd = openSync(dir, 'r');
    } catch (e) {
      if (!isMissing(e)) throw e;
      rmSync(join(this.writableMarks, id), { force: true });
      return;
    }
    try {
      try {
        flock(fd, LOCK_EX | LOCK_NB);
      } catch (e) {
        if (isWouldBlock(e)) throw this.inUse(id, 'another process is reading it');
        throw e;
      }
      rmSync(dir, { recursive: true, force: true });
      rmSync(join(this.writableMarks, id), { force: true });
    } finally {
      closeSync(fd);
    }
  }

  private inUse(id: string, why: string): UnionctlError {
    return new UnionctlError('IN_USE', `vfs layer ${id} is in use: ${why}`, {
      hint: 'wait for the diff/mount using it to finish, then retry',
    });
  }

  // ---- get / put -----------------------------------------------------------------------------

  /** The layer's directory; takes a reference (nothing to mount). mountLabel has no meaning here. */
  async get(id: string, _opts: GetOpts = {}): Promise<string> {
    const dir = this.layerDir(id);
    const held = this.held.get(id);
    if (held !== undefined) {
      held.count += 1;
      return dir;
    }
    let fd: number;
    try {
      fd = openSync(dir, 'r');
    } catch (e) {
      if (isMissing(e)) throw new UnionctlError('NOT_FOUND', `vfs layer ${id} does not exist`, { hint: 'check the id with unionctl ls' });
      throw e;
    }
    try {
      flock(fd, LOCK_SH | LOCK_NB);
    } catch (e) {
      closeSync(fd);
      if (isWouldBlock(e)) throw this.inUse(id, 'another process is removing it');
      throw e;
    }
    // A remove may have finished between our open and our lock: then fd is a deleted directory.
    if (!this.isSameDir(fd, dir)) {
      closeSync(fd);
      throw new UnionctlError('NOT_FOUND', `vfs layer ${id} does not exist (it was just removed)`, {
        hint: 'check the id with unionctl ls',
      });
    }
    this.held.set(id, { count: 1, fd });
    return dir;
  }

  private isSameDir(fd: number, dir: string): boolean {
    try {
      const opened = fstatSync(fd);
      const now = lstatSync(dir);
      return opened.ino === now.ino && opened.dev === now.dev;
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  /** Releases one get; the last one drops the shared lock. A put without a get does nothing. */
  async put(id: string): Promise<void> {
    assertValidId(id);
    const held = this.held.get(id);
    if (held === undefined) return;
    held.count -= 1;
    if (held.count > 0) return;
    this.held.delete(id);
    closeSync(held.fd); // closing the last fd of the open file drops its flock
  }

  // ---- queries -------------------------------------------------------------------------------

  private existsSync(id: string): boolean {
    try {
      return lstatSync(this.layerDir(id)).isDirectory();
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  async exists(id: string): Promise<boolean> {
    return this.existsSync(id);
  }

  private isWritable(id: string): boolean {
    try {
      lstatSync(join(this.writableMarks, id));
      return true;
    } catch {
      return false;
    }
  }

  /** Ids of every layer directory, for the store's orphan sweep. */
  async layerIds(): Promise<string[]> {
    return readdirSync(this.layersDir).sort();
  }

  async status(): Promise<Array<[string, string]>> {
    return [
      ['Backing Filesystem', backingFs(this.layersDir)],
      ['Layer Copies', this.copyMode === 'reflink' ? 'reflink (copy-on-write clones)' : 'full copies (no reflink on this filesystem)'],
    ];
  }

  /** Docker's vfs reports nothing; the layer's directory is the one useful fact. */
  async metadata(id: string): Promise<Record<string, string>> {
    this.assertExists(id);
    return { Dir: this.layerDir(id) };
  }

  /** One branch: the layer's own directory. */
  async branches(id: string): Promise<Branch[]> {
    this.assertExists(id);
    return [{ path: this.layerDir(id), layer: id, mode: this.isWritable(id) ? 'rw' : 'ro' }];
  }

  private assertExists(id: string): void {
    if (!this.existsSync(id))
      throw new UnionctlError('NOT_FOUND', `vfs layer ${id} does not exist`, { hint: 'check the id with unionctl ls' });
  }

  // ---- diffs ---------------------------------------------------------------------------------

  /** The layer holds a full copy of its parent, so deletions are applied for real. */
  async applyDiff(id: string, _parent: string | undefined, tar: Readable | string, opts: ApplyDiffOpts = {}): Promise<ApplyResult> {
    this.assertExists(id);
    return applyLayer(tar, this.layerDir(id), { ...opts, whiteoutFormat: 'plain' });
  }

  /** vfs layers are two plain directories: the naive diff compares them directly, nothing is mounted. */
  diff(id: string, parent?: string): Promise<Readable> {
    return this.naive.diff(id, parent);
  }

  changes(id: string, parent?: string): Promise<Change[]> {
    return this.naive.changes(id, parent);
  }

  diffSize(id: string, parent?: string): Promise<number> {
    return this.naive.diffSize(id, parent);
  }

  /** Nothing is mounted; drops this process's references (and with them the shared locks). */
  async cleanup(): Promise<void> {
    for (const held of this.held.values()) closeSync(held.fd);
    this.held.clear();
  }
}
