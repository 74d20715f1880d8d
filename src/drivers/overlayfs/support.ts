/**
 * What the two kernel-overlayfs drivers (overlay, overlay2) need from the kernel and the backing
 * filesystem: overlayfs itself, and a backing filesystem with d_type that is not overlay.
 */
import {
  backingFs,
  existingDirFor,
  inUserNamespace,
  newMountApiSupported,
  overlayLowerdirPlusSupported,
  overlayModuleParams,
  overlaySupported,
  pageSize,
  supportsDType,
} from '../../sys/index.js';
import type { OverlayKernelFacts } from './mount.js';

/** Why overlay and overlay2 cannot keep a store under `home`, or undefined when they can. */
export function overlayUnsupportedReason(home: string): string | undefined {
  if (!overlaySupported()) return 'the kernel has no overlay filesystem (not in /proc/filesystems; try modprobe overlay)';
  const dir = existingDirFor(home);
  const fs = backingFs(dir);
  if (fs === 'overlayfs' || fs === 'overlay') return `${dir} is itself on overlayfs, which cannot be an upper layer of another overlay`;
  if (!supportsDType(dir)) return `${dir} is on ${fs} without d_type support (for xfs: mkfs.xfs -n ftype=1)`;
  return undefined;
}

/**
 * The kernel facts decideOverlaySettings decides from, probed. `lowerdirPlus` only when asked: its
 * probe is a (detached) test mount in `dir`, which overlay (one lower per mount) has no use for.
 */
export function probeOverlayKernel(dir: string, probeLowerdirPlus: boolean): OverlayKernelFacts {
  return {
    params: overlayModuleParams(),
    inUserNamespace: inUserNamespace(),
    pageSize: pageSize(),
    lowerdirPlus: probeLowerdirPlus && newMountApiSupported() && overlayLowerdirPlusSupported(dir),
  };
}
