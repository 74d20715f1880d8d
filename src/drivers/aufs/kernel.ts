/**
 * Mounting with the kernel's aufs (out-of-tree module; Ubuntu kernels had it, mainline never did).
 *
 * Docker's rules, kept so the mounts look the same:
 * - mount("none", target, "aufs", 0, "br:<rw>=rw:<ro1>=ro+wh:…,dio,xino=/dev/shm/aufs.xino[,dirperm1]");
 * - mount(2) copies at most one page of data, so the branch list is cut *between* branches where
 *   the next one would pass the page budget (page size − label − 54 bytes of room for the options,
 *   9 more with dirperm1); the rest is added by remounts, MS_REMOUNT with
 *   "append:<ro>=ro+wh,append:<ro>=ro+wh,…", each again at most the budget;
 * - the kernel's branch state is under /sys/fs/aufs/si_<si>/br<N> ("<path>=<perm>"), where <si>
 *   is the `si=` option mountinfo shows for the mount.
 * The kernel module is built with at most 127 branches by default (CONFIG_AUFS_BRANCH_MAX_127).
 *
 * Everything here takes the kernel as a parameter (MountCall, the sysfs root), so the tests can
 * check the page arithmetic and the sysfs parsing on a kernel without aufs.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UnionctlError } from '../../errors.js';
import { MS } from '../../sys/index.js';

/** Most branches of one aufs mount (the module's default CONFIG_AUFS_BRANCH_MAX_127). */
export const KERNEL_AUFS_MAX_BRANCHES = 127;

/** Room Docker keeps in the first page for ",dio,xino=/dev/shm/aufs.xino" and friends. */
const OPTIONS_ROOM = 54;
const DIRPERM1 = ',dirperm1';

export interface AufsMountSettings {
  pageSize: number;
  /** SELinux label, added as context="…" to every mount call (Docker's label.FormatMountLabel). */
  mountLabel?: string;
  /** The module understands dirperm1 (Docker probes it with a test mount). */
  dirperm1: boolean;
}

/** The mount(2) data of the first mount and of each append remount, in order. */
export interface AufsMountPlan {
  data: string;
  appends: string[];
}

function withLabel(data: string, label: string | undefined): string {
  return label ? `${data},context=${JSON.stringify(label)}` : data;
}

/**
 * Splits the branches over the first mount and as many append remounts as needed, never cutting
 * a branch path. `ro` are the lower branches, nearest first.
 */
export function planAufsMount(rw: string, ro: string[], settings: AufsMountSettings): AufsMountPlan {
  const budget =
    settings.pageSize - Buffer.byteLength(settings.mountLabel ?? '') - OPTIONS_ROOM - (settings.dirperm1 ? DIRPERM1.length : 0);
  const fits = (used: number, piece: string) => used + Buffer.byteLength(piece) <= budget;
  const tooLong = (piece: string) =>
    new UnionctlError(
      'UNSUPPORTED',
      `aufs branch ${JSON.stringify(piece)} alone is longer than the ${budget} bytes one mount call may carry`,
      {
        hint: 'put the store under a shorter path (--root)',
      },
    );

  let first = `br:${rw}=rw`;
  if (!fits(0, first)) throw tooLong(rw);
  let index = 0;
  for (; index < ro.length; index++) {
    const piece = `:${ro[index]}=ro+wh`;
    if (!fits(Buffer.byteLength(first), piece)) break;
    first += piece;
  }
  const options = `dio,xino=/dev/shm/aufs.xino${settings.dirperm1 ? DIRPERM1 : ''}`;
  const plan: AufsMountPlan = { data: withLabel(`${first},${options}`, settings.mountLabel), appends: [] };

  while (index < ro.length) {
    let data = '';
    for (; index < ro.length; index++) {
      const piece = `append:${ro[index]}=ro+wh,`;
      if (!fits(Buffer.byteLength(data), piece)) break;
      data += piece;
    }
    if (data === '') throw tooLong(ro[index]!); // the loop stopped before adding its first branch
    plan.appends.push(withLabel(data, settings.mountLabel));
  }
  return plan;
}

/** mount(2) as the plan needs it; the real one is src/sys's mount, tests pass a fake kernel. */
export type MountCall = (source: string, target: string, fstype: string, flags: number, data: string) => void;
export type UnmountCall = (target: string) => void;

/**
 * Mounts the union at `target`: one mount, then one MS_REMOUNT per append. If a remount fails,
 * the half-built mount is taken down again and the error names the step.
 */
export function mountKernelAufs(target: string, plan: AufsMountPlan, mountCall: MountCall, unmountCall: UnmountCall): void {
  try {
    mountCall('none', target, 'aufs', 0, plan.data);
  } catch (e) {
    throw new UnionctlError('SYSCALL', `cannot mount aufs at ${target}: ${(e as Error).message}`, {
      cause: e,
      hint: "dmesg shows the aufs module's reason",
    });
  }
  for (const [i, data] of plan.appends.entries()) {
    try {
      mountCall('none', target, 'aufs', MS.REMOUNT, data);
    } catch (e) {
      try {
        unmountCall(target);
      } catch {
        /* report the remount error, which is the cause */
      }
      throw new UnionctlError(
        'SYSCALL',
        `cannot add branches to the aufs mount at ${target} (append remount ${i + 1} of ${plan.appends.length}): ${(e as Error).message}`,
        {
          cause: e,
          hint: "dmesg shows the aufs module's reason; the module may allow fewer branches than this chain has",
        },
      );
    }
  }
}

/** One branch as /sys/fs/aufs/si_<si>/br<N> shows it. */
export interface SysfsBranch {
  index: number;
  path: string;
  /** "rw", "ro", "ro+wh", "rr", … as the module prints it. */
  perm: string;
}

/** The `si=<hex>` super option aufs shows in mountinfo. */
export function aufsSiOf(superOptions: string[]): string | undefined {
  const opt = superOptions.find((o) => o.startsWith('si='));
  return opt?.slice(3);
}

/**
 * The branches of the aufs mount with the given si, top first, read from sysfs (`sysRoot` is
 * /sys/fs/aufs on a real kernel). Each br<N> file holds "<path>=<perm>" (a path may itself hold
 * '=': the perm is after the last one).
 */
export function readSysfsBranches(si: string, sysRoot = '/sys/fs/aufs'): SysfsBranch[] {
  const dir = join(sysRoot, `si_${si}`);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw new UnionctlError('NOT_FOUND', `aufs branch state ${dir} cannot be read (${(e as Error).message})`, {
      hint: 'the mount went away, or sysfs is not mounted at /sys',
    });
  }
  const branches: SysfsBranch[] = [];
  for (const name of names) {
    const m = /^br(\d+)$/.exec(name);
    if (m === null) continue; // brid<N>, xi_path, …
    const line = readFileSync(join(dir, name), 'utf8').replace(/\n$/, '');
    const eq = line.lastIndexOf('=');
    if (eq <= 0) throw new UnionctlError('CORRUPT', `${join(dir, name)} holds ${JSON.stringify(line)}, not <path>=<perm>`);
    branches.push({ index: Number(m[1]), path: line.slice(0, eq), perm: line.slice(eq + 1) });
  }
  return branches.sort((a, b) => a.index - b.index);
}

/**
 * Docker's useDirperm: the module understands dirperm1 when a test mount with it succeeds. Only
 * meaningful where the kernel has aufs; `mountCall`/`unmountCall` as for mountKernelAufs.
 */
export function probeDirperm1(mountCall: MountCall, unmountCall: UnmountCall): boolean {
  const base = mkdtempSync(join(tmpdir(), 'unionctl-aufs-base-'));
  const union = mkdtempSync(join(tmpdir(), 'unionctl-aufs-union-'));
  try {
    mountCall('none', union, 'aufs', 0, `br:${base},dirperm1,xino=/dev/shm/aufs.xino`);
  } catch {
    rmSync(base, { recursive: true, force: true });
    rmSync(union, { recursive: true, force: true });
    return false;
  }
  try {
    unmountCall(union);
  } finally {
    rmSync(base, { recursive: true, force: true });
    rmSync(union, { recursive: true, force: true });
  }
  return true;
}

/**
 * Before unmounting, Docker runs `auplink <mnt> flush` (from aufs-tools) so that hardlinks made in
 * the rw branch, which aufs keeps as pseudo-links under `.wh..wh.plnk`, become real links in the
 * branch; otherwise a diff of the layer would miss them. Done when auplink is installed; a failure
 * is not fatal (Docker only logs it).
 */
export function flushPseudoLinks(target: string, onWarning: (message: string) => void = (m) => process.emitWarning(m)): void {
  const auplink = ['/sbin/auplink', '/usr/sbin/auplink', '/usr/bin/auplink'].find((p) => existsSync(p));
  if (auplink === undefined) return;
  try {
    execFileSync(auplink, [target, 'flush'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    onWarning(`unionctl: auplink ${target} flush failed: ${(e as Error).message}`);
  }
}
