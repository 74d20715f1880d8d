/**
 * The servers' log (`unionctl serve`, both modes): one line per event on stderr, `<ISO time>
 * <level> <message>`, at or above the level asked for (`--log-level`; debug adds one line per
 * request; refusals a client expects stay at debug, failures nobody expected are errors). Control characters in a
 * message (from an id or a path dockerd sent) are shown escaped, never written raw.
 */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  /** True when debug lines are written (so a caller can skip building them). */
  readonly debugEnabled: boolean;
}

const escapeControls = (s: string): string =>
  // eslint-disable-next-line no-control-regex
  s.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** A logger writing to `write` (default stderr) the lines at `level` and above. */
export function makeLogger(level: LogLevel, write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const threshold = LOG_LEVELS.indexOf(level);
  const at = (l: LogLevel) => (message: string) => {
    if (LOG_LEVELS.indexOf(l) >= threshold) write(`${new Date().toISOString()} ${l.padEnd(5)} ${escapeControls(message)}\n`);
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), debugEnabled: threshold === 0 };
}
