/**
 * What the CLI does with paths and names that come from the user or from its inputs (issue 11):
 * empty path options are usage errors; output files (-o) never replace what is at the path unless
 * it is a regular file, and appear complete or not at all; a load of a directory reads nothing
 * outside it; control characters in names and messages are printed escaped; empty input and a
 * full disk while spooling get one clear error line.
 *
 * One store on a private tmpfs, vfs driver (nothing is mounted), holding one small image.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { makeLayerTar, MAIN, writeOciLayout, type Result } from './images-helpers.js';

let scratchFs: Scratch;
let scratch = '';
let root = '';
/** Id of the image's only layer. */
let layer = '';

function run(args: string[], opts: { input?: Buffer; env?: Record<string, string | undefined>; cwd?: string } = {}): Result {
  const env: Record<string, string | undefined> = { ...process.env, FORCE_COLOR: undefined, NO_COLOR: undefined, ...opts.env };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const r = spawnSync(process.execPath, [MAIN, ...args], {
    input: opts.input,
    env: env as NodeJS.ProcessEnv,
    cwd: opts.cwd,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The CLI on the test store. */
function cli(args: string[], opts: { input?: Buffer; env?: Record<string, string | undefined>; cwd?: string } = {}): Result {
  return run(['--root', root, '--driver', 'vfs', ...args], opts);
}

function show(r: Result): string {
  return `exit ${r.status}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

function ok(r: Result): string {
  assert.equal(r.status, 0, show(r));
  return r.stdout;
}

/** Exit `code`, nothing on stdout, one `unionctl:` line matching `mention` (plus at most a hint), no stack trace. */
function refused(r: Result, code: number, mention: RegExp): string {
  assert.equal(r.status, code, show(r));
  assert.equal(r.stdout, '', show(r));
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.ok(lines.length >= 1 && lines.length <= 2, `one error line and at most one hint line expected:\n${show(r)}`);
  assert.match(lines[0]!, /^unionctl: \S/, show(r));
  if (lines.length === 2) assert.match(lines[1]!, /^ {2}hint: \S/, show(r));
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  assert.match(lines[0]!, mention, show(r));
  return lines[0]!;
}

before(() => {
  scratchFs = makeScratch();
  scratch = scratchFs.dir;
  root = join(scratch, 'root');
  const image = writeOciLayout(join(scratch, 'image'), {
    name: 'sample:1',
    layers: [{ tar: makeLayerTar(scratch, 'base', { 'etc/hostname': 'sample\n', 'usr/share/doc/readme': 'hello\n' }) }],
  });
  ok(cli(['load', image]));
  const images = JSON.parse(ok(cli(['--json', 'images']))) as Array<{ layers: Array<{ id: string }> }>;
  layer = images[0]!.layers[0]!.id;
});

after(() => scratchFs.dispose());

describe('empty path options are usage errors', () => {
  it("--root '' and UNIONCTL_ROOT='' are refused; nothing is created in the current directory", () => {
    const cwd = join(scratch, 'cwd');
    mkdirSync(cwd);
    refused(run(['--root', '', '--driver', 'vfs', 'ls'], { cwd }), 2, /--root .*the store root must not be empty/);
    refused(run(['--root', '', 'images'], { cwd }), 2, /the store root must not be empty/);
    refused(run(['--driver', 'vfs', 'ls'], { cwd, env: { UNIONCTL_ROOT: '' } }), 2, /UNIONCTL_ROOT.*the store root must not be empty/);
    assert.deepEqual(readdirSync(cwd), [], 'no store made in the current directory');
  });

  it("-o '', --parent '', --id '', an empty file argument: refused naming the option", () => {
    refused(cli(['diff', layer, '-o', '']), 2, /--output .*the output file must not be empty/);
    refused(cli(['save', 'sample:1', '-o', '']), 2, /--output .*the output file must not be empty/);
    refused(cli(['diff', '--parent', '', layer]), 2, /--parent .*must not be empty/);
    refused(cli(['import', '--parent', '', '-'], { input: Buffer.alloc(1024) }), 2, /--parent .*must not be empty/);
    refused(cli(['create', '--id', '']), 2, /--id .*must not be empty/);
    refused(cli(['import', '']), 2, /argument 'file'.*the input file must not be empty/);
    refused(cli(['load', '']), 2, /argument 'file'.*the image archive must not be empty/);
    refused(cli(['load', '--image', '', join(scratch, 'image')]), 2, /--image .*must not be empty/);
  });
});
