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
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { chmodSync, cpSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { buildTar } from '../helpers/tarbuild.js';
import { listing, makeLayerTar, MAIN, SAMPLE_DOCKER, tarDir, untar, writeOciLayout, type Result } from './images-helpers.js';

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
    // 256 KiB that does not compress: more than the small filesystem of the full-disk tests holds.
    layers: [{ tar: makeLayerTar(scratch, 'base', { 'etc/hostname': 'sample\n', 'usr/share/noise.bin': randomBytes(256 << 10) }) }],
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

  it("-o '', --parent '', --id '', an empty file, id or image argument: refused naming it", () => {
    refused(cli(['diff', layer, '-o', '']), 2, /--output .*the output file must not be empty/);
    refused(cli(['save', 'sample:1', '-o', '']), 2, /--output .*the output file must not be empty/);
    refused(cli(['diff', '--parent', '', layer]), 2, /--parent .*must not be empty/);
    refused(cli(['import', '--parent', '', '-'], { input: Buffer.alloc(1024) }), 2, /--parent .*must not be empty/);
    refused(cli(['create', '--id', '']), 2, /--id .*must not be empty/);
    refused(cli(['import', '']), 2, /argument 'file'.*the input file must not be empty/);
    refused(cli(['load', '']), 2, /argument 'file'.*the image archive must not be empty/);
    refused(cli(['load', '--image', '', join(scratch, 'image')]), 2, /--image .*must not be empty/);
    refused(cli(['rmi', 'sample:1', '']), 2, /argument 'image': an image name or id must not be empty/);
    refused(cli(['mount', '']), 2, /argument 'id': the layer or image must not be empty/);
    refused(cli(['rm', '']), 2, /argument 'id': a layer id must not be empty/);
  });
});

/** `diff -o PATH` and `save -o PATH`: the two commands that write an output file. */
const WRITERS: Array<{ name: string; args: (path: string) => string[] }> = [
  { name: 'diff', args: (path) => ['diff', layer, '-o', path] },
  { name: 'save', args: (path) => ['save', 'sample:1', '-o', path] },
];

/** Type letter and device number of what is at `path`, without following it. */
function identity(path: string): string {
  const st = lstatSync(path);
  const kind = st.isFile() ? 'f' : st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFIFO() ? 'p' : st.isSocket() ? 's' : 'c';
  return `${kind} ${st.rdev} ${st.ino}`;
}

/** A tar that `tar -t` reads. */
function assertTar(path: string): void {
  execFileSync('tar', ['-tf', path], { stdio: 'ignore' });
}

describe('-o PATH: only a regular file is written, through a temp file beside it', () => {
  for (const w of WRITERS) {
    describe(w.name, () => {
      const dir = () => join(scratch, `out-${w.name}`);
      before(() => mkdirSync(dir()));

      it('a device node, a FIFO, a socket or a directory at PATH is refused and left as it was', () => {
        const things: Record<string, RegExp> = {
          full: /is a character device, not a regular file/,
          fifo: /is a FIFO/,
          sock: /is a socket/,
          subdir: /is a directory/,
        };
        execFileSync('mknod', [join(dir(), 'full'), 'c', '1', '7']); // a /dev/full of our own
        execFileSync('mkfifo', [join(dir(), 'fifo')]);
        execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', join(dir(), 'sock')]);
        mkdirSync(join(dir(), 'subdir'));
        const before = readdirSync(dir()).sort();
        for (const [name, why] of Object.entries(things)) {
          const path = join(dir(), name);
          const was = identity(path);
          const line = refused(cli(w.args(path)), 1, why);
          assert.ok(line.includes(JSON.stringify(path)), `the message names ${path}: ${line}`);
          assert.equal(identity(path), was, `${name} is what it was`);
        }
        assert.deepEqual(readdirSync(dir()).sort(), before, 'no temp file left beside them');
        assert.deepEqual(readdirSync(join(dir(), 'subdir')), [], 'nothing written into the directory');
      });

      it('a symbolic link at PATH is neither followed nor replaced', () => {
        const target = join(scratch, `precious-${w.name}`);
        writeFileSync(target, 'keep me\n');
        const link = join(dir(), 'link.tar');
        symlinkSync(target, link);
        const dangling = join(dir(), 'dangling.tar');
        symlinkSync(join(scratch, `not-there-${w.name}`), dangling);
        refused(cli(w.args(link)), 1, /output file .*link\.tar.* is a symbolic link/);
        refused(cli(w.args(dangling)), 1, /is a symbolic link/);
        assert.equal(readlinkSync(link), target);
        assert.equal(readFileSync(target, 'utf8'), 'keep me\n', 'the target is untouched');
        assert.ok(!existsSync(join(scratch, `not-there-${w.name}`)), "a dangling link's target is not created");
      });

      it('a missing directory is an error; it is not created', () => {
        const missing = join(dir(), 'no-such-dir');
        refused(cli(w.args(join(missing, 'x.tar'))), 1, /output directory .*no-such-dir.* does not exist/);
        assert.ok(!existsSync(missing));
      });

      it('a regular file at PATH is replaced by a new file (mode 0644 minus the umask) once complete', () => {
        const path = join(dir(), 'existing.tar');
        writeFileSync(path, 'old content\n', { mode: 0o600 });
        const hardLink = join(dir(), 'existing-link');
        linkSync(path, hardLink);
        const oldInode = lstatSync(path).ino;
        ok(cli(w.args(path)));
        assertTar(path);
        const st = lstatSync(path);
        assert.notEqual(st.ino, oldInode, 'renamed into place, not written into the old file');
        assert.equal(st.mode & 0o777, 0o644 & ~process.umask());
        assert.equal(readFileSync(hardLink, 'utf8'), 'old content\n', 'the old file (another name of it) is untouched');
        assert.deepEqual(
          readdirSync(dir()).filter((n) => n.startsWith('.')),
          [],
          'no temp file left',
        );
      });

      it('a full disk: one error naming PATH, PATH as it was, no temp file', (t) => {
        const small = makeScratch({ size: '128k' });
        t.after(() => small.dispose());
        const path = join(small.dir, 'out.tar');
        writeFileSync(path, 'old content\n');
        const r = cli(w.args(path));
        refused(r, 1, /output file .*out\.tar.*(ENOSPC|no space left)/i);
        assert.match(r.stderr, /hint: free space/);
        assert.equal(readFileSync(path, 'utf8'), 'old content\n');
        assert.deepEqual(readdirSync(small.dir), ['out.tar'], 'no temp file or staging dir left');
      });
    });
  }

  it('save stopped by SIGINT or SIGTERM while writing: no temp file, PATH as it was', async (t) => {
    const image = writeOciLayout(join(scratch, 'big-image'), {
      name: 'big:1',
      layers: [{ tar: makeLayerTar(scratch, 'big', { 'big.bin': randomBytes(24 << 20) }) }],
    });
    ok(cli(['load', image]));
    t.after(() => ok(cli(['rmi', 'big:1'])));
    const dir = join(scratch, 'out-interrupted');
    mkdirSync(dir);
    const path = join(dir, 'big.tar');
    writeFileSync(path, 'old content\n');
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const child = spawn(process.execPath, [MAIN, '--root', root, '--driver', 'vfs', 'save', 'big:1', '-o', path, '--compress', 'gzip'], {
        stdio: 'ignore',
      });
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, sig) => resolve(sig)));
      // Wait until it has made its temp files beside PATH, then stop it.
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline && child.exitCode === null && readdirSync(dir).length < 3) await sleep(5);
      assert.ok(readdirSync(dir).length >= 3, `save was writing when stopped: ${readdirSync(dir).join(' ')}`);
      child.kill(signal);
      assert.equal(await exited, signal, `killed by ${signal}, as without the clean-up`);
      assert.deepEqual(readdirSync(dir), ['big.tar'], `${signal}: temp file and staging dir removed`);
      assert.equal(readFileSync(path, 'utf8'), 'old content\n');
    }
  });
});

describe('load DIR reads nothing outside the directory', () => {
  const SECRET = 'top-secret-content-of-an-outside-file';
  let n = 0;
  /** A copy of the test image's OCI layout, and a directory beside it (outside it). */
  function layoutCopy(): { dir: string; outside: string; blob: (i: number) => string } {
    const dir = join(scratch, `layout-${n}`);
    const outside = join(scratch, `outside-${n++}`);
    cpSync(join(scratch, 'image'), dir, { recursive: true });
    mkdirSync(outside);
    const blobs = () => readdirSync(join(dir, 'blobs', 'sha256')).sort();
    return { dir, outside, blob: (i) => join(dir, 'blobs', 'sha256', blobs()[i]!) };
  }

  /** load DIR is refused with UNSAFE_ENTRY naming `member`; the store unchanged; no outside content printed. */
  function refusesLoad(dir: string, member: RegExp): void {
    const before = listing(root);
    const r = cli(['load', dir]);
    const line = refused(r, 1, /leads outside the directory/);
    assert.match(line, member);
    assert.ok(!r.stderr.includes(SECRET), 'nothing of the outside file is printed');
    assert.deepEqual(listing(root), before, 'the store is unchanged');
  }

  it('a symlinked blobs/ directory leading outside is refused', () => {
    const { dir, outside } = layoutCopy();
    renameSync(join(dir, 'blobs'), join(outside, 'blobs'));
    symlinkSync(join(outside, 'blobs'), join(dir, 'blobs'));
    refusesLoad(dir, /"blobs\/sha256\/[0-9a-f]{64}"/);
  });

  it('a blob that is a symlink to a file outside is refused (even with the right content)', () => {
    const { dir, outside, blob } = layoutCopy();
    for (let i = 0; i < 3; i++) {
      const b = blob(i);
      const moved = join(outside, `blob-${i}`);
      renameSync(b, moved);
      symlinkSync(moved, b);
    }
    refusesLoad(dir, /blobs\/sha256\/[0-9a-f]{64}/);
  });

  it("index.json or a docker save's manifest.json linked to an outside file: refused, its content never printed", () => {
    const oci = layoutCopy();
    writeFileSync(join(oci.outside, 'passwd'), `${SECRET}\n`);
    rmSync(join(oci.dir, 'index.json'));
    symlinkSync(join(oci.outside, 'passwd'), join(oci.dir, 'index.json'));
    refusesLoad(oci.dir, /"index\.json"/);

    const docker = untar(SAMPLE_DOCKER, join(scratch, 'docker-dir'));
    writeFileSync(join(scratch, 'docker-outside.json'), `${SECRET}\n`);
    rmSync(join(docker, 'manifest.json'));
    symlinkSync('../docker-outside.json', join(docker, 'manifest.json'));
    refusesLoad(docker, /"manifest\.json"/);
  });

  it('JSON that does not parse: the error names the file, it does not quote its content', () => {
    const { dir } = layoutCopy();
    writeFileSync(join(dir, 'index.json'), `${SECRET} {`);
    const r = cli(['load', dir]);
    refused(r, 1, /index\.json.* is not valid JSON/);
    assert.ok(!r.stderr.includes(SECRET.slice(0, 10)), show(r));
  });

  it('symlinks that stay inside (docker save links a repeated layer.tar to the first) are followed', () => {
    const docker = untar(SAMPLE_DOCKER, join(scratch, 'docker-dir-links'));
    const manifest = JSON.parse(readFileSync(join(docker, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
    const top = manifest[0]!.Layers.at(-1)!; // "<hex>/layer.tar"
    mkdirSync(join(docker, 'shared'));
    renameSync(join(docker, top), join(docker, 'shared', 'layer.tar'));
    symlinkSync('../shared/layer.tar', join(docker, top));
    ok(cli(['load', docker]));
    ok(cli(['rmi', 'sample-app:1']));
  });

  it('a FIFO in place of a member is not opened (no hang) and counts as missing', () => {
    const { dir } = layoutCopy();
    rmSync(join(dir, 'index.json'));
    execFileSync('mkfifo', [join(dir, 'index.json')]);
    const r = spawnSync(process.execPath, [MAIN, '--root', root, '--driver', 'vfs', 'load', dir], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.signal, null, 'it did not hang');
    refused({ status: r.status, stdout: r.stdout, stderr: r.stderr }, 1, /not an image archive/);
  });
});

describe('control characters in names, paths and messages are printed escaped', () => {
  const ESC_NAME = 'evil\x1b]0;pwned\x07\x1b[2J\u202eboo';
  const TAG = `${ESC_NAME}:1`;
  /** Anything a terminal would act on: C0 controls but newline, DEL, C1, bidi overrides. */
  const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

  function assertEscaped(r: Result): void {
    assert.doesNotMatch(r.stdout, RAW_CONTROL, `stdout has a raw control character:\n${JSON.stringify(r.stdout)}`);
    assert.doesNotMatch(r.stderr, RAW_CONTROL, `stderr has a raw control character:\n${JSON.stringify(r.stderr)}`);
  }

  it('an image tag with escape sequences: load, images and rmi show it escaped; --json has it exactly', () => {
    const image = writeOciLayout(join(scratch, 'evil-image'), {
      name: TAG,
      layers: [{ tar: makeLayerTar(scratch, 'evil', { 'etc/motd': 'hi\n' }) }],
    });
    const loaded = cli(['load', image]);
    ok(loaded);
    assertEscaped(loaded);
    assert.match(loaded.stdout, /Loaded image: "evil\\x1b\]0;pwned\\x07\\x1b\[2J\\u202eboo:1"/);
    const table = cli(['images']);
    ok(table);
    assertEscaped(table);
    assert.ok(table.stdout.includes('"evil\\x1b]0;pwned\\x07\\x1b[2J\\u202eboo:1"'), table.stdout);
    const json = JSON.parse(ok(cli(['--json', 'images']))) as Array<{ names: string[] }>;
    assert.ok(
      json.some((i) => i.names.includes(TAG)),
      'the JSON has the exact name',
    );
    const rmi = cli(['rmi', TAG]);
    ok(rmi);
    assertEscaped(rmi);
    assert.match(rmi.stdout, /^Untagged: "evil\\x1b/m);
  });

  it('error messages: a name from an argument or from commander is escaped, on one line', () => {
    const missing = cli(['rmi', `nope\x1b[31m\nred`]);
    assertEscaped(missing);
    refused(missing, 1, /image nope\\x1b\[31m\\nred.* does not exist/);
    const unknown = cli([`frob\x1b[2J`]);
    assertEscaped(unknown);
    refused(unknown, 2, /unknown command 'frob\\x1b\[2J'/);
  });

  it('file names in a layer: changes and the --patch content are escaped, changes --json is exact', () => {
    const evil = `etc/${ESC_NAME}`;
    const base = buildTar([
      { name: 'etc/', type: 'dir', mode: 0o755 },
      { name: evil, content: 'x\n' },
      { name: 'etc/note.txt', content: 'before\n' },
    ]);
    const top = buildTar([{ name: 'etc/note.txt', content: 'after \x1b[2J\x1b]0;pwned\x07\n' }]);
    const baseId = ok(cli(['import', '--id', 'evil-base', '-'], { input: base })).trim();
    ok(cli(['import', '--id', 'evil-top', '--parent', baseId, '-'], { input: top }));
    const changes = cli(['changes', baseId]);
    ok(changes);
    assertEscaped(changes);
    assert.match(changes.stdout, /^A "\/etc\/evil\\x1b\]0;pwned\\x07\\x1b\[2J\\u202eboo"$/m);
    const list = JSON.parse(ok(cli(['--json', 'changes', baseId]))) as Array<{ path: string }>;
    assert.ok(
      list.some((c) => c.path === `/${evil}`),
      'the JSON has the exact path',
    );
    const patch = cli(['changes', '--patch', 'evil-top']);
    ok(patch);
    assertEscaped(patch);
    assert.match(patch.stdout, /^\+after \\x1b\[2J\\x1b\]0;pwned\\x07$/m);
    ok(cli(['rm', 'evil-top', 'evil-base']));
  });
});

describe('empty input', () => {
  /**
   * Whether the tar engine refuses 0 bytes or makes an empty layer of them, the CLI says so in one
   * line: the error, or a warning beside the new layer's id.
   */
  function saysEmpty(r: Result, what: RegExp): void {
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    if (r.status === 0) {
      assert.equal(lines.length, 1, show(r));
      assert.match(lines[0]!, /^unionctl: warning: /, show(r));
      assert.match(lines[0]!, what, show(r));
      assert.match(lines[0]!, /empty \(0 bytes\)/, show(r));
      ok(cli(['rm', r.stdout.trim()]));
    } else {
      refused(r, 1, /empty \(0 bytes\)/);
      assert.match(lines[0]!, what, show(r));
    }
  }

  it('import of 0 bytes from stdin or from an empty file: one clear line', () => {
    saysEmpty(cli(['import', '-'], { input: Buffer.alloc(0) }), /stdin/);
    const empty = join(scratch, 'empty.tar');
    writeFileSync(empty, '');
    saysEmpty(cli(['import', empty]), /empty\.tar/);
  });

  it('load of 0 bytes from stdin or from an empty file: refused, saying it is empty', () => {
    const empty = join(scratch, 'empty-archive.tar');
    writeFileSync(empty, '');
    refused(cli(['load', empty]), 1, /image archive .*empty-archive\.tar is empty \(0 bytes\)/);
    refused(cli(['load', '-'], { input: Buffer.alloc(0) }), 1, /archive from stdin is empty \(0 bytes\)/);
  });
});

describe('a full disk while spooling a compressed archive', () => {
  it('is one error naming the archive and the spool file, saying to free space; the store unchanged', (t) => {
    const small = makeScratch({ size: '4m' });
    t.after(() => small.dispose());
    const smallRoot = join(small.dir, 'root');
    const g = ['--root', smallRoot, '--driver', 'vfs'];
    ok(run([...g, 'create'])); // the store is made (a read-only command would refuse a root without one)
    // 16 MiB of zeros: a few KiB gzipped, four times the filesystem once spooled (decompressed).
    const layout = writeOciLayout(join(scratch, 'zeros-image'), {
      name: 'zeros:1',
      layers: [{ tar: makeLayerTar(scratch, 'zeros', { 'zeros.bin': Buffer.alloc(16 << 20) }) }],
    });
    const archive = join(scratch, 'zeros.tar.gz');
    writeFileSync(archive, gzipSync(readFileSync(tarDir(layout, join(scratch, 'zeros.tar')))));
    const before = listing(smallRoot);
    for (const input of [archive, '-']) {
      const r = run([...g, 'load', input], input === '-' ? { input: readFileSync(archive) } : {});
      const line = refused(r, 1, /cannot spool it to .*archive\.tar.*(ENOSPC|no space left)/i);
      assert.match(line, input === '-' ? /^unionctl: archive from stdin: / : /^unionctl: image archive .*zeros\.tar\.gz: /);
      assert.match(r.stderr, /hint: free space on the filesystem of .*\/tmp/);
      assert.deepEqual(listing(smallRoot), before, 'no spool file left, the store unchanged');
    }
  });
});

describe('read-only commands never make a store; missing privileges are named (issue 14)', () => {
  it('ls, info, images, branches, changes, rmi, umount on a root without a store: "no store at", nothing created', () => {
    const missing = join(scratch, 'no-store-here');
    for (const args of [
      ['ls'],
      ['info'],
      ['images'],
      ['branches', layer],
      ['changes', layer],
      ['rmi', 'x'],
      ['umount', layer],
      ['cleanup'],
    ]) {
      refused(run(['--root', missing, ...args]), 1, /^unionctl: no store at .*no-store-here$/);
      refused(run(['--root', missing, '--driver', 'overlay2', ...args]), 1, /no store at/);
    }
    assert.ok(!existsSync(missing), 'the root was not created');
    const emptyDir = join(scratch, 'empty-dir');
    mkdirSync(emptyDir);
    refused(run(['--root', emptyDir, 'ls']), 1, /no store at/);
    assert.deepEqual(readdirSync(emptyDir), [], 'nothing was written into an empty directory');
    // The commands that put something in make the store.
    ok(run(['--root', missing, '--driver', 'vfs', 'create']));
    assert.ok(existsSync(join(missing, 'store.json')));
  });

  it('a driver the store has no layers of is named, not made', () => {
    const before = listing(root);
    refused(run(['--root', root, '--driver', 'overlay2', 'ls']), 1, /holds layers of storage driver vfs, not overlay2/);
    assert.deepEqual(listing(root), before);
  });

  it('without root: a permission error naming the privilege, exit 77, never "internal error"', (t) => {
    // As nobody: the store (root's, mode 0700) cannot be read, and a new store cannot give files their owners.
    const asNobody = (args: string[]) => {
      const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, MAIN, ...args], {
        encoding: 'utf8',
      });
      if (r.error) throw r.error;
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    const probe = asNobody(['--version']);
    if (probe.status !== 0) return t.skip(`the CLI cannot run as nobody here: ${probe.stderr}`);
    const line = refused(asNobody(['--root', root, 'ls']), 77, /^unionctl: permission denied: /);
    assert.doesNotMatch(line, /internal error/);
    const r = asNobody(['--root', root, 'ls']);
    assert.match(r.stderr, /hint: unionctl runs as uid 65534; .*run it as root/);
    const own = join('/tmp', `unionctl-nobody-${process.pid}`);
    mkdirSync(own);
    chmodSync(own, 0o777); // past the umask: nobody makes its store in here
    t.after(() => rmSync(own, { recursive: true, force: true }));
    const tarFile = join(own, 'owned.tar'); // where nobody can read it
    writeFileSync(tarFile, makeLayerTar(scratch, 'owned', { 'etc/owned': 'x\n' }));
    const imp = asNobody(['--root', join(own, 'store'), '--driver', 'vfs', 'import', tarFile]);
    refused(imp, 77, /^unionctl: permission denied: .*chown/);
    assert.match(imp.stderr, /CAP_CHOWN/);
  });
});
