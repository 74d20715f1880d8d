/**
 * The built-in drivers. Importing this module registers them; the store imports it, so library
 * users get every built-in driver without doing anything.
 */
import { registerDriver } from '../graph/registry.js';
import { devicemapperEntry } from './devicemapper/index.js';
import { aufsEntry } from './aufs/index.js';
import { overlayEntry } from './overlay/index.js';
import { overlay2Entry } from './overlay2/index.js';
import { vfsEntry } from './vfs/index.js';

registerDriver(vfsEntry);
registerDriver(overlay2Entry);
registerDriver(overlayEntry);
registerDriver(aufsEntry);
registerDriver(devicemapperEntry);
