import { runDriverConformance } from './suite.js';

runDriverConformance('vfs');
