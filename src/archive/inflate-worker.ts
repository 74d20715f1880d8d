/**
 * The thread of an InflateThread (inflate-thread.ts): hashes the compressed pieces it is sent
 * (sha256: the blob digest), inflates them with node:zlib, and writes the output into the shared
 * ring, waiting (Atomics.wait: this thread has nothing else to do) while the ring is full.
 * Posts `taken` once a piece is inflated, then `digest` at the end, or `error`.
 */
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { createGunzip } from 'node:zlib';
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

const init = workerData as InflateWorkerData;
const ring = new Uint8Array(init.ring);
const ctl = new BigInt64Array(init.ctl);
const size = BigInt(ring.length);
const hash = createHash('sha256');
// gunzip handles concatenated members (pigz, multi-member gzip) by itself, as on the main thread.
const inflater = createGunzip({ chunkSize: init.chunkSize });
let written = 0n;

const post = (m: FromInflateWorker) => parentPort!.postMessage(m);

/** Copies `bytes` into the ring, waiting for the reader where it is full. */
function put(bytes: Buffer): void {
  for (let off = 0; off < bytes.length;) {
    let consumed = Atomics.load(ctl, CONSUMED);
    while (written - consumed === size) {
      Atomics.wait(ctl, CONSUMED, consumed);
      consumed = Atomics.load(ctl, CONSUMED);
    }
    const pos = Number(written % size);
    const n = Math.min(bytes.length - off, Number(size - (written - consumed)), ring.length - pos);
    ring.set(bytes.subarray(off, off + n), pos);
    off += n;
    written += BigInt(n);
    Atomics.store(ctl, WRITTEN, written);
    Atomics.notify(ctl, WRITTEN);
  }
}

/** Sets the final state and wakes the reader. */
function finish(state: bigint): void {
  Atomics.store(ctl, STATE, state);
  Atomics.notify(ctl, WRITTEN);
}

inflater.on('data', put);
inflater.on('error', (e: NodeJS.ErrnoException) => {
  finish(FAILED);
  post({ error: e.message, ...(e.code === undefined ? {} : { code: e.code }) });
});
inflater.on('end', () => {
  post({ digest: hash.digest('hex') });
  finish(ENDED);
});
parentPort!.on('message', (m: ToInflateWorker) => {
  if ('end' in m) {
    inflater.end();
    return;
  }
  const piece = m.piece;
  hash.update(piece);
  inflater.write(piece, () => post({ taken: piece.length }));
});
