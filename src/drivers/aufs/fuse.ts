/**
 * The aufs layout mounted with fuse-overlayfs, for kernels without aufs (every mainline kernel).
 *
 * fuse-overlayfs reads aufs whiteouts in its lower dirs (`.wh.<name>` hides <name>,
 * `.wh..wh..opq` makes a dir opaque) and hides them from the view. With the environment variable
 * FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT=1 it also *writes* deletions as `.wh.<name>` files (by
 * default it makes char 0/0 devices, which aufs would not understand); a dir that is removed and
 * made again gets a `.wh..wh..opq` file plus a trusted.overlay.opaque xattr (normalised away
 * later, see normalise.ts). Measured with fuse-overlayfs 1.10 as root.
 *
 * How a union is mounted: `fuse-overlayfs -o lowerdir=<id>:<id>:… -o upperdir=…,workdir=… <mnt>`,
 * run from <home>/diff so the lowers are the bare layer ids (short: see the limits below). The
 * upper is the layer's diff dir; the workdir (which the aufs layout has no place for) lives in
 * <root>/driver-state/aufs/work/<id>, on the same filesystem. Without upperdir the mount is read-only.
 * fuse-overlayfs daemonizes once the mount is in place, so the command returning means mounted.
 *
 * Limits, found by experiment (fuse-overlayfs 1.10, kernel 6.18): fuse-overlayfs has no layer
 * cap of its own. It keeps one open directory per lower layer (with `ulimit -n 1024` it fails at
 * about 1020 layers: "cannot read lower dirs: Too many open files"), and the lowerdir list is one
 * argv string, which the kernel caps at MAX_ARG_STRLEN = 32 pages = 128 KiB (1500 layers of
 * 95-byte absolute paths: E2BIG). With bare ids from diff/ 10,000 layers mounted and read fine.
 * unionctl therefore allows as many layers as fit 128 KiB with the longest id (128 bytes) and
 * the file descriptor limit, whichever is lower: see fuseMaxBranches.
 *
 * Unmounting: umount2 (we are root), then wait until the fuse-overlayfs process serving the mount
 * has exited, so no FUSE process outlives its mount.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import { UnionctlError } from '../../errors.js';
import type { MountSpec } from '../../graph/driver.js';
import { findMount, MNT_DETACH, umount2, UMOUNT_NOFOLLOW } from '../../sys/index.js';

const run = promisify(execFile);

export const FUSE_BINARY = 'fuse-overlayfs';
/** The fsType mountinfo shows for a fuse-overlayfs mount. */
export const FUSE_FSTYPE = 'fuse.fuse-overlayfs';
/** Makes fuse-overlayfs write `.wh.` files instead of char 0/0 devices. */
export const AUFS_WHITEOUT_ENV = { FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT: '1' } as const;
/** The longest layer id unionctl accepts (assertValidId). */
const MAX_ID_BYTES = 128;
/** File descriptors fuse-overlayfs needs besides one per layer (FUSE device, upper, work, stdio). */
const FD_RESERVE = 16;
const LOWERDIR_KEY = 'lowerdir=';

/**
 * containerd (1.6: mount/mount_linux.go) mounts a mount of type `fuse3.<subtype>` by running this
 * helper (Debian package fuse3) as `mount.fuse3 <source> <target> -o <option>… -t <subtype>`; it
 * runs `<subtype> <source> <target> -o …`. containerd unmounts such a mount with umount2 itself.
 */
export const FUSE_MOUNT_HELPER = 'mount.fuse3';
/** The type of the mounts handed to a runtime: fuse-overlayfs through the mount helper. */
export const FUSE_HELPER_MOUNT_TYPE = `fuse3.${FUSE_BINARY}`;

/** Where a program is in PATH (and the sbin dirs, where mount helpers live), or undefined. */
export function findProgram(name: string): string | undefined {
  const dirs = (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':');
  for (const dir of [...dirs, '/usr/sbin', '/sbin']) {
    const path = `${dir}/${name}`;
    if (dir !== '' && existsSync(path)) return path;
  }
  return undefined;
}

/** Where fuse-overlayfs is, or undefined. */
export function findFuseOverlayfs(): string | undefined {
  return findProgram(FUSE_BINARY);
}

/** Why fuse-overlayfs cannot serve the aufs layout here, or undefined. */
export function fuseUnsupportedReason(): string | undefined {
  if (findFuseOverlayfs() === undefined) return 'fuse-overlayfs is not installed (Debian package fuse-overlayfs)';
  if (!existsSync('/dev/fuse')) return '/dev/fuse is missing (modprobe fuse)';
  return undefined;
}

/** RLIMIT_NOFILE (soft) of this process, which fuse-overlayfs inherits; Infinity when unlimited. */
export function openFileLimit(limitsText = readFileSync('/proc/self/limits', 'utf8')): number {
  const m = /^Max open files\s+(\S+)/m.exec(limitsText);
  if (m === null || m[1] === 'unlimited') return Infinity;
  return Number(m[1]);
}

/**
 * Most branches (lowers) one fuse-overlayfs mount can take here: the lowerdir argument with the
 * longest possible ids must fit MAX_ARG_STRLEN (32 pages, NUL included), and every layer needs a
 * file descriptor.
 */
export function fuseMaxBranches(pageSize: number, fdLimit: number): number {
  const maxArg = 32 * pageSize;
  const byArgument = Math.floor((maxArg - 1 - LOWERDIR_KEY.length + 1) / (MAX_ID_BYTES + 1));
  return Math.max(1, Math.min(byArgument, fdLimit - FD_RESERVE));
}

export interface FuseUnion {
  /** Lower layer ids, top first, as names inside <home>/diff. */
  lowers: string[];
  /** Absolute upper and work dirs; both or neither (read-only mount). */
  upper?: string;
  work?: string;
  mountLabel?: string;
}

/** The argv after the binary name. Kept separate from the spawn so the tests can check it. */
export function fuseArgs(union: FuseUnion, target: string): string[] {
  if (union.lowers.length === 0) throw new UnionctlError('USAGE', `a fuse-overlayfs union at ${target} needs at least one lower layer`);
  const args = ['-o', `${LOWERDIR_KEY}${union.lowers.join(':')}`];
  const rest: string[] = [];
  if (union.upper !== undefined && union.work !== undefined) rest.push(`upperdir=${union.upper}`, `workdir=${union.work}`);
  if (union.mountLabel) rest.push(`context=${JSON.stringify(union.mountLabel)}`);
  if (rest.length > 0) args.push('-o', rest.join(','));
  for (const path of [union.upper, union.work, target]) {
    // fuse's option parser splits at ',' and overlay's lowerdir at ':'; paths cannot escape them.
    if (path !== undefined && /[,:]/.test(path)) {
      throw new UnionctlError('UNSUPPORTED', `fuse-overlayfs cannot take the path ${JSON.stringify(path)}: it holds ',' or ':'`, {
        hint: 'use a store root without , or : in its path',
      });
    }
  }
  args.push(target);
  return args;
}

/** Why a runtime cannot mount a fuse-overlayfs union through the mount helper here, or undefined. */
export function fuseHelperUnsupportedReason(): string | undefined {
  if (findProgram(FUSE_MOUNT_HELPER) === undefined) return `${FUSE_MOUNT_HELPER} is not installed (Debian package fuse3)`;
  return fuseUnsupportedReason();
}

/**
 * The mount a runtime makes itself for a fuse-overlayfs union (containerd through mount.fuse3):
 * absolute lower dirs (top first), upper and work dirs for a writable one. The same limits as
 * fuseArgs: no ',' or ':' in a path, the lowerdir option one argument of at most 128 KiB.
 */
export function fuseHelperMountSpec(dirs: { lowers: string[]; upper?: string; work?: string }, pageBytes: number): MountSpec {
  if (dirs.lowers.length === 0) throw new UnionctlError('USAGE', 'a fuse-overlayfs union needs at least one lower layer');
  for (const path of [...dirs.lowers, dirs.upper, dirs.work]) {
    if (path !== undefined && /[,:]/.test(path)) {
      throw new UnionctlError('UNSUPPORTED', `fuse-overlayfs cannot take the path ${JSON.stringify(path)}: it holds ',' or ':'`, {
        hint: 'use a store root without , or : in its path',
      });
    }
  }
  const options = [`${LOWERDIR_KEY}${dirs.lowers.join(':')}`];
  if (Buffer.byteLength(options[0]!) >= 32 * pageBytes) {
    throw new UnionctlError(
      'UNSUPPORTED',
      `the lowerdir option of ${dirs.lowers.length} layers is longer than one argument may be (128 KiB)`,
      {
        hint: 'flatten the image into fewer layers',
      },
    );
  }
  if (dirs.upper !== undefined && dirs.work !== undefined) options.push(`upperdir=${dirs.upper}`, `workdir=${dirs.work}`);
  return { type: FUSE_HELPER_MOUNT_TYPE, source: 'overlay', options };
}

/** Mounts the union at `target` (an existing empty dir); `diffRoot` is <home>/diff. */
export async function mountFuse(diffRoot: string, target: string, union: FuseUnion): Promise<void> {
  const binary = findFuseOverlayfs() ?? FUSE_BINARY;
  try {
    await run(binary, fuseArgs(union, target), { cwd: diffRoot, env: { ...process.env, ...AUFS_WHITEOUT_ENV } });
  } catch (e) {
    const err = e as Error & { stderr?: string; code?: string | number };
    const stderr = (err.stderr ?? '')
      .split('\n')
      .filter((l) => l !== '' && !/unknown argument ignored/.test(l))
      .join('; ');
    const why = err.code === 'E2BIG' ? 'the lowerdir list is longer than one argument may be (128 KiB)' : stderr || err.message;
    throw new UnionctlError('SYSCALL', `fuse-overlayfs could not mount ${union.lowers.length} layers at ${target}: ${why}`, {
      cause: e,
      hint: /Too many open files/.test(why)
        ? 'raise the open file limit (ulimit -n) or flatten the image'
        : 'check that /dev/fuse exists and the layer dirs are intact',
    });
  }
  if (findMount(target)?.fsType !== FUSE_FSTYPE) {
    throw new UnionctlError('SYSCALL', `fuse-overlayfs exited without error but nothing is mounted at ${target}`, {
      hint: 'run it by hand with -d to see why',
    });
  }
}

/** The argv of a process, or undefined when it is gone. */
function cmdlineOf(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').slice(0, -1);
  } catch {
    return undefined;
  }
}

export interface FuseProcess {
  pid: number;
  argv: string[];
}

/** The fuse-overlayfs process serving `target` (its last argument is the mount point). */
export function findFuseProcess(target: string): FuseProcess | undefined {
  return fuseProcesses().find((p) => p.argv[p.argv.length - 1] === target);
}

/** Every running fuse-overlayfs process (zombies left out), with its command line. */
export function fuseProcesses(): FuseProcess[] {
  const found: FuseProcess[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const argv = cmdlineOf(pid);
    if (argv === undefined || argv.length < 2 || basename(argv[0]!) !== FUSE_BINARY) continue;
    if (!isZombie(pid)) found.push({ pid, argv });
  }
  return found;
}

/** What a fuse-overlayfs command line says it mounted: lowers (as given) and upper. */
export function unionFromArgv(argv: string[]): { lowers: string[]; upper?: string } {
  const out: { lowers: string[]; upper?: string } = { lowers: [] };
  for (let i = 1; i < argv.length - 1; i++) {
    if (argv[i] !== '-o') continue;
    for (const opt of argv[i + 1]!.split(',')) {
      if (opt.startsWith(LOWERDIR_KEY)) out.lowers.push(...opt.slice(LOWERDIR_KEY.length).split(':'));
      else if (opt.startsWith('upperdir=')) out.upper = opt.slice('upperdir='.length);
    }
  }
  return out;
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true; // gone
  }
}

/** The process has exited (gone, or a zombie waiting for init to reap it). */
function exited(pid: number): boolean {
  return isZombie(pid);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Unmounts a fuse-overlayfs mount and waits for its process to exit. A busy mount is retried for
 * a moment, then detached (it goes away when its last user does). Throws when the process is still
 * there after `timeoutMs`, naming it.
 */
export async function unmountFuse(target: string, timeoutMs = 10_000): Promise<void> {
  const proc = findFuseProcess(target);
  await unmountRetryingBusy(target);
  if (proc === undefined) return;
  const deadline = Date.now() + timeoutMs;
  while (!exited(proc.pid)) {
    if (Date.now() > deadline) {
      throw new UnionctlError(
        'IN_USE',
        `fuse-overlayfs (pid ${proc.pid}) serving ${target} has not exited ${timeoutMs} ms after the unmount`,
        {
          hint: `something still holds files of the union open; kill ${proc.pid} once it is safe`,
        },
      );
    }
    await sleep(10);
  }
}

async function unmountRetryingBusy(target: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      umount2(target, UMOUNT_NOFOLLOW);
      return;
    } catch (e) {
      const errno = (e as { errno?: string }).errno;
      if (errno === 'EINVAL' && findMount(target) === undefined) return; // already gone
      if (errno !== 'EBUSY') throw e;
      if (attempt >= 20) {
        umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW);
        return;
      }
      await sleep(50);
    }
  }
}
