import { overlay2Entry } from '../../src/drivers/overlay2/index.js';
import { runDriverConformance } from './suite.js';

// 130 layers mount with relative l/ paths; 210 need the new mount API; the depth-limit test then
// grows the chain to the kernel's 500 lowers.
runDriverConformance(overlay2Entry, { deeperChains: [210] });
