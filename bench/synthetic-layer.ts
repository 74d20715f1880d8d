/**
 * A synthetic layer shaped like a distro rootfs: a few hundred directories up to six levels deep,
 * thousands of small files (log-normal sizes around a few KiB), a tail of multi-MiB files, symlinks
 * and hardlinks. The tree is written with plain node:fs and packed with GNU tar, so the benchmark's
 * input does not depend on unionctl's own tar writer.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, symlinkSync, writeFileSync, utimesSync } from 'node:fs';
import { join } from 'node:path';

export interface SyntheticShape {
  smallFiles: number;
  largeFiles: number;
  /** Mean size of the large files in bytes. */
  largeMean: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
}

export const DISTRO_LIKE: SyntheticShape = {
  smallFiles: 7600,
  largeFiles: 48,
  largeMean: 3.2 * 1024 * 1024,
  dirs: 700,
  symlinks: 600,
  hardlinks: 60,
};

/** Deterministic PRNG (mulberry32) so every run packs the same tree. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Log-normal around a median of ~3 KiB, capped at 256 KiB: typical of /usr/share and /usr/lib. */
function smallFileSize(rand: () => number): number {
  const normal = Math.sqrt(-2 * Math.log(rand() || 1e-9)) * Math.cos(2 * Math.PI * rand());
  return Math.min(256 * 1024, Math.max(0, Math.round(Math.exp(8 + 1.6 * normal))));
}

/** Writes the tree under `dir` and returns the number of bytes of file content written. */
export function writeSyntheticTree(dir: string, shape: SyntheticShape, seed = 42): number {
  const rand = prng(seed);
  const pool = randomBytes(16 * 1024 * 1024); // content: slices of one random pool
  const slice = (size: number) => {
    const start = Math.floor(rand() * (pool.length - Math.min(size, pool.length)));
    return size <= pool.length ? pool.subarray(start, start + size) : Buffer.concat(Array(Math.ceil(size / pool.length)).fill(pool)).subarray(0, size);
  };
  const dirs = ['usr', 'usr/lib', 'usr/share', 'usr/bin', 'etc', 'var/lib'];
  for (const d of dirs) mkdirSync(join(dir, d), { recursive: true });
  while (dirs.length < shape.dirs) {
    const parent = dirs[Math.floor(rand() * dirs.length)];
    if (parent.split('/').length >= 6) continue;
    const d = `${parent}/d${dirs.length.toString(36)}`;
    mkdirSync(join(dir, d));
    dirs.push(d);
  }
  const files: string[] = [];
  let bytes = 0;
  const addFile = (size: number) => {
    const f = `${dirs[Math.floor(rand() * dirs.length)]}/f${files.length.toString(36)}.dat`;
    writeFileSync(join(dir, f), slice(size), { mode: rand() < 0.1 ? 0o755 : 0o644 });
    files.push(f);
    bytes += size;
  };
  for (let i = 0; i < shape.smallFiles; i++) addFile(smallFileSize(rand));
  for (let i = 0; i < shape.largeFiles; i++) addFile(Math.round(shape.largeMean * (0.25 + 1.5 * rand())));
  for (let i = 0; i < shape.symlinks; i++) {
    const target = files[Math.floor(rand() * files.length)];
    symlinkSync(`/${target}`, join(dir, `${dirs[Math.floor(rand() * dirs.length)]}/l${i.toString(36)}`));
  }
  for (let i = 0; i < shape.hardlinks; i++) {
    const target = files[Math.floor(rand() * files.length)];
    linkSync(join(dir, target), join(dir, `${target}.h${i}`));
  }
  // Fixed mtimes, like an image build: keeps the packed tar identical from run to run.
  const epoch = new Date('2025-01-01T00:00:00Z');
  for (const f of files) utimesSync(join(dir, f), epoch, epoch);
  return bytes;
}

/** Packs `dir` into an uncompressed tar with GNU tar (GNU format, sorted, numeric owners: like sample layer 1). */
export function packTree(dir: string, tarPath: string): void {
  execFileSync('tar', ['--sort=name', '--numeric-owner', '-C', dir, '-cf', tarPath, '.']);
}
