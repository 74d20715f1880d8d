/**
 * How much the CLI says on stderr besides its output and its errors: `--log-level error|warn|info|
 * debug` (or UNIONCTL_LOG_LEVEL; UNIONCTL_DEBUG=1 is debug). error: only the error a command fails
 * with; warn: and warnings (an xattr a filesystem refused…); info (the default): and what the store
 * did on its own (crash recovery); debug: and timings of each step, and the stack of every error.
 * `unionctl serve` logs at the same level.
 */
import { LOG_LEVELS, type LogLevel } from '../serve/log.js';

export { LOG_LEVELS, type LogLevel };

let level: LogLevel = process.env.UNIONCTL_DEBUG === '1' ? 'debug' : 'info';

/** Sets the level for the rest of the process (the parsed --log-level). */
export function setLogLevel(next: LogLevel): void {
  level = next;
}

export function currentLogLevel(): LogLevel {
  return level;
}

/** True when lines at `at` are written at the current level. */
export function logs(at: LogLevel): boolean {
  return LOG_LEVELS.indexOf(at) >= LOG_LEVELS.indexOf(level);
}
