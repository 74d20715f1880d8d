/**
 * The whiteout converters, one by one: the tar-side names (`.wh.`, the opaque marker, aufs
 * bookkeeping), and for each format what a tar marker becomes on disk (fromTar, finishApply), how
 * a layer dir's entries read (markerKind, isWhiteout, hasWhiteoutMarker, isOpaque), and what they
 * become in an exported tar (whiteoutToTar, opaqueToTar).
 */
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { TarHeader } from '../../src/archive/types.js';
import {
  isBookkeepingPath,
  isMetaName,
  isOverlayWhiteout,
  isUnionBookkeepingXattr,
  markerKind,
  whiteoutConverter,
  whiteoutPath,
  whitedOutName,
} from '../../src/archive/whiteout.js';
import { lsetxattr, mknod, utimensat } from '../../src/sys/index.js';
import { scratchMissing, withScratchFs } from '../helpers/scratch.js';

const S_IFCHR = 0o020000;

function header(path: string, uid = 0, gid = 0): TarHeader {
  return {
    path,
    type: 'file',
    mode: 0o600,
    uid,
    gid,
    size: 0,
    mtime: { sec: 0, nsec: 0 },
    linkname: '',
    devmajor: 0,
    devminor: 0,
    xattrs: new Map(),
  };
}

const bigStat = (path: string) => lstatSync(path, { bigint: true });

describe('whiteout names in a layer tar', () => {
  it('tells whiteouts, the opaque marker and aufs bookkeeping from ordinary names', () => {
    assert.equal(markerKind('.wh.foo'), 'whiteout');
    assert.equal(markerKind('.wh..foo'), 'whiteout', 'the whiteout of the dot file .foo');
    assert.equal(markerKind('.wh..wh..opq'), 'opaque');
    for (const name of ['.wh..wh.plnk', '.wh..wh.orph', '.wh..wh.aufs']) assert.equal(markerKind(name), 'bookkeeping', name);
    for (const name of ['foo', '.wh', 'a.wh.b', '']) assert.equal(markerKind(name), undefined, name);
    assert.equal(whitedOutName('.wh..baz'), '.baz');
    assert.ok(isMetaName('.wh..wh..opq') && isMetaName('.wh..wh.plnk') && !isMetaName('.wh.x'));
  });

  it('names the whiteout of a path, relative or absolute', () => {
    assert.equal(whiteoutPath('a/b'), 'a/.wh.b');
    assert.equal(whiteoutPath('b'), '.wh.b');
    assert.equal(whiteoutPath('/a/b/c'), '/a/b/.wh.c');
    assert.equal(whiteoutPath('/b'), '/.wh.b');
  });

  it('finds aufs bookkeeping in any component, but not an opaque marker at the end', () => {
    assert.ok(isBookkeepingPath('.wh..wh.plnk/123.456'));
    assert.ok(isBookkeepingPath('d/.wh..wh.aufs'));
    assert.ok(isBookkeepingPath('.wh..wh..opq/x'), 'a dir named like the marker holds no content');
    assert.ok(!isBookkeepingPath('d/.wh..wh..opq'));
    assert.ok(!isBookkeepingPath('d/.wh.x'));
    assert.ok(!isBookkeepingPath('plain/name'));
  });

  it('knows the union bookkeeping xattrs', () => {
    assert.ok(isUnionBookkeepingXattr('trusted.overlay.opaque'));
    assert.ok(isUnionBookkeepingXattr('user.fuseoverlayfs.origin'));
    assert.ok(isUnionBookkeepingXattr('user.overlay.redirect'), 'an overlay mounted with userxattr');
    assert.ok(!isUnionBookkeepingXattr('user.overlay'));
    assert.ok(!isUnionBookkeepingXattr('security.capability'));
  });

  it('refuses a format it does not know', () => {
    assert.throws(() => whiteoutConverter('nope' as 'plain'), /unknown whiteout format "nope"/);
  });
});

describe('the overlay converter', { skip: scratchMissing }, () => {
  const overlay = whiteoutConverter('overlay');

  it('writes a whiteout as a char device 0/0, chowned on request, and an opaque dir as the xattr', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    assert.equal(overlay.fromTar('whiteout', join(dir, 'gone'), header('.wh.gone', 5, 6), true), false, 'the .wh. entry is not kept');
    const st = lstatSync(join(dir, 'gone'));
    assert.ok(st.isCharacterDevice() && st.rdev === 0);
    assert.deepEqual([st.uid, st.gid], [5, 6]);
    overlay.fromTar('whiteout', join(dir, 'mine'), header('.wh.mine', 5, 6), false);
    assert.equal(lstatSync(join(dir, 'mine')).uid, 0, 'no chown asked for');
    mkdirSync(join(dir, 'd'));
    assert.equal(overlay.fromTar('opaque', join(dir, 'd'), header('d/.wh..wh..opq'), false), false);
    assert.ok(overlay.isOpaque(join(dir, 'd'), false));
  });

  it('reads char 0/0 as a whiteout, and the opaque xattr except on a layer root', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    mknod(join(dir, 'wh'), S_IFCHR, 0, 0);
    mknod(join(dir, 'null'), S_IFCHR | 0o666, 1, 3);
    writeFileSync(join(dir, '.wh.x'), '');
    assert.ok(overlay.isWhiteout(lstatSync(join(dir, 'wh'))) && overlay.isWhiteout(bigStat(join(dir, 'wh'))));
    assert.ok(!overlay.isWhiteout(lstatSync(join(dir, 'null'))));
    assert.ok(isOverlayWhiteout(bigStat(join(dir, 'wh'))));
    assert.equal(overlay.markerKind('.wh.x'), undefined, 'a .wh. file in an overlay layer is content');
    assert.ok(!overlay.hasWhiteoutMarker(dir, 'x'));
    mkdirSync(join(dir, 'd'));
    assert.ok(!overlay.isOpaque(join(dir, 'd'), false));
    lsetxattr(join(dir, 'd'), 'trusted.overlay.opaque', Buffer.from('n'));
    assert.ok(!overlay.isOpaque(join(dir, 'd'), false), 'only "y" is opaque');
    lsetxattr(join(dir, 'd'), 'trusted.overlay.opaque', Buffer.from('y'));
    assert.ok(overlay.isOpaque(join(dir, 'd'), false));
    lsetxattr(dir, 'trusted.overlay.opaque', Buffer.from('y'));
    assert.ok(!overlay.isOpaque(dir, true), 'overlayfs ignores the xattr on a layer root');
  });

  it('whites out the lower top-level names after a root-opaque tar, and nothing otherwise', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    const [lower1, lower2, dest] = ['l1', 'l2', 'dest'].map((n) => join(dir, n));
    for (const d of [lower1, lower2, dest]) mkdirSync(d);
    writeFileSync(join(lower1, 'a'), '');
    mkdirSync(join(lower2, 'b'));
    writeFileSync(join(lower2, 'a'), '');
    writeFileSync(join(dest, 'mine'), '');
    writeFileSync(join(lower1, 'mine'), '');
    overlay.finishApply(dest, [lower1, lower2]);
    assert.deepEqual(readdirSync(dest), ['mine'], 'not opaque: nothing added');
    lsetxattr(dest, 'trusted.overlay.opaque', Buffer.from('y'));
    overlay.finishApply(dest, []);
    assert.deepEqual(readdirSync(dest), ['mine'], 'no lower layers: nothing added');
    overlay.finishApply(dest, [lower1, lower2]);
    assert.deepEqual(readdirSync(dest).sort(), ['a', 'b', 'mine']);
    assert.ok(isOverlayWhiteout(lstatSync(join(dest, 'a'))) && isOverlayWhiteout(lstatSync(join(dest, 'b'))));
    assert.ok(lstatSync(join(dest, 'mine')).isFile(), "the layer's own name stays");
  });

  it('exports a whiteout as .wh.<name> (0600, its owner and mtime) and an opaque dir with a marker', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    mknod(join(dir, 'wh'), S_IFCHR, 0, 0);
    utimensat(join(dir, 'wh'), { sec: 1_600_000_000, nsec: 7 }, { sec: 1_600_000_000, nsec: 7 }, { nofollow: true });
    const wh = overlay.whiteoutToTar('sub/wh', bigStat(join(dir, 'wh')));
    assert.deepEqual(wh && [wh.path, wh.type, wh.mode, wh.size, wh.mtime.sec, wh.mtime.nsec], [
      'sub/.wh.wh',
      'file',
      0o600,
      0,
      1_600_000_000,
      0,
    ]);
    writeFileSync(join(dir, 'f'), 'x');
    assert.equal(overlay.whiteoutToTar('f', bigStat(join(dir, 'f'))), undefined);
    mkdirSync(join(dir, 'd'), { mode: 0o750 });
    assert.equal(overlay.opaqueToTar(join(dir, 'd'), 'd', bigStat(join(dir, 'd'))), undefined);
    lsetxattr(join(dir, 'd'), 'trusted.overlay.opaque', Buffer.from('y'));
    const opq = overlay.opaqueToTar(join(dir, 'd'), 'd', bigStat(join(dir, 'd')));
    assert.deepEqual(opq && [opq.path, opq.type, opq.mode, opq.mtime.sec], ['d/.wh..wh..opq', 'file', 0o750, 0]);
  });
});

describe('the aufs converter', { skip: scratchMissing }, () => {
  const aufs = whiteoutConverter('aufs');

  it('keeps the tar markers as they are and writes nothing else', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    assert.equal(aufs.fromTar('whiteout', join(dir, 'gone'), header('.wh.gone'), true), true);
    mkdirSync(join(dir, 'd'));
    assert.equal(aufs.fromTar('opaque', join(dir, 'd'), header('d/.wh..wh..opq'), false), true);
    aufs.finishApply(dir, [dir]);
    assert.deepEqual(readdirSync(dir), ['d']);
    assert.deepEqual(readdirSync(join(dir, 'd')), []);
  });

  it('reads .wh. files: whiteouts beside the name, the opaque marker in the dir (the root too)', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    writeFileSync(join(dir, '.wh.gone'), '');
    mkdirSync(join(dir, 'd'));
    assert.ok(aufs.hasWhiteoutMarker(dir, 'gone'));
    assert.ok(!aufs.hasWhiteoutMarker(dir, 'd'));
    assert.equal(aufs.markerKind('.wh.gone'), 'whiteout');
    assert.equal(aufs.markerKind('.wh..wh.plnk'), 'bookkeeping');
    assert.equal(aufs.markerKind('gone'), undefined);
    assert.ok(!aufs.isOpaque(join(dir, 'd'), false));
    writeFileSync(join(dir, 'd/.wh..wh..opq'), '');
    assert.ok(aufs.isOpaque(join(dir, 'd'), false));
    writeFileSync(join(dir, '.wh..wh..opq'), '');
    assert.ok(aufs.isOpaque(dir, true), 'an opaque root hides the layers below');
    mknod(join(dir, 'c'), S_IFCHR, 0, 0);
    assert.ok(!aufs.isWhiteout(lstatSync(join(dir, 'c'))), 'a char 0/0 is no aufs whiteout');
  });

  it('exports the marker files as they are: no entries of its own', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    mknod(join(dir, 'c'), S_IFCHR, 0, 0);
    writeFileSync(join(dir, '.wh..wh..opq'), '');
    assert.equal(aufs.whiteoutToTar('c', bigStat(join(dir, 'c'))), undefined);
    assert.equal(aufs.opaqueToTar(dir, '', bigStat(dir)), undefined);
  });
});

describe('the plain converter', { skip: scratchMissing }, () => {
  const plain = whiteoutConverter('plain');

  it('is a full tree with no markers on disk', async (t) => {
    const dir = await withScratchFs(t, { size: '16m' });
    assert.ok(plain.fullTree && !whiteoutConverter('overlay').fullTree && !whiteoutConverter('aufs').fullTree);
    assert.equal(plain.fromTar('whiteout', join(dir, 'gone'), header('.wh.gone'), true), false);
    assert.equal(plain.fromTar('opaque', dir, header('.wh..wh..opq'), false), false);
    plain.finishApply(dir, []);
    assert.deepEqual(readdirSync(dir), []);
    writeFileSync(join(dir, '.wh.x'), '');
    writeFileSync(join(dir, '.wh..wh..opq'), '');
    mknod(join(dir, 'c'), S_IFCHR, 0, 0);
    lsetxattr(dir, 'trusted.overlay.opaque', Buffer.from('y'));
    assert.equal(plain.markerKind('.wh.x'), undefined);
    assert.ok(!plain.hasWhiteoutMarker(dir, 'x'));
    assert.ok(!plain.isWhiteout(lstatSync(join(dir, 'c'))));
    assert.ok(!plain.isOpaque(dir, false) && !plain.isOpaque(dir, true));
    assert.equal(plain.whiteoutToTar('c', bigStat(join(dir, 'c'))), undefined);
    assert.equal(plain.opaqueToTar(dir, '', bigStat(dir)), undefined);
  });
});
