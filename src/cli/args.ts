/**
 * Argument parsers shared by the commands. An empty string is never a useful path, id or name:
 * `--root ''` would otherwise mean "the current directory" to path.resolve, and `-o ''` a file
 * named after nothing. Commander turns the InvalidArgumentError into a usage error (exit 2) that
 * names the option, for a value given on the command line and for one from the environment alike.
 */
import { InvalidArgumentError } from 'commander';

/** A commander argParser that refuses '' with "<what> must not be empty". */
export function nonEmpty(what: string): (value: string) => string {
  return (value: string) => {
    if (value === '') throw new InvalidArgumentError(`${what} must not be empty`);
    return value;
  };
}

/** nonEmpty for a variadic argument (`<id...>`): commander hands it each value and what it returned so far. */
export function nonEmptyEach(what: string): (value: string, previous: string[] | undefined) => string[] {
  const one = nonEmpty(what);
  return (value, previous) => [...(previous ?? []), one(value)];
}

/** What every listing command takes: -q/--quiet (ids only, one per line) and --no-trunc. */
export interface ListingOptions {
  quiet?: boolean;
  /** false with --no-trunc (commander's negated option). */
  trunc?: boolean;
}

/** A repeatable option's values, in the order given (commander's argParser for `--opt a --opt b`). */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
