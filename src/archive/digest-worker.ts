/**
 * The hashing thread of a StreamDigest (stream-digest.ts, which starts it with
 * `new Worker(new URL('./digest-worker.js', import.meta.url))`): hashes what the shared ring holds
 * until the producer says it is done, then posts the hex digest. It sleeps on the control array
 * while the ring is empty and says so, so that the producer only pays for a notify when needed.
 */
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { CONSUMED, DONE, SEQ, SLEEPS, WRITTEN, type DigestWorkerData } from './digest-ring.js';

const init = workerData as DigestWorkerData;
const data = new Uint8Array(init.data);
const ctl = new BigInt64Array(init.ctl);
const size = data.length;
const hash = createHash(init.algorithm);
let consumed = 0n;
for (;;) {
  const seq = Atomics.load(ctl, SEQ);
  const written = Atomics.load(ctl, WRITTEN);
  if (written === consumed) {
    if (Atomics.load(ctl, DONE) === 1n) break;
    // Say we sleep, then look once more: a producer that missed the flag has bumped seq by now
    // (the wait returns at once) or its bytes are seen on the next round.
    Atomics.store(ctl, SLEEPS, 1n);
    if (Atomics.load(ctl, WRITTEN) === consumed && Atomics.load(ctl, DONE) === 0n) Atomics.wait(ctl, SEQ, seq);
    Atomics.store(ctl, SLEEPS, 0n);
    continue;
  }
  const pos = Number(consumed % BigInt(size));
  const n = Math.min(Number(written - consumed), size - pos);
  hash.update(data.subarray(pos, pos + n));
  consumed += BigInt(n);
  Atomics.store(ctl, CONSUMED, consumed);
  Atomics.notify(ctl, CONSUMED);
}
parentPort!.postMessage(hash.digest('hex'));
