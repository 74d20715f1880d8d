/**
 * The CLI's JSON (issue 14 point 11): every command the program defines is run here with --json
 * on one overlay2 store (and a registry for pull, push, login, logout), and what it prints is
 * checked against docs/json.md — one document, every documented field there, nothing
 * undocumented, each field of its documented type. A command that the program has and this test or
 * the docs do not know fails the test: new commands get documented. Then --format: fields, table,
 * json, errors that change nothing.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { registryAvailable, startRegistry, type Registry } from '../../bench/peers/registry.js';
import { buildProgram } from '../../src/cli/commands.js';
import { visibleCommands } from '../../src/cli/command-model.js';
import { mismatch, readJsonDocs, type JsonDocs } from '../helpers/json-docs.js';
import { writeTinyStorageStore } from '../helpers/foreign-store.js';
import { makeScratch, scratchMissing, type Scratch } from '../helpers/scratch.js';
import { REPO, SAMPLE_DOCKER, listing, ok, show, unionctl } from './images-helpers.js';

const skip = scratchMissing ?? (registryAvailable() ? false : 'docker-registry is not installed');

/** The program's commands that users see (hidden helpers left out). */
function visibleCommandNames(): string[] {
  return visibleCommands(buildProgram('0.0.0')).map((c) => c.name());
}

describe('--json output matches docs/json.md, command by command', { skip }, () => {
  let scratch: Scratch;
  let registry: Registry;
  let docs: JsonDocs;
  let g: string[] = [];
  const checked = new Set<string>();

  /** Runs `unionctl --json ARGS`, checks the document against the docs for ARGS[0], returns it. */
  function json(...args: string[]): unknown {
    const r = unionctl([...g, '--json', ...args]);
    const value = JSON.parse(ok(r)) as unknown;
    const command = args[0]!;
    assert.ok(docs.commands.has(command), `docs/json.md has a section for unionctl ${command}`);
    const type = docs.commands.get(command);
    assert.ok(type !== undefined, `docs/json.md says what unionctl ${command} prints`);
    const why = mismatch(docs, type, value);
    assert.equal(why, undefined, `unionctl ${args.join(' ')}: ${why}\n${show(r)}`);
    checked.add(command);
    return value;
  }

  before(async () => {
    scratch = makeScratch();
    docs = readJsonDocs(join(REPO, 'docs', 'json.md'));
    registry = await startRegistry({ dir: scratch.dir });
    g = ['--root', join(scratch.dir, 'root'), '--driver', 'overlay2'];
  });

  after(async () => {
    unionctl([...g, 'umount', '--all']);
    unionctl([...g, 'cleanup']);
    await registry?.stop();
    scratch?.dispose();
  });

  it('every command prints its documented shape', () => {
    const files = (name: string) => join(scratch.dir, name);
    json('load', SAMPLE_DOCKER);
    const src = files('src');
    mkdirSync(src);
    writeFileSync(join(src, 'note.txt'), 'a note\n');
    assert.equal(spawnSync('tar', ['-C', src, '-cf', files('note.tar'), 'note.txt']).status, 0);
    const imported = json('import', files('note.tar')) as { id: string };
    json('create', '--parent', imported.id, '--id', 'empty-layer');
    json('ls');
    json('info');
    json('version');
    json('mount', '--explain', 'sample-app:1');
    json('mount', 'sample-app:1');
    json('umount', 'sample-app:1');
    json('doctor');
    const work = json('mount', '--rw', '--name', 'work', 'sample-app:1') as { path: string };
    writeFileSync(join(work.path, 'srv/app/etc/app.conf'), 'listen=127.0.0.1:9090\n');
    writeFileSync(join(work.path, 'added.txt'), 'added\n');
    json('mounts');
    json('changes', 'work');
    const patched = json('changes', '--patch', 'work') as Array<{ path: string; patch: string | null }>;
    assert.match(patched.find((c) => c.path === '/srv/app/etc/app.conf')?.patch ?? '', /^\+listen=127\.0\.0\.1:9090$/m);
    json('branches', 'work');
    json('size', 'work');
    json('diff', 'work', '-o', files('work-diff.tar'));
    json('commit', 'work', 'app:2', '-m', 'json test');
    json('export', 'app:2', '-o', files('app2-rootfs.tar'));
    json('inspect', 'work', 'app:2');
    json('history', 'app:2');
    json('tag', 'app:2', 'extra:1');
    json('untag', 'app:2', 'extra:1');
    json('images');
    json('df');
    json('check');
    json('check', '--repair', '--quick');
    json('prune', '--dry-run');
    json('save', 'app:2', '-o', files('app2.tar'));
    json('export-storage');
    json('export-storage', files('cs-export'));
    json('export-storage', '--remove', files('cs-export'));
    json('adopt', 'podman', writeTinyStorageStore(files('podman-root'), scratch.dir).root);
    json('push', '--insecure', 'app:2', `${registry.address}/json/app:2`);
    json('pull', '--insecure', `${registry.address}/json/app:2`);
    const authFile = files('auth.json');
    json('login', '--insecure', '--authfile', authFile, '-u', 'someone', '-p', 'secret', registry.address);
    json('logout', '--authfile', authFile, registry.address);
    json('umount', 'work');
    json('rmi', `${registry.address}/json/app:2`);
    json('rm', 'empty-layer', imported.id);
    json('cleanup');
    json('migrate', '--to', 'vfs');
    json('migrate', '--to', 'overlay2'); // the store as the tests below expect it

    const undocumented = visibleCommandNames().filter((c) => !docs.commands.has(c));
    assert.deepEqual(undocumented, [], 'every command has a section in docs/json.md');
    const stale = [...docs.commands.keys()].filter((c) => !visibleCommandNames().includes(c));
    assert.deepEqual(stale, [], 'docs/json.md describes no command the CLI does not have');
    const printing = [...docs.commands].filter(([, type]) => type !== undefined).map(([c]) => c);
    assert.deepEqual(
      printing.filter((c) => !checked.has(c)),
      [],
      'this test runs every command that prints JSON',
    );
  });

  it('diff and export refuse --json while the tar goes to stdout, before they open the store', () => {
    for (const command of ['diff', 'export']) {
      const r = unionctl([...g, '--json', command, 'sample-app:1']);
      assert.equal(r.status, 1, show(r));
      assert.match(r.stderr, /--json and a tar archive on stdout cannot share it/);
      assert.equal(r.stdout, '');
    }
  });

  describe('--format', () => {
    it('renders each object of the --json output: fields in any case, nested, functions, if/range', () => {
      const layers = JSON.parse(ok(unionctl([...g, '--json', 'ls']))) as Array<{ id: string; size: number; writable: boolean }>;
      assert.ok(layers.length >= 4);
      const lines = ok(unionctl([...g, 'ls', '--format', '{{.ID}} {{.size}} {{if .writable}}rw{{else}}ro{{end}}']))
        .trimEnd()
        .split('\n');
      assert.deepEqual(
        lines,
        layers.map((l) => `${l.id} ${l.size} ${l.writable ? 'rw' : 'ro'}`),
      );
      const image = JSON.parse(ok(unionctl([...g, '--json', 'images'])))[0] as {
        id: string;
        names: string[];
        layers: Array<{ diffId: string }>;
      };
      assert.equal(
        ok(unionctl([...g, 'images', '--format', '{{join .names ","}}={{len .layers}}'])).split('\n')[0],
        `${image.names.join(',')}=${image.layers.length}`,
      );
      assert.equal(
        ok(unionctl([...g, 'inspect', 'sample-app:1', '--format', '{{range .layers}}{{.diffId | truncate 19}} {{end}}'])),
        `${image.layers.map((l) => l.diffId.slice(0, 19)).join(' ')} \n`,
      );
      assert.equal(ok(unionctl([...g, 'info', '--format', '{{upper .driver}}'])), 'OVERLAY2\n');
      const version = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version as string;
      assert.equal(ok(unionctl([...g, 'version', '--format', '{{.version}}'])), `${version}\n`);
    });

    it('json and {{json .}} print one compact document per object; table prints a header and aligned columns', () => {
      const images = JSON.parse(ok(unionctl([...g, '--json', 'images']))) as unknown[];
      for (const format of ['json', '{{json .}}']) {
        const lines = ok(unionctl([...g, 'images', '--format', format]))
          .trimEnd()
          .split('\n');
        assert.deepEqual(
          lines.map((l) => JSON.parse(l) as unknown),
          images,
        );
      }
      const table = ok(unionctl([...g, 'images', '--format', 'table {{.id}}\\t{{len .layers}}'])).split('\n');
      assert.match(table[0]!, /^ID\s+LAYERS$/);
      assert.match(table[1]!, /^sha256:[0-9a-f]{64}\s+\d+$/);
    });

    it('a field the objects lack, or a template that does not parse: an error naming it, nothing printed, nothing changed', () => {
      const r = unionctl([...g, 'ls', '--format', '{{.nope}}']);
      assert.equal(r.status, 1, show(r));
      assert.equal(r.stdout, '');
      assert.match(
        r.stderr,
        /--format "\{\{\.nope\}\}": no field nope \(the fields are: id, parent, origin, writable, diffId, chainId, size, created, driver\)/,
      );
      const root = g[1]!;
      const before = listing(root);
      for (const [template, message] of [
        ['{{.id', /the \{\{ at 1 is not closed/],
        ['{{range .layers}}', /\{\{else\}\} or \{\{end\}\} is missing/],
        ['{{bogus .id}}', /unknown function bogus/],
        ['{{$x := .id}}', /variables \(\$x\) are not supported/],
      ] as const) {
        const bad = unionctl([...g, 'import', '--format', template, join(scratch.dir, 'note.tar')]);
        assert.equal(bad.status, 1, show(bad));
        assert.match(bad.stderr, message, show(bad));
        assert.equal(bad.stdout, '');
      }
      assert.deepEqual(listing(root), before, 'a template that does not parse stops the command before it runs');
    });
  });
});
