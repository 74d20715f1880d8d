/**
 * The overlay (v1) driver's registry entry (src/drivers/index.ts lists it).
 */
import type { DriverEntry } from '../../graph/registry.js';
import { overlayUnsupportedReason } from '../overlayfs/support.js';
import { OVERLAY_OPTION_KEYS, OverlayDriver } from './driver.js';

export { OverlayDriver } from './driver.js';

export const overlayEntry: DriverEntry = {
  name: 'overlay',
  create: (init) => OverlayDriver.open(init),
  unsupportedReason: (home) => overlayUnsupportedReason(home),
  optionKeys: OVERLAY_OPTION_KEYS,
};
