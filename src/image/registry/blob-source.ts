/**
 * A layer blob fetched on the inflate thread (archive/inflate-thread.ts) instead of this one: the
 * worker imports this module and makes the GET itself, with a client that goes on from this
 * thread's (its options and authorization), so the compressed bytes — a 64 KiB Buffer per socket
 * read, their copies into pieces, the messages that carry them and the garbage they leave — never
 * reach the main thread, which only reads the inflated bytes. Resuming a cut download, retries
 * and errors are blobChunks' own, run there; an error comes back with its code and hint.
 */
import type { SourceOnThread } from '../../archive/inflate-thread.js';
import { RegistryClient, type RegistryClientState } from './client.js';

/** The worker's argument: the client's state and the blob. */
export interface BlobOnThread {
  client: RegistryClientState;
  digest: string;
  size?: number;
}

/** The source a worker reads `digest` from (inflateOnThread); `signal` aborts it from this thread. */
export function blobSource(client: RegistryClient, digest: string, size: number | undefined, signal?: AbortSignal): SourceOnThread {
  const arg: BlobOnThread = { client: client.state(), digest, ...(size === undefined ? {} : { size }) };
  return { module: 'image/registry/blob-source.js', export: 'blobChunksOnThread', arg, ...(signal === undefined ? {} : { signal }) };
}

/** Run on the worker: the blob's bytes as they arrive (RegistryClient.blobChunks). */
export async function* blobChunksOnThread(arg: BlobOnThread): AsyncGenerator<Buffer, void, undefined> {
  yield* RegistryClient.fromState(arg.client).blobChunks(arg.digest, arg.size);
}
