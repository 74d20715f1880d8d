/**
 * Synthetic layer trees for the benchmarks, generated deterministically from a seed: the same seed
 * writes the same names, sizes, contents, modes, mtimes and xattrs, so every run (and every
 * machine) packs byte-identical tars.
 *
 * The distro shape: a few hundred directories up to six levels deep, thousands of small files
 * (log-normal sizes around a few KiB), a tail of multi-MiB files, symlinks, hardlinks and a few
 * xattrs. Trees are written with plain node:fs and packed with GNU tar, so the benchmark's input
 * does not depend on unionctl's own tar writer.
 */
import { execFileSync } from 'node:child_process';
import { linkSync, mkdirSync, symlinkSync, writeFileSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { lsetxattr } from '../src/sys/index.js';

export interface SyntheticShape {
  smallFiles: number;
  largeFiles: number;
  /** Mean size of the large files in bytes. */
  largeMean: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  /** Files that get a user.* xattr (0 when absent). */
  xattrs?: number;
  /** Median size of the small files (default ~3 KiB: log-normal, e^8). */
  smallMedian?: number;
  /** Spread of the small file sizes (sigma of the log-normal; 0 = every file exactly smallMedian). */
  smallSpread?: number;
  /**
   * Text-like contents (seeded words, about 3:1 under gzip or zstd) instead of incompressible
   * bytes: what a compressed layer's decoder is measured on (stored blocks would only be copied).
   */
  compressible?: boolean;
}

/** ≥ 200 MB, ≥ 7,000 files: the issue's `distro` workload. */
export const DISTRO_LIKE: SyntheticShape = {
  smallFiles: 7600,
  largeFiles: 48,
  largeMean: 3.2 * 1024 * 1024,
  dirs: 700,
  symlinks: 600,
  hardlinks: 60,
  xattrs: 20,
};

/** Fixed mtime of every generated entry, like an image build: keeps packed tars identical. */
export const EPOCH = new Date('2025-01-01T00:00:00Z');

/** Deterministic PRNG (mulberry32): numbers in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `size` pseudo-random bytes from `seed` (incompressible, like binaries; the same bytes every time). */
export function seededBytes(size: number, seed: number): Buffer {
  const buf = Buffer.allocUnsafe(size + 3 - ((size + 3) % 4));
  const rand = prng(seed);
  for (let i = 0; i < buf.length; i += 4) buf.writeUInt32LE(Math.floor(rand() * 4294967296), i);
  return buf.subarray(0, size);
}

/**
 * `size` bytes of seeded text: lines of words drawn from a vocabulary of 4,096 seeded words of
 * 2-11 letters, a few of them far more often than the rest (as in source, man pages or logs).
 */
export function seededText(size: number, seed: number): Buffer {
  const rand = prng(seed);
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  const vocabulary = Array.from({ length: 4096 }, () =>
    Array.from({ length: 2 + Math.floor(rand() * 10) }, () => letters[Math.floor(rand() * letters.length)]).join(''),
  );
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  while (at < size) {
    const word = vocabulary[Math.floor(vocabulary.length * rand() ** 3)]!; // skewed towards the first words
    at += out.write(rand() < 0.08 ? `${word}\n` : `${word} `, at, 'latin1');
  }
  return out;
}

/** Log-normal around `median` with spread `sigma`, capped at 256 KiB: typical of /usr/share and /usr/lib. */
function smallFileSize(rand: () => number, median: number, sigma: number): number {
  const normal = Math.sqrt(-2 * Math.log(rand() || 1e-9)) * Math.cos(2 * Math.PI * rand());
  return Math.min(256 * 1024, Math.max(0, Math.round(median * Math.exp(sigma * normal))));
}

/** What writeSyntheticTree wrote, for workloads that build further layers on top. */
export interface SyntheticTree {
  /** Bytes of file content written (hardlinks not counted twice). */
  bytes: number;
  /** Directories, relative to the tree root ("usr/lib/d1x"). */
  dirs: string[];
  /** Regular files, relative to the tree root. */
  files: string[];
}

/** Writes the tree under `dir` (which must exist). */
export function writeSyntheticTree(dir: string, shape: SyntheticShape, seed = 42): SyntheticTree {
  const rand = prng(seed);
  const poolBytes = 16 * 1024 * 1024;
  // content: slices of one pool
  const pool = shape.compressible ? seededText(poolBytes, seed ^ 0x5eed) : seededBytes(poolBytes, seed ^ 0x5eed);
  const slice = (size: number) => {
    if (size > pool.length) return Buffer.concat(Array(Math.ceil(size / pool.length)).fill(pool)).subarray(0, size);
    const start = Math.floor(rand() * (pool.length - size));
    return pool.subarray(start, start + size);
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
  const median = shape.smallMedian ?? Math.exp(8);
  const sigma = shape.smallSpread ?? 1.6;
  for (let i = 0; i < shape.smallFiles; i++) addFile(smallFileSize(rand, median, sigma));
  for (let i = 0; i < shape.largeFiles; i++) addFile(Math.round(shape.largeMean * (0.25 + 1.5 * rand())));
  for (let i = 0; i < shape.symlinks; i++) {
    const target = files[Math.floor(rand() * files.length)];
    symlinkSync(`/${target}`, join(dir, `${dirs[Math.floor(rand() * dirs.length)]}/l${i.toString(36)}`));
  }
  for (let i = 0; i < shape.hardlinks; i++) {
    const target = files[Math.floor(rand() * files.length)];
    linkSync(join(dir, target), join(dir, `${target}.h${i}`));
  }
  for (let i = 0; i < (shape.xattrs ?? 0) && files.length > 0; i++) {
    const f = files[Math.floor(rand() * files.length)];
    lsetxattr(join(dir, f), 'user.bench.origin', Buffer.from(`synthetic-${seed}-${i}`));
  }
  for (const f of files) utimesSync(join(dir, f), EPOCH, EPOCH);
  return { bytes, dirs, files };
}

/**
 * Packs `dir` into an uncompressed tar with GNU tar: pax format, sorted names, numeric owners, xattrs,
 * every mtime (directories' too) set to EPOCH — the same tar for the same tree, whenever it was written.
 * `names` (default ".": entries named "./usr/…", like most layer tars) are what is packed from `dir`.
 */
export function packTree(dir: string, tarPath: string, names: string[] = ['.']): void {
  execFileSync('tar', [
    '--sort=name',
    '--numeric-owner',
    '--owner=0',
    '--group=0',
    `--mtime=${EPOCH.toISOString()}`,
    '--xattrs',
    '--xattrs-include=user.*',
    // xattrs need the pax format, whose headers would carry each file's atime and ctime: drop them.
    '--format=posix',
    '--pax-option=delete=atime,delete=ctime',
    '-C',
    dir,
    '-cf',
    tarPath,
    '--',
    ...names,
  ]);
}
