/**
 * What the adopt readers (docker.ts, podman.ts) share: the shape of a foreign store as they read
 * it, reading its files without changing them, and the check that its owner is not running.
 *
 * Reading never writes: files are opened read-only with O_NOATIME (root), never created, never
 * locked (a lock taken, even a shared one, would be something the owner could trip over).
 */
import { closeSync, constants as fsConstants, openSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { UnionctlError } from '../../errors.js';
import { mountsUnder } from '../../sys/index.js';
import type { ImageToLoad } from '../manifest.js';

/** The drivers whose stores unionctl can adopt: the layer's files are plain trees of the tar's paths. */
export type ForeignDriver = 'overlay2' | 'overlay' | 'vfs';

/** One layer of a foreign store, as the rebuild needs it. */
export interface ForeignLayer {
  /** The foreign tool's own id of the layer (Docker's cache-id, c/storage's layer id), for messages. */
  foreignId: string;
  /** The layer's tar-split (vbatts JSON lines, gzip'd): raw bytes of the tar, and which file each content is. */
  tarSplit: string;
  /** The directory where the layer's files are at the tar's paths (overlay2's diff/, overlay's root/, vfs's dir). */
  files: string;
}

/** A foreign store, read: its images (as a load takes them) and where each layer's tar comes from. */
export interface ForeignStore {
  kind: 'docker' | 'podman';
  path: string;
  /** The driver as the foreign tool names it ("overlay" for c/storage's overlay, which is overlay2's layout). */
  driver: string;
  /** "dockerd store /var/lib/docker (overlay2)", at the start of messages. */
  description: string;
  images: ImageToLoad[];
  /** By LayerToLoad.member. */
  layers: Map<string, ForeignLayer>;
}

/** `path` read without changing it; undefined when there is no such file. */
export function readForeignFile(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | (process.getuid?.() === 0 ? fsConstants.O_NOATIME : 0));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** The names in a directory of the foreign store; none when it is not there. */
export function foreignDir(path: string): string[] {
  try {
    return readdirSync(path).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** A damaged foreign store: CORRUPT naming the file, with a hint that is about the foreign tool, not unionctl check. */
export function foreignCorrupt(store: string, what: string): UnionctlError {
  return new UnionctlError('CORRUPT', `${store}: ${what}`, {
    hint: 'the store is damaged or not of a version unionctl reads (dockerd 20.10–23, containers/storage 1.4x); nothing was adopted',
  });
}

/** A JSON file of the foreign store, parsed; CORRUPT when it is missing or not JSON. */
export function readForeignJson(store: string, path: string): unknown {
  const text = readForeignFile(path);
  if (text === undefined) throw foreignCorrupt(store, `${path} is missing`);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw foreignCorrupt(store, `${path} is not valid JSON`);
  }
}

/**
 * Refuses (IN_USE) a foreign store its owner may be using: anything mounted at or below `root`
 * (dockerd bind-mounts its data root onto itself while it runs; a running container's rootfs), or a
 * lock held on one of `lockFiles` (dockerd's bolt databases are flock'ed for its lifetime;
 * c/storage locks its *.lock files while podman works). Locks are read from /proc/locks, so
 * nothing is taken. Adopting a store while its owner changes it could copy a half-written layer.
 */
export function assertOwnerStopped(root: string, owner: string, lockFiles: readonly string[], hint: string): void {
  const mounts = mountsUnder(root);
  if (mounts.length > 0) {
    throw new UnionctlError(
      'IN_USE',
      `${root} is in use: ${mounts.length === 1 ? 'a mount is' : `${mounts.length} mounts are`} at or below it (${mounts[0]!.mountPoint}); ${owner} or one of its containers is still running`,
      { hint },
    );
  }
  const held = heldLocks();
  for (const file of lockFiles) {
    const st = statSync(file, { throwIfNoEntry: false });
    if (st === undefined) continue;
    const pid = held.get(`${major(st.dev)}:${minor(st.dev)}:${st.ino}`);
    if (pid !== undefined) {
      throw new UnionctlError('IN_USE', `${root} is in use: process ${pid} holds a lock on ${file} (${owner} is running)`, { hint });
    }
  }
}

/** /proc/locks as "major:minor:inode" → the pid holding a lock on it (-1 for an open-file-description lock). */
function heldLocks(): Map<string, number> {
  const held = new Map<string, number>();
  for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 1443 00:29:96 0 EOF" (a "->" marks a waiter: skipped)
    const m = /^\d+:\s+\S+\s+\S+\s+\S+\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
    if (m === null) continue;
    held.set(`${parseInt(m[2]!, 16)}:${parseInt(m[3]!, 16)}:${m[4]}`, Number(m[1]));
  }
  return held;
}

/** The device numbers as glibc's gnu_dev_major/minor split st_dev. */
function major(dev: number): number {
  return ((dev >>> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
}
function minor(dev: number): number {
  return (dev & 0xff) | ((dev >>> 12) & ~0xff);
}

/** The directory of a layer's files under a foreign driver home, for the drivers adopt reads. */
export function layerFilesDir(home: string, driver: ForeignDriver, id: string): string {
  if (driver === 'overlay2') return join(home, id, 'diff');
  if (driver === 'overlay') return join(home, id, 'root');
  return join(home, 'dir', id);
}
