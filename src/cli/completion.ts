/**
 * `unionctl completion bash|zsh|fish`: a completion script for the shell, generated from the
 * program's own definitions (command-model.ts), so a new command, option or choice is completed
 * without anyone listing it here. Layer ids and image names are the store's: the scripts ask
 * `unionctl __complete layers|images|refs [--root R]` (hidden) for them, passing on a --root given
 * earlier on the line; UNIONCTL_ROOT is read by that command itself.
 *
 * bash and zsh share the definitions as a few shell functions (case statements, the same syntax in
 * both); each has its own small engine that walks the words typed so far. fish gets `complete`
 * lines. Every name that ends up in a script is checked to be a plain word, so nothing in a
 * description or choice can break out of the quoting.
 */
import { Argument, Command } from 'commander';
import type { ArgumentModel, CommandModel, OptionModel, ProgramModel, ValueModel } from './command-model.js';
import { programModel } from './command-model.js';
import { listImages } from '../image/index.js';
import { setLogLevel } from './log-level.js';
import { idShortener, println, shortImageId } from './output.js';
import type { WithStore } from './store-access.js';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

/** The hidden command the scripts call for the store's layer ids and image names. */
export const COMPLETE_COMMAND = '__complete';
const DYNAMIC_KINDS = ['layers', 'images', 'refs'] as const;
type DynamicKind = (typeof DYNAMIC_KINDS)[number];

// ---- shared: quoting and the definitions as data --------------------------------------------

const PLAIN_WORD = /^[A-Za-z0-9_][A-Za-z0-9_.,:/+=@-]*$|^-{1,2}[A-Za-z0-9][A-Za-z0-9-]*$/;

/** `word` itself; a name that would need quoting in a script is a bug in a definition. */
function plain(word: string): string {
  if (!PLAIN_WORD.test(word)) throw new Error(`completion: ${JSON.stringify(word)} is not a plain word`);
  return word;
}

/** A POSIX shell single-quoted string (bash, zsh). */
const shQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** A fish single-quoted string. */
const fishQuote = (s: string): string => `'${s.replace(/[\\']/g, (c) => `\\${c}`)}'`;

/** "files", "refs", "words debug info …": what a data function says of a value. */
function valueSpec(value: ValueModel): string {
  return value.kind === 'words' ? ['words', ...value.words.map(plain)].join(' ') : value.kind;
}

function optionNames(o: OptionModel): string[] {
  return [o.short, o.long].filter((n): n is string => n !== undefined).map(plain);
}

/** The command's names: its own and its aliases. */
const commandNames = (c: CommandModel): string[] => [c.name, ...c.aliases].map(plain);

/** The command's names as a case pattern. */
const commandPattern = (c: CommandModel): string => commandNames(c).join('|');

/**
 * The global options split in two: those every command has an own copy of (commander's --help) and
 * the others, which are added to each command's own.
 */
function globalOptionsOf(model: ProgramModel): { copied: OptionModel[]; shared: OptionModel[] } {
  const everywhere = (o: OptionModel) => model.commands.every((c) => c.options.some((own) => own.flags === o.flags));
  return { copied: model.globalOptions.filter(everywhere), shared: model.globalOptions.filter((o) => !everywhere(o)) };
}

/** A description on one line. */
function summary(description: string): string {
  return description.replace(/\s+/g, ' ').trim();
}

function casePrinting(pattern: string, lines: string[]): string {
  return `    ${pattern}) printf '%s\\n' ${lines.map(shQuote).join(' ')} ;;`;
}

/** "name:description" lines, as zsh's _describe takes them (bash keeps the names). */
const described = (names: string[], description: string): string[] => names.map((n) => `${n}:${summary(description)}`);

const optionLines = (options: readonly OptionModel[]): string[] => options.flatMap((o) => described(optionNames(o), o.description));

function shCommandsFunction(model: ProgramModel): string[] {
  const lines = model.commands.flatMap((c) => described(commandNames(c), c.description));
  return ['_unionctl_commands() {', `  printf '%s\\n' ${lines.map(shQuote).join(' ')}`, '}'];
}

function shOptionsFunction(model: ProgramModel): string[] {
  const globals = globalOptionsOf(model);
  return [
    '# $1: the command (empty before one). Prints "option:description" lines: its own, then the global ones.',
    '_unionctl_options() {',
    '  case $1 in',
    casePrinting("''", optionLines(globals.copied)),
    ...model.commands.map((c) => casePrinting(commandPattern(c), optionLines(c.options))),
    '  esac',
    `  printf '%s\\n' ${optionLines(globals.shared).map(shQuote).join(' ')}`,
    '}',
  ];
}

/** The case lines of _unionctl_option_value for a command's options, or (undefined) the global ones. */
function shValueCases(model: ProgramModel, c: CommandModel | undefined): string[] {
  return (c?.options ?? model.globalOptions).flatMap((o) => {
    if (o.value === undefined) return [];
    const patterns =
      c === undefined
        ? optionNames(o).map((n) => `*' ${n}'`)
        : commandNames(c).flatMap((name) => optionNames(o).map((n) => `'${name} ${n}'`));
    return [`    ${patterns.join('|')}) echo ${shQuote(valueSpec(o.value))} ;;`];
  });
}

function shValueFunction(model: ProgramModel): string[] {
  return [
    "# $1: the command, $2: an option. Prints what the option's value is; nothing for a flag.",
    '_unionctl_option_value() {',
    '  case "$1 $2" in',
    // A command's own options first: case takes the first pattern that matches.
    ...model.commands.flatMap((c) => shValueCases(model, c)),
    ...shValueCases(model, undefined),
    '  esac',
    '}',
  ];
}

function shArgumentFunction(model: ProgramModel): string[] {
  const argumentCase = (c: CommandModel) => {
    if (c.arguments.length === 0) return [];
    const variadic = c.arguments.at(-1)?.variadic === true ? 1 : 0;
    const specs = c.arguments.map((a) => shQuote(valueSpec(a.value))).join(' ');
    return [`    ${commandPattern(c)}) _unionctl_nth "$2" ${variadic} ${specs} ;;`];
  };
  return [
    '# $1: the command, $2: the index of an argument (from 0). Prints what that argument is.',
    '_unionctl_argument() {',
    '  case $1 in',
    ...model.commands.flatMap(argumentCase),
    '  esac',
    '}',
    '',
    '# $1: an index, $2: 1 when the last argument is variadic, then what each argument is.',
    '_unionctl_nth() {',
    '  local index=$1 variadic=$2',
    '  shift 2',
    '  if [ "$index" -lt $# ]; then',
    '    shift "$index"',
    '    echo "$1"',
    '  elif [ "$variadic" = 1 ]; then',
    '    shift $(($# - 1))',
    '    echo "$1"',
    '  fi',
    '}',
  ];
}

/** The sh functions bash's and zsh's engines read the definitions from. */
function shDefinitions(model: ProgramModel): string {
  return [
    '# The command definitions: generated, do not edit.',
    ...shCommandsFunction(model),
    '',
    ...shOptionsFunction(model),
    '',
    ...shValueFunction(model),
    '',
    ...shArgumentFunction(model),
  ].join('\n');
}

/**
 * The engine's first half, the same in bash and zsh: walks the words before the cursor (`words`,
 * from index `first` to `cword` - 1) for the command, the arguments given so far, a --root and an
 * option still waiting for its value.
 */
function shWalk(first: number): string {
  return `  local cmd='' root='' expect='' args=0 i w
  for ((i = ${first}; i < cword; i++)); do
    w=\${words[i]}
    if [[ -n $expect ]]; then
      [[ $expect == --root ]] && root=$w
      expect=''
      continue
    fi
    case $w in
      --root=*) root=\${w#--root=} ;;
      --*=*) ;;
      -*) [[ -n $(_unionctl_option_value "$cmd" "$w") ]] && expect=$w ;;
      *) if [[ -z $cmd ]]; then cmd=$w; else args=$((args + 1)); fi ;;
    esac
  done`;
}

const DYNAMIC_CALL = `unionctl ${COMPLETE_COMMAND} "$kind" \${root:+--root "$root"} 2>/dev/null`;

// ---- bash -----------------------------------------------------------------------------------

function bashScript(model: ProgramModel): string {
  return `# unionctl completion for bash: source <(unionctl completion bash)
# Generated by \`unionctl completion bash\` from unionctl's command definitions.

${shDefinitions(model)}

# words, cword: COMP_WORDS up to the cursor, with the words bash split at ':' and '=' (image names,
# --option=value) joined again.
_unionctl_words() {
  words=()
  cword=-1
  local i w glue=0
  for ((i = 0; i <= COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    if ((cword >= 0)) && [[ $w == [:=] || $glue == 1 ]]; then
      words[cword]+=$w
      if [[ $w == [:=] ]]; then glue=1; else glue=0; fi
    else
      words+=("$w")
      cword=$((cword + 1))
      glue=0
    fi
  done
}

# $1: what the value is, $2: what was typed of it, $3: what goes before each candidate.
_unionctl_values() {
  local -a spec=($1) found=()
  local kind=\${spec[0]} c
  case $kind in
    files) mapfile -t found < <(compgen -f -- "$2"); compopt -o filenames 2>/dev/null ;;
    dirs) mapfile -t found < <(compgen -d -- "$2"); compopt -o filenames 2>/dev/null ;;
    layers | images | refs) mapfile -t found < <(${DYNAMIC_CALL}) ;;
    words) found=("\${spec[@]:1}") ;;
  esac
  for c in "\${found[@]}"; do
    [[ $c == "$2"* ]] && COMPREPLY+=("$3$c")
  done
  return 0
}

# Adds the names of the "name:description" lines on stdin that start with $1.
_unionctl_names() {
  local line
  while IFS= read -r line; do
    [[ \${line%%:*} == "$1"* ]] && COMPREPLY+=("\${line%%:*}")
  done
  return 0
}

_unionctl() {
  local -a words
  local cword
  _unionctl_words
  local cur=\${words[cword]}
${shWalk(1)}
  COMPREPLY=()
  if [[ -n $expect ]]; then
    _unionctl_values "$(_unionctl_option_value "$cmd" "$expect")" "$cur" ''
  elif [[ $cur == --*=* ]]; then
    _unionctl_values "$(_unionctl_option_value "$cmd" "\${cur%%=*}")" "\${cur#*=}" "\${cur%%=*}="
  elif [[ $cur == -* ]]; then
    _unionctl_names "$cur" < <(_unionctl_options "$cmd")
  elif [[ -z $cmd ]]; then
    _unionctl_names "$cur" < <(_unionctl_commands)
  else
    _unionctl_values "$(_unionctl_argument "$cmd" "$args")" "$cur" ''
  fi
  # bash replaces only what follows the last ':' or '=' of the word (COMP_WORDBREAKS).
  if [[ $cur == *[:=]* ]]; then
    local before=\${cur%"\${cur##*[:=]}"}
    COMPREPLY=("\${COMPREPLY[@]#"$before"}")
  fi
  return 0
}

complete -F _unionctl unionctl
`;
}

// ---- zsh ------------------------------------------------------------------------------------

function zshScript(model: ProgramModel): string {
  return `#compdef unionctl
# unionctl completion for zsh: put this file as _unionctl in a directory of $fpath, or source it
# after compinit. Generated by \`unionctl completion zsh\` from unionctl's command definitions.

${shDefinitions(model)}

# $1: what the value is (see _unionctl_option_value).
_unionctl_values() {
  local -a spec found
  spec=(\${=1})
  local kind=$spec[1]
  case $kind in
    files) _files ;;
    dirs) _files -/ ;;
    layers | images | refs)
      found=(\${(f)"$(${DYNAMIC_CALL})"})
      compadd -a found
      ;;
    words) compadd -- \${spec[2,-1]} ;;
  esac
}

_unionctl() {
  local cword=$CURRENT
  local cur=\${words[CURRENT]}
${shWalk(2)}
  local -a lines
  if [[ -n $expect ]]; then
    _unionctl_values "$(_unionctl_option_value "$cmd" "$expect")"
  elif [[ $cur == --*=* ]]; then
    local option=\${cur%%=*}
    compset -P '*='
    _unionctl_values "$(_unionctl_option_value "$cmd" "$option")"
  elif [[ $cur == -* ]]; then
    lines=(\${(f)"$(_unionctl_options "$cmd")"})
    _describe -t options option lines
  elif [[ -z $cmd ]]; then
    lines=(\${(f)"$(_unionctl_commands)"})
    _describe -t commands 'unionctl command' lines
  else
    _unionctl_values "$(_unionctl_argument "$cmd" "$args")"
  fi
}

if [[ \${funcstack[1]} == _unionctl ]]; then
  _unionctl "$@"
else
  compdef _unionctl unionctl
fi
`;
}

// ---- fish -----------------------------------------------------------------------------------

/** What `complete` is told about a value: the arguments after -r/-x/-F. */
function fishValue(value: ValueModel): string {
  switch (value.kind) {
    case 'files':
      return '-r -F';
    case 'dirs':
      return "-x -a '(__fish_complete_directories)'";
    case 'words':
      return `-x -a ${fishQuote(value.words.map(plain).join(' '))}`;
    case 'layers':
    case 'images':
    case 'refs':
      return `-x -a '(__unionctl_candidates ${value.kind})'`;
    case 'text':
      return '-x';
  }
}

function fishOption(condition: string | undefined, o: OptionModel): string {
  const parts = ['complete -c unionctl'];
  if (condition !== undefined) parts.push(`-n ${fishQuote(condition)}`);
  if (o.short !== undefined) parts.push(`-s ${plain(o.short.slice(1))}`);
  if (o.long !== undefined) parts.push(`-l ${plain(o.long.slice(2))}`);
  if (o.value !== undefined) parts.push(fishValue(o.value));
  parts.push(`-d ${fishQuote(summary(o.description))}`);
  return parts.join(' ');
}

/** The arguments' completions: one line per kind of value the command's arguments take. */
function fishArguments(condition: string, args: readonly ArgumentModel[]): string[] {
  const values = new Map<string, ValueModel>();
  for (const a of args) if (a.value.kind !== 'text') values.set(valueSpec(a.value), a.value);
  return [...values.values()].map((v) => {
    const given = fishValue(v).replace(/^-[rx] /, '');
    return `complete -c unionctl -n ${fishQuote(condition)} ${given}`;
  });
}

/**
 * The fish functions the conditions call: the command on the line (global options that take a
 * value, `valued`, skipped with it), and the store's candidates.
 */
function fishHelpers(valued: string[]): string[] {
  return [
    '# The command on the line (the first word that is neither an option nor the value of one), if any.',
    'function __unionctl_command',
    '    set -l words (commandline -opc)',
    '    set -e words[1]',
    '    set -l skip 0',
    '    for w in $words',
    '        if test $skip = 1',
    '            set skip 0',
    '            continue',
    '        end',
    '        switch $w',
    `            case ${valued.join(' ')}`,
    '                set skip 1',
    "            case '-*'",
    "            case '*'",
    '                echo $w',
    '                return 0',
    '        end',
    '    end',
    '    return 1',
    'end',
    '',
    'function __unionctl_using',
    '    set -l cmd (__unionctl_command); or return 1',
    '    contains -- $cmd $argv',
    'end',
    '',
    '# $argv[1]: layers, images or refs. The store is the one a --root on the line names.',
    'function __unionctl_candidates',
    '    set -l words (commandline -opc)',
    '    set -l root',
    '    for i in (seq (count $words))',
    '        switch $words[$i]',
    '            case --root',
    '                set root --root $words[(math $i + 1)]',
    "            case '--root=*'",
    "                set root --root (string replace -- --root= '' $words[$i])",
    '        end',
    '    end',
    `    unionctl ${COMPLETE_COMMAND} $argv[1] $root 2>/dev/null`,
    'end',
    '',
  ];
}

function fishScript(model: ProgramModel): string {
  // The global options are completed everywhere: a command's copy of one (--help) is not repeated.
  const { copied } = globalOptionsOf(model);
  const valued = model.globalOptions.filter((o) => o.value !== undefined).flatMap(optionNames);
  const lines = [
    '# unionctl completion for fish: unionctl completion fish > ~/.config/fish/completions/unionctl.fish',
    "# Generated by `unionctl completion fish` from unionctl's command definitions.",
    '',
    ...fishHelpers(valued),
    'complete -c unionctl -f',
    ...model.commands.flatMap((c) =>
      commandNames(c).map((n) => `complete -c unionctl -n 'not __unionctl_command' -a ${n} -d ${fishQuote(summary(c.description))}`),
    ),
    ...model.globalOptions.map((o) => fishOption(undefined, o)),
  ];
  for (const c of model.commands) {
    const condition = `__unionctl_using ${commandNames(c).join(' ')}`;
    lines.push('', ...c.options.filter((o) => !copied.some((g) => g.flags === o.flags)).map((o) => fishOption(condition, o)));
    lines.push(...fishArguments(condition, c.arguments));
  }
  return `${lines.join('\n')}\n`;
}

/** The completion script for `shell`. */
export function completionScript(program: Command, shell: Shell): string {
  const model = programModel(program);
  if (shell === 'bash') return bashScript(model);
  if (shell === 'zsh') return zshScript(model);
  return fishScript(model);
}

// ---- the commands ---------------------------------------------------------------------------

/** The store's candidates of `kind`, one per line: short ids as `ls -q` shows them, image names and ids. */
async function printCandidates(withStore: WithStore, kind: DynamicKind, cmd: Command): Promise<void> {
  await withStore(cmd, async (store) => {
    const found: string[] = [];
    if (kind !== 'images') {
      const ids = (await store.list({ onDamaged: () => {} })).map((l) => l.id);
      const shown = idShortener(ids);
      found.push(...ids.map(shown));
    }
    if (kind !== 'layers') {
      const images = await listImages(store, { onDamaged: () => {} });
      found.push(...images.flatMap((i) => i.names), ...images.map((i) => shortImageId(i.id)));
    }
    for (const candidate of new Set(found)) println(candidate);
  });
}

/**
 * `__complete KIND`: for the scripts only, so hidden. Quick and silent: no store (or any other
 * failure) prints nothing and exits 0, and no store is made (withStore opens only one that exists).
 */
async function completeCommand(withStore: WithStore, kind: string, cmd: Command): Promise<void> {
  setLogLevel('error'); // what the store says about itself (recovery) is not a candidate
  if (!(DYNAMIC_KINDS as readonly string[]).includes(kind)) return;
  try {
    await printCandidates(withStore, kind as DynamicKind, cmd);
  } catch {
    // nothing to offer
  }
}

/** Adds `completion SHELL` and the hidden `__complete KIND` it calls back. */
export function addCompletionCommands(program: Command, withStore: WithStore): void {
  program
    .command('completion')
    .description('print a completion script for the shell: source <(unionctl completion bash); see unionctl-completion(1)')
    .addArgument(new Argument('<shell>', 'bash, zsh or fish').choices(SHELLS))
    .action((shell: Shell) => {
      process.stdout.write(completionScript(program, shell));
    });

  program
    .command(COMPLETE_COMMAND, { hidden: true })
    .description('print completion candidates, one per line (for the completion scripts)')
    .argument('<kind>', 'layers, images or refs')
    .action((kind: string, _opts: unknown, cmd: Command) => completeCommand(withStore, kind, cmd));
}
