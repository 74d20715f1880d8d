/**
 * The devicemapper driver's registry entry (src/drivers/index.ts lists it). It needs the kernel's
 * device-mapper (dm_mod, dm_thin_pool) and the dmsetup command; kernels without them (this
 * project's build machines, most containers) get one clear UNSUPPORTED error naming what is missing.
 */
import { execFileSync } from 'node:child_process';
import type { DriverEntry } from '../../graph/registry.js';
import { deviceMapperMissingReason } from './dmsetup.js';
import { DevmapperDriver, DM_OPTION_KEYS } from './driver.js';

export { DevmapperDriver } from './driver.js';

function dmsetupMissingReason(): string | undefined {
  try {
    execFileSync('dmsetup', ['--version'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'the dmsetup command is not installed (Debian: apt-get install dmsetup)';
  }
}

export const devicemapperEntry: DriverEntry = {
  name: 'devicemapper',
  create: (init) => DevmapperDriver.open(init),
  unsupportedReason: () => deviceMapperMissingReason() ?? dmsetupMissingReason(),
  optionKeys: DM_OPTION_KEYS,
};
