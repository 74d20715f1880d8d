/**
 * The commander program as plain data: its visible commands, their arguments and options, and
 * what kind of value each argument and option takes. Shell completion (completion.ts) and the man
 * pages (man-page.ts) are generated from this model, so a new command, option or choice is
 * completed and documented without anyone writing it down a second time.
 *
 * What a value names is read off the definitions themselves, by one rule (valueKind below):
 *   - an option with `.choices()` takes one of them; `--driver` one of the registered drivers;
 *   - a value named `<file>` or `<path>` is a file name, `<dir>` a directory;
 *   - a value described as a reference ("… unique prefix", "… name or id", "… names or ids") names
 *     layers, images or either (refs), by whether its name and description speak of a layer, an
 *     image or both: "layer id or unique prefix, or image name or id" (mount) is either,
 *     "layer ids or unique prefixes" (rm) layers, `<image>` "name or id" (tag) images;
 *   - anything else is free text (a new id, a registry reference, a credential).
 * A new argument that names layers or images is completed as soon as it is described the way the
 * others are.
 */
import { Command, type Argument, type Option } from 'commander';
import { driverNames } from '../graph/registry.js';

/**
 * What an argument or an option's value is. 'words': one of `words` (choices, driver names);
 * 'layers' / 'images' / 'refs': ids of the store's layers, names and ids of its images, or both;
 * 'text': anything (nothing to offer).
 */
export type ValueKind = 'text' | 'words' | 'files' | 'dirs' | 'layers' | 'images' | 'refs';

export interface ValueModel {
  kind: ValueKind;
  /** The candidates of a 'words' value. */
  words: readonly string[];
}

export interface ArgumentModel {
  name: string;
  description: string;
  required: boolean;
  variadic: boolean;
  value: ValueModel;
}

export interface OptionModel {
  /** As defined: "-o, --output <file>". */
  flags: string;
  short?: string;
  long?: string;
  description: string;
  /** The value's name ("file" for `<file>`); undefined for a flag. */
  valueName?: string;
  /** The value is optional (`[value]`). */
  valueOptional: boolean;
  value?: ValueModel;
  defaultValue?: string;
  choices?: readonly string[];
  env?: string;
}

export interface CommandModel {
  name: string;
  aliases: readonly string[];
  description: string;
  arguments: readonly ArgumentModel[];
  /** The command's own options (-h included), not the global ones. */
  options: readonly OptionModel[];
}

export interface ProgramModel {
  name: string;
  description: string;
  /** The program's options: they work before and after every command name. */
  globalOptions: readonly OptionModel[];
  commands: readonly CommandModel[];
}

const REFERENCE = /unique prefix|names? or ids?/i;

/** The rule of the module header: what a value with this name and description names. */
export function valueKind(name: string, description: string, choices?: readonly string[], long?: string): ValueModel {
  if (choices !== undefined && choices.length > 0) return { kind: 'words', words: choices };
  if (long === '--driver') return { kind: 'words', words: driverNames() };
  if (name === 'file' || name === 'path') return { kind: 'files', words: [] };
  if (name === 'dir') return { kind: 'dirs', words: [] };
  if (REFERENCE.test(description)) {
    const text = `${name} ${description}`;
    const layer = /\blayers?\b/i.test(text);
    const image = /\bimages?\b/i.test(text);
    if (layer && image) return { kind: 'refs', words: [] };
    if (layer) return { kind: 'layers', words: [] };
    if (image) return { kind: 'images', words: [] };
  }
  return { kind: 'text', words: [] };
}

function describeArgument(a: Argument): ArgumentModel {
  return {
    name: a.name(),
    description: a.description,
    required: a.required,
    variadic: a.variadic,
    value: valueKind(a.name(), a.description, a.argChoices),
  };
}

/** "file" of "-o, --output <file>"; undefined for a flag. */
function valueNameOf(flags: string): string | undefined {
  return /[<[]([^>\]]+?)(?:\.\.\.)?[>\]]/.exec(flags)?.[1];
}

function shownDefault(o: Option): string | undefined {
  if (o.defaultValueDescription !== undefined) return o.defaultValueDescription;
  if (o.negate || o.defaultValue === undefined || typeof o.defaultValue === 'boolean') return undefined;
  return Array.isArray(o.defaultValue) ? o.defaultValue.join(', ') : String(o.defaultValue);
}

function describeOption(o: Option): OptionModel {
  const valueName = valueNameOf(o.flags);
  return {
    flags: o.flags,
    short: o.short,
    long: o.long,
    description: o.description,
    valueName,
    valueOptional: o.optional,
    value: valueName === undefined ? undefined : valueKind(valueName, o.description, o.argChoices, o.long),
    defaultValue: shownDefault(o),
    choices: o.argChoices,
    env: o.envVar,
  };
}

function describeCommand(cmd: Command): CommandModel {
  return {
    name: cmd.name(),
    aliases: cmd.aliases(),
    description: cmd.description(),
    arguments: cmd.registeredArguments.map(describeArgument),
    options: cmd.createHelp().visibleOptions(cmd).map(describeOption),
  };
}

/** The commands of `program` as its help lists them: hidden ones and commander's own `help` left out. */
export function visibleCommands(program: Command): Command[] {
  return program
    .createHelp()
    .visibleCommands(program)
    .filter((c) => program.commands.includes(c));
}

/** The model of `program`: its commands as its help lists them (hidden ones and commander's `help` left out). */
export function programModel(program: Command): ProgramModel {
  const visible = visibleCommands(program);
  return {
    name: program.name(),
    description: program.description(),
    globalOptions: program.createHelp().visibleOptions(program).map(describeOption),
    commands: visible.map(describeCommand),
  };
}
