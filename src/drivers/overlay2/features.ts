/**
 * What overlay2 needs from the kernel and the backing filesystem, probed once per driver.
 */
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  backingFs,
  inUserNamespace,
  newMountApiSupported,
  overlayLowerdirPlusSupported,
  overlayMaxLowerLayers,
  overlayModuleParams,
  overlaySupported,
  pageSize,
  supportsDType,
} from '../../sys/index.js';

/** Docker's cap: 128 lowers fit one page of relative l/ paths. */
export const LEGACY_MAX_DEPTH = 128;

export interface Overlay2Features {
  /** Why overlay2 cannot work here, or undefined. */
  unsupportedReason?: string;
  backingFs: string;
  dType: boolean;
  /** The overlay module has an `index` parameter → mount with index=off (as Docker does). */
  indexOff: boolean;
  userxattr: boolean;
  metacopy: boolean;
  /** diff/ is a faithful change set: no redirect_dir, no metacopy, not in a user namespace. */
  nativeDiff: boolean;
  /** fsopen & co. plus overlay's lowerdir+ key: unions deeper than a page of mount data. */
  newMountApi: boolean;
  /** Most lower layers a layer may have. */
  maxDepth: number;
  pageSize: number;
}

/** The home if it exists, else its nearest existing ancestor (where the home will be created). */
export function existingDirFor(path: string): string {
  let dir = path;
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

/** Why overlay2 cannot keep a store under `home`, or undefined when it can. */
export function overlay2UnsupportedReason(home: string): string | undefined {
  if (!overlaySupported()) return 'the kernel has no overlay filesystem (not in /proc/filesystems; try modprobe overlay)';
  const dir = existingDirFor(home);
  const fs = backingFs(dir);
  if (fs === 'overlayfs' || fs === 'overlay') return `${dir} is itself on overlayfs, which cannot be an upper layer of another overlay`;
  if (!supportsDType(dir)) return `${dir} is on ${fs} without d_type support (for xfs: mkfs.xfs -n ftype=1)`;
  return undefined;
}

export function probeOverlay2(home: string): Overlay2Features {
  const unsupportedReason = overlay2UnsupportedReason(home);
  const dir = existingDirFor(home);
  const params = overlayModuleParams();
  const userxattr = inUserNamespace();
  const metacopy = params.metacopy === true;
  const newMountApi = newMountApiSupported() && overlayLowerdirPlusSupported();
  return {
    unsupportedReason,
    backingFs: backingFs(dir),
    dType: supportsDType(dir),
    indexOff: params.hasIndexParam,
    userxattr,
    metacopy,
    // redirect_dir "on" (Y) makes renamed dirs redirects in the upper dir; "follow"/"off" do not create any.
    nativeDiff: !metacopy && params.redirectDir !== true && params.redirectDir !== 'on' && !userxattr,
    newMountApi,
    maxDepth: newMountApi ? overlayMaxLowerLayers() : LEGACY_MAX_DEPTH,
    pageSize: pageSize(),
  };
}
