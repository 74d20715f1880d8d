/**
 * The overlay2 driver's registry entry (src/drivers/index.ts lists it).
 */
import type { DriverEntry } from '../../graph/registry.js';
import { Overlay2Driver } from './driver.js';
import { overlayUnsupportedReason } from '../overlayfs/support.js';
import { DRIVER_OPTION_KEYS } from './options.js';

export { Overlay2Driver } from './driver.js';

export const overlay2Entry: DriverEntry = {
  name: 'overlay2',
  create: (init) => Overlay2Driver.open(init),
  unsupportedReason: (home) => overlayUnsupportedReason(home),
  optionKeys: [...DRIVER_OPTION_KEYS],
};
