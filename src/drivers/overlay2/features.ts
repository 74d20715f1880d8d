/**
 * What overlay2 needs from the kernel and the backing filesystem, probed once per driver.
 */
import { backingFs, overlayMaxLowerLayers, supportsDType, existingDirFor } from '../../sys/index.js';
import { decideOverlaySettings, type OverlaySettings } from '../overlayfs/mount.js';
import { overlayUnsupportedReason, probeOverlayKernel } from '../overlayfs/support.js';

/** Docker's cap: 128 lowers fit one page of relative l/ paths. */
export const LEGACY_MAX_DEPTH = 128;

/** The mount settings (decideOverlaySettings: index, userxattr, new mount API, nativeDiff, with reasons) and the rest overlay2 reports. */
export interface Overlay2Features extends OverlaySettings {
  /** Why overlay2 cannot work here, or undefined. */
  unsupportedReason?: string;
  backingFs: string;
  dType: boolean;
  /** Most lower layers a layer may have. */
  maxDepth: number;
}

export function probeOverlay2(home: string): Overlay2Features {
  const unsupportedReason = overlayUnsupportedReason(home);
  const dir = existingDirFor(home);
  const settings = decideOverlaySettings(probeOverlayKernel(dir, true));
  return {
    ...settings,
    unsupportedReason,
    backingFs: backingFs(dir),
    dType: supportsDType(dir),
    maxDepth: settings.newMountApi ? overlayMaxLowerLayers() : LEGACY_MAX_DEPTH,
  };
}
