/**
 * The man pages `npm run build` writes into dist/man from the command definitions (issue 14, point
 * 16): unionctl(1) lists every command, the environment and the exit codes; every command an
 * installed package shows in its help has unionctl-COMMAND(1) with its synopsis and every one of its
 * options; package.json ships and installs exactly those pages; man renders them.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildProgram } from '../../src/cli/commands.js';
import { programModel } from '../../src/cli/command-model.js';
import { EXIT_STATUSES } from '../../src/cli/exit-codes.js';
import { manPages, roffText } from '../../src/cli/man-page.js';
import { toolsMissing } from '../helpers/requires.js';

const REPO = process.env.UNIONCTL_REPO ?? process.cwd();
const MAN_DIR = fileURLToPath(new URL('../../man', import.meta.url));
const model = programModel(buildProgram('0.0.0', { asInstalled: true }));
const page = (file: string) => readFileSync(join(MAN_DIR, file), 'utf8');

describe('man pages', () => {
  it('are written for unionctl and each command of an installed package, and nothing else', () => {
    const expected = ['unionctl.1', ...model.commands.map((c) => `unionctl-${c.name}.1`)].sort();
    assert.deepEqual(readdirSync(MAN_DIR).sort(), expected);
    assert.ok(expected.includes('unionctl-mount.1') && expected.includes('unionctl-completion.1'));
    assert.ok(!expected.includes('unionctl-bench.1') && !expected.includes('unionctl-__complete.1'), 'no hidden command has a page');
  });

  it('are what package.json ships and installs', () => {
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { files: string[]; man: string[] };
    assert.ok(pkg.files.includes('dist/man'));
    assert.deepEqual(pkg.man.map((m) => m.replace(/^\.\/dist\/man\//, '')).sort(), readdirSync(MAN_DIR).sort());
  });

  it('each command page has its name, synopsis, arguments and every option', () => {
    for (const c of model.commands) {
      const text = page(`unionctl-${c.name}.1`);
      assert.ok(text.startsWith(`.TH ${roffText(`unionctl-${c.name}`).toUpperCase()} 1 `), c.name);
      assert.ok(text.includes(`\n.SH NAME\n${roffText(`unionctl-${c.name}`)} \\- `), c.name);
      assert.ok(text.includes(`\n.SH SYNOPSIS\n.B unionctl ${roffText(c.name)}\n`), c.name);
      for (const a of c.arguments) assert.ok(text.includes(`\\fI${roffText(a.name)}\\fR`), `${c.name} <${a.name}>`);
      for (const o of c.options) {
        for (const name of [o.short, o.long])
          if (name !== undefined) assert.ok(text.includes(`\\fB${roffText(name)}\\fR`), `${c.name} ${name}`);
        for (const choice of o.choices ?? []) assert.ok(text.includes(roffText(choice)), `${c.name} ${o.long} ${choice}`);
      }
    }
    assert.match(page('unionctl-save.1'), /One of: docker, oci\. Default: docker\./);
  });

  it('unionctl(1) lists every command, the global options, the environment and the exit codes', () => {
    const text = page('unionctl.1');
    assert.match(text, /^\.TH UNIONCTL 1 /);
    for (const c of model.commands) assert.ok(text.includes(`.BR unionctl\\-${roffText(c.name)} (1)\n`), c.name);
    for (const o of model.globalOptions) assert.ok(text.includes(`\\fB${roffText(o.long!)}\\fR`), o.long);
    for (const variable of ['UNIONCTL_ROOT', 'UNIONCTL_LOG_LEVEL', 'UNIONCTL_DEBUG'])
      assert.ok(text.includes(`\\fB${roffText(variable)}\\fR`), variable);
    const exitStatus = text.slice(text.indexOf('.SH EXIT STATUS'));
    for (const s of EXIT_STATUSES) assert.ok(exitStatus.includes(`\\fB${s.code}\\fR`), String(s.code));
    assert.deepEqual(
      EXIT_STATUSES.map((s) => s.code),
      [0, 1, 2, 4, 70, 77, 141],
    );
  });

  it('escape what roff would read as requests or escapes', () => {
    assert.equal(roffText('--rw'), '\\-\\-rw');
    assert.equal(roffText(".hidden and 'quoted'"), "\\&.hidden and 'quoted'");
    assert.equal(roffText("'a"), "\\&'a");
    assert.equal(roffText('a\\b\n  c'), 'a\\eb c');
    const pages = manPages(buildProgram('0.0.0'), '0.0.0');
    for (const p of pages) assert.doesNotMatch(p.text, /^[.'](?![A-Za-z]{1,2}\b)/m, `${p.file}: a line starts with a dot that is no macro`);
  });

  it('render with man, without warnings', { skip: toolsMissing(['man', 'groff']) }, () => {
    for (const file of readdirSync(MAN_DIR)) {
      const lint = spawnSync('groff', ['-man', '-ww', '-z', join(MAN_DIR, file)], { encoding: 'utf8' });
      assert.equal(lint.stderr, '', file);
    }
    const r = spawnSync('man', ['-l', join(MAN_DIR, 'unionctl-mount.1')], {
      encoding: 'utf8',
      env: { ...process.env, MANPAGER: 'cat', MANWIDTH: '100', MAN_KEEP_FORMATTING: undefined },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^SYNOPSIS\n\s+unionctl mount \[options\] id$/m);
    assert.match(r.stdout, /^\s+--mount-label label$/m);
  });
});
