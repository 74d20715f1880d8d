/**
 * sha256 of a byte stream, computed on a worker thread for large streams.
 *
 * Why: the diff_id of a layer is the sha256 of the whole uncompressed tar, and at ~2 GB/s hashing
 * alone costs about as much CPU time as GNU tar needs to extract the layer. Done on the main thread
 * it would sit squarely on the apply's critical path; on a second core it runs alongside.
 *
 * How: bytes are copied into a fixed ring of shared memory (a memcpy is ~10x cheaper than sha256)
 * and a worker hashes them from there, so memory stays bounded whatever the stream size. The
 * worker only starts once the stream is larger than START_THRESHOLD: small streams (most layers
 * are a few MB) are hashed on the main thread from the ring at the end, without a thread.
 * If the worker falls behind and the ring fills up, the producer waits (Atomics.wait).
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

const RING_BYTES = 32 * 1024 * 1024;
const START_THRESHOLD = 8 * 1024 * 1024;

/** Slots of the shared control array (BigInt64, so offsets never wrap). */
const WRITTEN = 0; // bytes the producer has put into the ring, total
const CONSUMED = 1; // bytes the worker has hashed, total
const DONE = 2; // 1 once the producer has written everything
const SEQ = 3; // bumped by the producer on every write and at the end: what the worker sleeps on

/** Runs in the worker: hash what the ring holds until the producer says it is done. */
const WORKER_SOURCE = `
const { workerData, parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const data = new Uint8Array(workerData.data);
const ctl = new BigInt64Array(workerData.ctl);
const size = data.length;
const hash = createHash('sha256');
let consumed = 0n;
for (;;) {
  const seq = Atomics.load(ctl, ${SEQ});
  const written = Atomics.load(ctl, ${WRITTEN});
  if (written === consumed) {
    if (Atomics.load(ctl, ${DONE}) === 1n) break;
    Atomics.wait(ctl, ${SEQ}, seq); // returns at once if the producer moved on since we read seq
    continue;
  }
  const pos = Number(consumed % BigInt(size));
  const n = Math.min(Number(written - consumed), size - pos);
  hash.update(data.subarray(pos, pos + n));
  consumed += BigInt(n);
  Atomics.store(ctl, ${CONSUMED}, consumed);
  Atomics.notify(ctl, ${CONSUMED});
}
parentPort.postMessage(hash.digest('hex'));
`;

/** Atomics.waitAsync (Node 16+; not in TypeScript's ES2022 lib). */
const waitAsync = (Atomics as unknown as { waitAsync(a: BigInt64Array, index: number, value: bigint): { value: string | Promise<string> } }).waitAsync;

export class StreamDigest {
  private ring: Uint8Array | undefined;
  private ctl: BigInt64Array | undefined;
  private written = 0;
  private worker: Worker | undefined;
  private result: Promise<string> | undefined;
  private hex: string | undefined;
  private failure: Error | undefined;

  /**
   * Adds bytes (copied: the caller may reuse the chunk afterwards). Returns a promise only when the
   * ring is full and the worker has to catch up first; the caller must await it before the next update.
   */
  update(chunk: Uint8Array): Promise<void> | undefined {
    if (this.hex !== undefined || this.result !== undefined) throw new Error('StreamDigest.update after finish');
    if (this.failure !== undefined) throw this.failure;
    this.ring ??= new Uint8Array(new SharedArrayBuffer(RING_BYTES));
    this.ctl ??= new BigInt64Array(new SharedArrayBuffer(4 * 8));
    const ctl = this.ctl;
    for (let off = 0; off < chunk.length; ) {
      const consumed = Atomics.load(ctl, CONSUMED);
      const free = RING_BYTES - (this.written - Number(consumed));
      if (free === 0) {
        this.startWorker();
        // Wait without blocking the event loop, so a failing worker is noticed.
        const rest = chunk.subarray(off);
        return Promise.resolve(waitAsync(ctl, CONSUMED, consumed).value).then(() => this.update(rest));
      }
      const pos = this.written % RING_BYTES;
      const n = Math.min(free, RING_BYTES - pos, chunk.length - off);
      this.ring.set(chunk.subarray(off, off + n), pos);
      off += n;
      this.written += n;
      Atomics.store(ctl, WRITTEN, BigInt(this.written));
      this.wake();
    }
    if (this.worker === undefined && this.written > START_THRESHOLD) this.startWorker();
    return undefined;
  }

  /** Ends the stream; resolves to the hex digest. */
  finish(): Promise<string> {
    if (this.hex !== undefined) return Promise.resolve(this.hex);
    if (this.result !== undefined) return this.result;
    if (this.worker === undefined) {
      // Small stream: everything is still in the ring, from offset 0.
      const hash = createHash('sha256');
      if (this.ring !== undefined) hash.update(this.ring.subarray(0, this.written));
      this.hex = hash.digest('hex');
      this.ring = undefined;
      return Promise.resolve(this.hex);
    }
    const worker = this.worker;
    this.result = new Promise<string>((resolve, reject) => {
      worker.once('message', (hex: string) => resolve(hex));
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`digest worker exited (code ${code}) before it answered`)));
    }).then((hex) => {
      this.hex = hex;
      this.release();
      return hex;
    });
    Atomics.store(this.ctl!, DONE, 1n);
    this.wake();
    return this.result;
  }

  private wake(): void {
    Atomics.add(this.ctl!, SEQ, 1n);
    if (this.worker !== undefined) Atomics.notify(this.ctl!, SEQ);
  }

  /** The digest, once finish() has resolved. */
  get value(): string | undefined {
    return this.hex;
  }

  /** Stops the worker (abandoned stream). */
  abort(): void {
    this.release();
  }

  private release(): void {
    void this.worker?.terminate();
    this.worker = undefined;
    this.ring = undefined;
  }

  private startWorker(): void {
    if (this.worker !== undefined) return;
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { data: this.ring!.buffer, ctl: this.ctl!.buffer } });
    worker.on('error', (e) => {
      this.failure = e;
      // Unblock a producer waiting for ring space: it sees the failure on its next update.
      Atomics.notify(this.ctl!, CONSUMED);
    });
    // An idle worker must not keep the process alive (e.g. a stream that is never finished).
    worker.unref();
    this.worker = worker;
  }
}
