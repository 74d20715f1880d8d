/**
 * The man pages, written from the command definitions (command-model.ts) as completion is:
 * unionctl(1) with the global options, the list of commands, the environment and the exit
 * status, and unionctl-COMMAND(1) for each command with its synopsis, arguments and options
 * (defaults, choices). scripts/gen-man.mjs writes them at build time into dist/man/, which the
 * package ships and installs (package.json "man").
 *
 * The text is roff with the man(7) macros: every `-` is written `\-` (a real minus, which man
 * renders as the hyphen you can type and search for), a backslash `\e`, and a line that would start
 * with `.` or `'` (a request) is protected with `\&`.
 */
import type { Command } from 'commander';
import type { ArgumentModel, CommandModel, OptionModel, ProgramModel } from './command-model.js';
import { programModel } from './command-model.js';
import { EXIT_STATUSES } from './exit-codes.js';

export interface ManPage {
  /** "unionctl.1", "unionctl-mount.1". */
  file: string;
  text: string;
}

/**
 * Variables unionctl reads besides the ones options take their value from (--root's UNIONCTL_ROOT,
 * --log-level's UNIONCTL_LOG_LEVEL, listed from the option definitions): log-level.ts, output.ts,
 * src/image/registry/auth.ts.
 */
const OTHER_ENVIRONMENT: ReadonlyArray<{ name: string; meaning: string }> = [
  { name: 'UNIONCTL_DEBUG', meaning: '1: log as --log-level debug does (timings, and the stack of every error).' },
  { name: 'NO_COLOR', meaning: 'set and not empty: no colour in tables and messages (https://no-color.org).' },
  { name: 'COLUMNS', meaning: 'the width tables are fitted to when stdout is not a terminal (default: no limit).' },
  { name: 'REGISTRY_AUTH_FILE', meaning: 'the auth file pull, push, login and logout use (default ~/.docker/config.json).' },
];

/** Text as roff reads it literally (see the module header). */
export function roffText(text: string): string {
  return text.replace(/\s+/g, ' ').trim().replace(/\\/g, '\\e').replace(/-/g, '\\-').replace(/^[.']/, '\\&$&');
}

const bold = (s: string) => `\\fB${roffText(s)}\\fR`;
const italic = (s: string) => `\\fI${roffText(s)}\\fR`;

function header(title: string, version: string): string[] {
  // .nh: no hyphenation, so option and page names stay whole (and searchable).
  return [`.TH ${roffText(title.toUpperCase())} 1 "" "unionctl ${roffText(version)}" "User Commands"`, '.nh'];
}

const section = (name: string) => `.SH ${name}`;

/** `id`, `[id...]`, `id...` as a synopsis shows an argument. */
function synopsisArgument(a: ArgumentModel): string {
  const name = `${italic(a.name)}${a.variadic ? '...' : ''}`;
  return a.required ? name : `[${name}]`;
}

/** "\fB\-o\fR, \fB\-\-output\fR \fIfile\fR". */
function optionTerm(o: OptionModel): string {
  const names = [o.short, o.long].filter((n): n is string => n !== undefined).map(bold);
  if (o.valueName === undefined) return names.join(', ');
  const value = italic(o.valueName);
  return `${names.join(', ')} ${o.valueOptional ? `[${value}]` : value}`;
}

function optionEntry(o: OptionModel): string[] {
  const notes = [
    o.choices === undefined ? undefined : `One of: ${o.choices.join(', ')}.`,
    o.defaultValue === undefined ? undefined : `Default: ${o.defaultValue}.`,
    o.env === undefined ? undefined : `Environment: ${o.env}.`,
  ].filter((n): n is string => n !== undefined);
  return ['.TP', optionTerm(o), roffText(o.description), ...(notes.length > 0 ? ['.br', roffText(notes.join(' '))] : [])];
}

/** A list of term and paragraph pairs (.TP). */
function entries(items: ReadonlyArray<{ term: string; text: string }>): string[] {
  return items.flatMap((i) => ['.TP', i.term, roffText(i.text)]);
}

const pageName = (c: CommandModel) => `unionctl-${c.name}`;

function commandPage(model: ProgramModel, c: CommandModel, version: string): ManPage {
  const aliases = c.aliases.length === 0 ? [] : ['.PP', roffText(`Also called: ${c.aliases.map((a) => `unionctl ${a}`).join(', ')}.`)];
  const lines = [
    ...header(pageName(c), version),
    section('NAME'),
    `${roffText(pageName(c))} \\- ${roffText(c.description)}`,
    section('SYNOPSIS'),
    `.B unionctl ${roffText(c.name)}`,
    [`[${italic('options')}]`, ...c.arguments.map(synopsisArgument)].join(' '),
    section('DESCRIPTION'),
    roffText(c.description),
    ...aliases,
    ...(c.arguments.length === 0
      ? []
      : [section('ARGUMENTS'), ...entries(c.arguments.map((a) => ({ term: italic(a.name), text: a.description })))]),
    section('OPTIONS'),
    ...c.options.flatMap(optionEntry),
    section('GLOBAL OPTIONS'),
    roffText(
      `The options of unionctl(1) work before and after the command name: ${model.globalOptions.map((o) => o.long ?? o.short).join(', ')}.`,
    ),
    section('SEE ALSO'),
    '.BR unionctl (1)',
  ];
  return { file: `${pageName(c)}.1`, text: `${lines.join('\n')}\n` };
}

function environment(model: ProgramModel): Array<{ term: string; text: string }> {
  const fromOptions = model.globalOptions.flatMap((o) =>
    o.env === undefined ? [] : [{ term: bold(o.env), text: `the default of ${o.long ?? o.short}: ${o.description}.` }],
  );
  return [...fromOptions, ...OTHER_ENVIRONMENT.map((e) => ({ term: bold(e.name), text: e.meaning }))];
}

function mainPage(model: ProgramModel, version: string): ManPage {
  const lines = [
    ...header('unionctl', version),
    section('NAME'),
    `unionctl \\- ${roffText(model.description)}`,
    section('SYNOPSIS'),
    '.B unionctl',
    `[${italic('global options')}] ${italic('command')} [${italic('options')}] [${italic('arguments')}]`,
    section('DESCRIPTION'),
    roffText(`${model.description}.`),
    '.PP',
    roffText(
      'Layers are named by their id or any unique prefix of it (tables show 12 characters); where a command takes a layer or an image, an image name or id names its top layer. ' +
        'Global options work before and after the command name. ' +
        'unionctl completion bash|zsh|fish prints a shell completion script; each command has its own page, unionctl-COMMAND(1).',
    ),
    section('GLOBAL OPTIONS'),
    ...model.globalOptions.flatMap(optionEntry),
    section('COMMANDS'),
    ...model.commands.flatMap((c) => [
      '.TP',
      `.BR ${roffText(pageName(c))} (1)`,
      roffText(c.aliases.length === 0 ? c.description : `${c.description} (also: ${c.aliases.join(', ')})`),
    ]),
    section('ENVIRONMENT'),
    ...entries(environment(model)),
    section('EXIT STATUS'),
    ...entries(EXIT_STATUSES.map((s) => ({ term: bold(String(s.code)), text: s.meaning }))),
    section('SEE ALSO'),
    model.commands.map((c, i) => `.BR ${roffText(pageName(c))} (1)${i < model.commands.length - 1 ? ',' : ''}`).join('\n'),
  ];
  return { file: 'unionctl.1', text: `${lines.join('\n')}\n` };
}

/** unionctl.1 and one page per command `program` shows in its help. */
export function manPages(program: Command, version: string): ManPage[] {
  const model = programModel(program);
  return [mainPage(model, version), ...model.commands.map((c) => commandPage(model, c, version))];
}
