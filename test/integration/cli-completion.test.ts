/**
 * `unionctl completion bash|zsh|fish` (issue 14, point 16): each script is valid for its shell, and
 * completing with it offers what the command definitions say: commands, options, choices, driver
 * names, file names, and from a real store (vfs on a private tmpfs, made by import and load) layer
 * ids and image names, from the store a --root on the line (or UNIONCTL_ROOT) names. bash is driven
 * through its completion function with COMP_WORDS/COMP_CWORD set, fish with `complete -C`; zsh,
 * which completes only inside its line editor, is checked by `zsh -n` and by asking the script's
 * definitions what each argument takes. The hidden `__complete` prints nothing, makes no store and
 * exits 0 where there is no store.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Option } from 'commander';
import { buildProgram } from '../../src/cli/commands.js';
import { completionScript } from '../../src/cli/completion.js';
import { CLI_MAIN, runCli, showResult } from '../helpers/cli.js';
import { makeScratch, scratchMissing, type Scratch } from '../helpers/scratch.js';
import { toolsMissing } from '../helpers/requires.js';

const SAMPLE = join(process.env.UNIONCTL_REPO ?? process.cwd(), 'fixtures', 'sample-docker.tar');
const SHELL_ENV = { ...process.env, UNIONCTL_ROOT: undefined, FORCE_COLOR: undefined };

function script(shell: string): string {
  const r = runCli(['completion', shell]);
  assert.equal(r.status, 0, showResult(r));
  assert.equal(r.stderr, '');
  return r.stdout;
}

/** Runs `code` in `shell`; `unionctl` there is the CLI under test. */
function inShell(shell: 'bash' | 'fish' | 'zsh', code: string, env: Record<string, string | undefined> = {}): string {
  const define =
    shell === 'fish'
      ? `function unionctl; ${process.execPath} ${CLI_MAIN} $argv; end\n`
      : `unionctl() { ${process.execPath} ${CLI_MAIN} "$@"; }\n`;
  const merged: Record<string, string | undefined> = { ...SHELL_ENV, ...env };
  for (const k of Object.keys(merged)) if (merged[k] === undefined) delete merged[k];
  const r = spawnSync(shell, ['-c', define + code], { encoding: 'utf8', env: merged as NodeJS.ProcessEnv });
  assert.equal(r.status, 0, `${shell} exited ${r.status}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`);
  return r.stdout;
}

let bashScript = '';

/** What bash's completion function offers for `words` (the last one being completed). */
function bashComplete(words: string[], env: Record<string, string | undefined> = {}): string[] {
  const array = words.map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ');
  const out = inShell(
    'bash',
    `${bashScript}\nCOMP_WORDS=(${array}); COMP_CWORD=${words.length - 1}; _unionctl; printf '%s\\n' "\${COMPREPLY[@]}"`,
    env,
  );
  return out.split('\n').filter(Boolean);
}

/** What fish offers for the command line `line` (the candidates, descriptions dropped). */
function fishComplete(line: string, fishScript: string, env: Record<string, string | undefined> = {}): string[] {
  const out = inShell('fish', `${fishScript}\ncomplete -C ${JSON.stringify(line)}`, env);
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\t')[0]!);
}

describe('completion scripts', () => {
  before(() => {
    bashScript = script('bash');
  });

  it('are refused for an unknown shell, with the choices', () => {
    const r = runCli(['completion', 'tcsh']);
    assert.equal(r.status, 2, showResult(r));
    assert.match(r.stderr, /bash, zsh, fish/);
  });

  it('bash: passes bash -n', () => {
    const r = spawnSync('bash', ['-n'], { input: bashScript, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  it('bash: completes commands, options, choices, drivers and file names', () => {
    assert.deepEqual(bashComplete(['unionctl', 'mou']), ['mount', 'mounts']);
    const commands = bashComplete(['unionctl', '']);
    for (const c of ['mount', 'images', 'completion', 'export-storage', 'unmount']) assert.ok(commands.includes(c), c);
    assert.ok(!commands.includes('__complete'), 'hidden commands are left out');
    const mountOptions = bashComplete(['unionctl', 'mount', '--']);
    for (const o of ['--rw', '--name', '--mount-label', '--root', '--log-level', '--help']) assert.ok(mountOptions.includes(o), o);
    assert.ok(!mountOptions.includes('--all'), "umount's --all is not mount's");
    assert.deepEqual(bashComplete(['unionctl', '--log-level', 'd']), ['debug']);
    assert.deepEqual(bashComplete(['unionctl', 'ls', '--log-level=w']), ['warn']);
    assert.deepEqual(bashComplete(['unionctl', 'ls', '--log-level', '=', 'e']), ['error'], 'as bash splits --opt=value');
    assert.deepEqual(bashComplete(['unionctl', 'save', 'x', '--compress', '']), ['none', 'gzip', 'zstd']);
    assert.deepEqual(bashComplete(['unionctl', 'completion', '']), ['bash', 'zsh', 'fish']);
    assert.deepEqual(bashComplete(['unionctl', '--driver', 'overl']), ['overlay', 'overlay2']);
    assert.ok(bashComplete(['unionctl', 'diff', 'x', '-o', '/et']).includes('/etc'), '-o takes a file');
    assert.ok(bashComplete(['unionctl', 'import', '/et']).includes('/etc'), "import's argument is a file");
    assert.deepEqual(bashComplete(['unionctl', 'pull', '']), [], 'a registry reference: nothing to offer');
  });

  it('bash: completes nothing from a store that is not there, and makes none', () => {
    assert.deepEqual(bashComplete(['unionctl', '--root', '/tmp/unionctl-no-such-store', 'mount', '']), []);
    assert.ok(!existsSync('/tmp/unionctl-no-such-store'));
    const r = runCli(['__complete', 'refs', '--root', '/tmp/unionctl-no-such-store']);
    assert.deepEqual([r.status, r.stdout, r.stderr], [0, '', '']);
    assert.ok(!existsSync('/tmp/unionctl-no-such-store'));
  });

  it('zsh: passes zsh -n, and its definitions say what each value is', { skip: toolsMissing(['zsh']) }, () => {
    const zsh = script('zsh');
    assert.match(zsh, /^#compdef unionctl\n/);
    const r = spawnSync('zsh', ['-n'], { input: zsh, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    // The definitions and functions, without the last lines (which call compdef, from compinit).
    const definitions = zsh.slice(0, zsh.indexOf('\nif [[ ${funcstack'));
    const questions = [
      '_unionctl_argument mount 0',
      '_unionctl_argument rm 3',
      '_unionctl_argument tag 0',
      '_unionctl_argument tag 1',
      '_unionctl_argument import 0',
      '_unionctl_option_value mount --log-level',
      '_unionctl_option_value diff -o',
      '_unionctl_commands | grep -c "^mount:"',
    ];
    const asked = inShell('zsh', `${definitions}\n${questions.join('\n')}`);
    assert.deepEqual(asked.trim().split('\n'), ['refs', 'layers', 'images', 'text', 'files', 'words debug info warn error', 'files', '1']);
  });

  it('fish: passes fish --no-execute and completes commands, options and choices', { skip: toolsMissing(['fish']) }, () => {
    const fish = script('fish');
    // fish reads a script to check from a file only (from a pipe it says "Is a directory").
    const dir = mkdtempSync(join(tmpdir(), 'unionctl-completion-'));
    try {
      writeFileSync(join(dir, 'unionctl.fish'), fish);
      const r = spawnSync('fish', ['--no-execute', join(dir, 'unionctl.fish')], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.deepEqual(fishComplete('unionctl mou', fish), ['mount', 'mounts']);
    assert.ok(fishComplete('unionctl --root /x mount --', fish).includes('--rw'), 'the command after a global option with its value');
    assert.deepEqual(fishComplete('unionctl --log-level ', fish).sort(), ['debug', 'error', 'info', 'warn']);
    assert.deepEqual(fishComplete('unionctl save --format ', fish).sort(), ['docker', 'oci']);
  });

  it('follow the definitions: a command added to the program is completed', () => {
    const program = buildProgram('0.0.0');
    program
      .command('frobnicate')
      .argument('<layer>', 'layer id or unique prefix')
      .addOption(new Option('--wibble <how>', 'how').choices(['gently', 'firmly']));
    const bash = completionScript(program, 'bash');
    assert.match(bash, /'frobnicate:'/);
    assert.match(bash, /'frobnicate --wibble'\) echo 'words gently firmly'/);
    assert.match(bash, /frobnicate\) _unionctl_nth "\$2" 0 'layers'/);
    assert.match(completionScript(program, 'fish'), /__unionctl_using frobnicate' -l wibble -x -a 'gently firmly'/);
  });
});

describe('completion of layer ids and image names from a store', { skip: scratchMissing }, () => {
  let scratch: Scratch | undefined;
  let root = '';
  let layer = '';

  before(() => {
    bashScript = script('bash');
    scratch = makeScratch({ size: '256m' });
    root = join(scratch.dir, 'root');
    const src = join(scratch.dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'hello'), 'hello\n');
    const tar = join(scratch.dir, 'hello.tar');
    assert.equal(spawnSync('tar', ['-C', src, '-cf', tar, '.']).status, 0);
    const imported = runCli(['--root', root, '--driver', 'vfs', 'import', tar]);
    assert.equal(imported.status, 0, showResult(imported));
    layer = imported.stdout.trim().slice(0, 12);
    const loaded = runCli(['--root', root, 'load', SAMPLE]);
    assert.equal(loaded.status, 0, showResult(loaded));
  });
  after(() => scratch?.dispose());

  it('__complete lists short layer ids, image names and image ids', () => {
    const of = (kind: string) => runCli(['__complete', kind, '--root', root]);
    const layers = of('layers');
    assert.equal(layers.status, 0, showResult(layers));
    assert.equal(layers.stderr, '');
    const ls = runCli(['--root', root, 'ls', '-q']).stdout.trim().split('\n');
    assert.deepEqual(layers.stdout.trim().split('\n').sort(), ls.sort(), 'what ls -q lists');
    const images = of('images').stdout.trim().split('\n');
    assert.ok(images.includes('sample-app:1'), images.join(' '));
    assert.ok(
      images.some((i) => /^[0-9a-f]{12}$/.test(i)),
      'the image ids, short',
    );
    assert.ok(!images.includes(layer));
    const refs = of('refs').stdout.trim().split('\n');
    assert.ok(refs.includes(layer) && refs.includes('sample-app:1'));
    assert.equal(of('bogus').stdout, '');
  });

  it('bash: rm offers layers, rmi images, mount both, from the --root on the line or UNIONCTL_ROOT', () => {
    assert.ok(bashComplete(['unionctl', '--root', root, 'rm', '']).includes(layer));
    assert.ok(!bashComplete(['unionctl', '--root', root, 'rm', '']).includes('sample-app:1'), 'rm takes layers only');
    assert.deepEqual(bashComplete(['unionctl', `--root=${root}`, 'rmi', 'sam']), ['sample-app:1']);
    const mount = bashComplete(['unionctl', 'mount', '--root', root, '']);
    assert.ok(mount.includes(layer) && mount.includes('sample-app:1'), mount.join(' '));
    assert.deepEqual(bashComplete(['unionctl', 'mount', layer.slice(0, 6)], { UNIONCTL_ROOT: root }), [layer]);
    assert.ok(bashComplete(['unionctl', 'diff', 'x', '--parent', ''], { UNIONCTL_ROOT: root }).includes(layer), '--parent takes a layer');
    // bash splits the word at ':': what it gets back is the part after it.
    assert.deepEqual(bashComplete(['unionctl', '--root', root, 'history', 'sample-app', ':', '']), ['1']);
  });

  it('fish: offers layer ids and image names', { skip: toolsMissing(['fish']) }, () => {
    const fish = script('fish');
    assert.ok(fishComplete(`unionctl --root ${root} rm `, fish).includes(layer));
    assert.deepEqual(fishComplete(`unionctl --root=${root} save sam`, fish), ['sample-app:1']);
    assert.ok(fishComplete('unionctl mount ', fish, { UNIONCTL_ROOT: root }).includes('sample-app:1'));
  });
});
