/**
 * The built-in drivers. registerBuiltinDrivers() adds them to the registry; the composition root
 * (src/index.ts) calls it, so library users get every built-in driver without doing anything.
 */
import { registerDriver } from '../graph/registry.js';
import type { DriverEntry } from '../graph/registry.js';
import { devicemapperEntry } from './devicemapper/index.js';
import { aufsEntry } from './aufs/index.js';
import { overlayEntry } from './overlay/index.js';
import { overlay2Entry } from './overlay2/index.js';
import { vfsEntry } from './vfs/index.js';

/** In auto-selection order's tie-break order (the registry decides by priority). */
export const builtinDrivers: readonly DriverEntry[] = [vfsEntry, overlay2Entry, overlayEntry, aufsEntry, devicemapperEntry];

export function registerBuiltinDrivers(): void {
  for (const entry of builtinDrivers) registerDriver(entry);
}
