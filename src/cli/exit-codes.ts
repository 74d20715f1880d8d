/**
 * unionctl's exit codes, with what each means: main.ts exits with them, and the man page's EXIT
 * STATUS section is written from the same list, so the two cannot disagree.
 */
export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;
/** fsck's "errors left uncorrected": `unionctl check` found problems that are still there. */
export const EXIT_PROBLEMS = 4;
export const EXIT_INTERNAL = 70;
export const EXIT_NO_PERMISSION = 77;
export const EXIT_PIPE = 141;

export const EXIT_STATUSES: ReadonlyArray<{ code: number; meaning: string }> = [
  { code: EXIT_OK, meaning: 'success' },
  { code: EXIT_ERROR, meaning: 'the command failed: the message on stderr says why (and, in a hint, what to do about it)' },
  { code: EXIT_USAGE, meaning: 'usage error: an unknown command or option, a missing or invalid argument' },
  { code: EXIT_PROBLEMS, meaning: 'unionctl check: the store has problems that are still there (as fsck: errors left uncorrected)' },
  { code: EXIT_INTERNAL, meaning: 'internal error, a bug in unionctl (EX_SOFTWARE); --log-level debug shows its stack' },
  { code: EXIT_NO_PERMISSION, meaning: 'a privilege is missing (EX_NOPERM): not root, or a capability dropped' },
  { code: EXIT_PIPE, meaning: 'stdout was closed before the output was written (as by SIGPIPE)' },
];
