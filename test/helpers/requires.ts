/**
 * What a test needs of the machine, as reasons for node:test's `{ skip }`: each function returns
 * undefined when the need is met, else one line saying what is missing and why the test needs it.
 *
 *   it('mounts an overlay', { skip: rootMissing('mounts an overlay') }, () => …);
 *   describe('zstd frames', { skip: toolsMissing(['zstd']) }, () => …);
 *
 * `npm test` runs as root with every tool installed (scripts/setup-system.sh), so nothing skips
 * there; `npm run test:unit` may run as any user on a bare machine, where these say what was left out.
 */
import { execFileSync } from 'node:child_process';

/** True when this process runs as root (mount(2), mknod, chown, trusted.* xattrs work). */
export const IS_ROOT = process.getuid?.() === 0;

/** Why a test that needs root cannot run here; `what` says what it does that needs root. */
export function rootMissing(what: string): string | undefined {
  return IS_ROOT ? undefined : `needs root: ${what} (npm test runs it as root)`;
}

/** Why a test that runs `commands` cannot run here (not all of them on PATH). */
export function toolsMissing(commands: string[], hint = 'scripts/setup-system.sh installs them'): string | undefined {
  try {
    execFileSync('sh', ['-c', commands.map((c) => `command -v ${c}`).join(' && ')], { stdio: 'ignore' });
    return undefined;
  } catch {
    return `${commands.join(', ')}: not all installed (${hint})`;
  }
}
