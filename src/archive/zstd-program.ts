/**
 * zstd decompression by the `zstd` program (Debian package zstd): the native decoder behind
 * decompress.ts. fzstd, the pure-JS decoder, made zstd the slowest way to import a layer (13.85 s
 * for a 709 MB tar against 5.91 s for gzip through zlib); the program decodes on a core of its own
 * while this process parses the tar.
 *
 * Which decoder a zstd stream gets (zstdDecoder()), read when each stream is opened:
 *   UNIONCTL_ZSTD unset or `auto`  the program when one is on PATH (looked up once), else fzstd
 *   UNIONCTL_ZSTD=native           the program; an error (UNSUPPORTED) when there is none
 *   UNIONCTL_ZSTD=js               fzstd (tests run both; the benchmark compares them)
 * A program that is found but then cannot be started falls back to fzstd as well (no bytes have
 * been read by then), and the lookup remembers it is gone.
 *
 * The child is `zstd -dc`: it verifies frame checksums, reads multi-frame streams and skips
 * skippable frames by itself; `--memory` lets it decode the large windows that `--long`
 * compression makes, up to the 2 GiB fzstd accepts (without it zstd stops at 128 MiB). One
 * difference is left: a gzip or xz member after a zstd frame is decoded by the program (which reads
 * every format it knows, whatever --format says) and refused by fzstd. zstdOutput() owns the child: the
 * input is written into its stdin one chunk at a time (the next one asked for only once the pipe
 * has taken the last, so a producer that reuses its buffers is safe), its stdout is read with
 * back-pressure, and whatever ends the stream (its end, an error, the consumer's return()) kills
 * and reaps the child and closes the input.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { UnionctlError } from '../errors.js';

export type ZstdDecoder = 'native' | 'js';

/** The program's arguments: decompress to stdout, nothing but errors on stderr, windows up to 2 GiB. */
const ZSTD_ARGS = ['-d', '-c', '-q', '--no-progress', '--memory=2048MB'];
/** zstd's error messages are one line; keep no more than this of its stderr. */
const STDERR_LIMIT = 4096;

/** The zstd program failed (nonzero exit, killed): its stderr says why. decompress.ts turns it into BAD_TAR. */
export class ZstdProgramError extends Error {
  override name = 'ZstdProgramError';
}

let programPath: string | null | undefined;

/** The zstd program on PATH, looked up once; undefined when there is none. */
export function zstdProgram(): string | undefined {
  if (programPath === undefined) programPath = lookupOnPath('zstd') ?? null;
  return programPath ?? undefined;
}

function lookupOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/** The decoder a zstd stream opened now gets (see the module header). */
export function zstdDecoder(): ZstdDecoder {
  const forced = process.env.UNIONCTL_ZSTD ?? 'auto';
  if (forced === 'js') return 'js';
  if (forced !== 'native' && forced !== 'auto')
    throw new UnionctlError('BAD_OPTION', `UNIONCTL_ZSTD=${forced}: unknown zstd decoder`, {
      hint: 'use native, js or auto (the default)',
    });
  if (zstdProgram() !== undefined) return 'native';
  if (forced === 'auto') return 'js';
  throw new UnionctlError('UNSUPPORTED', 'UNIONCTL_ZSTD=native, but there is no zstd program on PATH', {
    hint: 'install zstd (apt-get install zstd) or unset UNIONCTL_ZSTD to use the built-in decoder',
  });
}

export type ZstdChild = ChildProcessByStdio<Writable, Readable, Readable>;

/** Starts `zstd -dc`; undefined when it cannot be started (then it is not looked for again). */
export function startZstd(): ZstdChild | undefined {
  const program = zstdProgram();
  if (program === undefined) return undefined;
  const child = spawn(program, ZSTD_ARGS, { stdio: ['pipe', 'pipe', 'pipe'] });
  // A spawn that failed has no pid, and reports the failure (ENOENT, EACCES) as an 'error' event.
  child.on('error', () => {});
  if (child.pid !== undefined) return child;
  programPath = null;
  return undefined;
}

/**
 * The decompressed bytes of `raw`, decoded by `child` (from startZstd), as the pipe delivers them
 * (64 KiB pieces). Throws ZstdProgramError when zstd fails (corrupt or truncated data) and the
 * input's own error, as it is, when reading `raw` fails.
 */
export async function* zstdOutput(child: ZstdChild, raw: AsyncIterable<Buffer>): AsyncGenerator<Buffer, void, undefined> {
  const exited = exitOf(child);
  const stderr = collectStderr(child.stderr);
  const feeding = feed(raw, child);
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer; // the pipe waits while the consumer does
    const [status, input] = await Promise.all([exited, feeding]);
    if (input.failed) throw input.error;
    if (status !== 0) throw new ZstdProgramError(zstdMessage(stderr(), status));
  } catch (e) {
    // The input failed while the child was still reading it: that, not zstd's complaint, is the news.
    const input = await settledFeed(child, feeding);
    throw input.failed ? input.error : e;
  } finally {
    child.kill('SIGKILL'); // a no-op once it has exited
    child.stdout.destroy();
    child.stderr.destroy();
    await Promise.all([exited, settledFeed(child, feeding)]);
  }
}

type FeedResult = { failed: false } | { failed: true; error: unknown };

/** Stops the feeder (destroying stdin ends a pending write) and waits for it to close the input. */
function settledFeed(child: ZstdChild, feeding: Promise<FeedResult>): Promise<FeedResult> {
  child.stdin.destroy();
  return feeding;
}

/**
 * Writes `raw` into the child's stdin, each chunk once the last has been taken, then ends it. A
 * failure of the input kills the child; a failed write (the child exited, stdin destroyed) just
 * stops: the child's exit status tells what happened. The input is closed either way.
 */
async function feed(raw: AsyncIterable<Buffer>, child: ZstdChild): Promise<FeedResult> {
  const stdin = child.stdin;
  stdin.on('error', () => {}); // EPIPE when zstd stops early: its exit status says why
  const source = raw[Symbol.asyncIterator]();
  try {
    for (;;) {
      let next: IteratorResult<Buffer>;
      try {
        next = await source.next();
      } catch (error) {
        child.kill('SIGKILL');
        return { failed: true, error };
      }
      if (next.done) break;
      if (!(await written(stdin, next.value))) return { failed: false };
    }
    stdin.end();
    return { failed: false };
  } finally {
    await source.return?.();
  }
}

/** Writes `chunk`; resolves once it is taken (true) or the stream failed or was destroyed (false). */
function written(stream: Writable, chunk: Buffer): Promise<boolean> {
  if (stream.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onClose = () => resolve(false);
    stream.once('close', onClose);
    stream.write(chunk, (err) => {
      stream.off('close', onClose);
      resolve(err === null || err === undefined);
    });
  });
}

/** Resolves with the exit code, or -1 when the child was killed by a signal; also when it has already exited. */
function exitOf(child: ZstdChild): Promise<number> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  if (child.signalCode !== null) return Promise.resolve(-1);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? -1)));
}

/** The first STDERR_LIMIT bytes of the child's stderr, read as they come. */
function collectStderr(stderr: Readable): () => string {
  const parts: Buffer[] = [];
  let bytes = 0;
  stderr.on('data', (chunk: Buffer) => {
    if (bytes >= STDERR_LIMIT) return;
    parts.push(chunk);
    bytes += chunk.length;
  });
  stderr.on('error', () => {});
  return () => Buffer.concat(parts).toString('utf8', 0, Math.min(bytes, STDERR_LIMIT));
}

/**
 * zstd's complaint without its name and the stdin marker: `/*stdin*\ : Decoding error (36) :
 * Restored data doesn't match checksum` → `Decoding error (36) : Restored data doesn't match checksum`.
 */
function zstdMessage(stderr: string, status: number): string {
  const line = stderr
    .split('\n')
    .map((l) =>
      l
        .replace(/^zstd: /, '')
        .replace(/^\/\*stdin\*\\\s*:\s*/, '')
        .trim(),
    )
    .filter(Boolean)
    .join('; ');
  if (line !== '') return line;
  return status === -1 ? 'the zstd program was killed' : `the zstd program exited with status ${status}`;
}
