/**
 * What an InflateThread (inflate-thread.ts) and its worker (inflate-worker.ts) agree on: the slots
 * of the shared control array over the output ring, and the messages. The ring is a
 * SharedArrayBuffer of bytes; WRITTEN and CONSUMED are running totals, so a position in the ring
 * is `total % ring length`.
 */

/** Slots of the control array (BigInt64, so the byte counters never wrap). */
export const WRITTEN = 0; // inflated bytes the worker has put into the ring, in total
export const CONSUMED = 1; // bytes the reader is done with, in total
export const STATE = 2; // RUNNING, then ENDED or FAILED; what the reader sleeps on along with WRITTEN
export const CTL_SLOTS = 3;

export const RUNNING = 0n;
/** The worker has written the last byte (and posted the blob digest). */
export const ENDED = 1n;
/** The stream failed: the worker posted why, or the input failed (the reader knows why). */
export const FAILED = 2n;

export interface InflateWorkerData {
  ring: SharedArrayBuffer;
  ctl: SharedArrayBuffer;
}

/** Main → worker: a piece of the compressed stream (its first `length` bytes; transferred), or its end. */
export type ToInflateWorker = { piece: Uint8Array; length: number } | { end: true };

/**
 * Worker → main: a piece was inflated (and comes back, transferred, to be filled again), the end with the sha256 of
 * everything it was sent, or zlib's failure (message and Z_* code).
 */
export type FromInflateWorker = { taken: number; piece: Uint8Array } | { digest: string } | { error: string; code?: string };
