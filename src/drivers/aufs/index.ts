/**
 * The aufs driver's registry entry (src/drivers/index.ts lists it). It runs with the kernel's aufs
 * where there is one, else with fuse-overlayfs (see driver.ts).
 */
import type { DriverEntry } from '../../graph/registry.js';
import { AUFS_OPTION_KEYS, AufsDriver, aufsUnsupportedReason } from './driver.js';

export { AufsDriver, chooseMechanism } from './driver.js';

export const aufsEntry: DriverEntry = {
  name: 'aufs',
  create: (init) => AufsDriver.open(init),
  unsupportedReason: (home) => aufsUnsupportedReason(home),
  optionKeys: AUFS_OPTION_KEYS,
};
