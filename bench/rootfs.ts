/**
 * The rootfs workload's input: a real Debian root file system (`debootstrap --variant=minbase
 * bookworm`, ~200 MB, ~7,000 entries: many small files, symlinks, a few hardlinks, devices) as a
 * tar written by GNU tar with numeric owners and xattrs — what a distribution base layer is.
 *
 * The synthetic distro workload alone flattered the import figure (issue 15): its files are
 * fewer and larger. This one is built by the bench itself, once, and cached outside the repo
 * (UNIONCTL_BENCH_CACHE, default /var/cache/unionctl-bench); debootstrap is apt-get installed when
 * missing. The Debian mirror is the one apt uses here (its sources), else deb.debian.org;
 * UNIONCTL_BENCH_MIRROR overrides it.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from './measure.js';
import { aptInstall } from './peers/detect.js';
import { tarCreate } from './peers/gnu-tar.js';
import { describeTar, type LayerTar } from './workloads.js';

export const ROOTFS_SUITE = 'bookworm';
const FALLBACK_MIRROR = 'http://deb.debian.org/debian';

export function rootfsCacheDir(): string {
  return process.env.UNIONCTL_BENCH_CACHE ?? '/var/cache/unionctl-bench';
}

/**
 * The cached rootfs tar, built first when it is not there (debootstrap needs the network and takes
 * a minute), then copied to `inputDir` (the bench's tmpfs: settle() drops the page cache, and the
 * input must not be read from a disk).
 */
export function debianRootfsTar(inputDir: string, say: (line: string) => void): LayerTar {
  const cached = join(rootfsCacheDir(), `debian-${ROOTFS_SUITE}-minbase.tar`);
  if (!existsSync(cached)) buildRootfsTar(cached, say);
  else say(`rootfs: cached ${cached}`);
  const input = join(inputDir, 'rootfs.tar');
  copyFileSync(cached, input);
  return describeTar(input);
}

function buildRootfsTar(dest: string, say: (line: string) => void): void {
  if (spawnSync('debootstrap', ['--version']).error !== undefined) {
    const failure = aptInstall(['debootstrap'], say);
    if (failure !== undefined) throw new Error(`the rootfs workload needs debootstrap: ${failure}`);
  }
  const mirror = process.env.UNIONCTL_BENCH_MIRROR ?? aptDebianMirror() ?? FALLBACK_MIRROR;
  mkdirSync(rootfsCacheDir(), { recursive: true });
  const tree = `${dest}.tree`;
  const partial = `${dest}.partial`;
  rmSync(tree, { recursive: true, force: true });
  say(`rootfs: debootstrap --variant=minbase ${ROOTFS_SUITE} from ${mirror} (once; cached as ${dest})`);
  try {
    sh('debootstrap', ['--variant=minbase', ROOTFS_SUITE, tree, mirror]);
    tarCreate(tree, partial);
    renameSync(partial, dest);
  } finally {
    rmSync(tree, { recursive: true, force: true });
    rmSync(partial, { force: true });
  }
}

/** The Debian mirror apt uses here (see debianMirrorIn), from its source files. */
export function aptDebianMirror(): string | undefined {
  const files = ['/etc/apt/sources.list'];
  try {
    for (const f of readdirSync('/etc/apt/sources.list.d').sort()) files.push(join('/etc/apt/sources.list.d', f));
  } catch {
    // no sources.list.d
  }
  const texts: string[] = [];
  for (const file of files) {
    try {
      texts.push(readFileSync(file, 'utf8'));
    } catch {
      // unreadable or gone: not a source
    }
  }
  return debianMirrorIn(texts);
}

/**
 * The first Debian archive (a URI ending in /debian, so not debian-security) in apt source
 * texts, deb822 (`URIs:`) or one-line (`deb [opts] URI suite`), without a trailing slash.
 */
export function debianMirrorIn(texts: string[]): string | undefined {
  for (const text of texts) {
    const uris = [...text.matchAll(/^URIs:\s*(\S+)/gm), ...text.matchAll(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)/gm)].map((m) => m[1]!);
    const debian = uris.find((u) => /\/debian\/?$/.test(u));
    if (debian !== undefined) return debian.replace(/\/$/, '');
  }
  return undefined;
}
