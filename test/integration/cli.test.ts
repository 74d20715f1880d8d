/**
 * End-to-end tests of the unionctl command line: every test spawns the compiled CLI
 * (node <outDir>/src/cli/main.js) against a store root on a private tmpfs, with --driver vfs and
 * --driver overlay2, on the four layers of fixtures/sample-docker.tar.
 *
 * Besides the happy path (import, ls, info, mount, branches, changes, diff, size, umount, rm) it
 * checks the contract for bad input: exit code 1, exactly one `unionctl:` line (plus an optional
 * hint line), no stack trace, and a store root whose listing is byte-for-byte what it was before.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { CLI_MAIN as MAIN, runCli, showResult, type CliResult } from '../helpers/cli.js';
import { mountsUnder as mountEntriesUnder } from '../helpers/mounts.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';

const REPO = process.env.UNIONCTL_REPO ?? process.cwd();
const SAMPLE = join(REPO, 'fixtures', 'sample-docker.tar');
const EXPECTED_TREE = readFileSync(join(REPO, 'fixtures', 'sample-expected.txt'), 'utf8');
const TREELIST = join(REPO, 'test', 'treelist.py');
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

/** diff_ids of the sample's layers, bottom first (fixtures/SAMPLE-README.md). */
const DIFF_IDS = [
  'sha256:9e721e9db1f84b04216fcb0f3fe271f3e9d48a5fe020252e82180d636f2a27b1',
  'sha256:7058b3d776058fe84d8142c37271aa8d2890654562594c4b4a8cfcbe179d08c0',
  'sha256:2d03330843ef3bb247481366ee85ad8628c69efc9af29ec53430071860189fea',
  'sha256:d52c36bcc68cf387ca56ba2a2736674cdac472ea3ef6ef70393743c36580deca',
];

let scratchFs: Scratch | undefined;
let scratch = ''; // tmpfs mount point (scratchFs.dir)
let layerTars: string[] = []; // the sample's layer.tar files, bottom first

type Result = CliResult;
/** Runs the CLI (test/helpers/cli.ts). */
const unionctl = runCli;
const show = showResult;

/** Runs a command that must succeed and returns its stdout. */
function ok(r: Result): string {
  assert.equal(r.status, 0, show(r));
  return r.stdout;
}

/** The failure shape every error must have: one `unionctl:` line, maybe a hint, no stack trace. */
function assertCleanFailure(r: Result, exitCode: number, mention?: RegExp): void {
  assert.equal(r.status, exitCode, show(r));
  assert.equal(r.stdout, '', show(r));
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.ok(lines.length >= 1 && lines.length <= 2, `one error line and at most one hint line expected:\n${show(r)}`);
  assert.match(lines[0], /^unionctl: \S/, show(r));
  if (lines.length === 2) assert.match(lines[1], /^ {2}hint: \S/, show(r));
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  assert.doesNotMatch(r.stderr, /\x1b\[/, 'no colour codes when stderr is not a terminal');
  if (mention) assert.match(lines[0], mention, show(r));
}

/** path, type and size of everything under `dir`: what "the store is unchanged" compares. */
function listing(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return execFileSync('find', [dir, '-printf', '%P %y %s\\n'], { encoding: 'utf8' }).split('\n').filter(Boolean).sort();
}

function treeList(dir: string): string {
  return execFileSync('python3', [TREELIST, dir], { encoding: 'utf8', maxBuffer: 64 << 20 });
}

function sortChanges(list: Array<{ path: string; kind: string }>): string[] {
  return list.map((c) => `${c.kind} ${c.path}`).sort();
}

before(() => {
  scratchFs = makeScratch();
  scratch = scratchFs.dir;
  const layersDir = join(scratch, 'sample');
  mkdirSync(layersDir);
  execFileSync('tar', ['-xf', SAMPLE, '-C', layersDir, 'manifest.json']);
  const manifest = JSON.parse(readFileSync(join(layersDir, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
  execFileSync('tar', ['-xf', SAMPLE, '-C', layersDir, ...manifest[0].Layers]);
  layerTars = manifest[0].Layers.map((p) => join(layersDir, p));
});

after(() => {
  if (!scratchFs) return;
  try {
    for (const driver of ['vfs', 'overlay2']) {
      const root = join(scratch, `root-${driver}`);
      if (existsSync(root)) unionctl(['--root', root, '--driver', driver, 'cleanup']);
    }
  } finally {
    // Unmounts leftovers too, and then fails the run naming them.
    scratchFs.dispose();
  }
});

/** Mount points at or below `dir`. */
function mountsUnder(dir: string): string[] {
  return mountEntriesUnder(dir).map((m) => m.mountPoint);
}

for (const driver of ['vfs', 'overlay2']) {
  describe(`unionctl --driver ${driver}`, () => {
    let root = '';
    const ids: string[] = [];
    const cli = (args: string[], opts?: { input?: Buffer; env?: Record<string, string | undefined> }) =>
      unionctl(['--root', root, '--driver', driver, ...args], opts);
    const top = () => ids[3];

    before(() => {
      root = join(scratch, `root-${driver}`);
    });

    it('imports the sample layers and prints their ids (file, --json, stdin, --id)', () => {
      const base = ok(cli(['import', layerTars[0]]));
      assert.match(base, /^[A-Za-z0-9][A-Za-z0-9_.-]*\n$/, 'exactly the id on one line');
      ids.push(base.trim());

      const app = JSON.parse(ok(cli(['--json', 'import', '--parent', ids[0], layerTars[1]])));
      assert.deepEqual(
        Object.keys(app).sort(),
        ['chainId', 'created', 'diffId', 'driver', 'id', 'origin', 'parent', 'size', 'writable'],
        'a layer, as ls prints it',
      );
      assert.equal(app.parent, ids[0]);
      assert.equal(app.diffId, DIFF_IDS[1]);
      assert.equal(typeof app.size, 'number');
      ids.push(app.id);

      const extras = ok(cli(['import', '--parent', ids[1], '-'], { input: readFileSync(layerTars[2]) })).trim();
      ids.push(extras);

      // global options are accepted after the command name too
      const topId = ok(
        unionctl(['import', '--id', `top-${driver}`, '--parent', ids[2], layerTars[3], '--root', root, '--driver', driver]),
      ).trim();
      assert.equal(topId, `top-${driver}`);
      ids.push(topId);
    });

    it('ls --json lists the layer records; plain ls is a table', () => {
      const layers = JSON.parse(ok(cli(['ls', '--json']))) as Array<Record<string, unknown>>;
      assert.ok(Array.isArray(layers));
      assert.deepEqual(layers.map((l) => l.id).sort(), [...ids].sort());
      for (const [i, id] of ids.entries()) {
        const layer = layers.find((l) => l.id === id)!;
        assert.equal(layer.parent ?? undefined, i === 0 ? undefined : ids[i - 1]);
        assert.equal(layer.diffId, DIFF_IDS[i]);
        assert.equal(typeof layer.size, 'number');
        assert.equal(layer.writable, false);
      }
      const table = ok(cli(['ls'])).split('\n');
      assert.match(table[0], /^ID\s+PARENT/);
      // Generated ids are cut to 12 characters (ids chosen with --id are not); --no-trunc shows them whole.
      const shown = (id: string) => (/^[0-9a-f]{64}$/.test(id) ? id.slice(0, 12) : id);
      for (const id of ids)
        assert.ok(
          table.some((l) => l.startsWith(`${shown(id)} `)),
          `ls shows ${shown(id)}:\n${table.join('\n')}`,
        );
      const whole = ok(cli(['ls', '--no-trunc'])).split('\n');
      for (const id of ids)
        assert.ok(
          whole.some((l) => l.startsWith(`${id} `)),
          `ls --no-trunc shows ${id}`,
        );
      assert.doesNotMatch(table.join('\n'), /\x1b\[/, 'no colour when stdout is a pipe');
    });

    it('info --json has the driver and its status pairs; plain info shows limits', () => {
      const info = JSON.parse(ok(cli(['info', '--json'])));
      assert.equal(info.driver, driver);
      assert.ok(Array.isArray(info.status));
      for (const pair of info.status) {
        assert.ok(Array.isArray(pair) && pair.length === 2 && pair.every((x: unknown) => typeof x === 'string'), JSON.stringify(pair));
      }
      const text = ok(cli(['info']));
      assert.match(text, new RegExp(`^Driver:\\s+${driver}$`, 'm'));
      assert.match(text, /Max depth: \d+/);
      assert.match(text, /Whiteout format: \w+/);
      assert.match(text, /Native diff: (true|false)/);
    });

    it('mount prints the merged path as the last line; the view matches the sample image', () => {
      const lines = ok(cli(['mount', top()]))
        .trim()
        .split('\n');
      const merged = lines.at(-1)!;
      try {
        assert.ok(statSync(merged).isDirectory(), `${merged} is a directory`);
        assert.equal(treeList(merged), EXPECTED_TREE);
        // A second mount of the same layer is the same view (reference-counted), in JSON this time.
        const again = JSON.parse(ok(cli(['mount', '--json', top()])));
        assert.deepEqual(
          again,
          { id: top(), path: merged, readOnly: true, mounts: 2, processes: [], mounted: true },
          'the Mount object mounts lists',
        );
        ok(cli(['umount', top()]));
        assert.ok(statSync(merged).isDirectory(), 'still mounted after releasing one of two references');
      } finally {
        ok(cli(['umount', top()]));
      }
      if (driver === 'overlay2') assert.deepEqual(mountsUnder(merged), [], 'unmounted at zero references');
    });

    it('branches --json lists the union top first', () => {
      ok(cli(['mount', top()]));
      try {
        const branches = JSON.parse(ok(cli(['branches', '--json', top()]))) as Array<Record<string, string>>;
        assert.ok(branches.length >= 1);
        for (const b of branches) {
          assert.deepEqual(Object.keys(b).sort(), ['layer', 'mode', 'path']);
          assert.ok(['rw', 'ro', 'ro+wh'].includes(b.mode), b.mode);
        }
        assert.equal(branches[0].layer, top());
        if (driver === 'overlay2')
          assert.deepEqual(
            branches.map((b) => b.layer),
            [...ids].reverse(),
          );
        const table = ok(cli(['branches', top()]))
          .trim()
          .split('\n');
        assert.match(table[0], /^MODE\s+LAYER\s+PATH$/);
        assert.equal(table.length, branches.length + 1);
      } finally {
        ok(cli(['umount', top()]));
      }
    });

    it('changes --json reports the whiteout layer as Docker does', () => {
      const changes = JSON.parse(ok(cli(['changes', '--json', top()]))) as Array<{ path: string; kind: string }>;
      for (const c of changes) assert.deepEqual(c, { path: c.path, kind: c.kind, patch: null }, 'a Change: no patch without --patch');
      const lines = sortChanges(changes);
      for (const expected of [
        'A /srv/app/plugins/search.plug',
        'C /srv/app/current',
        'C /srv/app/secrets/api.token',
        'D /srv/app/etc/legacy.conf',
        'D /srv/app/extras/defaults.env',
        'D /var/cache/app/.lock',
        'D /var/cache/app/index.db',
        'D /var/cache/app/thumbs',
      ]) {
        assert.ok(lines.includes(expected), `${expected} in\n${lines.join('\n')}`);
      }
      assert.ok(!lines.includes('D /var/cache/app/thumbs/t1.bin'), 'only the deleted dir, not its contents');
      const plain = ok(cli(['changes', top()]))
        .trim()
        .split('\n');
      assert.deepEqual([...plain].sort(), lines);
    });

    it('changes --patch adds unified diffs of changed text files and unmounts afterwards', () => {
      const text = ok(cli(['changes', '--patch', ids[1]]));
      assert.match(text, /^C \/etc\/passwd$/m);
      assert.match(text, /^--- a\/etc\/passwd/m);
      assert.match(text, /^\+\+\+ b\/etc\/passwd/m);
      assert.match(text, /^\+app:x:2000:2000:app:\/srv\/app:\/bin\/sh$/m);
      assert.match(text, /^\+app:x:2000:$/m);
      // The whiteout layer's only changed file is a chmod: no text difference, no patch.
      const topText = ok(cli(['changes', '--patch', top()]));
      assert.doesNotMatch(topText, /^--- a\/srv\/app\/secrets\/api.token/m);
      assert.deepEqual(mountsUnder(root), [], 'the views mounted for the patch are released');
    });

    it('diff -o writes an OCI tar; stdout gets the same bytes; re-importing it gives the same changes', () => {
      const outDir = join(scratch, `out-${driver}`);
      mkdirSync(outDir);
      const tarFile = join(outDir, 'top.tar');
      assert.equal(ok(cli(['diff', top(), '-o', tarFile])), '');
      assert.deepEqual(readdirSync(outDir), ['top.tar'], 'no temp file left next to the output');
      const entries = execFileSync('tar', ['-tf', tarFile], { encoding: 'utf8' }).split('\n');
      for (const e of ['srv/app/etc/.wh.legacy.conf', 'srv/app/plugins/search.plug']) {
        assert.ok(entries.includes(e), `${e} in the exported tar`);
      }
      // The re-created plugins dir: an opaque marker from a native diff (overlay2), or one
      // whiteout per old child from the naive tree comparison (vfs), as Docker does.
      const perChild = ['auth.plug', 'metrics.plug', 'vendor'].every((n) => entries.includes(`srv/app/plugins/.wh.${n}`));
      assert.ok(
        entries.includes('srv/app/plugins/.wh..wh..opq') || perChild,
        `plugins/ emptied in the exported tar:\n${entries.join('\n')}`,
      );
      const piped = spawnSync(process.execPath, [MAIN, '--root', root, '--driver', driver, 'diff', top()], { maxBuffer: 64 << 20 });
      assert.equal(piped.status, 0, piped.stderr.toString());
      assert.ok(Buffer.compare(piped.stdout, readFileSync(tarFile)) === 0, 'export is deterministic');

      const copy = ok(cli(['import', '--parent', ids[2], tarFile])).trim();
      try {
        const original = sortChanges(JSON.parse(ok(cli(['changes', '--json', top()]))));
        const reimported = sortChanges(JSON.parse(ok(cli(['changes', '--json', copy]))));
        assert.deepEqual(reimported, original);
      } finally {
        ok(cli(['rm', copy]));
        rmSync(outDir, { recursive: true });
      }
    });

    it('diff -o into a missing directory fails cleanly and leaves nothing behind', () => {
      const before = listing(root);
      assertCleanFailure(cli(['diff', top(), '-o', join(scratch, 'no-such-dir', 'x.tar')]), 1, /no-such-dir/);
      assert.deepEqual(listing(root), before);
    });

    it('size prints bytes, human and exact; --json gives {id, size}', () => {
      const json = JSON.parse(ok(cli(['size', '--json', ids[1]])));
      assert.deepEqual(Object.keys(json).sort(), ['id', 'size']);
      assert.equal(json.id, ids[1]);
      assert.ok(Number.isInteger(json.size) && json.size > 200000, `layer 2 carries blob.bin (200 KiB): ${json.size}`);
      const text = ok(cli(['size', ids[1]])).trim();
      assert.match(text, new RegExp(`^\\d+(\\.\\d+)? KiB \\(${json.size} bytes\\)$`));
      // ls shows each layer with the figure size gives (symlinks count their target's length in both).
      const listed = JSON.parse(ok(cli(['ls', '--json']))) as Array<{ id: string; size: number }>;
      for (const id of ids) {
        const sized = JSON.parse(ok(cli(['size', '--json', id]))) as { size: number };
        assert.equal(listed.find((l) => l.id === id)?.size, sized.size, `layer ${id}: ls and size agree`);
      }
    });

    it("mount of an image layer or image is read-only: a write fails and the layer's own dir is unchanged", () => {
      const own = driver === 'vfs' ? join(root, 'vfs', 'dir', top()) : join(root, 'overlay2', top(), 'diff');
      const ownBefore = treeList(own);
      const merged = ok(cli(['mount', top()]))
        .trim()
        .split('\n')
        .at(-1)!;
      try {
        assert.throws(() => writeFileSync(join(merged, 'written-through-the-view'), 'x'), { code: 'EROFS' });
        assert.throws(() => unlinkSync(join(merged, 'srv/app/etc/app.conf')), { code: 'EROFS' });
        assert.equal(treeList(own), ownBefore, "the layer's own directory is as it was");
        assert.equal(treeList(merged), EXPECTED_TREE, 'the view still shows the image');
        // rm refuses while it is mounted; umount takes what mount took.
        assertCleanFailure(cli(['rm', top()]), 1, /is mounted/);
      } finally {
        ok(cli(['umount', top()]));
      }
      assert.deepEqual(mountsUnder(merged), [], 'the view is gone at zero mounts');
      assert.deepEqual(mountEntriesUnder(root), [], 'and so is the union it showed');
    });

    it('mount --rw on an image layer mounts a new writable layer on top and says which', () => {
      const lines = ok(cli(['mount', '--rw', top()]))
        .trim()
        .split('\n');
      assert.equal(lines.length, 2, lines.join('\n'));
      const rwId = /^layer (\S+)$/.exec(lines[0])?.[1];
      assert.ok(rwId && rwId !== top(), lines[0]);
      const merged = lines[1];
      try {
        writeFileSync(join(merged, 'hello.txt'), 'hello\n');
        unlinkSync(join(merged, 'srv/app/etc/app.conf'));
        const changes = sortChanges(JSON.parse(ok(cli(['changes', '--json', rwId]))));
        assert.ok(changes.includes('A /hello.txt'), changes.join('\n'));
        assert.ok(changes.includes('D /srv/app/etc/app.conf'), changes.join('\n'));
        const rec = (JSON.parse(ok(cli(['ls', '--json']))) as Array<Record<string, unknown>>).find((l) => l.id === rwId);
        assert.equal(rec?.parent, top());
        assert.equal(rec?.writable, true);
      } finally {
        ok(cli(['umount', rwId]));
      }
      ok(cli(['rm', rwId]));
    });

    describe('bad input: one error line, exit 1, store unchanged', () => {
      /** Runs `args`, expects a clean failure that mentions `mention`, and an untouched store. */
      function refuses(args: string[], mention: RegExp, opts?: { input?: Buffer; raw?: boolean }): void {
        const before = listing(root);
        assert.ok(before.length > 0);
        const r = opts?.raw ? unionctl(args, opts) : cli(args, opts);
        assertCleanFailure(r, 1, mention);
        assert.deepEqual(listing(root), before, 'store root unchanged');
      }

      it('unknown driver', () => {
        refuses(['--root', root, '--driver', 'nosuchfs', 'ls'], /nosuchfs/, { raw: true });
        refuses(['--root', root, '--driver', 'nosuchfs', 'import', layerTars[0]], /nosuchfs/, { raw: true });
        const fresh = join(scratch, 'fresh-root');
        assertCleanFailure(unionctl(['--root', fresh, '--driver', 'nosuchfs', 'info']), 1, /nosuchfs/);
        assert.ok(!existsSync(fresh), 'no root created for an unknown driver');
      });

      it('unknown --storage-opt key', () => {
        refuses(['--storage-opt', 'bogus.key=1', 'ls'], /bogus\.key/);
        refuses(['--storage-opt', 'bogus.key=1', 'import', '--parent', top(), layerTars[3]], /bogus\.key/);
      });

      it('missing input file (named in the message), and a directory as input', () => {
        refuses(['import', join(scratch, 'no-such-layer.tar')], /no-such-layer\.tar/);
        refuses(['import', scratch], /directory/);
      });

      it('bad ids', () => {
        refuses(['import', '--id', '../x', layerTars[0]], /\.\.\/x/);
        refuses(['create', '--id', '../x'], /\.\.\/x/);
        refuses(['mount', '../x'], /\.\.\/x/);
        refuses(['rm', '../x'], /\.\.\/x/);
        refuses(['changes', '../x'], /\.\.\/x/);
      });

      it('missing parent and missing layers', () => {
        refuses(['import', '--parent', 'no-such-parent', layerTars[1]], /no-such-parent/);
        refuses(['create', '--parent', 'no-such-parent'], /no-such-parent/);
        refuses(['mount', 'no-such-layer'], /no-such-layer/);
        refuses(['umount', 'no-such-layer'], /no-such-layer/);
        refuses(['diff', 'no-such-layer', '-o', join(scratch, 'never.tar')], /no-such-layer/);
        assert.ok(!existsSync(join(scratch, 'never.tar')));
      });

      it('an image archive given to import: refused with a hint to load it (file, gzip file, stdin); --force imports it', () => {
        refuses(['import', SAMPLE], /is an image archive \(docker save archive\)/);
        assert.match(cli(['import', SAMPLE]).stderr, /hint: load its images with unionctl load .*--force/);
        const gz = join(scratch, 'sample-docker.tar.gz');
        writeFileSync(gz, gzipSync(readFileSync(SAMPLE)));
        refuses(['import', gz], /is an image archive/);
        refuses(['import', '-'], /the input on stdin is an image archive/, { input: readFileSync(SAMPLE) });
        const forced = ok(cli(['import', '--force', gz])).trim();
        assert.ok((JSON.parse(ok(cli(['ls', '--json']))) as Array<{ id: string }>).some((l) => l.id === forced));
        ok(cli(['rm', forced]));
        rmSync(gz);
      });

      it('an id that is taken', () => {
        refuses(['import', '--id', ids[0], layerTars[0]], new RegExp(ids[0]));
      });

      it('rm of a mounted layer', () => {
        ok(cli(['mount', top()]));
        try {
          refuses(['rm', top()], new RegExp(top()));
        } finally {
          ok(cli(['umount', top()]));
        }
      });

      it('rm of a parent is refused; rm reports each failure and tries every layer', () => {
        refuses(['rm', ids[0]], new RegExp(ids[0]));
        const before = listing(root);
        const r = cli(['rm', 'no-such-layer', ids[1]]);
        assert.equal(r.status, 1, show(r));
        assert.equal(r.stdout, '');
        const errors = r.stderr.split('\n').filter((l) => l.startsWith('unionctl: '));
        assert.equal(errors.length, 2, show(r));
        assert.match(errors[0], /no-such-layer does not exist/);
        assert.match(errors[1], new RegExp(`layer ${ids[1]} has child layers`));
        assert.doesNotMatch(r.stderr, /^\s+at /m);
        assert.deepEqual(listing(root), before);
      });

      it('corrupt tarballs: truncated, garbage, truncated gzip', () => {
        // Cut inside bin/busybox's content, not at an entry boundary.
        const truncated = readFileSync(layerTars[0]).subarray(0, 1000000 + 100);
        refuses(['import', '-'], /./, { input: truncated });
        const truncatedFile = join(scratch, 'truncated.tar');
        writeFileSync(truncatedFile, truncated);
        refuses(['import', '--id', 'never-made', truncatedFile], /./);
        refuses(['import', '-'], /./, { input: Buffer.from('this is not a tar archive\n'.repeat(2000)) });
        const gz = readFileSync(join(REPO, 'fixtures', 'layers', '2-app.tar.gz'));
        refuses(['import', '--parent', ids[0], '-'], /./, { input: gz.subarray(0, gz.length >> 1) });
        rmSync(truncatedFile);
      });
    });

    it('UNIONCTL_ROOT is accepted instead of --root', () => {
      const layers = JSON.parse(ok(unionctl(['--driver', driver, 'ls', '--json'], { env: { UNIONCTL_ROOT: root } }))) as unknown[];
      assert.equal(layers.length, ids.length);
    });

    it('colour follows the terminal: none on a pipe, FORCE_COLOR forces it, NO_COLOR wins', () => {
      assert.doesNotMatch(ok(cli(['changes', top()])), /\x1b\[/);
      assert.match(ok(cli(['changes', top()], { env: { FORCE_COLOR: '1' } })), /\x1b\[/);
      assert.doesNotMatch(ok(cli(['changes', top()], { env: { FORCE_COLOR: '1', NO_COLOR: '1' } })), /\x1b\[/);
    });

    it('cleanup unmounts everything; rm removes the layers, children first', () => {
      ok(cli(['mount', top()]));
      ok(cli(['mount', ids[1]]));
      ok(cli(['cleanup']));
      assert.deepEqual(mountsUnder(root), []);
      const removed = ok(cli(['rm', ...[...ids].reverse()]))
        .trim()
        .split('\n');
      assert.deepEqual(removed, [...ids].reverse());
      assert.deepEqual(JSON.parse(ok(cli(['ls', '--json']))), []);
    });
  });
}

describe('unionctl usage errors and version', () => {
  const root = () => join(scratch, 'root-usage');

  it('unknown command: exit 2, one clean line, a suggestion when there is one', () => {
    assertCleanFailure(unionctl(['--root', root(), 'frobnicate']), 2, /unknown command 'frobnicate'/);
    const r = unionctl(['--root', root(), 'lss']);
    assertCleanFailure(r, 2, /unknown command 'lss'/);
    assert.match(r.stderr, /hint: did you mean ls\?/);
  });

  it('unknown option, missing and extra arguments: exit 2', () => {
    assertCleanFailure(unionctl(['--root', root(), 'ls', '--bogus']), 2, /unknown option '--bogus'/);
    assertCleanFailure(unionctl(['--root', root(), '--bogus', 'ls']), 2, /unknown option '--bogus'/);
    assertCleanFailure(unionctl(['--root', root(), 'mount']), 2, /missing required argument 'id'/);
    assertCleanFailure(unionctl(['--root', root(), 'branches', 'a', 'b']), 2, /too many arguments/);
    assertCleanFailure(unionctl(['--root', root(), 'diff', 'x', '-o']), 2, /argument missing/);
    assert.ok(!existsSync(root()), 'usage errors touch nothing');
  });

  it('no command prints the help on stderr and exits 2', () => {
    const r = unionctl([]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /Usage: unionctl/);
  });

  it('--version and version print the package version', () => {
    assert.equal(ok(unionctl(['--version'])), `${VERSION}\n`);
    assert.equal(ok(unionctl(['version'])), `${VERSION}\n`);
  });

  it('--help exits 0 and lists the commands', () => {
    const help = ok(unionctl(['--help']));
    for (const c of ['info', 'import', 'create', 'mount', 'umount', 'rm', 'ls', 'cleanup', 'branches', 'diff', 'changes', 'size']) {
      assert.match(help, new RegExp(`^  ${c}\\b`, 'm'));
    }
  });
});
