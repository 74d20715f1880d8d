/**
 * What an InflateThread (inflate-thread.ts) and its worker (inflate-worker.ts) agree on: the slots
 * of the shared control array over the output ring, and the messages. The ring is a
 * SharedArrayBuffer of bytes; WRITTEN and CONSUMED are running totals, so a position in the ring
 * is `total % ring length`.
 */
import { UnionctlError, type ErrorCode } from '../errors.js';

/** Slots of the control array (BigInt64, so the byte counters never wrap). */
export const WRITTEN = 0; // inflated bytes the worker has put into the ring, in total
export const CONSUMED = 1; // bytes the reader is done with, in total
export const STATE = 2; // RUNNING, then ENDED or FAILED (a FAILED state is never changed again)
/**
 * Bumped (and notified) after every change of WRITTEN or STATE: what the reader sleeps on. One
 * counter for both, read before them, is what makes a wake-up impossible to miss: the reader
 * that saw nothing new waits for SEQ to move from the value it read first, and any change since
 * has moved it already.
 */
export const SEQ = 3;
export const CTL_SLOTS = 4;

/** Moves SEQ and wakes the reader: call after every change of WRITTEN or STATE, from either thread. */
export function signalChange(ctl: BigInt64Array): void {
  Atomics.add(ctl, SEQ, 1n);
  Atomics.notify(ctl, SEQ);
}

export const RUNNING = 0n;
/** The worker has written the last byte (and posted the blob digest). */
export const ENDED = 1n;
/** The stream failed: the worker posted why, or the input failed (the reader knows why). */
export const FAILED = 2n;

export interface InflateWorkerData {
  ring: SharedArrayBuffer;
  ctl: SharedArrayBuffer;
  /** Where the worker reads the compressed stream by itself; without one, the parent sends it in pieces. */
  source?: WorkerSource;
}

/**
 * A compressed stream the worker reads by itself, so that its bytes never pass through the
 * parent: `export` of `module`, an async generator function, called with `arg`.
 */
export interface WorkerSource {
  /**
   * The module: a path under the package's src/ directory (`image/registry/blob-source.js`), which
   * the worker resolves from its own place there (it holds in the bundled CLI as well), or a file: URL.
   */
  module: string;
  export: string;
  /** Structured-cloneable (it is posted to the worker). */
  arg: unknown;
}

/** An error passed between the threads: a UnionctlError keeps its code and hint, a system error its code. */
export interface PostedError {
  message: string;
  code?: string;
  hint?: string;
  unionctl: boolean;
}

/** Main → worker: a piece of the compressed stream (its first `length` bytes; transferred), or its end. */
export type ToInflateWorker = { piece: Uint8Array; length: number } | { end: true };

/**
 * Worker → main: a piece was inflated (and comes back, transferred, to be filled again), the end with the sha256 of
 * everything it was sent, zlib's failure (message and Z_* code), or the failure of the source it read.
 */
export type FromInflateWorker =
  { taken: number; piece: Uint8Array } | { digest: string } | { error: string; code?: string } | { sourceError: PostedError };

/** `e` as it can be posted to the other thread (see PostedError). */
export function postedError(e: unknown): PostedError {
  const error = e instanceof Error ? e : new Error(String(e));
  const code = (error as { code?: unknown }).code;
  return {
    message: error.message,
    ...(typeof code === 'string' ? { code } : {}),
    ...(error instanceof UnionctlError && error.hint !== undefined ? { hint: error.hint } : {}),
    unionctl: error instanceof UnionctlError,
  };
}

/** The error a PostedError was made from, as near as it can be remade. */
export function errorFromPost(p: PostedError): Error {
  if (p.unionctl) return new UnionctlError(p.code as ErrorCode, p.message, { hint: p.hint });
  return Object.assign(new Error(p.message), p.code === undefined ? {} : { code: p.code });
}
