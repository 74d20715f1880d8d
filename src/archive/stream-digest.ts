/**
 * sha256 (or another node:crypto hash) of a byte stream, for a layer's diff_id — on a worker
 * thread (digest-worker.ts) when a core is free.
 *
 * Why: at ~1.8 GB/s, hashing a layer costs about a third of an apply's CPU time, and on the main
 * thread it sits squarely on the critical path. On an idle second core it runs alongside.
 *
 * How: the bytes live in a fixed ring of shared memory that the worker hashes from, so memory
 * stays bounded whatever the stream size; if the worker falls behind, the producer waits for ring
 * space. Bytes get there either by update(chunk) (a copy: a memcpy is ~10x cheaper than sha256) or
 * without any copy, by reading the input straight into the ring: reserve() a view, fill it,
 * commit() it (openLayerStream does this for uncompressed files).
 *
 * The worker only starts once the stream is larger than START_THRESHOLD (small layers are not
 * worth a thread; the head is hashed on the main thread meanwhile and again by the worker from
 * byte 0), and only when the machine has a second core (on a machine whose other cores are busy
 * the worker competes with the main thread: force the main-thread path there with =0).
 * UNIONCTL_DIGEST_THREAD=1 / =0 forces the choice (benchmarks, tests).
 */
import { createHash, type Hash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { CONSUMED, CTL_SLOTS, DONE, SEQ, SLEEPS, WRITTEN, type DigestWorkerData } from './digest-ring.js';
import { startWorker } from '../sys/index.js';

/** The ring: bytes handed out by reserve() stay valid until about this much more has been committed. */
export const RING_BYTES = 8 * 1024 * 1024;
/** A stream of unknown size goes to the worker once it is larger than this. */
export const START_THRESHOLD = 4 * 1024 * 1024;
/** The worker is woken once this much is waiting for it (and whenever the producer must wait). */
export const WAKE_EVERY_BYTES = 2 * 1024 * 1024;

/**
 * The hashing thread's code: its own module, compiled next to this one. Spelt from the parent
 * directory so the path holds both here (dist/src/archive/) and in the bundled CLI
 * (dist/src/cli/main.js, scripts/bundle-cli.mjs), which leaves the worker out.
 */
const WORKER_URL = new URL('../archive/digest-worker.js', import.meta.url);

/** Atomics.waitAsync (Node 16+; not in TypeScript's ES2022 lib). */
const waitAsync = (Atomics as unknown as { waitAsync(a: BigInt64Array, index: number, value: bigint): { value: string | Promise<string> } })
  .waitAsync;

/**
 * Is there a second core for the hashing thread? (A load-average test was tried and dropped: the
 * 1-minute average lags, so back-to-back imports flipped between the two paths at random.)
 */
function idleCoreAvailable(): boolean {
  const forced = process.env.UNIONCTL_DIGEST_THREAD;
  if (forced === '1' || forced === '0') return forced === '1';
  return availableParallelism() >= 2;
}

/**
 * Hashing threads running in this process. Streams hashed at once (a pull applying layers in
 * parallel) get at most one thread per spare core; the others hash on their own thread. More
 * threads than cores only compete with each other, and each costs ~10 MB.
 */
let hashingThreads = 0;

function takeHashingThread(): boolean {
  const forced = process.env.UNIONCTL_DIGEST_THREAD === '1';
  if (!forced && hashingThreads >= Math.max(1, availableParallelism() - 1)) return false;
  hashingThreads++;
  return true;
}

export interface StreamDigestOptions {
  /** A node:crypto hash name; default "sha256" (what a diff_id is). */
  algorithm?: string;
  /** Hash on a worker thread; default: when a second core is there (UNIONCTL_DIGEST_THREAD=1 / =0 forces it). */
  useWorker?: boolean;
  /**
   * The stream's size when known (a file). A stream known to be large skips the main-thread
   * hashing of its head and goes to the worker from the first byte.
   */
  expectedBytes?: number;
}

export class StreamDigest {
  private readonly algorithm: string;
  private useWorker: boolean;
  /** Main-thread hash: everything, when no worker is used; the head of the stream until one starts. */
  private local: Hash | undefined;
  /** Until the worker starts, bytes are hashed locally *and* kept in the ring (the worker restarts from byte 0). */
  private ring: Uint8Array<SharedArrayBuffer> | undefined;
  private ctl: BigInt64Array<SharedArrayBuffer> | undefined;
  private written = 0;
  /** Ring offset and length of the last reserve(). */
  private reserved = { pos: 0, length: 0 };
  /** `written` when the worker was last woken. */
  private wokenAt = 0;
  private worker: Worker | undefined;
  private failure: Error | undefined;
  private result: Promise<string> | undefined;
  private hex: string | undefined;

  constructor(opts: StreamDigestOptions = {}) {
    this.algorithm = opts.algorithm ?? 'sha256';
    this.useWorker = opts.useWorker ?? idleCoreAvailable();
    this.local = createHash(this.algorithm); // also checks that the algorithm exists
    // A thread takes ~20 ms to boot; started now, it is ready by the time the ring has filled up,
    // and it hashes from the first byte (no main-thread hash of the head).
    if (this.useWorker && opts.expectedBytes !== undefined && opts.expectedBytes > START_THRESHOLD) {
      if (!takeHashingThread()) {
        this.useWorker = false; // every spare core hashes another stream already
        return;
      }
      this.local = undefined;
      this.ring = new Uint8Array(new SharedArrayBuffer(RING_BYTES));
      this.ctl = new BigInt64Array(new SharedArrayBuffer(CTL_SLOTS * 8));
      this.startWorker();
    }
  }

  /**
   * Adds bytes (copied when needed: the caller may reuse the chunk afterwards). Returns a promise
   * only when the ring is full and the worker must catch up; await it before the next update.
   */
  update(chunk: Uint8Array): Promise<void> | undefined {
    if (!this.useWorker) {
      this.assertOpen();
      this.local!.update(chunk); // no worker, no ring: nothing to copy
      this.written += chunk.length;
      return undefined;
    }
    for (let off = 0; off < chunk.length;) {
      const view = this.reserve(chunk.length - off);
      if (view instanceof Promise) {
        const rest = chunk.subarray(off);
        return view.then(() => this.update(rest));
      }
      view.set(chunk.subarray(off, off + view.length));
      this.commit(view.length);
      off += view.length;
    }
    return undefined;
  }

  /**
   * Free ring space to read stream bytes into directly, without a copy: a view of 1..max bytes.
   * Fill it, then commit() how many bytes it holds. The bytes stay valid until about RING_BYTES
   * more have been committed (the ring wraps), so whoever reads them must be done by then.
   * A promise when the ring is full and the worker must catch up first.
   */
  reserve(max: number): Uint8Array | Promise<Uint8Array> {
    this.assertOpen();
    this.ring ??= new Uint8Array(new SharedArrayBuffer(RING_BYTES));
    this.ctl ??= new BigInt64Array(new SharedArrayBuffer(CTL_SLOTS * 8));
    const consumed = Atomics.load(this.ctl, CONSUMED);
    const free = RING_BYTES - (this.written - Number(consumed));
    if (free === 0) return this.waitForSpace(consumed).then(() => this.reserve(max));
    const pos = this.written % RING_BYTES;
    const length = Math.min(max, free, RING_BYTES - pos);
    this.reserved = { pos, length };
    return this.ring.subarray(pos, pos + length);
  }

  /** The first `n` bytes of the last reserved view now hold the next bytes of the stream. */
  commit(n: number): void {
    if (n > this.reserved.length) throw new Error('StreamDigest.commit of more than was reserved');
    const bytes = this.ring!.subarray(this.reserved.pos, this.reserved.pos + n);
    this.reserved = { pos: 0, length: 0 };
    this.written += n;
    const ctl = this.ctl!;
    if (this.local !== undefined) this.local.update(bytes);
    if (!this.useWorker) {
      Atomics.store(ctl, CONSUMED, BigInt(this.written)); // hashed already: the space is free again
      return;
    }
    if (this.local !== undefined && this.written > START_THRESHOLD) {
      if (!takeHashingThread()) {
        // No spare core: this thread goes on hashing (it has hashed every byte so far).
        this.useWorker = false;
        this.ring = undefined;
        Atomics.store(ctl, CONSUMED, BigInt(this.written));
        return;
      }
      this.local = undefined; // the worker takes over from byte 0
    }
    Atomics.store(ctl, WRITTEN, BigInt(this.written));
    // The worker hashes faster than an apply reads: woken per chunk, it would sleep again at once.
    if (this.written - this.wokenAt >= WAKE_EVERY_BYTES) this.wake();
    if (this.local === undefined) this.startWorker();
  }

  /** Waits (without blocking the event loop, so a failing worker is noticed) until the worker hashed more. */
  private waitForSpace(consumed: bigint): Promise<void> {
    this.startWorker();
    this.wake();
    const worker = this.worker!;
    worker.ref(); // keeps the event loop alive while we wait
    return Promise.resolve(waitAsync(this.ctl!, CONSUMED, consumed).value).then(() => {
      worker.unref();
      if (this.failure !== undefined) throw this.failure;
    });
  }

  private assertOpen(): void {
    if (this.result !== undefined || this.hex !== undefined) throw new Error('StreamDigest used after finish');
    if (this.failure !== undefined) throw this.failure;
  }

  /** Ends the stream; resolves to the hex digest. */
  finish(): Promise<string> {
    if (this.hex !== undefined) return Promise.resolve(this.hex);
    if (this.result !== undefined) return this.result;
    if (this.local !== undefined) {
      this.hex = this.local.digest('hex');
      void this.release(); // nothing to wait for: the digest is known
      return Promise.resolve(this.hex);
    }
    const worker = this.worker!;
    worker.ref(); // we now wait for its answer: keep the event loop alive until it comes
    this.result = new Promise<string>((resolve, reject) => {
      worker.once('message', (hex: string) => resolve(hex));
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`digest worker exited (code ${code}) before it answered`)));
    }).then((hex) => {
      this.hex = hex;
      void this.release(); // the answer came: the worker can go in the background
      return hex;
    });
    Atomics.store(this.ctl!, DONE, 1n);
    this.wake();
    return this.result;
  }

  /** The hex digest, once finish() has resolved. */
  get value(): string | undefined {
    return this.hex;
  }

  /** Stops the worker of an abandoned stream. */
  abort(): Promise<void> {
    return this.release();
  }

  /**
   * Tells the worker there is more. A notify is a futex call that also tends to pull the worker
   * onto this core at once: only done when the worker says it sleeps.
   */
  private wake(): void {
    this.wokenAt = this.written;
    Atomics.add(this.ctl!, SEQ, 1n);
    if (this.worker !== undefined && Atomics.load(this.ctl!, SLEEPS) === 1n) Atomics.notify(this.ctl!, SEQ);
  }

  /** Resolves once the worker is gone (its thread's descriptors closed). */
  private release(): Promise<void> {
    if (this.worker !== undefined) hashingThreads--;
    const ended = this.worker?.terminate();
    this.worker = undefined;
    this.ring = undefined;
    this.local = undefined;
    return ended === undefined ? Promise.resolve() : ended.then(() => undefined);
  }

  private startWorker(): void {
    if (this.worker !== undefined) return;
    const workerData: DigestWorkerData = {
      data: this.ring!.buffer,
      ctl: this.ctl!.buffer,
      algorithm: this.algorithm,
    };
    const worker = startWorker(WORKER_URL, workerData);
    worker.on('error', (e) => {
      this.failure = e;
      Atomics.notify(this.ctl!, CONSUMED); // unblock a producer waiting for space: its next update throws
    });
    worker.unref(); // an idle worker must not keep the process alive
    this.worker = worker;
  }
}

/**
 * `sha256:<hex>` of everything `stream` yields, through StreamDigest (on the worker when a core is
 * free): the diff ID of a layer tar. On failure the digest is aborted and the stream destroyed.
 */
export async function sha256Of(stream: AsyncIterable<Buffer>): Promise<string> {
  const digest = new StreamDigest();
  try {
    for await (const chunk of stream) await digest.update(chunk);
    return `sha256:${await digest.finish()}`;
  } catch (e) {
    (stream as { destroy?: () => void }).destroy?.();
    void digest.abort();
    throw e;
  }
}
