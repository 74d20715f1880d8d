/**
 * --log-level (issue 14, point 15): what the CLI says on stderr besides output and errors, at each
 * level; UNIONCTL_LOG_LEVEL and UNIONCTL_DEBUG=1 as the environment's way to say it. On a vfs store
 * in a temp dir: nothing here mounts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, showResult } from '../helpers/cli.js';

describe('--log-level', () => {
  let dir = '';
  let g: string[] = [];
  let empty = '';

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'unionctl-loglevel-'));
    g = ['--root', join(dir, 'root'), '--driver', 'vfs'];
    empty = join(dir, 'empty.tar');
    writeFileSync(empty, '');
    assert.equal(runCli([...g, 'create', '--id', 'base']).status, 0);
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  it('info (the default) and warn show warnings; error shows none', () => {
    for (const level of [[], ['--log-level', 'info'], ['--log-level', 'warn']]) {
      const r = runCli([...g, 'import', empty, ...level]);
      assert.equal(r.status, 0, showResult(r));
      assert.match(r.stderr, /^unionctl: warning: input file .* was empty \(0 bytes\): imported as an empty layer\n$/, showResult(r));
    }
    const quiet = runCli([...g, '--log-level', 'error', 'import', empty]);
    assert.equal(quiet.status, 0, showResult(quiet));
    assert.equal(quiet.stderr, '');
    assert.match(quiet.stdout, /^[0-9a-f]{64}\n$/);
  });

  it('error still prints the error a command fails with, without a stack', () => {
    const r = runCli([...g, '--log-level', 'error', 'rm', 'no-such']);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, 'unionctl: layer no-such does not exist\n  hint: list the layers with unionctl ls\n');
  });

  it('debug adds timings and the stack of an error; UNIONCTL_LOG_LEVEL and UNIONCTL_DEBUG=1 say the same', () => {
    const ran = runCli([...g, 'ls', '-q', '--log-level', 'debug']);
    assert.equal(ran.status, 0, showResult(ran));
    assert.match(ran.stderr, /^unionctl: debug: opened the vfs store at .* in \d+\.\d ms\nunionctl: debug: ls ran in \d+\.\d ms\n$/);
    assert.ok(ran.stdout.split('\n').includes('base'), 'the output is unchanged');
    for (const env of [{ UNIONCTL_LOG_LEVEL: 'debug' }, { UNIONCTL_DEBUG: '1' }]) {
      const failed = runCli([...g, 'mount', 'no-such'], { env });
      assert.equal(failed.status, 1);
      assert.match(failed.stderr, /^unionctl: no layer or image no-such\n/m, showResult(failed));
      assert.match(failed.stderr, /^\s+at /m, 'the stack is shown at debug');
    }
  });

  it('an unknown level is a usage error', () => {
    const r = runCli([...g, '--log-level', 'loud', 'ls']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /argument 'loud' is invalid: Allowed choices are debug, info, warn, error/);
  });
});
