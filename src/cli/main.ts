#!/usr/bin/env node
/**
 * unionctl's entry point: runs one command and turns whatever it throws into one error line and an
 * exit code. Nobody ever sees a stack trace unless --log-level debug (or UNIONCTL_DEBUG=1).
 *
 * Exit codes: 0 ok · 1 a UnionctlError (the library refused or failed, message says why) ·
 * 2 usage error (unknown command or option, missing argument) · 70 internal error (a bug: EX_SOFTWARE) ·
 * 77 a privilege is missing (EX_NOPERM: not root, or a capability dropped) · 141 stdout closed early
 * (like a process killed by SIGPIPE). The codes are in exit-codes.ts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CommanderError } from 'commander';
import { isUnionctlError } from '../errors.js';
import { stopRequested } from '../sys/stop-signals.js';
import { buildProgram } from './commands.js';
import { eprintln, FailuresReported, printError, printUnionctlError } from './output.js';
import { logs } from './log-level.js';
import { EXIT_ERROR, EXIT_INTERNAL, EXIT_NO_PERMISSION, EXIT_OK, EXIT_PIPE, EXIT_USAGE } from './exit-codes.js';

/**
 * The version in unionctl's package.json: the nearest one above this file (dist/src/cli/ in a build),
 * else the one in the working directory (a build into another outDir, run from the repo).
 */
function packageVersion(): string {
  const candidates: string[] = [];
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    candidates.push(join(dir, 'package.json'));
  }
  candidates.push(join(process.cwd(), 'package.json'));
  for (const file of candidates) {
    if (!existsSync(file)) continue;
    try {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'unionctl' && pkg.version) return pkg.version;
    } catch {
      // not ours or not JSON: keep looking
    }
  }
  return 'unknown';
}

/** Commander's messages look like "error: unknown option '--x'\n(Did you mean --y?)". */
function reportUsageError(e: CommanderError): number {
  // An argParser's refusal reads "option '--root <dir>' argument '' is invalid. the store root …".
  const [first = '', ...rest] = e.message
    .replace(/^error: /, '')
    .replace(/( is invalid(?: for argument '[^']*')?)\. /, '$1: ')
    .split('\n');
  const suggestion = rest
    .join(' ')
    .trim()
    .replace(/^\((.*)\)$/, '$1');
  printError(first, suggestion ? `${suggestion.charAt(0).toLowerCase()}${suggestion.slice(1)}` : "run 'unionctl --help' for usage");
  return EXIT_USAGE;
}

/** The privilege a system call that failed with EPERM or EACCES needed. */
function privilegeFor(syscall: string, detail: string): string | undefined {
  if (/^(mount|umount2?|fsopen|fsconfig|fsmount|move_mount|open_tree|mount_setattr)$/.test(syscall)) return 'CAP_SYS_ADMIN (to mount)';
  if (/chown$/.test(syscall)) return 'CAP_CHOWN (to give layer files their owners)';
  if (/mknod$/.test(syscall)) return 'CAP_MKNOD (to make device files and whiteouts)';
  if (/setxattr$/.test(syscall) && /trusted\./.test(detail)) return 'CAP_SYS_ADMIN (to set trusted.* attributes)';
  return undefined;
}

/**
 * An error that says a privilege is missing (EPERM / EACCES from the kernel, not a refusal of
 * unionctl's own): what failed and which privilege it takes. Undefined for anything else.
 */
function permissionProblem(e: unknown): { message: string; hint: string } | undefined {
  const err = e as { code?: unknown; errno?: unknown; syscall?: unknown; path?: unknown; message?: unknown };
  const errno = typeof err.errno === 'string' ? err.errno : err.code;
  if (errno !== 'EPERM' && errno !== 'EACCES') return undefined;
  if (isUnionctlError(e) && e.code !== 'SYSCALL') return undefined; // a message of ours already says what to do
  const syscall = typeof err.syscall === 'string' ? err.syscall : 'a system call';
  const detail = String(err.message ?? '');
  const privilege = privilegeFor(syscall, detail);
  const uid = process.geteuid?.() ?? 0;
  const message = isUnionctlError(e)
    ? `permission denied: ${e.message}`
    : `permission denied: ${syscall}${typeof err.path === 'string' ? ` ${err.path}` : ''} (${String(errno)})`;
  const needs = privilege ?? `permission to use ${typeof err.path === 'string' ? err.path : 'the store'} (a store is root's: mode 0700)`;
  const hint =
    uid !== 0
      ? `unionctl runs as uid ${uid}; this takes ${needs}: run it as root (sudo unionctl …)`
      : `this takes ${needs}, which the process does not have (a container or security policy without it)`;
  return { message, hint };
}

/** Prints `e` the one way errors are printed and returns the exit code it deserves. */
function report(e: unknown): number {
  if (e instanceof CommanderError) {
    // --help and --version end with a CommanderError too; they are not failures.
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return EXIT_OK;
    // No command at all: commander has printed the help on stderr already.
    if (e.code === 'commander.help') return EXIT_USAGE;
    return reportUsageError(e);
  }
  if ((e as NodeJS.ErrnoException)?.code === 'EPIPE') return EXIT_PIPE;
  if (e instanceof FailuresReported) return e.exitCode;
  const permission = permissionProblem(e);
  if (permission !== undefined) {
    printError(permission.message, permission.hint);
    if (logs('debug') && e instanceof Error) eprintln(e.stack);
    return EXIT_NO_PERMISSION;
  }
  if (isUnionctlError(e)) {
    printUnionctlError(e);
    return EXIT_ERROR;
  }
  const message = e instanceof Error ? e.message : String(e);
  printError(`internal error: ${message}`, logs('debug') ? undefined : 'this is a bug in unionctl; run with --log-level debug for details');
  if (logs('debug') && e instanceof Error) eprintln(e.stack);
  return EXIT_INTERNAL;
}

let exiting: Promise<never> | undefined;

/**
 * Waits until everything written to stdout and stderr has been handed to the OS, then exits with
 * `code`. The first call decides: a later one (the EPIPE that the flush itself raises on a closed
 * stdout, an error while exiting) returns the same promise instead of starting over.
 */
function exit(code: number): Promise<never> {
  // A stop signal is being handled (its mounts released): the process ends by that signal, and
  // what the interrupted command then failed with is not news.
  if (stopRequested() !== undefined) return new Promise<never>(() => undefined);
  exiting ??= flushThenExit(code);
  return exiting;
}

async function flushThenExit(code: number): Promise<never> {
  // A stream that failed (stdout after EPIPE) or was closed has nothing more to hand over.
  const flush = (stream: NodeJS.WriteStream) =>
    stream.destroyed || stream.errored !== null || stream.writableEnded
      ? Promise.resolve()
      : new Promise<void>((resolve) => stream.write('', () => resolve()));
  await Promise.race([Promise.all([flush(process.stdout), flush(process.stderr)]), new Promise((r) => setTimeout(r, 2000))]);
  process.exit(code);
}

async function main(argv: string[]): Promise<never> {
  // Errors thrown outside the command's promise chain (a stray stream 'error' event) still get the
  // one-line treatment instead of Node's stack dump.
  process.on('uncaughtException', (e) => void exit(report(e)));
  process.on('unhandledRejection', (e) => void exit(report(e)));
  // A reader that goes away (unionctl diff X | head -c1) makes stdout fail with EPIPE.
  process.stdout.on('error', (e) => void exit(report(e)));

  try {
    await buildProgram(packageVersion()).parseAsync(argv);
    return exit(EXIT_OK);
  } catch (e) {
    return exit(report(e));
  }
}

void main(process.argv);
