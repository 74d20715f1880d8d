/**
 * The tests' view of the mount table (bench/peers/mount-table.ts, shared with the peer launchers):
 * deliberately independent of src/sys, so a test that checks "nothing is left mounted" does not
 * trust the parser it is checking.
 */
export * from '../../bench/peers/mount-table.js';
