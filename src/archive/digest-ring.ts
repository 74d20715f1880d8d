/**
 * What a StreamDigest (stream-digest.ts) and its hashing thread (digest-worker.ts) agree on: the
 * slots of the shared control array and the data the worker is started with. The ring itself is
 * a SharedArrayBuffer of bytes; `WRITTEN` and `CONSUMED` are running totals, so a position in the
 * ring is `total % ring length`.
 */

/** Slots of the shared control array (BigInt64, so the byte counters never wrap). */
export const WRITTEN = 0; // bytes the producer has put into the ring, in total
export const CONSUMED = 1; // bytes the worker has hashed, in total
export const DONE = 2; // 1 once the producer has written everything
export const SEQ = 3; // bumped by the producer on every write and at the end: what the worker sleeps on
export const SLEEPS = 4; // 1 while the worker is (about to be) asleep: only then does the producer notify
export const CTL_SLOTS = 5;

/** The worker's workerData. It answers with one message: the hex digest of everything written. */
export interface DigestWorkerData {
  /** The ring (a SharedArrayBuffer of bytes). */
  data: SharedArrayBuffer;
  /** The control array's memory (CTL_SLOTS BigInt64 slots). */
  ctl: SharedArrayBuffer;
  /** A node:crypto hash name ("sha256"). */
  algorithm: string;
}
