/**
 * Layer export and native change lists: exportLayerDir in each whiteout format (overlay char 0/0
 * and opaque xattr → `.wh.` entries, no trusted.overlay xattr leaks, aufs bookkeeping skipped),
 * exportChanges of a D+A+C set (whiteout shape, order, hardlinks, vanished entries), the naive
 * diff → apply round trip, changesFromLayerDir against lower layers, and the size functions.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, linkSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { changesBetween } from '../../src/archive/changes.js';
import { changesFromLayerDir, exportChanges, exportLayerDir } from '../../src/archive/export.js';
import { changesSize, directorySize } from '../../src/archive/size.js';
import { readTar } from '../../src/archive/tar-reader.js';
import type { TarHeader } from '../../src/archive/types.js';
import type { Change } from '../../src/graph/driver.js';
import { lchown, lsetxattr, mknod, utimensat } from '../../src/sys/index.js';
import { scratchMissing, withScratchFs } from '../helpers/scratch.js';

const TREELIST = join(process.env.UNIONCTL_REPO ?? process.cwd(), 'test', 'treelist.py');

interface Entry {
  header: TarHeader;
  content: Buffer;
}

async function readEntries(stream: Readable): Promise<Entry[]> {
  const entries: Entry[] = [];
  for await (const { header, body } of readTar(stream)) {
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk);
    entries.push({ header, content: Buffer.concat(chunks) });
  }
  return entries;
}

function names(entries: Entry[]): string[] {
  return entries.map((e) => e.header.path);
}

function find(entries: Entry[], path: string): TarHeader {
  const entry = entries.find((e) => e.header.path === path);
  assert.ok(entry, `no entry ${path} in ${names(entries).join(', ')}`);
  return entry.header;
}

function whiteoutDevice(path: string): void {
  mknod(path, 0o020000, 0, 0);
}

function show(changes: Change[]): string[] {
  return changes.map((c) => `${c.kind} ${c.path}`);
}

describe('exportLayerDir', () => {
  it('converts overlay whiteouts and opaque dirs and never exports trusted.overlay xattrs', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    mkdirSync(join(dir, 'a'), { mode: 0o750 });
    lsetxattr(join(dir, 'a'), 'trusted.overlay.opaque', Buffer.from('y'));
    chownSync(join(dir, 'a'), 3, 4);
    writeFileSync(join(dir, 'a/new'), 'new');
    mkdirSync(join(dir, 'b'));
    whiteoutDevice(join(dir, 'b/gone'));
    lchown(join(dir, 'b/gone'), 1, 2);
    linkSync(join(dir, 'b/gone'), join(dir, 'b/gone2')); // the kernel shares one whiteout inode
    writeFileSync(join(dir, 'f1'), 'hello');
    lsetxattr(join(dir, 'f1'), 'user.keep', Buffer.from([0, 0xff, 0]));
    lsetxattr(join(dir, 'f1'), 'trusted.overlay.origin', Buffer.from('x'));
    linkSync(join(dir, 'f1'), join(dir, 'f2'));
    mknod(join(dir, 'sock'), 0o140000 | 0o644, 0, 0);
    symlinkSync('f1', join(dir, 's'));
    utimensat(join(dir, 'b/gone'), { sec: 1_600_000_000, nsec: 5 }, { sec: 1_600_000_000, nsec: 5 }, { nofollow: true });

    const entries = await readEntries(exportLayerDir(dir, 'overlay'));
    assert.deepEqual(names(entries), ['a/', 'a/.wh..wh..opq', 'a/new', 'b/', 'b/.wh.gone', 'b/.wh.gone2', 'f1', 'f2', 's']);
    const gone = find(entries, 'b/.wh.gone');
    assert.deepEqual([gone.type, gone.mode, gone.uid, gone.gid, gone.size, gone.mtime.sec], ['file', 0o600, 1, 2, 0, 1_600_000_000]);
    assert.equal(find(entries, 'b/.wh.gone2').type, 'file', 'a shared whiteout inode is no hardlink');
    const opq = find(entries, 'a/.wh..wh..opq');
    assert.deepEqual([opq.type, opq.mode, opq.uid, opq.gid, opq.mtime.sec], ['file', 0o750, 3, 4, 0]);
    const f2 = find(entries, 'f2');
    assert.deepEqual([f2.type, f2.linkname], ['hardlink', 'f1']);
    assert.deepEqual(find(entries, 'f1').xattrs, new Map([['user.keep', Buffer.from([0, 0xff, 0])]]));
    for (const e of entries)
      for (const name of e.header.xattrs.keys()) assert.ok(!name.startsWith('trusted.overlay.'), `${e.header.path} leaks ${name}`);
    assert.equal(entries.find((e) => e.header.path === 'f1')!.content.toString(), 'hello');
    assert.deepEqual([find(entries, 's').type, find(entries, 's').linkname], ['symlink', 'f1']);
  });

  it('exports aufs whiteouts and the opaque marker as they are and skips aufs bookkeeping', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    writeFileSync(join(dir, '.wh.gone'), '');
    writeFileSync(join(dir, '.wh..wh.aufs'), '');
    mkdirSync(join(dir, '.wh..wh.plnk'));
    writeFileSync(join(dir, '.wh..wh.plnk/123.456'), 'pseudo link');
    mkdirSync(join(dir, '.wh..wh.orph'));
    mkdirSync(join(dir, 'd'));
    writeFileSync(join(dir, 'd/.wh..wh..opq'), '');
    writeFileSync(join(dir, 'd/x'), 'x');
    const entries = await readEntries(exportLayerDir(dir, 'aufs'));
    assert.deepEqual(names(entries), ['.wh.gone', 'd/', 'd/.wh..wh..opq', 'd/x']);
  });

  it("exports everything as it is in 'plain' format, sorted by bytes, directories first", { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    whiteoutDevice(join(dir, 'dev0'));
    mkdirSync(join(dir, 'a'));
    writeFileSync(join(dir, 'a/z'), '');
    writeFileSync(join(dir, 'a.b'), '');
    writeFileSync(join(dir, '.wh.x'), '');
    const entries = await readEntries(exportLayerDir(dir, 'plain'));
    assert.deepEqual(names(entries), ['.wh.x', 'a/', 'a/z', 'a.b', 'dev0']);
    assert.deepEqual([find(entries, 'dev0').type, find(entries, 'dev0').devmajor], ['char', 0]);
    // GNU tar reads the same archive
    const chunks: Buffer[] = [];
    for await (const chunk of exportLayerDir(dir, 'plain')) chunks.push(chunk as Buffer);
    const listing = execFileSync('tar', ['-tf', '-'], { input: Buffer.concat(chunks), encoding: 'utf8' });
    assert.deepEqual(listing.trimEnd().split('\n'), ['.wh.x', 'a/', 'a/z', 'a.b', 'dev0']);
  });

  it('refuses a directory that does not exist', () => {
    assert.throws(() => exportLayerDir('/nonexistent-unionctl-layer', 'overlay'), /is not a directory/);
  });
});

describe('exportChanges', { skip: scratchMissing }, () => {
  it('writes a D+A+C set: sorted, whiteouts of mode 0, hardlinks to the first path, vanished entries left out', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    mkdirSync(join(dir, 'dir'), { mode: 0o711 });
    writeFileSync(join(dir, 'dir/new'), 'new content');
    writeFileSync(join(dir, 'h1'), 'linked');
    linkSync(join(dir, 'h1'), join(dir, 'h2'));
    const changes: Change[] = [
      { path: '/top', kind: 'D' },
      { path: '/h2', kind: 'A' },
      { path: '/dir/old', kind: 'D' },
      { path: '/dir', kind: 'C' },
      { path: '/vanished', kind: 'A' },
      { path: '/h1', kind: 'A' },
      { path: '/dir/new', kind: 'A' },
    ];
    const entries = await readEntries(exportChanges(dir, changes, { whiteoutMtime: 1_234_567_890 }));
    assert.deepEqual(names(entries), ['dir/', 'dir/new', 'dir/.wh.old', 'h1', 'h2', '.wh.top']);
    const wh = find(entries, 'dir/.wh.old');
    assert.deepEqual([wh.type, wh.mode, wh.uid, wh.gid, wh.size, wh.mtime.sec], ['file', 0, 0, 0, 0, 1_234_567_890]);
    assert.equal(find(entries, 'dir/').mode, 0o711);
    assert.deepEqual([find(entries, 'h2').type, find(entries, 'h2').linkname], ['hardlink', 'h1']);
    assert.equal(entries.find((e) => e.header.path === 'dir/new')!.content.toString(), 'new content');
  });

  it('round-trips: changes of a tree, exported and applied onto the old tree, give the new tree', async (t) => {
    const applyFile = fileURLToPath(new URL('../../src/archive/apply.js', import.meta.url));
    if (!existsSync(applyFile)) {
      t.skip('src/archive/apply.ts is not built yet');
      return;
    }
    const { applyLayer } = (await import(applyFile)) as {
      applyLayer: (tar: Readable, dest: string, opts: { whiteoutFormat: 'plain' }) => Promise<unknown>;
    };
    const dir = await withScratchFs(t, { size: '64m' });
    const [oldRoot, newRoot] = [join(dir, 'old'), join(dir, 'new')];
    mkdirSync(join(oldRoot, 'etc/sub'), { recursive: true });
    writeFileSync(join(oldRoot, 'etc/passwd'), 'root');
    writeFileSync(join(oldRoot, 'etc/sub/gone'), 'x');
    writeFileSync(join(oldRoot, 'remove-me'), 'x');
    execFileSync('cp', ['-a', oldRoot, newRoot]);
    writeFileSync(join(newRoot, 'etc/passwd'), 'root\nuser');
    rmSync(join(newRoot, 'etc/sub/gone'));
    rmSync(join(newRoot, 'remove-me'));
    mkdirSync(join(newRoot, 'opt/app'), { recursive: true });
    writeFileSync(join(newRoot, 'opt/app/bin'), 'bin');
    linkSync(join(newRoot, 'opt/app/bin'), join(newRoot, 'opt/app/bin2'));
    lsetxattr(
      join(newRoot, 'opt/app/bin'),
      'security.capability',
      Buffer.from([1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    );
    const changes = await changesBetween(newRoot, oldRoot);
    await applyLayer(exportChanges(newRoot, changes), oldRoot, { whiteoutFormat: 'plain' });
    const list = (root: string) => execFileSync('python3', [TREELIST, root], { encoding: 'utf8' });
    assert.equal(list(oldRoot), list(newRoot));
  });
});

describe('changesFromLayerDir', { skip: scratchMissing }, () => {
  /** lower (bottom), mid (nearest lower) and upper for one whiteout format. */
  function buildLayers(dir: string, format: 'overlay' | 'aufs'): { upper: string; lowers: string[] } {
    const [lower, mid, upper] = ['lower', 'mid', 'upper'].map((n) => join(dir, n));
    const deleteIn = (layer: string, path: string) => {
      if (format === 'overlay') whiteoutDevice(join(layer, path));
      else writeFileSync(join(layer, path.replace(/([^/]+)$/, '.wh.$1')), '');
    };
    const makeOpaque = (path: string) => {
      if (format === 'overlay') lsetxattr(path, 'trusted.overlay.opaque', Buffer.from('y'));
      else writeFileSync(join(path, '.wh..wh..opq'), '');
    };
    for (const d of ['etc', 'opq', 'keep']) mkdirSync(join(lower, d), { recursive: true });
    for (const f of ['etc/passwd', 'etc/group', 'opq/old1', 'opq/old2', 'keep/x', 'del']) writeFileSync(join(lower, f), f);
    mkdirSync(join(mid, 'etc'), { recursive: true });
    deleteIn(mid, 'etc/group'); // deleted in the nearer lower layer
    mkdirSync(join(upper, 'etc'), { recursive: true });
    mkdirSync(join(upper, 'opq'));
    for (const layer of [mid, upper]) execFileSync('touch', ['-r', join(lower, 'etc'), join(layer, 'etc')]);
    writeFileSync(join(upper, 'etc/passwd'), 'changed');
    writeFileSync(join(upper, 'etc/group'), 'back again');
    writeFileSync(join(upper, 'etc/new'), 'new');
    deleteIn(upper, 'del');
    makeOpaque(join(upper, 'opq'));
    writeFileSync(join(upper, 'opq/old1'), 'again');
    writeFileSync(join(upper, 'opq/fresh'), 'fresh');
    if (format === 'aufs') {
      mkdirSync(join(upper, '.wh..wh.plnk'));
      writeFileSync(join(upper, '.wh..wh.aufs'), '');
    }
    return { upper, lowers: [mid, lower] };
  }

  for (const format of ['overlay', 'aufs'] as const) {
    it(`reads ${format} whiteouts and opaque dirs against the lower layers`, async (t) => {
      const dir = await withScratchFs(t, { size: '16m' });
      const { upper, lowers } = buildLayers(dir, format);
      assert.deepEqual(show(await changesFromLayerDir(upper, format, lowers)), [
        'D /del',
        'C /etc', // same stat as below, but holds changes
        'A /etc/group', // the nearer lower layer deleted it
        'A /etc/new',
        'C /etc/passwd',
        'C /opq',
        'A /opq/fresh',
        'C /opq/old1',
        'D /opq/old2', // hidden by the opaque directory
      ]);
    });
  }

  /**
   * The lower file of each case is hidden from the view by an ancestor the middle layer made
   * opaque (a/), whited out (w) or replaced with a file (n), so what the upper layer writes there
   * is an addition, and an opaque dir of the upper layer (o/p, under the middle layer's opaque o/)
   * deletes nothing of the lowest layer.
   */
  function buildHidingLayers(dir: string, format: 'overlay' | 'aufs'): { upper: string; lowers: string[] } {
    const [lower, mid, upper] = ['lower', 'mid', 'upper'].map((n) => join(dir, n));
    for (const d of ['a/b', 'w/x', 'n', 'o/p']) mkdirSync(join(lower, d), { recursive: true });
    for (const f of ['a/b/f', 'w/x/f', 'n/f', 'o/p/old']) writeFileSync(join(lower, f), 'lower');
    for (const d of ['a', 'o']) mkdirSync(join(mid, d), { recursive: true });
    writeFileSync(join(mid, 'a/mine'), 'mid');
    writeFileSync(join(mid, 'n'), 'n is a file');
    for (const d of ['a', 'o']) {
      if (format === 'overlay') lsetxattr(join(mid, d), 'trusted.overlay.opaque', Buffer.from('y'));
      else writeFileSync(join(mid, d, '.wh..wh..opq'), '');
    }
    if (format === 'overlay') whiteoutDevice(join(mid, 'w'));
    else writeFileSync(join(mid, '.wh.w'), '');
    for (const d of ['a/b', 'w/x', 'n', 'o/p']) mkdirSync(join(upper, d), { recursive: true });
    for (const f of ['a/b/f', 'w/x/f', 'n/f', 'o/p/new']) writeFileSync(join(upper, f), 'upper');
    if (format === 'overlay') lsetxattr(join(upper, 'o/p'), 'trusted.overlay.opaque', Buffer.from('y'));
    else writeFileSync(join(upper, 'o/p/.wh..wh..opq'), '');
    return { upper, lowers: [mid, lower] };
  }

  for (const format of ['overlay', 'aufs'] as const) {
    it(`${format}: honours opaque, whited-out and non-directory ancestors in the lower layers`, async (t) => {
      const dir = await withScratchFs(t, { size: '16m' });
      const { upper, lowers } = buildHidingLayers(dir, format);
      assert.deepEqual(show(await changesFromLayerDir(upper, format, lowers)), [
        'C /a', // the middle layer's dir, holding changes
        'A /a/b', // the middle layer made a/ opaque: lower's a/b does not show
        'A /a/b/f', // … nor a/b/f below it (the old lookup said C)
        'C /n', // a dir where the middle layer has a file
        'A /n/f', // lower's n/f is under that file (the old lookup said C)
        'C /o',
        'A /o/p',
        'A /o/p/new', // and no D of /o/p/old: the middle layer's opaque o/ hides it
        'A /w', // whited out in the middle layer
        'A /w/x', // … so lower's w/x and w/x/f do not show (the old lookup said C)
        'A /w/x/f',
      ]);
    });
  }

  it('aufs: a root-opaque layer deletes what the lower layers show at the top', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    const [lower, upper] = ['lower', 'upper'].map((n) => join(dir, n));
    mkdirSync(join(lower, 'etc'), { recursive: true });
    writeFileSync(join(lower, 'etc/passwd'), '');
    writeFileSync(join(lower, 'gone'), '');
    writeFileSync(join(lower, 'kept'), '');
    mkdirSync(upper);
    writeFileSync(join(upper, '.wh..wh..opq'), '');
    writeFileSync(join(upper, 'kept'), 'again');
    assert.deepEqual(show(await changesFromLayerDir(upper, 'aufs', [lower])), ['D /etc', 'D /gone', 'C /kept']);
  });

  it('lists everything as added without lower layers', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    mkdirSync(join(dir, 'a'));
    writeFileSync(join(dir, 'a/f'), '');
    assert.deepEqual(show(await changesFromLayerDir(dir, 'overlay', [])), ['A /a', 'A /a/f']);
  });
});

describe('changesSize and directorySize', { skip: scratchMissing }, () => {
  it('count a hardlinked inode once and skip directories, deletions and other filesystems', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    mkdirSync(join(dir, 'd/mnt'), { recursive: true });
    writeFileSync(join(dir, 'd/a'), Buffer.alloc(1000));
    linkSync(join(dir, 'd/a'), join(dir, 'd/a2'));
    writeFileSync(join(dir, 'b'), Buffer.alloc(300));
    symlinkSync('d/a', join(dir, 'l')); // counts its own size: 3
    const changes: Change[] = [
      { path: '/d', kind: 'C' },
      { path: '/d/a', kind: 'A' },
      { path: '/d/a2', kind: 'A' },
      { path: '/b', kind: 'C' },
      { path: '/l', kind: 'A' },
      { path: '/gone', kind: 'D' },
      { path: '/vanished', kind: 'A' },
    ];
    assert.equal(await changesSize(dir, changes), 1303);
    execFileSync('mount', ['-t', 'tmpfs', 'unionctl-test-inner', join(dir, 'd/mnt')]);
    try {
      writeFileSync(join(dir, 'd/mnt/elsewhere'), Buffer.alloc(5000));
      assert.equal(await directorySize(dir), 1303);
    } finally {
      execFileSync('umount', [join(dir, 'd/mnt')]);
    }
  });
});
