/**
 * The thread of an InflateThread (inflate-thread.ts): hashes the compressed pieces it is sent
 * (sha256: the blob digest) and inflates them straight into the shared ring, with the zlib
 * handle's synchronous write (what node's own gunzipSync uses; an internal API): no buffer per
 * chunk, so no garbage for an external-memory GC to wait for. Waits (Atomics.wait: this thread has
 * nothing else to do) while the ring is full. Posts `taken` once a piece is inflated, then
 * `digest` at the end, or `error`.
 *
 * With a source (InflateWorkerData.source), the worker reads the compressed stream itself (a
 * registry blob: the GET is made here) and posts `sourceError` when that fails. Blocking in
 * Atomics.wait then also stops the reading: the socket's backpressure does the rest.
 */
import { createHash } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import { constants, createGunzip } from 'node:zlib';
import {
  CONSUMED,
  ENDED,
  FAILED,
  RUNNING,
  STATE,
  WRITTEN,
  postedError,
  signalChange,
  type FromInflateWorker,
  type InflateWorkerData,
  type ToInflateWorker,
  type WorkerSource,
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
      signalChange(ctl);
    }
    inOff += inLen - availIn;
    inLen = availIn;
    if (availOut !== 0) return true; // the input is used up (or the stream ended): as node's gunzipSync
  }
}

/** RUNNING → ENDED or FAILED; a stream the parent has failed meanwhile stays FAILED. */
function endState(state: bigint): void {
  Atomics.compareExchange(ctl, STATE, RUNNING, state);
  signalChange(ctl);
}

function fail(): void {
  endState(FAILED);
  post(failure!);
}

/** Hashes and inflates the next compressed bytes; false once the stream failed. */
function take(bytes: Uint8Array): boolean {
  hash.update(bytes);
  if (inflate(bytes, constants.Z_NO_FLUSH)) return true;
  fail();
  return false;
}

/** The end of the compressed stream: the rest of the output, the digest, then ENDED. */
function finish(): void {
  ended = true;
  if (!inflate(new Uint8Array(0), constants.Z_FINISH)) return fail();
  post({ digest: hash.digest('hex') });
  endState(ENDED);
}

/** Source bytes read between two minor GCs (see scavenger). */
const SCAVENGE_EVERY = 8 * 1024 * 1024;

/**
 * A minor GC on demand, or undefined where it cannot be had. Why: every socket read a source makes
 * is a new 64 KiB Buffer, dead once inflated. Its memory is outside V8's heap, so nothing in this
 * thread's small heap calls for a scavenge, and V8 frees them only when ~64 MB of them have piled
 * up (its external-memory limit): the pull bench's peak RSS went from 207 to 182 MB with a minor
 * GC every 8 MiB. `gc` is had from a new context once --expose-gc is set at run time (it only adds
 * that function to contexts made afterwards).
 */
function scavenger(): (() => void) | undefined {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as ((opts: { type: 'minor' }) => void) | undefined;
    return typeof gc === 'function' ? () => gc({ type: 'minor' }) : undefined;
  } catch {
    return undefined;
  }
}

/** Reads the stream from init.source (see WorkerSource); a failure of the source is posted as it is. */
async function readSource(source: WorkerSource): Promise<void> {
  const scavenge = scavenger();
  let sinceScavenge = 0;
  try {
    const url = source.module.startsWith('file:') ? new URL(source.module) : new URL(`../${source.module}`, import.meta.url);
    const module = (await import(url.href)) as Record<string, (arg: unknown) => AsyncIterable<Uint8Array>>;
    for await (const chunk of module[source.export]!(source.arg)) {
      if (!take(chunk)) return;
      sinceScavenge += chunk.length;
      if (sinceScavenge >= SCAVENGE_EVERY && scavenge !== undefined) {
        sinceScavenge = 0;
        scavenge();
      }
    }
  } catch (e) {
    endState(FAILED);
    post({ sourceError: postedError(e) });
    return;
  }
  finish();
}

// Listened to with a source too: it keeps the thread alive until the parent lets it go, which
// is after the parent has read the end of the ring (exiting by itself first looks like a crash).
parentPort!.on('message', (m: ToInflateWorker) => {
  if (failure !== undefined || ended || init.source !== undefined) return;
  if ('end' in m) return finish();
  if (!take(m.piece.subarray(0, m.length))) return;
  parentPort!.postMessage({ taken: m.length, piece: m.piece } satisfies FromInflateWorker, [m.piece.buffer as ArrayBuffer]); // back to be filled again
});
if (init.source !== undefined) void readSource(init.source);
