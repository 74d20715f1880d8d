/**
 * The benchmark workloads, every one generated deterministically (seeded) as layer tars on the
 * input tmpfs:
 *
 *   distro      one rootfs-like layer (full: ≥ 200 MB, ≥ 7,000 files, symlinks, hardlinks, xattrs)
 *   smallfiles  10,000 files of ~1 KB
 *   deep        a chain of one-file layers, mounted at depths 1, 16, 64, 128, 256, 500
 *   whiteouts   a base layer and an upper layer deleting 1,000 of its files and replacing 50 dirs
 *   bigfile     a layer with a 4 KiB and a 1 GiB file, for copy-up
 *   image       a docker-save archive of several of the above layers (see image-archive.ts)
 *   compression a distro-like layer of text-like (compressible) files, imported as a plain tar,
 *               .tar.gz and .tar.zst (the zstd one by the zstd program and by fzstd)
 *   rootfs      a real Debian rootfs (debootstrap minbase), built once and cached (rootfs.ts);
 *               only when asked (--workloads rootfs)
 *
 * --quick shrinks every workload (same shapes, fewer and smaller files).
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DISTRO_LIKE, packTree, prng, seededBytes, writeSyntheticTree, type SyntheticShape } from './synthetic-layer.js';

export const WORKLOADS = ['distro', 'smallfiles', 'deep', 'whiteouts', 'bigfile', 'image', 'compression', 'rootfs'] as const;
export type WorkloadName = (typeof WORKLOADS)[number];
/** What runs when no --workloads is given: rootfs needs debootstrap and the network the first time (see rootfs.ts), so it runs when asked. */
export const DEFAULT_WORKLOADS: WorkloadName[] = WORKLOADS.filter((w) => w !== 'rootfs');

export interface WorkloadSizes {
  distro: SyntheticShape;
  smallfiles: SyntheticShape;
  depths: number[];
  whiteouts: { base: SyntheticShape; deletions: number; replacedDirs: number; filesPerReplacedDir: number };
  bigFileBytes: number;
  /** The layer the compression workload compresses (compressible contents). */
  compression: SyntheticShape;
}

const SMALLFILES: SyntheticShape = {
  smallFiles: 10_000,
  largeFiles: 0,
  largeMean: 0,
  dirs: 200,
  symlinks: 0,
  hardlinks: 0,
  smallMedian: 1024,
  smallSpread: 0.3,
};

export const FULL_SIZES: WorkloadSizes = {
  distro: DISTRO_LIKE,
  smallfiles: SMALLFILES,
  depths: [1, 16, 64, 128, 256, 500],
  whiteouts: {
    base: { smallFiles: 4000, largeFiles: 0, largeMean: 0, dirs: 400, symlinks: 100, hardlinks: 0, smallMedian: 2048, smallSpread: 1 },
    deletions: 1000,
    replacedDirs: 50,
    filesPerReplacedDir: 4,
  },
  bigFileBytes: 1024 ** 3,
  // ~700 MB of tar, as the layer in issue 14 point 17 (zstd 13.85 s through fzstd, gzip 5.91 s, plain 1.59 s).
  compression: { ...DISTRO_LIKE, largeFiles: 160, compressible: true },
};

export const QUICK_SIZES: WorkloadSizes = {
  distro: { smallFiles: 1500, largeFiles: 6, largeMean: 1024 * 1024, dirs: 150, symlinks: 100, hardlinks: 10, xattrs: 5 },
  smallfiles: { ...SMALLFILES, smallFiles: 1000, dirs: 40 },
  depths: [1, 16, 128],
  whiteouts: {
    base: { smallFiles: 800, largeFiles: 0, largeMean: 0, dirs: 80, symlinks: 20, hardlinks: 0, smallMedian: 2048, smallSpread: 1 },
    deletions: 200,
    replacedDirs: 10,
    filesPerReplacedDir: 4,
  },
  bigFileBytes: 32 * 1024 * 1024,
  compression: { smallFiles: 1500, largeFiles: 6, largeMean: 1024 * 1024, dirs: 150, symlinks: 100, hardlinks: 10, compressible: true },
};

/** A layer tar on the input tmpfs and what it holds. */
export interface LayerTar {
  path: string;
  /** Size of the tar file. */
  bytes: number;
  /** Entries in the tar (files, dirs, links, whiteouts). */
  entries: number;
}

export function countEntries(tarPath: string): number {
  return execFileSync('tar', ['-tf', tarPath], { maxBuffer: 1 << 28 })
    .toString()
    .split('\n')
    .filter(Boolean).length;
}

/** The tar at `path`, sized and counted. */
export function describeTar(path: string): LayerTar {
  return { path, bytes: statSync(path).size, entries: countEntries(path) };
}

/** Writes a tree with `write`, packs it to `tarPath` and removes the tree again. */
function packed(tarPath: string, write: (dir: string) => void): LayerTar {
  const tree = `${tarPath}.tree`;
  mkdirSync(tree, { recursive: true });
  try {
    write(tree);
    packTree(tree, tarPath);
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
  return describeTar(tarPath);
}

export function buildSyntheticLayer(dir: string, name: string, shape: SyntheticShape, seed: number): LayerTar {
  return packed(join(dir, `${name}.tar`), (tree) => writeSyntheticTree(tree, shape, seed));
}

/**
 * The deep chain: layer i (1-based) holds one file, `layerNNNN/file`, so the file of layer 1 is
 * looked up through every layer above it (what "first read through the top of a deep chain" reads).
 */
export function buildDeepChain(dir: string, depth: number): LayerTar[] {
  const out: LayerTar[] = [];
  for (let i = 1; i <= depth; i++) {
    const tarPath = join(dir, `deep-${String(i).padStart(4, '0')}.tar`);
    out.push(
      packed(tarPath, (tree) => {
        mkdirSync(join(tree, deepDirName(i)));
        writeFileSync(join(tree, deepFileOf(i)), `layer ${i}\n`.repeat(8));
      }),
    );
  }
  return out;
}

export const deepDirName = (i: number) => `layer${String(i).padStart(4, '0')}`;
/** The one file of deep-chain layer i, relative to the layer root. */
export const deepFileOf = (i: number) => `${deepDirName(i)}/file`;

/**
 * The whiteouts workload: a base layer, and an upper layer that deletes `deletions` of the base's
 * files (`.wh.<name>`) and replaces `replacedDirs` of its directories (`.wh..wh..opq` plus new
 * files), written by hand as OCI layer whiteouts.
 */
export function buildWhiteoutLayers(dir: string, sizes: WorkloadSizes['whiteouts'], seed: number): { base: LayerTar; upper: LayerTar } {
  let baseTree: { dirs: string[]; files: string[] } = { dirs: [], files: [] };
  const base = packed(join(dir, 'whiteouts-base.tar'), (tree) => {
    baseTree = writeSyntheticTree(tree, sizes.base, seed);
  });
  const rand = prng(seed + 1);
  // Replaced dirs: leaf-ish dirs of the base (not the fixed top-level ones); deletions: files outside them.
  const candidates = baseTree.dirs.filter((d) => d.split('/').length >= 3);
  const replaced = pickDistinct(candidates, Math.min(sizes.replacedDirs, candidates.length), rand);
  const inReplaced = (f: string) => replaced.some((d) => f.startsWith(`${d}/`));
  const deletable = baseTree.files.filter((f) => !inReplaced(f));
  const deleted = pickDistinct(deletable, Math.min(sizes.deletions, deletable.length), rand);
  const content = seededBytes(4096, seed + 2);
  const upper = packed(join(dir, 'whiteouts-upper.tar'), (tree) => {
    for (const f of deleted) {
      mkdirSync(join(tree, dirname(f)), { recursive: true });
      writeFileSync(join(tree, dirname(f), `.wh.${f.slice(f.lastIndexOf('/') + 1)}`), '');
    }
    for (const d of replaced) {
      mkdirSync(join(tree, d), { recursive: true });
      writeFileSync(join(tree, d, '.wh..wh..opq'), '');
      for (let i = 0; i < sizes.filesPerReplacedDir; i++) writeFileSync(join(tree, d, `new${i}.dat`), content.subarray(0, 512 + 512 * i));
    }
  });
  return { base, upper };
}

/** `count` distinct items of `xs`, chosen with `rand` (a partial Fisher–Yates shuffle). */
export function pickDistinct<T>(xs: T[], count: number, rand: () => number): T[] {
  const a = [...xs];
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(rand() * (a.length - i));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, count);
}

/** The copy-up layer: /small.bin (4 KiB) and /big.bin (`bigBytes`), seeded content. */
export const COPY_UP_FILES = { small: 'small.bin', big: 'big.bin' } as const;

export function buildBigFileLayer(dir: string, bigBytes: number, seed: number): LayerTar {
  return packed(join(dir, 'bigfile.tar'), (tree) => {
    writeFileSync(join(tree, COPY_UP_FILES.small), seededBytes(4096, seed));
    // Written in 16 MiB chunks of one seeded block: a 1 GiB buffer is not needed to make a 1 GiB file.
    const chunk = seededBytes(16 * 1024 * 1024, seed + 1);
    const fd = openSync(join(tree, COPY_UP_FILES.big), 'w');
    try {
      for (let done = 0; done < bigBytes; done += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, bigBytes - done));
    } finally {
      closeSync(fd);
    }
  });
}
