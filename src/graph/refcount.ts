/**
 * Mount reference counts that outlive the process: `unionctl mount` runs in one process and
 * `unionctl umount` in another, so an in-memory counter (Docker's) is not enough.
 *
 * Layout: <stateDir>/<id> holds `{"count":N,"boot":"<boot id>"}`, written to a temp file and
 * renamed over (readers never see half a file); <stateDir>/.lock serialises every change between
 * processes. A count written during an earlier boot is read as 0: a reboot unmounted everything,
 * so no fsync is needed either (a count lost to a power cut belongs to a boot that is over).
 *
 * The isMounted() callback keeps a count honest when the mount went away behind our back (a
 * crashed process that never ran put, `umount` by hand): such a count starts over at 0. A driver
 * whose layer has nothing to mount (vfs, an overlay2 base layer) should pass `() => true`, so that
 * counts still add up.
 */
import { readdirSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { assertValidId, UnionctlError } from '../errors.js';
import { withFileLock } from './lock.js';
import { writeFileAtomic } from '../sys/index.js';

const LOCK_FILE = '.lock';

let cachedBootId: string | undefined;
/** The kernel's random id for this boot; changes at every reboot. */
export function bootId(): string {
  cachedBootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  return cachedBootId;
}

interface RefFile {
  count: number;
  boot: string;
}

export class MountRefs {
  readonly stateDir: string;
  /** The state dir exists (made once per instance; a lock file cannot be opened without it). */
  private stateDirMade = false;

  constructor(stateDir: string) {
    this.stateDir = stateDir;
  }

  /**
   * Takes one reference. When there is none yet (or the count belongs to a mount that is gone) the
   * layer is mounted first — unless a mount is already there (left by an earlier process with no
   * count), which is adopted instead of mounting twice. Returns the new count.
   */
  async acquire(id: string, isMounted: () => boolean, mount: () => void | Promise<void>): Promise<number> {
    assertValidId(id);
    return this.locked(async () => {
      let count = this.count(id);
      if (count > 0 && !isMounted()) count = 0;
      if (count === 0 && !isMounted()) await mount();
      count += 1;
      this.write(id, count);
      return count;
    });
  }

  /**
   * Drops one reference (never below 0). At 0 the layer is unmounted if it is mounted; when
   * unmount() throws, the count is left as it was so a later release can try again.
   */
  async release(id: string, isMounted: () => boolean, unmount: () => void | Promise<void>): Promise<number> {
    assertValidId(id);
    return this.locked(async () => {
      const count = Math.max(0, this.count(id) - 1);
      if (count === 0 && isMounted()) await unmount();
      this.write(id, count);
      return count;
    });
  }

  /** The current count (0 when there is none, or when it was written before the last reboot). */
  count(id: string): number {
    assertValidId(id);
    let text: string;
    try {
      text = readFileSync(this.fileOf(id), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw e;
    }
    let ref: RefFile;
    try {
      ref = JSON.parse(text) as RefFile;
    } catch {
      throw new UnionctlError('CORRUPT', `mount reference file ${this.fileOf(id)} is not valid JSON`, {
        hint: 'make sure the layer is not mounted, then delete the file',
      });
    }
    if (ref.boot !== bootId() || !Number.isInteger(ref.count) || ref.count < 0) return 0;
    return ref.count;
  }

  /** Ids whose count is above 0. */
  ids(): string[] {
    let names: string[];
    try {
      names = readdirSync(this.stateDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    return names.filter((name) => !name.startsWith('.') && this.count(name) > 0).sort();
  }

  /** Drops the count without unmounting (the layer was removed, or everything was unmounted). */
  forget(id: string): void {
    assertValidId(id);
    rmSync(this.fileOf(id), { force: true });
  }

  private fileOf(id: string): string {
    return join(this.stateDir, id);
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.stateDirMade) {
      mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
      this.stateDirMade = true;
    }
    return withFileLock(join(this.stateDir, LOCK_FILE), fn);
  }

  private write(id: string, count: number): void {
    const file = this.fileOf(id);
    if (count === 0) {
      rmSync(file, { force: true });
      return;
    }
    // Its temp name starts with "." so ids() never mistakes one for a layer.
    writeFileAtomic(file, JSON.stringify({ count, boot: bootId() } satisfies RefFile), { mode: 0o644 });
  }
}
