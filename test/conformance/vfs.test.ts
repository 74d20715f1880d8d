import { vfsEntry } from '../../src/drivers/vfs/index.js';
import { runDriverConformance } from './suite.js';

runDriverConformance(vfsEntry);
