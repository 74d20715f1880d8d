/**
 * applyLayer: real extractions into a tmpfs, checked with lstat / readlink / lgetxattr — every
 * entry kind, owners, modes, times, xattrs, long names, replacement rules, the three whiteout
 * formats, hardlink copy-up from lower layers, and the bundled sample image end to end.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chownSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { applyLayer, type ApplyLayerOptions } from '../../src/archive/apply.js';
import { readTar } from '../../src/archive/tar-reader.js';
import { UnionctlError } from '../../src/errors.js';
import type { WhiteoutFormat } from '../../src/graph/driver.js';
import { lgetxattr, lsetxattr, mknod, S_IFCHR } from '../../src/sys/index.js';
import { makeScratch, scratchMissing, type Scratch } from '../helpers/scratch.js';
import { buildTar, chunked, gnuLongRecord, tarEntry, type TarSpec } from '../helpers/tarbuild.js';

const REPO = process.env.UNIONCTL_REPO ?? process.cwd();
const TREELIST = join(REPO, 'test', 'treelist.py');
const CAPABILITY = Buffer.from('0100000200200000000000000000000000000000', 'hex'); // cap_net_raw+ep, NULs inside

let scratch: Scratch | undefined;
let counter = 0;
// Every suite below skips without root (scratchMissing); the file's scratch is made only when they run.
before(() => {
  if (scratchMissing === undefined) scratch = makeScratch({ size: '1g' });
});
after(() => scratch?.dispose());

/** The scratch tmpfs (made in before(), for suites that run). */
function scratchDir(): string {
  assert.ok(scratch, 'the scratch tmpfs is made before the suites run');
  return scratch.dir;
}

/** A fresh empty directory on the scratch tmpfs. */
function freshDir(name = 'dest'): string {
  const dir = join(scratchDir(), `${counter++}-${name}`);
  mkdirSync(dir);
  return dir;
}

function apply(dest: string, entries: Array<TarSpec | Buffer>, format: WhiteoutFormat = 'plain', opts: Partial<ApplyLayerOptions> = {}) {
  return applyLayer(chunked(buildTar(entries), [700, 65536]), dest, { whiteoutFormat: format, ...opts });
}

function treelist(root: string, ...args: string[]): string {
  return execFileSync('python3', [TREELIST, root, ...args], { encoding: 'utf8' });
}

/** Relative paths under root, sorted, dirs with a trailing slash. */
function listing(root: string, base = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, base)).sort()) {
    const rel = base === '' ? name : `${base}/${name}`;
    if (lstatSync(join(root, rel)).isDirectory()) out.push(`${rel}/`, ...listing(root, rel));
    else out.push(rel);
  }
  return out;
}

const major = (rdev: number) => Math.floor(rdev / 256) & 0xfff;
const minor = (rdev: number) => rdev & 0xff;

describe('applyLayer: entry kinds and metadata', { skip: scratchMissing }, () => {
  it('creates every kind with owner, mode, times and device numbers', async () => {
    const dest = freshDir();
    const result = await apply(dest, [
      { name: 'etc/', type: 'dir', mode: 0o750, uid: 1000, gid: 1001, mtime: 1500000000 },
      { name: 'etc/file', content: 'hello\n', mode: 0o640, uid: 1000, gid: 1001, mtime: 1500000001 },
      { name: 'bin/', type: 'dir', mode: 0o755 },
      { name: 'bin/su', content: 'suid', mode: 0o4755, uid: 1000, gid: 1000 }, // chown must not eat the setuid bit
      { name: 'bin/wall', content: 'sgid', mode: 0o2755, gid: 5 },
      { name: 'tmp/', type: 'dir', mode: 0o1777 },
      { name: 'shared/', type: 'dir', mode: 0o2775, gid: 100 },
      { name: 'bin/sh', type: 'symlink', linkname: 'busybox', uid: 7, gid: 8, mtime: 1400000000 },
      { name: 'etc/hard', type: 'hardlink', linkname: 'etc/file' },
      { name: 'dev/', type: 'dir' },
      { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/loop9', type: 'block', devmajor: 7, devminor: 9, mode: 0o660, gid: 6 },
      { name: 'run/pipe', type: 'fifo', mode: 0o620, uid: 3 },
      { name: 'empty', mode: 0o600 },
    ]);
    const st = (p: string) => lstatSync(join(dest, p));
    assert.ok(st('etc').isDirectory());
    assert.deepEqual([st('etc').mode & 0o7777, st('etc').uid, st('etc').gid, st('etc').mtimeMs / 1000], [0o750, 1000, 1001, 1500000000]);
    assert.deepEqual(
      [st('etc/file').mode & 0o7777, st('etc/file').uid, st('etc/file').gid, st('etc/file').mtimeMs / 1000],
      [0o640, 1000, 1001, 1500000001],
    );
    assert.equal(readFileSync(join(dest, 'etc/file'), 'utf8'), 'hello\n');
    assert.equal(st('bin/su').mode & 0o7777, 0o4755);
    assert.equal(st('bin/su').uid, 1000);
    assert.equal(st('bin/wall').mode & 0o7777, 0o2755);
    assert.equal(st('tmp').mode & 0o7777, 0o1777);
    assert.deepEqual([st('shared').mode & 0o7777, st('shared').gid], [0o2775, 100]);
    assert.ok(st('bin/sh').isSymbolicLink());
    assert.equal(readlinkSync(join(dest, 'bin/sh')), 'busybox');
    assert.deepEqual([st('bin/sh').uid, st('bin/sh').gid, st('bin/sh').mtimeMs / 1000], [7, 8, 1400000000]);
    assert.equal(st('etc/hard').ino, st('etc/file').ino);
    assert.equal(st('etc/file').nlink, 2);
    assert.ok(st('dev/null').isCharacterDevice());
    assert.deepEqual([major(st('dev/null').rdev), minor(st('dev/null').rdev), st('dev/null').mode & 0o7777], [1, 3, 0o666]);
    assert.ok(st('dev/loop9').isBlockDevice());
    assert.deepEqual([major(st('dev/loop9').rdev), minor(st('dev/loop9').rdev), st('dev/loop9').gid], [7, 9, 6]);
    assert.ok(st('run/pipe').isFIFO());
    assert.deepEqual([st('run/pipe').mode & 0o7777, st('run/pipe').uid], [0o620, 3]);
    assert.equal(st('empty').size, 0);
    // run/ was not in the tar: created like Docker does, 0755 root.
    assert.deepEqual([st('run').mode & 0o7777, st('run').uid, st('run').gid], [0o755, 0, 0]);
    // Content bytes and the symlink bin/sh (its target, "busybox", is 7 bytes long).
    assert.deepEqual(result, { size: 6 + 4 + 4 + 7, diffId: result.diffId, entries: 14 });
  });

  it('sets nanosecond times from pax, and atime never before mtime (Docker)', async () => {
    const dest = freshDir();
    await apply(dest, [
      { name: 'd/', type: 'dir', pax: { mtime: '1600000000.000000001' } },
      { name: 'd/f', content: 'x', pax: { mtime: '1700000000.123456789', atime: '1800000000.5' } },
      { name: 'd/old-atime', pax: { mtime: '1700000000.5', atime: '1000' } },
      { name: 'd/l', type: 'symlink', linkname: 'f', pax: { mtime: '1650000000.987654321' } },
      { name: 'd/before-1970', mtime: 0, pax: { mtime: '-86400.25' } },
    ]);
    const ns = (p: string) => lstatSync(join(dest, p), { bigint: true });
    assert.equal(ns('d').mtimeNs, 1600000000000000001n);
    assert.equal(ns('d/f').mtimeNs, 1700000000123456789n);
    assert.equal(ns('d/f').atimeNs, 1800000000500000000n);
    assert.equal(ns('d/old-atime').atimeNs, 1700000000500000000n);
    assert.equal(ns('d/l').mtimeNs, 1650000000987654321n);
    assert.equal(ns('d/before-1970').mtimeNs, -86400250000000n);
  });

  it('sets directory times after their contents, and on the layer root for "./"', async () => {
    const dest = freshDir();
    await apply(dest, [
      { name: './', type: 'dir', mode: 0o711, mtime: 1111111111 },
      { name: './a/', type: 'dir', mtime: 1000000000 },
      { name: './a/b/', type: 'dir', mtime: 1000000001 },
      { name: './a/b/file', content: 'late', mtime: 1700000000 },
      { name: './a/new-subdir/x', content: 'creates a/new-subdir' },
      { name: './a/b/gone', content: '' },
      { name: './a/b/.wh.gone' },
    ]);
    assert.equal(lstatSync(join(dest, 'a')).mtimeMs / 1000, 1000000000);
    assert.equal(lstatSync(join(dest, 'a/b')).mtimeMs / 1000, 1000000001);
    assert.equal(lstatSync(dest).mtimeMs / 1000, 1111111111);
    assert.equal(lstatSync(dest).mode & 0o7777, 0o711);
    assert.ok(!existsSync(join(dest, 'a/b/gone')));
  });

  it('sets xattrs, binary ones included, after chown (which would drop security.capability)', async () => {
    const dest = freshDir();
    const withNul = Buffer.from([0, 0x0a, 0x3d, 0, 0xff]);
    await apply(dest, [
      {
        name: 'ping',
        uid: 1000,
        gid: 1000,
        mode: 0o755,
        pax: { 'SCHILY.xattr.security.capability': CAPABILITY, 'SCHILY.xattr.user.bin': withNul },
      },
      {
        name: 'dir/',
        type: 'dir',
        uid: 5,
        pax: { 'SCHILY.xattr.trusted.note': 'on a dir', 'LIBARCHIVE.xattr.user.b64': Buffer.from('libarchive').toString('base64') },
      },
      { name: 'link', type: 'symlink', linkname: 'ping', pax: { 'SCHILY.xattr.trusted.sym': withNul } },
    ]);
    assert.deepEqual(lgetxattr(join(dest, 'ping'), 'security.capability'), CAPABILITY);
    assert.deepEqual(lgetxattr(join(dest, 'ping'), 'user.bin'), withNul);
    assert.equal(lgetxattr(join(dest, 'dir'), 'trusted.note')?.toString(), 'on a dir');
    assert.equal(lgetxattr(join(dest, 'dir'), 'user.b64')?.toString(), 'libarchive');
    assert.deepEqual(lgetxattr(join(dest, 'link'), 'trusted.sym'), withNul);
  });

  it('skips xattrs the filesystem refuses, with a warning', async () => {
    const dest = freshDir();
    const warnings: string[] = [];
    // user.* xattrs are not allowed on symlinks (EPERM), like an unsupported namespace.
    await apply(dest, [{ name: 'l', type: 'symlink', linkname: 'x', pax: { 'SCHILY.xattr.user.nope': 'v' } }], 'plain', {
      onWarning: (m) => warnings.push(m),
    });
    assert.ok(lstatSync(join(dest, 'l')).isSymbolicLink());
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /user\.nope/);
  });

  it('handles long names (pax > 100 and > 255 bytes, ustar prefix, GNU L/K) and UTF-8', async () => {
    const dest = freshDir();
    const p101 = `a/${'b'.repeat(99)}`;
    const p300 = `c/${'d'.repeat(150)}/${'e'.repeat(146)}`;
    const gnu = `g/${'h'.repeat(200)}`;
    await apply(dest, [
      { name: 'x', pax: { path: p101 }, content: '101' },
      { name: 'y', pax: { path: p300 }, content: '300' },
      { name: 'f'.repeat(90), prefix: 'pre/fix', content: 'ustar prefix' },
      { name: 'données/ファイル 🙂.txt', content: 'utf8' },
      gnuLongRecord(gnu),
      tarEntry({ name: gnu.slice(0, 99), content: 'gnu', format: 'gnu' }),
      gnuLongRecord(`${gnu}-link`),
      gnuLongRecord(gnu, 'K'),
      tarEntry({ name: 'short', type: 'symlink', linkname: 'short', format: 'gnu' }),
    ]);
    assert.equal(readFileSync(join(dest, p101), 'utf8'), '101');
    assert.equal(readFileSync(join(dest, p300), 'utf8'), '300');
    assert.equal(readFileSync(join(dest, 'pre/fix', 'f'.repeat(90)), 'utf8'), 'ustar prefix');
    assert.equal(readFileSync(join(dest, 'données/ファイル 🙂.txt'), 'utf8'), 'utf8');
    assert.equal(readFileSync(join(dest, gnu), 'utf8'), 'gnu');
    assert.equal(readlinkSync(join(dest, `${gnu}-link`)), gnu);
  });

  it('extracts what GNU tar --format=gnu and --format=posix write, identically to GNU tar', async () => {
    const src = freshDir('src');
    const deep = join('usr', 'share', 'x'.repeat(80), 'y'.repeat(80));
    mkdirSync(join(src, deep), { recursive: true });
    writeFileSync(join(src, deep, 'ünïcödé-file-with-a-long-name'.repeat(3)), 'content');
    symlinkSync(join('/', deep, 'target'.repeat(30)), join(src, 'usr', 'long-link'));
    linkSync(join(src, deep, 'ünïcödé-file-with-a-long-name'.repeat(3)), join(src, 'usr', 'hard'));
    writeFileSync(join(src, 'usr/owned'), 'o');
    chownSync(join(src, 'usr/owned'), 2_500_000_000, 3_000_000_000); // beyond 7 octal digits: base-256 (gnu) / pax
    lsetxattr(join(src, 'usr/owned'), 'user.attr', Buffer.from([1, 0, 2]));
    for (const format of ['gnu', 'posix']) {
      const tar = execFileSync(
        'tar',
        [`--format=${format}`, '--xattrs', '--xattrs-include=*', '--numeric-owner', '-C', src, '-cf', '-', '.'],
        { maxBuffer: 1 << 26 },
      );
      const ours = freshDir(`ours-${format}`);
      const gnuTar = freshDir(`gnutar-${format}`);
      await applyLayer(chunked(tar), ours, { whiteoutFormat: 'plain' });
      execFileSync('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', '-', '-C', gnuTar], { input: tar });
      assert.equal(treelist(ours), treelist(gnuTar), `--format=${format}`);
      assert.equal(lstatSync(join(ours, 'usr/owned')).uid, 2_500_000_000);
    }
  });
});

describe('applyLayer: replacing what is there', { skip: scratchMissing }, () => {
  it('never writes into an existing inode: a file replacing one name of a hardlinked pair leaves the other', async () => {
    const dest = freshDir();
    await apply(dest, [
      { name: 'a', content: 'original' },
      { name: 'b', type: 'hardlink', linkname: 'a' },
    ]);
    await apply(dest, [{ name: 'b', content: 'replaced' }]);
    assert.equal(readFileSync(join(dest, 'a'), 'utf8'), 'original');
    assert.equal(readFileSync(join(dest, 'b'), 'utf8'), 'replaced');
    assert.notEqual(lstatSync(join(dest, 'a')).ino, lstatSync(join(dest, 'b')).ino);
  });

  it('replaces a symlink by a file without writing through it', async () => {
    const dest = freshDir();
    await apply(dest, [
      { name: 'target', content: 'keep me' },
      { name: 'link', type: 'symlink', linkname: 'target' },
      { name: 'link', content: 'new file' },
    ]);
    assert.equal(readFileSync(join(dest, 'target'), 'utf8'), 'keep me');
    assert.ok(lstatSync(join(dest, 'link')).isFile());
    assert.equal(readFileSync(join(dest, 'link'), 'utf8'), 'new file');
  });

  it('merges a dir into an existing dir (new metadata), replaces a dir by a file and a file by a dir', async () => {
    const dest = freshDir();
    await apply(dest, [
      { name: 'keep/', type: 'dir', mode: 0o700 },
      { name: 'keep/old', content: 'old' },
      { name: 'dir2file/', type: 'dir' },
      { name: 'dir2file/inner/deep', content: 'x' },
      { name: 'file2dir', content: 'x' },
    ]);
    await apply(dest, [
      { name: 'keep/', type: 'dir', mode: 0o751, uid: 9 },
      { name: 'keep/new', content: 'new' },
      { name: 'dir2file', content: 'now a file' },
      { name: 'file2dir/', type: 'dir' },
      { name: 'file2dir/child', content: 'c' },
    ]);
    assert.deepEqual(listing(join(dest, 'keep')), ['new', 'old']);
    assert.deepEqual([lstatSync(join(dest, 'keep')).mode & 0o7777, lstatSync(join(dest, 'keep')).uid], [0o751, 9]);
    assert.equal(readFileSync(join(dest, 'dir2file'), 'utf8'), 'now a file');
    assert.ok(lstatSync(join(dest, 'file2dir')).isDirectory());
    assert.equal(readFileSync(join(dest, 'file2dir/child'), 'utf8'), 'c');
  });

  it('makes a dir written after a symlink at its name a real dir (the symlink is replaced)', async () => {
    const dest = freshDir();
    await apply(dest, [
      { name: 'real/', type: 'dir' },
      { name: 'sub', type: 'symlink', linkname: 'real' },
      { name: 'sub/', type: 'dir' },
      { name: 'sub/file', content: 'in the new dir' },
    ]);
    assert.ok(lstatSync(join(dest, 'sub')).isDirectory());
    assert.deepEqual(listing(join(dest, 'real')), []);
  });

  it('counts size and entries, reports progress, and names a missing hardlink target', async () => {
    const dest = freshDir();
    const seen: number[] = [];
    const data = buildTar([
      { name: 'a', content: Buffer.alloc(3000) },
      { name: 'b', content: Buffer.alloc(5) },
      { name: 'd/', type: 'dir' },
      { name: 'l', type: 'symlink', linkname: 'd/x' },
      { name: 'h', type: 'hardlink', linkname: 'a' },
    ]);
    const result = await applyLayer(chunked(data, 1024), dest, { whiteoutFormat: 'plain', onProgress: (n) => seen.push(n) });
    // Bytes as lstat counts them, each inode once: a symlink its target's length, a hardlink nothing more.
    assert.equal(result.size, 3005 + 3);
    assert.equal(result.entries, 5);
    assert.equal(seen.at(-1), data.length);
    await assert.rejects(apply(freshDir(), [{ name: 'link', type: 'hardlink', linkname: 'nowhere' }]), (e: unknown) => {
      assert.ok(e instanceof UnionctlError);
      assert.match(e.message, /"link" is a hardlink to "nowhere"/);
      return true;
    });
  });

  it('leaves no file descriptor open when an apply fails', async () => {
    const fds = () => readdirSync('/proc/self/fd').length;
    const before = fds();
    const data = buildTar([{ name: 'big', content: Buffer.alloc(100_000, 1) }]);
    for (let i = 0; i < 20; i++) {
      // cut inside the file body: the write fails after the file was opened
      await assert.rejects(applyLayer(chunked(data.subarray(0, 50_000), 4096), freshDir(), { whiteoutFormat: 'plain' }), /truncated/);
    }
    assert.ok(fds() <= before + 1, `fds before ${before}, after ${fds()}`);
  });
});

/**
 * The positions of Docker's TestApplyLayerWhiteouts: a base layer, then change layers with
 * whiteouts of files, dot files, dirs, names in subdirs, opaque markers before and after the
 * dir's new entries, `.wh..lock` (a whiteout of ".lock", not an opaque marker) and a whiteout of
 * a name that does not exist.
 */
describe('applyLayer: whiteouts', { skip: scratchMissing }, () => {
  const base: TarSpec[] = [
    { name: '.baz', content: 'b' },
    { name: '.lock', content: 'l' },
    { name: 'bar/', type: 'dir' },
    { name: 'bar/bax', content: 'x' },
    { name: 'bar/bay/', type: 'dir' },
    { name: 'baz', content: 'z' },
    { name: 'foo/', type: 'dir' },
    { name: 'foo/.abc', content: 'a' },
    { name: 'foo/.bcd/', type: 'dir' },
    { name: 'foo/.bcd/a', content: 'a' },
    { name: 'foo/cde/', type: 'dir' },
    { name: 'foo/cde/def', content: 'd' },
    { name: 'foo/cde/efg', content: 'e' },
    { name: 'foo/fgh', content: 'f' },
    { name: 'foobar', content: 'fb' },
    { name: 'opq-after/', type: 'dir' },
    { name: 'opq-after/old', content: 'o' },
    { name: 'opq-after/sub/', type: 'dir' },
    { name: 'opq-after/sub/old', content: 'o' },
  ];
  const change: TarSpec[] = [
    { name: '.bay', content: 'new' }, // a plain new file
    { name: '.wh.baz' }, // whiteout of a file
    { name: '.wh..baz' }, // whiteout of a dot file
    { name: '.wh..lock' }, // whiteout of ".lock": not the opaque marker
    { name: 'bar/.wh.bay' }, // whiteout of a dir, in a subdir
    { name: 'foo/', type: 'dir' },
    { name: 'foo/.wh..wh..opq' }, // opaque marker before the dir's new entries
    { name: 'foo/.bce', content: 'new' },
    { name: 'foo/cde/', type: 'dir' },
    { name: 'foo/cde/efg', content: 'new' },
    { name: 'opq-after/', type: 'dir' },
    { name: 'opq-after/new', content: 'new' },
    { name: 'opq-after/sub/new', content: 'new' }, // sub/ itself is not in the tar
    { name: 'opq-after/.wh..wh..opq' }, // opaque marker after the dir's new entries
    { name: 'nothere/.wh.ghost' }, // whiteout of a name that does not exist
    { name: '.wh..wh.aufs' }, // aufs bookkeeping: never materialised
    { name: '.wh..wh.orph/', type: 'dir' },
    { name: '.wh..wh.orph/x', content: 'x' },
  ];

  it("'plain' carries the whiteouts out: the result is the merged view", async () => {
    const dest = freshDir();
    await apply(dest, base);
    await apply(dest, change);
    assert.deepEqual(listing(dest), [
      '.bay',
      'bar/',
      'bar/bax',
      'foo/',
      'foo/.bce',
      'foo/cde/',
      'foo/cde/efg',
      'foobar',
      'nothere/',
      'opq-after/',
      'opq-after/new',
      'opq-after/sub/',
      'opq-after/sub/new',
    ]);
    assert.equal(readFileSync(join(dest, 'foo/cde/efg'), 'utf8'), 'new');
  });

  it("'plain' gives the same tree as the kernel's overlayfs over the 'overlay' output", async () => {
    const flat = freshDir('flat');
    await apply(flat, base);
    await apply(
      flat,
      change.filter((e) => !e.name.startsWith('nothere/')),
    );
    const lower = freshDir('lower');
    const upper = freshDir('upper');
    const merged = freshDir('merged');
    await apply(lower, base, 'overlay');
    // Not the whiteout in a dir no lower layer has: overlayfs does not merge such a dir, so its
    // readdir lists the whiteout device (which then cannot be looked up) — a kernel quirk.
    await apply(
      upper,
      change.filter((e) => !e.name.startsWith('nothere/')),
      'overlay',
    );
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${upper}:${lower}`, merged]);
    try {
      assert.equal(treelist(flat), treelist(merged));
    } finally {
      execFileSync('umount', [merged]);
    }
  });

  it("'plain': a dir holding only a whiteout is part of the layer, also under a later opaque marker", async () => {
    const dest = freshDir();
    await apply(dest, [
      { name: 'a/old', content: 'x' },
      { name: 'a/b/c', content: 'x' },
    ]);
    await apply(dest, [{ name: 'a/b/.wh.c' }, { name: 'a/.wh..wh..opq' }]);
    assert.deepEqual(listing(dest), ['a/', 'a/b/']);
  });

  it("'overlay' writes char 0/0 devices and the opaque xattr", async () => {
    const dest = freshDir();
    await apply(dest, change, 'overlay');
    const whiteouts = ['baz', '.baz', '.lock', 'bar/bay', 'nothere/ghost'];
    for (const name of whiteouts) {
      const st = lstatSync(join(dest, name));
      assert.ok(st.isCharacterDevice() && st.rdev === 0, `${name} is a whiteout device`);
    }
    assert.equal(lgetxattr(join(dest, 'foo'), 'trusted.overlay.opaque')?.toString(), 'y');
    assert.equal(lgetxattr(join(dest, 'opq-after'), 'trusted.overlay.opaque')?.toString(), 'y');
    assert.equal(lgetxattr(join(dest, 'bar'), 'trusted.overlay.opaque'), undefined);
    assert.deepEqual(
      listing(dest).filter((p) => p.includes('.wh.')),
      [],
    );
    assert.equal(readFileSync(join(dest, 'opq-after/sub/new'), 'utf8'), 'new');
  });

  it("'overlay' takes the whiteout device's owner from the header and replaces what the layer had", async () => {
    const dest = freshDir();
    await apply(
      dest,
      [{ name: 'd/victim/deep', content: 'x' }, { name: 'd/.wh.victim', uid: 12, gid: 34 }, { name: 'opq-no-dir/.wh..wh..opq' }],
      'overlay',
    );
    const st = lstatSync(join(dest, 'd/victim'));
    assert.ok(st.isCharacterDevice() && st.rdev === 0);
    assert.deepEqual([st.uid, st.gid], [12, 34]);
    // an opaque marker whose dir is not in the tar: the dir is created, then marked
    assert.equal(lgetxattr(join(dest, 'opq-no-dir'), 'trusted.overlay.opaque')?.toString(), 'y');
  });

  it("'aufs' keeps .wh. files verbatim (with their metadata) and drops the names this layer had", async () => {
    const dest = freshDir();
    await apply(
      dest,
      [
        { name: 'had', content: 'x' },
        ...change,
        { name: 'gone-later', content: 'x' },
        { name: '.wh.gone-later', mode: 0o444, uid: 5, mtime: 1234567890 },
      ],
      'aufs',
    );
    assert.ok(!existsSync(join(dest, 'gone-later')));
    const wh = lstatSync(join(dest, '.wh.gone-later'));
    assert.ok(wh.isFile());
    assert.deepEqual([wh.mode & 0o7777, wh.uid, wh.mtimeMs / 1000], [0o444, 5, 1234567890]);
    for (const name of [
      '.wh.baz',
      '.wh..baz',
      '.wh..lock',
      'bar/.wh.bay',
      'foo/.wh..wh..opq',
      'opq-after/.wh..wh..opq',
      'nothere/.wh.ghost',
    ]) {
      assert.ok(lstatSync(join(dest, name)).isFile(), name);
    }
    assert.ok(!existsSync(join(dest, '.wh..wh.aufs')));
    assert.ok(!existsSync(join(dest, '.wh..wh.orph')));
    assert.ok(existsSync(join(dest, 'had')));
  });

  it('resolves hardlinks into .wh..wh.plnk (layers made by the aufs driver) and keeps no trace of it', async () => {
    for (const format of ['plain', 'overlay', 'aufs'] as const) {
      const dest = freshDir();
      await apply(
        dest,
        [
          { name: '.wh..wh.plnk/', type: 'dir' },
          { name: '.wh..wh.plnk/1234.5678', content: 'pseudo-linked', mode: 0o640, uid: 3 },
          { name: 'usr/a', type: 'hardlink', linkname: '.wh..wh.plnk/1234.5678' },
          { name: 'usr/b', type: 'hardlink', linkname: '/.wh..wh.plnk/1234.5678' },
        ],
        format,
      );
      assert.deepEqual(listing(dest), ['usr/', 'usr/a', 'usr/b'], format);
      const a = lstatSync(join(dest, 'usr/a'));
      assert.equal(a.ino, lstatSync(join(dest, 'usr/b')).ino);
      assert.deepEqual([a.nlink, a.mode & 0o7777, a.uid], [2, 0o640, 3]);
      assert.equal(readFileSync(join(dest, 'usr/a'), 'utf8'), 'pseudo-linked');
    }
  });
});

describe('applyLayer: lower layers still being written (lowersReady)', { skip: scratchMissing }, () => {
  /** Resolves after the apply has had every chance to run ahead (several event-loop turns). */
  const turns = () => new Promise<void>((r) => setTimeout(r, 50));

  it('entries that may look below wait for the lowers; the result is that of applying them one after the other', async () => {
    const lower = freshDir('lower');
    const dest = freshDir();
    let release!: () => void;
    const lowersReady = new Promise<void>((r) => (release = r));
    const applying = apply(
      dest,
      [
        { name: 'own/', type: 'dir', mode: 0o755 },
        { name: 'own/file', content: 'mine' }, // its dir is this tar's: written at once
        { name: 'etc/conf', content: 'c' }, // etc/ only below: an implicit dir, waits
        { name: 'bin/tool2', type: 'hardlink', linkname: 'bin/tool' }, // its target is below
      ],
      'overlay',
      { lowerDirs: [lower], lowersReady },
    );
    await turns();
    assert.equal(readFileSync(join(dest, 'own/file'), 'utf8'), 'mine', 'entries that cannot look below are written meanwhile');
    assert.equal(existsSync(join(dest, 'etc')), false, 'an implicit dir waits for the layers below');
    // The lower layer gets its content only now, as a parent being applied would.
    mkdirSync(join(lower, 'etc'), 0o700);
    chownSync(join(lower, 'etc'), 3, 4);
    mkdirSync(join(lower, 'bin'));
    writeFileSync(join(lower, 'bin/tool'), 'tool');
    release();
    await applying;
    const etc = lstatSync(join(dest, 'etc'));
    assert.deepEqual([etc.mode & 0o7777, etc.uid, etc.gid], [0o700, 3, 4], 'the implicit dir took the metadata of the one below');
    assert.equal(readFileSync(join(dest, 'bin/tool2'), 'utf8'), 'tool', 'the hardlink target was copied up from below');
    assert.equal(lstatSync(join(dest, 'bin/tool')).ino, lstatSync(join(dest, 'bin/tool2')).ino);
  });

  it('a lower layer that fails fails the apply at the first entry that waits for it', async () => {
    const failure = new Error('the parent layer failed');
    const lowersReady = Promise.reject(failure);
    lowersReady.catch(() => {});
    await assert.rejects(
      apply(freshDir(), [{ name: 'usr/bin/x', content: 'x' }], 'overlay', { lowerDirs: [freshDir('lower')], lowersReady }),
      (e: Error) => e === failure || (e as { cause?: unknown }).cause === failure || e.message.includes('the parent layer failed'),
    );
  });
});

describe('applyLayer: hardlinks to lower layers (copy-up)', { skip: scratchMissing }, () => {
  it('copies the target up from the nearest lower layer that shows it, then links', async () => {
    const lower1 = freshDir('lower1'); // nearest
    const lower2 = freshDir('lower2');
    mkdirSync(join(lower2, 'usr/bin'), { recursive: true });
    writeFileSync(join(lower2, 'usr/bin/tool'), 'from lower2');
    chownSync(join(lower2, 'usr/bin/tool'), 5, 6);
    lsetxattr(join(lower2, 'usr/bin/tool'), 'user.note', Buffer.from([0, 1]));
    chownSync(join(lower2, 'usr/bin'), 7, 7);
    mkdirSync(join(lower1, 'usr'));
    const dest = freshDir();
    await apply(dest, [{ name: 'usr/bin/tool2', type: 'hardlink', linkname: 'usr/bin/tool' }], 'overlay', { lowerDirs: [lower1, lower2] });
    const tool = lstatSync(join(dest, 'usr/bin/tool'));
    assert.equal(tool.ino, lstatSync(join(dest, 'usr/bin/tool2')).ino);
    assert.equal(readFileSync(join(dest, 'usr/bin/tool'), 'utf8'), 'from lower2');
    assert.deepEqual([tool.uid, tool.gid], [5, 6]);
    assert.deepEqual(lgetxattr(join(dest, 'usr/bin/tool'), 'user.note'), Buffer.from([0, 1]));
    assert.equal(lstatSync(join(dest, 'usr/bin')).uid, 7, 'the parent dir keeps its metadata from below');
    assert.equal(readFileSync(join(lower2, 'usr/bin/tool'), 'utf8'), 'from lower2', 'the lower layer is untouched');
    assert.equal(lstatSync(join(lower2, 'usr/bin/tool')).nlink, 1);
  });

  it('does not copy up a name a layer in between deleted (whiteout) or hid (opaque dir)', async () => {
    const middle = freshDir('middle');
    const bottom = freshDir('bottom');
    mkdirSync(join(bottom, 'a'));
    writeFileSync(join(bottom, 'a/file'), 'x');
    mkdirSync(join(bottom, 'b'));
    writeFileSync(join(bottom, 'b/file'), 'x');
    mkdirSync(join(middle, 'a'));
    mknod(join(middle, 'a/file'), S_IFCHR, 0, 0); // overlay whiteout
    mkdirSync(join(middle, 'b'));
    lsetxattr(join(middle, 'b'), 'trusted.overlay.opaque', Buffer.from('y'));
    for (const target of ['a/file', 'b/file']) {
      await assert.rejects(
        apply(freshDir(), [{ name: 'link', type: 'hardlink', linkname: target }], 'overlay', { lowerDirs: [middle, bottom] }),
        /neither earlier in the layer nor in the layers below/,
      );
    }
  });
});

describe('applyLayer: the sample image', { skip: scratchMissing }, () => {
  /** The layer tars of sample-docker.tar, in manifest order. */
  async function sampleLayers(): Promise<Buffer[]> {
    const files = new Map<string, Buffer>();
    for await (const { header, body } of readTar(chunked(readFileSync(join(REPO, 'fixtures/sample-docker.tar'))))) {
      const parts: Buffer[] = [];
      for await (const piece of body) parts.push(Buffer.from(piece));
      files.set(header.path.replace(/^\.\//, ''), Buffer.concat(parts));
    }
    const manifest = JSON.parse(files.get('manifest.json')!.toString()) as Array<{ Layers: string[] }>;
    return manifest[0].Layers.map((name) => files.get(name)!);
  }

  it("flattens the 4 layers in 'plain' mode into exactly the expected rootfs, with the right diff_ids", async () => {
    const dest = freshDir('rootfs');
    const diffIds: string[] = [];
    for (const layer of await sampleLayers()) diffIds.push((await applyLayer(chunked(layer), dest, { whiteoutFormat: 'plain' })).diffId);
    assert.deepEqual(diffIds, [
      'sha256:9e721e9db1f84b04216fcb0f3fe271f3e9d48a5fe020252e82180d636f2a27b1',
      'sha256:7058b3d776058fe84d8142c37271aa8d2890654562594c4b4a8cfcbe179d08c0',
      'sha256:2d03330843ef3bb247481366ee85ad8628c69efc9af29ec53430071860189fea',
      'sha256:d52c36bcc68cf387ca56ba2a2736674cdac472ea3ef6ef70393743c36580deca',
    ]);
    assert.equal(treelist(dest), readFileSync(join(REPO, 'fixtures/sample-expected.txt'), 'utf8'));
  });

  it("in 'overlay' mode, one dir per layer: the kernel's overlayfs over them shows the expected rootfs", async () => {
    const dirs: string[] = [];
    for (const [i, layer] of (await sampleLayers()).entries()) {
      const dir = freshDir(`layer${i + 1}`);
      await applyLayer(chunked(layer), dir, { whiteoutFormat: 'overlay', lowerDirs: [...dirs].reverse() });
      dirs.push(dir);
    }
    const merged = freshDir('merged');
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${[...dirs].reverse().join(':')}`, merged]);
    try {
      assert.equal(treelist(merged), readFileSync(join(REPO, 'fixtures/sample-expected.txt'), 'utf8'));
    } finally {
      execFileSync('umount', [merged]);
    }
  });

  it("gives layer 4 the shape of Docker's overlay2 diff dir in 'overlay' mode", async () => {
    const dest = freshDir('layer4');
    const layers = await sampleLayers();
    await applyLayer(chunked(layers[3]), dest, { whiteoutFormat: 'overlay' });
    for (const name of [
      'srv/app/etc/legacy.conf',
      'srv/app/extras/defaults.env',
      'var/cache/app/.lock',
      'var/cache/app/index.db',
      'var/cache/app/thumbs',
    ]) {
      const st = lstatSync(join(dest, name));
      assert.ok(st.isCharacterDevice() && st.rdev === 0 && (st.mode & 0o7777) === 0, name);
    }
    assert.equal(lgetxattr(join(dest, 'srv/app/plugins'), 'trusted.overlay.opaque')?.toString(), 'y');
    assert.equal(lgetxattr(join(dest, 'var/cache/app'), 'trusted.overlay.opaque'), undefined, '.wh..lock is not an opaque marker');
  });

  it('reads the compressed sample layers (gzip, zstd) from fixtures/layers', async () => {
    const dest = freshDir('compressed');
    const { createReadStream } = await import('node:fs');
    for (const file of ['1-base.tar', '2-app.tar.gz', '3-extras.tar.zst', '4-changes.tar']) {
      await applyLayer(createReadStream(join(REPO, 'fixtures/layers', file)), dest, { whiteoutFormat: 'plain' });
    }
    assert.equal(treelist(dest), readFileSync(join(REPO, 'fixtures/sample-expected.txt'), 'utf8'));
  });
});

describe('applyLayer: overlay xattrs in a layer tar', { skip: scratchMissing }, () => {
  it('drops trusted.overlay.*, user.overlay.* and user.fuseoverlayfs.* on every entry kind, keeps the rest, and says so', async () => {
    const bookkeeping = {
      'SCHILY.xattr.trusted.overlay.redirect': '/elsewhere',
      'SCHILY.xattr.trusted.overlay.opaque': 'y',
      'SCHILY.xattr.user.overlay.metacopy': '',
      'SCHILY.xattr.user.fuseoverlayfs.origin': 'x',
      'LIBARCHIVE.xattr.trusted.overlay.origin': Buffer.from('o').toString('base64'),
    };
    for (const format of ['overlay', 'plain', 'aufs'] as const) {
      const dest = freshDir(`overlay-xattrs-${format}`);
      const warnings: string[] = [];
      await apply(
        dest,
        [
          { name: 'dir/', type: 'dir', pax: { ...bookkeeping, 'SCHILY.xattr.user.keep': 'kept' } },
          { name: 'dir/file', content: 'x', pax: bookkeeping },
          { name: 'dir/fifo', type: 'fifo', pax: bookkeeping },
        ],
        format,
        { onWarning: (m) => warnings.push(m) },
      );
      for (const path of ['dir', 'dir/file', 'dir/fifo']) {
        for (const name of [
          'trusted.overlay.redirect',
          'trusted.overlay.opaque',
          'user.overlay.metacopy',
          'user.fuseoverlayfs.origin',
          'trusted.overlay.origin',
        ]) {
          assert.equal(lgetxattr(join(dest, path), name), undefined, `${format}: ${name} on ${path}`);
        }
      }
      assert.equal(lgetxattr(join(dest, 'dir'), 'user.keep')?.toString(), 'kept');
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.match(warnings[0]!, /overlay filesystem xattrs, which were dropped.*trusted\.overlay\.redirect on "dir\/"/);
    }
  });

  it('still makes a dir opaque from its .wh..wh..opq entry (the one way a layer says so)', async () => {
    const dest = freshDir('opaque-marker');
    await apply(dest, [{ name: 'd/', type: 'dir' }, { name: 'd/.wh..wh..opq' }], 'overlay');
    assert.equal(lgetxattr(join(dest, 'd'), 'trusted.overlay.opaque')?.toString(), 'y');
  });
});

describe('applyLayer: inputs that are not quite a layer', { skip: scratchMissing }, () => {
  it('applies an empty input (0 bytes) as an empty layer, as Docker does, but says so', async () => {
    for (const input of [chunked(Buffer.alloc(0)), join(scratchDir(), 'empty.tar')]) {
      if (typeof input === 'string') writeFileSync(input, '');
      const dest = freshDir('empty');
      const warnings: string[] = [];
      const result = await applyLayer(input, dest, { whiteoutFormat: 'plain', onWarning: (m) => warnings.push(m) });
      assert.deepEqual(readdirSync(dest), []);
      assert.equal(result.diffId, 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
      assert.deepEqual(warnings, ['the input is empty (0 bytes), not a layer tar; applied as an empty layer, as Docker does']);
    }
  });

  it('applies an archive of zero blocks only as an empty layer, without a warning', async () => {
    const dest = freshDir('zeros');
    const warnings: string[] = [];
    const result = await applyLayer(chunked(Buffer.alloc(10240)), dest, { whiteoutFormat: 'plain', onWarning: (m) => warnings.push(m) });
    assert.deepEqual([readdirSync(dest), warnings, result.entries], [[], [], 0]);
  });

  it('ends /dev/zero with a typed error after the documented 16 MiB of trailing data', { timeout: 60_000 }, async () => {
    const dest = freshDir('dev-zero');
    await assert.rejects(
      applyLayer('/dev/zero', dest, { whiteoutFormat: 'plain' }),
      (e: unknown) =>
        e instanceof UnionctlError && e.code === 'BAD_TAR' && /more than 16 MiB of data follow the end-of-archive blocks/.test(e.message),
    );
  });

  it('reads a layer from a FIFO path (a pipe cannot be read at an offset)', { timeout: 60_000 }, async () => {
    const fifo = join(scratchDir(), 'layer.fifo');
    execFileSync('mkfifo', [fifo]);
    const dest = freshDir('fifo');
    const data = buildTar([{ name: 'via-fifo', content: 'piped' }]);
    const { createWriteStream } = await import('node:fs');
    const writer = createWriteStream(fifo);
    writer.end(data);
    const result = await applyLayer(fifo, dest, { whiteoutFormat: 'plain' });
    assert.equal(readFileSync(join(dest, 'via-fifo'), 'utf8'), 'piped');
    assert.equal(result.entries, 1);
  });
});
