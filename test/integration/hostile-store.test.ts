/**
 * A hostile or damaged store never makes unionctl touch anything outside it (issue 11): every test
 * damages a real store the way a person, a crash or an attacker could, runs the CLI on it, and
 * checks that the command refuses with a typed error naming the file (CORRUPT, hint pointing to
 * `unionctl check`; never "internal error", exit 70) and that nothing outside the store changed.
 *
 * - symlinks where the layout has none (work/, merged/, upper/, diff/, dir/<id>, layerdb/), a
 *   mount inside a layer being removed;
 * - layout files that would inject mount options (overlay2 lower and link, overlay lower-id, aufs
 *   layers/<id>);
 * - aufs ids taken by directories it did not make; killed imports (aufs, overlay v1);
 * - permissions: a setuid-root binary in a layer is out of reach of user nobody, per driver;
 * - damaged records, a store.lock that is a directory, damaged journals;
 * - a store without layers keeps its driver; recovery says what it did.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { eventually } from '../helpers/wait.js';
import { CLI_MAIN, runCli, showResult, type CliResult } from '../helpers/cli.js';
import { mountsUnder } from '../helpers/mounts.js';
import { withScratchFs } from '../helpers/scratch.js';
import { buildTar, type TarSpec } from '../helpers/tarbuild.js';

const MAIN = CLI_MAIN;
type Result = CliResult;
const show = showResult;

/** The CLI on the store at `root`. */
function unionctl(root: string, args: string[], opts: { input?: Buffer } = {}): Result {
  return runCli(['--root', root, ...args], opts);
}

function ok(r: Result): string {
  assert.equal(r.status, 0, show(r));
  return r.stdout;
}

/** A refusal with a typed CORRUPT error: exit 1, the message names `mention`, the hint points to unionctl check. */
function assertCorrupt(r: Result, mention: string | RegExp): void {
  assert.equal(r.status, 1, show(r));
  assert.doesNotMatch(r.stderr, /internal error/, show(r));
  const [message = '', hint = ''] = r.stderr.split('\n').filter((l) => l.startsWith('unionctl: ') || l.startsWith('  hint: '));
  if (typeof mention === 'string') assert.ok(message.includes(mention), `${JSON.stringify(mention)} not named:\n${show(r)}`);
  else assert.match(message, mention, show(r));
  assert.match(hint, /unionctl check/, show(r));
}

/** path, type, size and mode of everything under `dir`: what "nothing changed" compares. */
function listing(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return execFileSync('find', [dir, '-printf', '%P %y %s %m\\n'], { encoding: 'utf8' }).split('\n').filter(Boolean).sort();
}

/** Content hashes too: a layer's files that must come out of a crash unchanged. */
function fingerprint(dir: string): string {
  return execFileSync(
    'sh',
    ['-c', `cd "$1" && find . -printf '%p %y %m %s %T@\\n' | sort && find . -type f -exec sha256sum {} + | sort`, 'sh', dir],
    {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    },
  );
}

function writeTar(dir: string, name: string, entries: TarSpec[]): string {
  const path = join(dir, name);
  writeFileSync(path, buildTar(entries));
  return path;
}

const BASE_ENTRIES: TarSpec[] = [
  { name: 'etc/', type: 'dir', mode: 0o755 },
  { name: 'etc/hostname', content: 'base\n' },
  { name: 'bin/', type: 'dir', mode: 0o755 },
  { name: 'bin/tool', content: 'tool v1\n', mode: 0o755 },
];

/** A directory outside the store with a file in it, the thing that must never change. */
function makeOutside(scratch: string, name = 'outside'): string {
  const dir = join(scratch, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'keep'), 'do not touch\n');
  return dir;
}

/** A store at <scratch>/<name> with layer `base` (imported) and its child `c1` (an empty image layer). */
function storeWithChild(scratch: string, driver: string, name = 'store'): string {
  const root = join(scratch, name);
  const tar = writeTar(scratch, `${name}-base.tar`, BASE_ENTRIES);
  ok(unionctl(root, ['--driver', driver, 'import', tar, '--id', 'base']));
  ok(unionctl(root, ['create', '--parent', 'base', '--id', 'c1']));
  return root;
}

function replaceWithSymlink(path: string, target: string): void {
  rmSync(path, { recursive: true, force: true });
  symlinkSync(target, path);
}

/** Mount points strictly below `dir` (the scratch dir is a mount itself). */
function mountPoints(dir: string): string[] {
  return mountsUnder(dir)
    .map((m) => m.mountPoint)
    .filter((p) => p !== dir);
}

/** The 26-character link id of an overlay2 layer. */
function linkIdOf(root: string, id: string): string {
  return readFileSync(join(root, 'overlay2', id, 'link'), 'utf8');
}

// ---- 1. symlinks where the layout has none ---------------------------------------------------

/** A path of a store with layers base and c1 that the layout has as a real directory, replaced by a symlink. */
interface SymlinkCase {
  driver: string;
  /** Relative to the store root. */
  path: string;
  title: string;
}

const SYMLINK_CASES: SymlinkCase[] = [
  { driver: 'overlay2', path: 'overlay2/c1/work', title: 'a work/ (overlayfs would make its work dir there)' },
  { driver: 'overlay2', path: 'overlay2/c1/merged', title: 'a merged/ (the union would be mounted over its target)' },
  { driver: 'overlay2', path: 'overlay2/c1/diff', title: 'a diff/ (the upper dir: writes would land there)' },
  { driver: 'overlay', path: 'overlay/c1/upper', title: 'an upper/' },
  { driver: 'overlay', path: 'overlay/base/root', title: "the lower layer's root/" },
  { driver: 'aufs', path: 'aufs/diff/base', title: "a parent's diff/<id> (the union would show the files it points to)" },
  { driver: 'aufs', path: 'aufs/mnt/c1', title: 'a mnt/<id>' },
  { driver: 'vfs', path: 'vfs/dir/c1', title: 'a dir/<id>' },
];

describe('paths inside the store are checked without following symlinks', () => {
  for (const c of SYMLINK_CASES) {
    it(`${c.driver}: ${c.title} replaced by a symlink to a directory outside: mount is CORRUPT naming it, rm c1 never follows it`, async (t) => {
      const scratch = await withScratchFs(t);
      const root = storeWithChild(scratch, c.driver);
      const outside = makeOutside(scratch);
      const before = listing(outside);
      const path = join(root, c.path);
      if (existsSync(path)) renameSync(path, join(scratch, 'moved-away'));
      symlinkSync(outside, path);

      assertCorrupt(unionctl(root, ['mount', 'c1']), new RegExp(`${path},? is a symbolic link`));
      assert.deepEqual(mountPoints(scratch), [], 'something was mounted');
      assert.deepEqual(listing(outside), before, 'the directory outside changed');

      ok(unionctl(root, ['rm', 'c1']));
      if (c.path.includes('/c1/') || c.path.endsWith('/c1'))
        assert.equal(lstatSync(path, { throwIfNoEntry: false }), undefined, 'the link stays');
      assert.deepEqual(listing(outside), before, 'rm followed the symlink');
    });
  }

  it('rm refuses (IN_USE) a layer with something mounted inside its directory, instead of deleting through the mount', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'vfs');
    const outside = makeOutside(scratch);
    const before = listing(outside);
    const inside = join(root, 'vfs', 'dir', 'c1', 'etc');
    execFileSync('mount', ['--bind', outside, inside]);
    try {
      const r = unionctl(root, ['rm', 'c1']);
      assert.equal(r.status, 1, show(r));
      assert.match(r.stderr, new RegExp(`${inside} is mounted inside it`), show(r));
      assert.deepEqual(listing(outside), before, 'rm -rf crossed into the bind mount');
    } finally {
      execFileSync('umount', [inside]);
    }
    ok(unionctl(root, ['rm', 'c1']));
    assert.deepEqual(listing(outside), before);
  });

  it('layerdb/ replaced by a symlink is CORRUPT naming it, and the records behind it are neither read nor written', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'vfs');
    const moved = join(scratch, 'layerdb-elsewhere');
    renameSync(join(root, 'layerdb'), moved);
    symlinkSync(moved, join(root, 'layerdb'));
    const before = listing(moved);
    assertCorrupt(unionctl(root, ['ls']), `${join(root, 'layerdb')} is a symbolic link`);
    assertCorrupt(unionctl(root, ['create', '--id', 'c2']), `${join(root, 'layerdb')} is a symbolic link`);
    assert.deepEqual(listing(moved), before);
  });
});

// ---- 2. layout files that would inject mount options -----------------------------------------

describe('damaged layout files cannot inject mount options', () => {
  it('overlay2: lower entries other than l/<26-character id> are CORRUPT naming the lower file (commas, =, escapes, .., absolute paths)', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'overlay2');
    const outside = makeOutside(scratch);
    for (const d of ['u', 'w']) mkdirSync(join(outside, d));
    const before = listing(outside);
    const lid = linkIdOf(root, 'base');
    const lowerFile = join(root, 'overlay2', 'c1', 'lower');
    const bad: Array<[string, RegExp]> = [
      [`l/${lid},upperdir=${outside}/u,workdir=${outside}/w`, /a comma would add mount options/],
      [`l/${lid}=x`, /'=' would set a mount option/],
      [`l/${lid}\\`, /backslash/],
      [`l/../../..${outside}`, /'\.\.' would lead out/],
      [outside, /absolute path/],
      [`l/${lid}\n`, /not l\/<26-character link id>/],
    ];
    for (const [content, why] of bad) {
      writeFileSync(lowerFile, content);
      const r = unionctl(root, ['mount', 'c1']);
      assertCorrupt(r, `overlay2 lower file ${lowerFile}`);
      assert.match(r.stderr, why, show(r));
      assert.deepEqual(mountPoints(scratch), [], `mounted with lower ${JSON.stringify(content)}`);
    }
    assert.deepEqual(listing(outside), before);
  });

  it('overlay2: an l/ link repointed outside the store is CORRUPT; a damaged link file is CORRUPT naming it', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'overlay2');
    const outside = makeOutside(scratch);
    const before = listing(outside);
    const lid = linkIdOf(root, 'base');
    const link = join(root, 'overlay2', 'l', lid);
    replaceWithSymlink(link, outside);
    assertCorrupt(unionctl(root, ['mount', 'c1']), link);
    assert.deepEqual(mountPoints(scratch), []);
    assert.deepEqual(listing(outside), before);

    const linkFile = join(root, 'overlay2', 'base', 'link');
    writeFileSync(linkFile, `${lid},upperdir=${outside}`);
    assertCorrupt(unionctl(root, ['create', '--parent', 'base', '--id', 'c2']), `overlay2 link file ${linkFile}`);
    assert.equal(existsSync(join(root, 'overlay2', 'c2')), false, 'the failed create left a layer dir');
  });

  it('overlay (v1): a lower-id that is not a layer id is CORRUPT naming the file', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'overlay');
    const outside = makeOutside(scratch);
    const file = join(root, 'overlay', 'c1', 'lower-id');
    for (const content of [`base,upperdir=${outside}`, '../base', 'base/root:x']) {
      writeFileSync(file, content);
      assertCorrupt(unionctl(root, ['mount', 'c1']), `overlay lower-id file ${file}`);
      assert.deepEqual(mountPoints(scratch), []);
    }
  });

  it('aufs: a layers/<id> line that is not a layer id is CORRUPT naming the file', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'aufs');
    const file = join(root, 'aufs', 'layers', 'c1');
    for (const content of ['base,dirperm1\n', 'base=rw:/etc\n', '../base\n']) {
      writeFileSync(file, content);
      assertCorrupt(unionctl(root, ['mount', 'c1']), `aufs layers file ${file}`);
      assert.deepEqual(mountPoints(scratch), []);
    }
  });
});

// ---- 3. aufs ids, killed imports ---------------------------------------------------------------

/** Starts `unionctl import -` and feeds it the first half of `tar`, then stalls (stdin stays open). */
function stalledImport(root: string, tar: Buffer, args: string[]): { kill: () => Promise<void> } {
  const child = spawn(process.execPath, [MAIN, '--root', root, 'import', '-', ...args], { stdio: ['pipe', 'ignore', 'ignore'] });
  child.stdin.on('error', () => {});
  child.stdin.write(tar.subarray(0, tar.length >> 1));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return {
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Catches a stalled import mid-apply: polled often, bounded at 30 s. */
const POLL_APPLY = { timeoutMs: 30_000, intervalMs: 20 };

function bigLayer(files: number): Buffer {
  const entries: TarSpec[] = [{ name: 'data/', type: 'dir', mode: 0o755 }];
  for (let i = 0; i < files; i++) entries.push({ name: `data/f${i}`, content: Buffer.alloc(4096, i % 251) });
  return buildTar(entries);
}

function hasEntries(dir: string): boolean {
  try {
    return readdirSync(dir).length > 0;
  } catch {
    return false;
  }
}

describe('aufs ids and killed imports', () => {
  it('aufs: an id whose diff/ or mnt/ directory someone else made is EXISTS, and that directory is left as it was', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'aufs');
    for (const top of ['diff', 'mnt']) {
      const dir = join(root, 'aufs', top, `taken-${top}`);
      mkdirSync(dir);
      writeFileSync(join(dir, 'precious'), 'mine\n');
      const r = unionctl(root, ['create', '--id', `taken-${top}`]);
      assert.equal(r.status, 1, show(r));
      assert.match(r.stderr, /already used by a directory/, show(r));
      assert.equal(readFileSync(join(dir, 'precious'), 'utf8'), 'mine\n', `aufs deleted ${dir}`);
      assert.equal(existsSync(join(root, 'aufs', 'layers', `taken-${top}`)), false);
    }
    assert.equal(existsSync(join(root, 'aufs', 'mnt', 'taken-diff')), false, 'the refused create left a mnt/ dir behind');
  });

  it('aufs: the leftover of a create killed after mnt/<id> is rolled back by the next command, and the id is free again', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'aufs');
    // What a create killed between mkdir mnt/<id> and mkdir diff/<id> leaves: the record, mnt/<id>.
    mkdirSync(join(root, 'aufs', 'mnt', 'victim'));
    const rec = JSON.parse(readFileSync(join(root, 'layerdb', 'c1.json'), 'utf8')) as Record<string, unknown>;
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    writeFileSync(
      join(root, 'layerdb', 'victim.json'),
      JSON.stringify({ ...rec, id: 'victim', parent: undefined, state: 'creating', owner: { pid: 2 ** 22 + 1, start: '1', boot: bootId } }),
    );
    const r = unionctl(root, ['ls']);
    assert.equal(r.status, 0, show(r));
    assert.match(r.stderr, /^unionctl: rolled back the interrupted creation of layer victim/m, show(r));
    assert.equal(existsSync(join(root, 'aufs', 'mnt', 'victim')), false, 'the leftover mnt/ dir stays');
    ok(unionctl(root, ['create', '--id', 'victim']));
  });

  it('aufs: an import killed mid-apply is rolled back by the next command and its id can be used again', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'aufs');
    const tar = bigLayer(400);
    const importer = stalledImport(root, tar, ['--id', 'victim', '--parent', 'base']);
    try {
      await eventually('the apply to write into diff/victim', () => hasEntries(join(root, 'aufs', 'diff', 'victim', 'data')), POLL_APPLY);
    } finally {
      await importer.kill();
    }
    const r = unionctl(root, ['ls']);
    assert.equal(r.status, 0, show(r));
    assert.match(r.stderr, /rolled back the interrupted creation of layer victim/, show(r));
    for (const top of ['diff', 'mnt', 'layers']) assert.equal(existsSync(join(root, 'aufs', top, 'victim')), false, `${top}/victim left`);
    writeFileSync(join(scratch, 'big.tar'), tar);
    ok(unionctl(root, ['import', join(scratch, 'big.tar'), '--id', 'victim', '--parent', 'base']));
  });

  it('overlay (v1): an import killed during the apply is rolled back by the next open: the store is as before', async (t) => {
    const scratch = await withScratchFs(t);
    const root = join(scratch, 'store');
    ok(unionctl(root, ['--driver', 'overlay', 'import', writeTar(scratch, 'base.tar', BASE_ENTRIES), '--id', 'base']));
    const home = join(root, 'overlay');
    const before = {
      home: listing(home),
      layerdb: readdirSync(join(root, 'layerdb')).sort(),
      base: fingerprint(join(home, 'base', 'root')),
    };
    const importer = stalledImport(root, bigLayer(400), ['--id', 'victim', '--parent', 'base']);
    try {
      await eventually(
        'the apply to write into its temporary root',
        () =>
          (existsSync(join(home, 'victim')) ? readdirSync(join(home, 'victim')) : []).some(
            (n) => n.startsWith('tmproot') && hasEntries(join(home, 'victim', n, 'data')),
          ),
        POLL_APPLY,
      );
    } finally {
      await importer.kill();
    }
    const r = unionctl(root, ['ls', '--json']);
    assert.equal(r.status, 0, show(r));
    assert.deepEqual(
      (JSON.parse(r.stdout) as Array<{ id: string }>).map((l) => l.id),
      ['base'],
    );
    assert.match(r.stderr, /rolled back the interrupted creation of layer victim/, show(r));
    assert.deepEqual(listing(home), before.home, 'the overlay home is not as before');
    assert.deepEqual(readdirSync(join(root, 'layerdb')).sort(), before.layerdb);
    assert.equal(fingerprint(join(home, 'base', 'root')), before.base, "the parent's hardlinked files changed");
    assert.deepEqual(mountPoints(root), []);
  });
});

// ---- 4. permissions ------------------------------------------------------------------------------

/** Runs `argv` as user nobody; returns its exit status and stderr. */
function asNobody(argv: string[]): { status: number | null; stderr: string } {
  const r = spawnSync('runuser', ['-u', 'nobody', '--', ...argv], { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

/** Where each driver keeps a base layer's files and how to mount a union on it. */
const LAYER_FILES: Record<string, (root: string, id: string) => string> = {
  vfs: (root, id) => join(root, 'vfs', 'dir', id),
  overlay2: (root, id) => join(root, 'overlay2', id, 'diff'),
  overlay: (root, id) => join(root, 'overlay', id, 'root'),
  aufs: (root, id) => join(root, 'aufs', 'diff', id),
};

describe("permissions: Docker's post-CVE-2021-41091 layout", () => {
  for (const driver of Object.keys(LAYER_FILES)) {
    it(`${driver}: user nobody cannot reach or run a layer's setuid-root binary, through its files or a mounted view`, async (t) => {
      const scratch = await withScratchFs(t);
      const root = join(scratch, 'store');
      const tar = writeTar(scratch, 'suid.tar', [
        { name: 'bin/', type: 'dir', mode: 0o755 },
        { name: 'bin/sutrue', content: readFileSync('/bin/true'), mode: 0o4755, uid: 0, gid: 0 },
      ]);
      ok(unionctl(root, ['--driver', driver, 'import', tar, '--id', 'suid']));
      // The control: the same binary where nobody can reach it runs (so a refusal below is the store's doing).
      const pub = join(scratch, 'pub');
      mkdirSync(pub, { mode: 0o755 });
      copyFileSync('/bin/true', join(pub, 'sutrue'));
      chmodSync(join(pub, 'sutrue'), 0o4755);
      assert.equal(asNobody([join(pub, 'sutrue')]).status, 0, 'nobody cannot run a setuid binary even where it is reachable');

      // A store made by an older version (or by hand) with world-traversable directories everywhere.
      const home = join(root, driver);
      for (const dir of [
        root,
        home,
        ...readdirSync(home)
          .map((n) => join(home, n))
          .filter((p) => lstatSync(p).isDirectory()),
      ])
        chmodSync(dir, 0o755);
      const mounted = ok(unionctl(root, ['mount', '--rw', 'suid']))
        .trim()
        .split('\n')
        .at(-1)!;
      try {
        for (const file of [join(LAYER_FILES[driver]!(root, 'suid'), 'bin', 'sutrue'), join(mounted, 'bin', 'sutrue')]) {
          assert.ok(existsSync(file), `${file} is not where the test expects the binary`);
          const run = asNobody([file]);
          assert.notEqual(run.status, 0, `nobody ran ${file}`);
          assert.match(run.stderr, /Permission denied/, `nobody reached ${file}: ${run.stderr}`);
          assert.equal(asNobody(['test', '-e', file]).status, 1, `nobody can see ${file}`);
        }
        assert.equal(statSync(root).mode & 0o7777, 0o700, 'store root');
        assert.equal(statSync(home).mode & 0o7777, 0o710, 'driver home');
      } finally {
        ok(unionctl(root, ['cleanup']));
      }
    });
  }
});

describe('the store root is chmodded only when it holds nothing but a store', () => {
  it('a --root that holds other things keeps its mode (it might be /tmp by mistake); its driver home still keeps nobody out', async (t) => {
    const scratch = await withScratchFs(t);
    const root = join(scratch, 'shared');
    mkdirSync(root, { mode: 0o1777 });
    chmodSync(root, 0o1777);
    writeFileSync(join(root, 'someone-elses-file'), 'x');
    const tar = writeTar(scratch, 'suid.tar', [{ name: 'sutrue', content: readFileSync('/bin/true'), mode: 0o4755, uid: 0, gid: 0 }]);
    ok(unionctl(root, ['--driver', 'vfs', 'import', tar, '--id', 'suid']));
    ok(unionctl(root, ['ls']));
    assert.equal(statSync(root).mode & 0o7777, 0o1777, 'a directory that is not only a store was chmodded');
    assert.equal(statSync(join(root, 'vfs')).mode & 0o7777, 0o710);
    const run = asNobody([join(root, 'vfs', 'dir', 'suid', 'sutrue')]);
    assert.match(run.stderr, /Permission denied/, run.stderr);
  });
});

// ---- 5. damaged records ------------------------------------------------------------------------

describe('records are validated on read', () => {
  it('a layer record with wrong JSON types: ls lists the others and fails naming the file; rm and rmi of other layers work', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'vfs');
    ok(unionctl(root, ['create', '--id', 'other']));
    const file = join(root, 'layerdb', 'c1.json');
    const good = readFileSync(file, 'utf8');
    for (const [field, value, says] of [
      ['created', null, '"created": null, not an ISO 8601 time'],
      ['size', 'x', '"size": "x", not a byte count'],
      ['writable', 1, '"writable": 1, not true or false'],
      ['parent', '../x', '"parent": "../x", not a layer id'],
    ] as const) {
      writeFileSync(file, JSON.stringify({ ...(JSON.parse(good) as object), [field]: value }));
      const r = unionctl(root, ['ls']);
      assertCorrupt(r, `layer record ${file} has ${says}`);
      assert.match(r.stdout, /^base /m, show(r));
      assert.match(r.stdout, /^other /m, show(r));
      assert.doesNotMatch(r.stdout, /^c1 /m, show(r));
      assertCorrupt(unionctl(root, ['images']), file);
      const rm = unionctl(root, ['rm', 'base']);
      if (field === 'parent') {
        assertCorrupt(rm, file); // it cannot say whose child it is: a removal refuses rather than guess
      } else {
        // base's child c1 is damaged but still names its parent: base is still built on.
        assert.equal(rm.status, 1, show(rm));
        assert.match(rm.stderr, /has child layers: c1/, show(rm));
      }
    }
    writeFileSync(file, JSON.stringify({ ...(JSON.parse(good) as object), created: null }));
    ok(unionctl(root, ['rm', 'other'])); // the damaged record says its parent is base: other has no children
    // A record that is not JSON cannot say whose child it is: removals refuse rather than guess.
    writeFileSync(file, '{"id": "c1", "created": ');
    assertCorrupt(unionctl(root, ['ls']), `layer record ${file} is not valid JSON`);
    ok(unionctl(root, ['create', '--id', 'third']));
    assertCorrupt(unionctl(root, ['rm', 'third']), `layer record ${file} is not valid JSON`);
  });

  it('images and rmi with damaged records: images lists the rest and fails naming them; rmi works unless an image record is unreadable', async (t) => {
    const scratch = await withScratchFs(t);
    const root = join(scratch, 'store');
    const repo = process.env.UNIONCTL_REPO ?? process.cwd();
    ok(unionctl(root, ['--driver', 'vfs', 'load', join(repo, 'fixtures', 'sample-docker.tar')]));
    const damagedImage = join(root, 'images', `${'0'.repeat(64)}.json`);
    writeFileSync(damagedImage, '{"id": 7}');
    const r = unionctl(root, ['images']);
    assertCorrupt(r, `image record images/${'0'.repeat(64)}.json`);
    assert.match(r.stdout, /^sample-app:1 /m, show(r));
    // rmi decides what to delete: an image record it cannot read might hold the very same layers.
    assertCorrupt(unionctl(root, ['rmi', 'sample-app:1']), `${'0'.repeat(64)}.json`);
    rmSync(damagedImage);

    // A damaged layer record of another layer ("created": null) breaks neither images nor rmi for the rest.
    ok(unionctl(root, ['create', '--id', 'other']));
    const file = join(root, 'layerdb', 'other.json');
    writeFileSync(file, JSON.stringify({ ...(JSON.parse(readFileSync(file, 'utf8')) as object), created: null }));
    const listed = unionctl(root, ['images']);
    assertCorrupt(listed, `layer record ${file}`);
    assert.match(listed.stdout, /^sample-app:1 /m, show(listed));
    ok(unionctl(root, ['rmi', 'sample-app:1']));
    assert.deepEqual(readdirSync(join(root, 'layerdb')), ['other.json']);
  });

  it('a store.lock that is a directory, a damaged journal, a journal that is a directory: CORRUPT naming the file', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'vfs');
    const lock = join(root, 'store.lock');
    rmSync(lock);
    mkdirSync(lock);
    for (const args of [['ls'], ['images'], ['rmi', 'x'], ['rm', 'c1']])
      assertCorrupt(unionctl(root, args), `lock file ${lock} is a directory`);
    rmSync(lock, { recursive: true });

    const journal = join(root, 'journal');
    mkdirSync(journal);
    writeFileSync(join(journal, '0001.json'), '{"changes": [{"path": "layerdb/');
    assertCorrupt(unionctl(root, ['ls']), `store journal ${join(journal, '0001.json')} is damaged`);
    writeFileSync(join(journal, '0001.json'), JSON.stringify({ changes: [{ path: '../../etc/motd', content: 'x', durable: true }] }));
    assertCorrupt(unionctl(root, ['ls']), /which is not inside the store/);
    rmSync(join(journal, '0001.json'));
    mkdirSync(join(journal, '0002.json'));
    assertCorrupt(unionctl(root, ['ls']), `store journal ${join(journal, '0002.json')} is a directory`);
    rmSync(journal, { recursive: true });
    ok(unionctl(root, ['ls']));
  });

  it('a record file that is a symlink is not followed', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'vfs');
    const file = join(root, 'layerdb', 'c1.json');
    renameSync(file, join(scratch, 'c1.json'));
    symlinkSync(join(scratch, 'c1.json'), file);
    assertCorrupt(unionctl(root, ['ls']), `layer record ${file} is a symbolic link`);
  });
});

// ---- 6. the driver a store was made with, recovery messages ------------------------------------

describe('the store keeps its driver; recovery says what it did', () => {
  it('a store made with --driver vfs and no layers stays vfs when --driver is left out', async (t) => {
    const scratch = await withScratchFs(t);
    const root = join(scratch, 'store');
    ok(unionctl(root, ['--driver', 'vfs', 'create', '--id', 'only']));
    ok(unionctl(root, ['rm', 'only'])); // a store without layers
    const info = JSON.parse(ok(unionctl(root, ['--json', 'info']))) as { driver: string };
    assert.equal(info.driver, 'vfs');
    assert.deepEqual(JSON.parse(readFileSync(join(root, 'store.json'), 'utf8')), { driver: 'vfs' });
    writeFileSync(join(root, 'store.json'), '{"driver": 3}');
    assertCorrupt(unionctl(root, ['info']), `store settings file ${join(root, 'store.json')}`);
  });

  it('recovery prints one line per thing it rolled back or finished, on stderr, and nothing when there is nothing', async (t) => {
    const scratch = await withScratchFs(t);
    const root = storeWithChild(scratch, 'vfs');
    ok(unionctl(root, ['create', '--id', 'doomed']));
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const rec = (id: string) => JSON.parse(readFileSync(join(root, 'layerdb', `${id}.json`), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(root, 'layerdb', 'doomed.json'), JSON.stringify({ ...rec('doomed'), state: 'removing' }));
    writeFileSync(
      join(root, 'layerdb', 'ghost.json'),
      JSON.stringify({ ...rec('doomed'), id: 'ghost', state: 'creating', owner: { pid: 2 ** 22 + 1, start: '1', boot: bootId } }),
    );
    mkdirSync(join(root, 'vfs', 'dir', 'ghost'));
    mkdirSync(join(root, 'journal'));
    writeFileSync(
      join(root, 'journal', '0001.json'),
      JSON.stringify({ changes: [{ path: 'layerdb/nothing.json', content: null, durable: true }] }),
    );

    const r = unionctl(root, ['ls']);
    assert.equal(r.status, 0, show(r));
    const lines = r.stderr.split('\n').filter(Boolean).sort();
    assert.deepEqual(
      lines.map((l) => l.replace(/\(.*\)/, '(…)')),
      [
        'unionctl: finished an interrupted transaction (…)',
        'unionctl: finished the interrupted removal of layer doomed',
        'unionctl: rolled back the interrupted creation of layer ghost (…)',
      ],
      show(r),
    );
    assert.doesNotMatch(r.stdout, /ghost|doomed/);
    assert.equal(unionctl(root, ['ls']).stderr, '', 'the next command has nothing to say');
  });
});
