/**
 * zstd streams are decoded by the `zstd` program or by fzstd (src/archive/zstd-program.ts); tests
 * of zstd decoding run once per decoder, forced with UNIONCTL_ZSTD:
 *
 *   describeEachZstdDecoder('zstd frames', (decoder) => { it('decodes …', async () => …); });
 *
 * and zstdChildren() finds the decoder processes this test process has running (none should be
 * left once a stream is done with).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe } from 'node:test';
import type { ZstdDecoder } from '../../src/archive/zstd-program.js';
import { toolsMissing } from './requires.js';

export const ZSTD_DECODERS: readonly ZstdDecoder[] = ['native', 'js'];

/** One describe block per decoder, "`name` (native decoder)" and "`name` (js decoder)", with UNIONCTL_ZSTD set for its tests. */
export function describeEachZstdDecoder(name: string, body: (decoder: ZstdDecoder) => void): void {
  for (const decoder of ZSTD_DECODERS) {
    const skip = decoder === 'native' ? toolsMissing(['zstd'], 'the native decoder is the zstd program') : undefined;
    describe(`${name} (${decoder} decoder)`, { skip }, () => {
      let saved: string | undefined;
      before(() => {
        saved = process.env.UNIONCTL_ZSTD;
        process.env.UNIONCTL_ZSTD = decoder;
      });
      after(() => {
        if (saved === undefined) delete process.env.UNIONCTL_ZSTD;
        else process.env.UNIONCTL_ZSTD = saved;
      });
      body(decoder);
    });
  }
}

/** The pids of this process's child processes named zstd (from /proc/<pid>/stat: comm and ppid). */
export function zstdChildren(): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // "pid (comm) state ppid …": comm may hold spaces, so split after its closing parenthesis.
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (comm === 'zstd' && ppid === process.pid) pids.push(Number(name));
  }
  return pids;
}

/** Whether a process with this pid exists (a zombie, not yet reaped, still does). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
