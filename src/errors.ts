/**
 * Typed errors. Every error unionctl raises on purpose is a UnionctlError: a `code` callers can
 * branch on, a message that names the thing that failed, and, where there is one, what the user
 * can do about it (`hint`). The CLI prints
 * `unionctl: <message>` (plus the hint) without a stack trace and exits non-zero.
 */
export type ErrorCode =
  | 'INVALID_ID' // an id that is not [A-Za-z0-9][A-Za-z0-9_.-]*
  | 'NOT_FOUND' // a layer, parent, file or image that does not exist
  | 'EXISTS' // a layer id already taken
  | 'IN_USE' // a layer still mounted or referenced, or held by an image or a running load
  | 'HAS_CHILDREN' // a layer (or snapshot) other layers are built on
  | 'WRONG_STATE' // a snapshot in the wrong state for the call (a Prepare on a parent that is not committed)
  | 'BAD_TAR' // a tar stream that cannot be parsed (checksum, truncation, bad number)
  | 'UNSAFE_ENTRY' // a tar entry that would write, change or read outside the layer
  | 'UNSUPPORTED' // a driver or feature this kernel / filesystem cannot provide
  | 'BAD_OPTION' // unknown storage option, bad option value, unknown driver name
  | 'LOCKED' // a lock that could not be taken
  | 'SYSCALL' // a system call failed (carries the errno name)
  | 'CORRUPT' // on-disk state that does not match the format (or a registry blob that does not match its digest)
  | 'DENIED' // a registry refused the credentials, or asked for some and there were none (HTTP 401, 403)
  | 'REGISTRY' // a registry that cannot be reached, fails (5xx), limits the rate (429) or answers what the protocol does not allow
  | 'USAGE'; // a CLI / API call with wrong arguments

/** The mark every UnionctlError carries: a registered symbol, the same in every copy of this module. */
const UNIONCTL_ERROR = Symbol.for('unionctl.UnionctlError');

export class UnionctlError extends Error {
  readonly code: ErrorCode;
  /** What to do about it, one sentence. */
  readonly hint?: string;
  constructor(code: ErrorCode, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'UnionctlError';
    this.code = code;
    this.hint = opts.hint;
    Object.defineProperty(this, UNIONCTL_ERROR, { value: true });
  }

  /**
   * `e instanceof UnionctlError` holds for an error made by any copy of this module in the
   * process: the bundled CLI (scripts/bundle-cli.mjs) and the modules it loads apart (the bench
   * runner), or two installed versions of unionctl, each have their own class. Subclasses
   * (SysCallError, …) are told apart by their prototype chain as usual.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this !== UnionctlError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && UNIONCTL_ERROR in value;
  }
}

/** A system call failed. `errno` is the symbolic name (EINVAL, ENOENT, …). */
export class SysCallError extends UnionctlError {
  readonly errno: string;
  readonly errnum: number;
  readonly syscall: string;
  readonly path?: string;
  constructor(syscall: string, errnum: number, errno: string, path?: string, detail?: string) {
    const where = path === undefined ? '' : ` ${path}`;
    super('SYSCALL', `${syscall}${where}: ${errno}${detail ? ` (${detail})` : ''}`);
    this.name = 'SysCallError';
    this.errno = errno;
    this.errnum = errnum;
    this.syscall = syscall;
    this.path = path;
  }
}

/** A tar entry was refused because it would reach outside the layer. */
export class UnsafeEntryError extends UnionctlError {
  readonly entry: string;
  constructor(entry: string, why: string) {
    super('UNSAFE_ENTRY', `refusing tar entry ${JSON.stringify(entry)}: ${why}`, {
      hint: 'the layer tarball is malformed or malicious; nothing was written outside the layer',
    });
    this.name = 'UnsafeEntryError';
    this.entry = entry;
  }
}

/** The tar stream itself is broken. */
export class TarFormatError extends UnionctlError {
  constructor(message: string, opts: { entry?: string; offset?: number } = {}) {
    const at = [
      opts.entry === undefined ? '' : `entry ${JSON.stringify(opts.entry)}`,
      opts.offset === undefined ? '' : `offset ${opts.offset}`,
    ]
      .filter(Boolean)
      .join(', ');
    super('BAD_TAR', `invalid tar stream${at ? ` (${at})` : ''}: ${message}`, {
      hint: 'check that the file is a complete, uncompressed/gzip/zstd tar archive',
    });
    this.name = 'TarFormatError';
  }
}

/** The command that examines a store and says how to repair it: every CORRUPT hint points to it. */
export const CHECK_COMMAND = 'unionctl check';

/**
 * CORRUPT: on-disk state that does not match the store's format (a damaged record, a symlink where
 * the layout has none). `message` names the file; `repair` says what can be done by hand.
 */
export function corruptError(message: string, opts: { repair?: string; cause?: unknown } = {}): UnionctlError {
  return new UnionctlError('CORRUPT', message, {
    hint: `run ${CHECK_COMMAND} to see what is damaged and how to repair it${opts.repair ? `; ${opts.repair}` : ''}`,
    cause: opts.cause,
  });
}

/** One error for the damaged files a listing left out: the error itself when there is one, else one CORRUPT naming them all. */
export function damagedFilesError(errors: readonly UnionctlError[]): UnionctlError {
  if (errors.length === 1) return errors[0]!;
  return corruptError(`${errors.length} files of the store are damaged: ${errors.map((e) => e.message).join('; ')}`, {
    repair: 'restore them from a backup',
  });
}

const LAYER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** A safe layer id: 1–128 characters of [A-Za-z0-9_.-], starting with a letter or digit (it becomes a directory name). */
export function isValidId(id: unknown): id is string {
  return typeof id === 'string' && LAYER_ID.test(id) && id.length <= 128;
}

/** Throws INVALID_ID unless `id` is a safe layer id. */
export function assertValidId(id: string, what = 'layer id'): void {
  if (!isValidId(id)) {
    throw new UnionctlError('INVALID_ID', `invalid ${what} ${JSON.stringify(id)}`, {
      hint: 'ids are 1-128 characters of [A-Za-z0-9_.-] and start with a letter or digit',
    });
  }
}

export function isUnionctlError(e: unknown): e is UnionctlError {
  return e instanceof UnionctlError;
}

/**
 * USAGE for a prefix (a short id, as tables show it) that several things start with. The message
 * lists them (the first 10) so the user can pick one.
 */
export function ambiguousPrefixError(what: string, candidates: readonly string[]): UnionctlError {
  const shown = candidates.slice(0, 10).join(', ');
  const more = candidates.length > 10 ? ` and ${candidates.length - 10} more` : '';
  return new UnionctlError('USAGE', `${what} is ambiguous: it starts ${candidates.length} ids (${shown}${more})`, {
    hint: 'give more characters of the id',
  });
}
