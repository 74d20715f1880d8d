export * from './syscalls.js';
export * from './mountinfo.js';
export * from './probes.js';
export * from './atomic-file.js';
export * from './process.js';
export * from './user-file.js';
export * from './store-files.js';
export * from './record-lock.js';
