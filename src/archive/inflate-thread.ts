/**
 * gzip inflated on a worker thread of its own, for a compressed layer blob streamed from a
 * registry or an archive: inflateOnThread(compressed) gives the inflated bytes, and the sha256 of
 * the compressed bytes (the blob digest) once they are all read.
 *
 * Why: a pull is as fast as its largest layer's one pipeline (socket → blob sha256 → zlib → tar →
 * files), and that pipeline ran on the main thread, with zlib's thread-pool round trips waiting on
 * its event loop. Here the blob's hashing, inflating and their buffers (and garbage) move to a
 * thread whose only job they are; the main thread reads the output from a shared ring without an
 * allocation per chunk. Measured on the pull benchmark's image (2 cores, 8 alternating pulls,
 * bench/reports/pull-and-import-levers-2026-12-08.md): 2.62 s against 2.88 s, CPU 3.71 s against
 * 3.91 s; peak RSS 173 MB against 151 (the worker's isolate, the ring and the pieces in flight),
 * which is why there is one such thread per spare core at most (inflateThreadFree): the other
 * layers are inflated on the main thread, as before.
 *
 * Two ways in:
 * - From a source the worker reads by itself (SourceOnThread: a registry's blob, whose GET is then
 *   made on the worker, image/registry/blob-source.ts): the compressed bytes never reach this
 *   thread, nor do their socket Buffers and the garbage they make. Measured on the same bench (8
 *   alternating pulls): 2.08 s against 2.30 s, peak RSS 188 MB against 177.
 * - From chunks this thread reads and sends there (an image archive's members).
 *
 * How, from chunks:
 * - The compressed chunks are gathered into 1 MiB pieces (copies: their producer may reuse its
 *   buffers) and transferred to the worker by postMessage; at most IN_FLIGHT bytes are sent and
 *   not yet inflated. The worker transfers each piece back once inflated, to be filled again: a
 *   stream allocates only the few pieces in flight. (Pieces left as garbage in the worker, and a
 *   zlib stream's output buffers, made its peak RSS ~200 MB: they wait for V8's external-memory
 *   GC.)
 * - The worker inflates straight into a RING_BYTES ring (inflate-worker.ts). Each chunk handed out is a view of the
 *   ring (lent, see LeasedChunk), valid until the next one is asked for: only then is its space
 *   given back to the worker.
 * - Errors: zlib's is BAD_TAR ("corrupt gzip stream", as on the main thread); the input's own
 *   error passes through as it is (a source's is remade here: errorFromPost). Leaving early
 *   (return(), or an error) stops the pump, closes the input and terminates the worker (and with
 *   it a source's connection); the digest then never settles.
 *
 * UNIONCTL_INFLATE_THREAD=1 / =0 forces the choice (tests, benchmarks).
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startWorker } from '../sys/index.js';
import { corruptStream } from './decompress.js';
import {
  CONSUMED,
  CTL_SLOTS,
  ENDED,
  FAILED,
  SEQ,
  STATE,
  WRITTEN,
  errorFromPost,
  signalChange,
  type FromInflateWorker,
  type InflateWorkerData,
  type ToInflateWorker,
  type WorkerSource,
} from './inflate-ring.js';
import type { LeasedChunk } from './types.js';

/** The worker's module, spelt from the parent directory so the path holds in the bundled CLI too (see stream-digest.ts). */
const WORKER_URL = new URL('../archive/inflate-worker.js', import.meta.url);
const RING_BYTES = 8 * 1024 * 1024;
/** Compressed bytes per message, and the most handed out at once. */
const PIECE_BYTES = 1024 * 1024;
/** Compressed bytes sent to the worker and not yet inflated, at most (about; one piece more). */
const IN_FLIGHT = 4 * 1024 * 1024;

/** Atomics.waitAsync (Node 16+; not in TypeScript's ES2022 lib). */
const waitAsync = (Atomics as unknown as { waitAsync(a: BigInt64Array, index: number, value: bigint): { value: string | Promise<string> } })
  .waitAsync;

let inflateThreads = 0;

/**
 * Is a thread free for inflating another stream? One per spare core at most (each costs ~45 MB);
 * none on one core. UNIONCTL_INFLATE_THREAD=1 / =0 forces the answer.
 */
export function inflateThreadFree(): boolean {
  const forced = process.env.UNIONCTL_INFLATE_THREAD;
  if (forced === '1' || forced === '0') return forced === '1';
  return availableParallelism() >= 2 && inflateThreads < availableParallelism() - 1;
}

export interface InflatedStream {
  /** The inflated bytes, lent: each chunk is valid until the next is asked for. Read once. */
  chunks: AsyncIterable<LeasedChunk>;
  /** The hex sha256 of the compressed bytes; settles once `chunks` has been read to its end. */
  digest: Promise<string>;
  /** Gives the thread up when `chunks` will not be read to its end (a failure elsewhere): resolves once it is gone. */
  abort(): Promise<void>;
}

/**
 * A compressed stream the worker reads by itself (WorkerSource: a registry blob, whose GET is then
 * made on the worker), and the signal that stops it from this thread.
 */
export interface SourceOnThread extends WorkerSource {
  signal?: AbortSignal;
}

/**
 * Inflates the gzip stream `compressed` on a worker thread (see the module comment): chunks this
 * thread reads and sends there, or a source the worker reads by itself. The thread counts as taken
 * from now on (inflateThreadFree); it starts, and the input is read, once `chunks` is first read.
 * A source's failure is remade here (errorFromPost: a UnionctlError keeps its code and hint).
 */
export function inflateOnThread(compressed: AsyncIterable<Buffer> | SourceOnThread): InflatedStream {
  const run = new InflateRun(compressed);
  return { chunks: run.output(), digest: run.digest, abort: () => run.release() };
}

/** One stream's worker, its pump (input → worker), its output reader, and how it ended. */
class InflateRun {
  readonly digest: Promise<string>;
  private resolveDigest!: (hex: string) => void;
  private readonly ctl = new BigInt64Array(new SharedArrayBuffer(CTL_SLOTS * 8));
  private readonly ring = new SharedArrayBuffer(RING_BYTES);
  private worker: Worker | undefined;
  /** Why the stream failed: zlib's complaint (BAD_TAR), the input's error, or the worker's. */
  private failure: unknown;
  private inFlight = 0;
  /** Pieces the worker has given back: filled again, so that a stream allocates only the few in flight. */
  private readonly spare: Buffer[] = [];
  private wakePump: (() => void) | undefined;
  private stopped = false;
  private released: Promise<void> | undefined;
  private unfollowSignal: (() => void) | undefined;
  /** Resolves once `failure` is known (the worker marks the ring failed before its message arrives). */
  private readonly failed: Promise<void>;
  private resolveFailed!: () => void;

  constructor(private readonly compressed: AsyncIterable<Buffer> | SourceOnThread) {
    this.digest = new Promise((resolve) => (this.resolveDigest = resolve));
    this.failed = new Promise((resolve) => (this.resolveFailed = resolve));
    inflateThreads++;
  }

  /** Starts the worker, and the pump (or the source's signal). */
  private start(): void {
    const input = this.compressed;
    const fromSource = !(Symbol.asyncIterator in input);
    const workerData: InflateWorkerData = { ring: this.ring, ctl: this.ctl.buffer };
    if (fromSource) workerData.source = { module: input.module, export: input.export, arg: input.arg };
    const worker = startWorker(WORKER_URL, workerData);
    worker.on('message', (m: FromInflateWorker) => this.onMessage(m));
    worker.on('error', (e) => this.fail(e));
    worker.on('exit', (code) => {
      if (this.released === undefined) this.fail(new Error(`the inflate thread exited (code ${code}) before the stream ended`));
    });
    // Kept referenced until released: its answers (the digest, zlib's complaint) are awaited, and
    // an unreferenced worker lets the process exit while a promise still waits for one.
    this.worker = worker;
    if (!fromSource) void this.pump(input);
    else if (input.signal !== undefined) this.followSignal(input.signal);
  }

  /** An abort of `signal` fails the stream with its reason (the worker cannot see it). */
  private followSignal(signal: AbortSignal): void {
    const onAbort = () => this.fail(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    this.unfollowSignal = () => signal.removeEventListener('abort', onAbort);
  }

  /** Stops the pump and the worker, once; the thread is free again when it resolves. */
  release(): Promise<void> {
    this.released ??= (async () => {
      this.stopped = true;
      this.wake();
      this.unfollowSignal?.();
      await this.worker?.terminate();
      inflateThreads--;
    })();
    return this.released;
  }

  private onMessage(m: FromInflateWorker): void {
    if ('taken' in m) {
      this.inFlight -= m.taken;
      this.spare.push(Buffer.from(m.piece.buffer, m.piece.byteOffset, m.piece.byteLength));
      this.wake();
    } else if ('digest' in m) this.resolveDigest(m.digest);
    else if ('sourceError' in m) this.fail(errorFromPost(m.sourceError));
    else this.fail(corruptStream('gzip', Object.assign(new Error(m.error), { code: m.code })));
  }

  /** Records the first failure and wakes the reader (and the pump, which stops). */
  private fail(e: unknown): void {
    if (this.failure === undefined) this.failure = e;
    this.resolveFailed();
    this.stopped = true;
    Atomics.store(this.ctl, STATE, FAILED);
    signalChange(this.ctl);
    this.wake();
  }

  private wake(): void {
    const wake = this.wakePump;
    this.wakePump = undefined;
    wake?.();
  }

  /** Sends the input to the worker in PIECE_BYTES pieces, IN_FLIGHT at most; closes the input when stopped early. */
  private async pump(compressed: AsyncIterable<Buffer>): Promise<void> {
    let piece: Buffer = Buffer.allocUnsafeSlow(PIECE_BYTES);
    let filled = 0;
    try {
      for await (const chunk of compressed) {
        for (let off = 0; off < chunk.length;) {
          const n = chunk.copy(piece, filled, off);
          filled += n;
          off += n;
          if (filled < PIECE_BYTES) continue;
          if (!(await this.send(piece, filled))) return; // leaving the loop closes the input
          piece = this.spare.pop() ?? Buffer.allocUnsafeSlow(PIECE_BYTES);
          filled = 0;
        }
        if (this.stopped) return;
      }
      if (filled > 0 && !(await this.send(piece, filled))) return;
      this.post({ end: true });
    } catch (e) {
      this.fail(e); // the input's own error, as it is
    }
  }

  /** Transfers `piece` (its own ArrayBuffer) with `length` bytes filled, once there is room in flight; false when stopped. */
  private async send(piece: Buffer, length: number): Promise<boolean> {
    while (this.inFlight >= IN_FLIGHT && !this.stopped) await new Promise<void>((resolve) => (this.wakePump = resolve));
    if (this.stopped) return false;
    this.inFlight += length;
    this.post({ piece, length }, [piece.buffer as ArrayBuffer]);
    return true;
  }

  private post(m: ToInflateWorker, transfer: ArrayBuffer[] = []): void {
    this.worker!.postMessage(m, transfer);
  }

  /** The inflated bytes as views of `ring`; see InflatedStream.chunks. */
  async *output(): AsyncGenerator<LeasedChunk, void, undefined> {
    if (this.released !== undefined) throw new Error('the inflated stream was read after it was given up');
    const ring = Buffer.from(this.ring);
    let consumed = 0n;
    this.start();
    try {
      for (;;) {
        // SEQ first, then what it guards (see SEQ): a change after these loads moves SEQ.
        const seq = Atomics.load(this.ctl, SEQ);
        const state = Atomics.load(this.ctl, STATE);
        if (state === FAILED) {
          await this.failed;
          throw this.failure;
        }
        const written = Atomics.load(this.ctl, WRITTEN); // final once ENDED is seen: it is marked after the last write
        if (written === consumed) {
          if (state === ENDED) {
            await this.digest; // posted before the end was marked: it settles before the thread is let go
            return;
          }
          await this.waitForChange(seq);
          continue;
        }
        const pos = Number(consumed % BigInt(RING_BYTES));
        const n = Math.min(Number(written - consumed), RING_BYTES - pos, PIECE_BYTES);
        yield ring.subarray(pos, pos + n) as LeasedChunk;
        consumed += BigInt(n); // the caller is done with it: the worker may write there again
        Atomics.store(this.ctl, CONSUMED, consumed);
        Atomics.notify(this.ctl, CONSUMED);
      }
    } finally {
      await this.release(); // also when left early: stops the pump, which closes the input
    }
  }

  /** Waits, without blocking the event loop, until SEQ moves from `seq`: more output, the end, or a failure. */
  private async waitForChange(seq: bigint): Promise<void> {
    await waitAsync(this.ctl, SEQ, seq).value;
  }
}
