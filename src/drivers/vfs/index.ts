/**
 * The vfs driver's registry entry (src/drivers/index.ts lists it). vfs runs everywhere: it needs
 * nothing from the kernel but a directory.
 */
import type { DriverEntry } from '../../graph/registry.js';
import { VFS_OPTION_KEYS, VfsDriver } from './driver.js';

export { VfsDriver } from './driver.js';

export const vfsEntry: DriverEntry = {
  name: 'vfs',
  create: (init) => new VfsDriver(init),
  unsupportedReason: () => undefined,
  optionKeys: VFS_OPTION_KEYS,
};
