/**
 * What overlay2 needs from the kernel and the backing filesystem, probed once per driver.
 */
import {
  backingFs,
  inUserNamespace,
  newMountApiSupported,
  overlayLowerdirPlusSupported,
  overlayMaxLowerLayers,
  overlayModuleParams,
  pageSize,
  supportsDType,
  existingDirFor,
} from '../../sys/index.js';
import { overlayUnsupportedReason } from '../overlayfs/support.js';

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

export function probeOverlay2(home: string): Overlay2Features {
  const unsupportedReason = overlayUnsupportedReason(home);
  const dir = existingDirFor(home);
  const params = overlayModuleParams();
  const userxattr = inUserNamespace();
  const metacopy = params.metacopy === true;
  const newMountApi = newMountApiSupported() && overlayLowerdirPlusSupported(dir);
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
