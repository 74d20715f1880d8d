/**
 * The thread of an InflateThread (inflate-thread.ts): hashes the compressed pieces it is sent
 * (sha256: the blob digest) and inflates them straight into the shared ring, with the zlib
 * handle's synchronous write (what node's own gunzipSync uses; an internal API): no buffer per
 * chunk, so no garbage for an external-memory GC to wait for. Waits (Atomics.wait: this thread has
 * nothing else to do) while the ring is full. Posts `taken` once a piece is inflated, then
 * `digest` at the end, or `error`.
 */
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { constants, createGunzip } from 'node:zlib';
import {
  CONSUMED,
  ENDED,
  FAILED,
  STATE,
  WRITTEN,
  type FromInflateWorker,
  type InflateWorkerData,
  type ToInflateWorker,
} from './inflate-ring.js';

interface ZlibHandle {
  writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void;
  onerror: (message: string, errno: number, code?: string) => void;
}

const init = workerData as InflateWorkerData;
const ring = new Uint8Array(init.ring);
const ctl = new BigInt64Array(init.ctl);
const size = BigInt(ring.length);
const hash = createHash('sha256');
const gunzip = createGunzip() as unknown as { _handle: ZlibHandle; _writeState: Uint32Array };
const handle = gunzip._handle;
const state = gunzip._writeState;
let failure: { error: string; code?: string } | undefined;
handle.onerror = (message, _errno, code) => {
  failure ??= { error: message, ...(code === undefined ? {} : { code }) };
};
let written = 0n;
let ended = false;

const post = (m: FromInflateWorker) => parentPort!.postMessage(m);

/** Free ring space at the write position (waiting for the reader while there is none). */
function space(): { pos: number; length: number } {
  let consumed = Atomics.load(ctl, CONSUMED);
  while (written - consumed === size) {
    Atomics.wait(ctl, CONSUMED, consumed);
    consumed = Atomics.load(ctl, CONSUMED);
  }
  const pos = Number(written % size);
  return { pos, length: Math.min(Number(size - (written - consumed)), ring.length - pos) };
}

/** Inflates `input` (or, with Z_FINISH and no input, the end) into the ring; false once failed. */
function inflate(input: Uint8Array, flush: number): boolean {
  let inOff = 0;
  let inLen = input.length;
  for (;;) {
    const out = space();
    handle.writeSync(flush, input, inOff, inLen, ring, out.pos, out.length);
    if (failure !== undefined) return false;
    const availOut = state[0]!;
    const availIn = state[1]!;
    const have = out.length - availOut;
    if (have > 0) {
      written += BigInt(have);
      Atomics.store(ctl, WRITTEN, written);
      Atomics.notify(ctl, WRITTEN);
    }
    inOff += inLen - availIn;
    inLen = availIn;
    if (availOut !== 0) return true; // the input is used up (or the stream ended): as node's gunzipSync
  }
}

function fail(): void {
  Atomics.store(ctl, STATE, FAILED);
  Atomics.notify(ctl, WRITTEN);
  post(failure!);
}

parentPort!.on('message', (m: ToInflateWorker) => {
  if (failure !== undefined || ended) return;
  if ('end' in m) {
    ended = true;
    if (!inflate(new Uint8Array(0), constants.Z_FINISH)) return fail();
    post({ digest: hash.digest('hex') });
    Atomics.store(ctl, STATE, ENDED);
    Atomics.notify(ctl, WRITTEN);
    return;
  }
  const bytes = m.piece.subarray(0, m.length);
  hash.update(bytes);
  if (!inflate(bytes, constants.Z_NO_FLUSH)) return fail();
  parentPort!.postMessage({ taken: m.length, piece: m.piece } satisfies FromInflateWorker, [m.piece.buffer as ArrayBuffer]); // back to be filled again
});
