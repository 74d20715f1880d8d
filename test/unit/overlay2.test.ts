/**
 * The pure parts of the overlay2 driver: link ids, mount data and the choice of mount method,
 * option parsing, and mapping branch dirs back to layers. The real mounts are exercised in
 * test/conformance/overlay2*.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isLinkId, newLinkId, Overlay2Layout } from '../../src/drivers/overlay2/layout.js';
import { chooseMountMethod, overlayMountData, type MountSettings, type UnionPaths } from '../../src/drivers/overlayfs/mount.js';
import { parseByteSize, parseDriverOptions, parseLayerOptions } from '../../src/drivers/overlay2/options.js';

const settings: MountSettings = { indexOff: true, userxattr: false, pageSize: 4096, newMountApi: true };

function chainPaths(lowers: number): UnionPaths {
  return {
    lowers: Array.from({ length: lowers }, () => `l/${newLinkId()}`),
    upper: 'top/diff',
    work: 'top/work',
  };
}

describe('overlay2 link ids', () => {
  it('are 26 characters of RFC 4648 base32, different every time', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newLinkId()));
    assert.equal(ids.size, 1000);
    for (const id of ids) assert.match(id, /^[A-Z2-7]{26}$/);
    assert.ok(isLinkId('ABCDEFGHIJKLMNOPQRSTUVWXYZ'));
    assert.ok(!isLinkId('abcdefghijklmnopqrstuvwxyz'));
    assert.ok(!isLinkId('ABCDEFGHIJKLMNOPQRSTUVWXY1'));
  });

  it('use all of the alphabet (the last character carries 3 random bits, not 0)', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) for (const c of newLinkId()) seen.add(c);
    assert.equal(seen.size, 32);
  });
});

describe('overlay2 mount data', () => {
  it("is Docker's string: index=off, lowerdir, upperdir, workdir, quoted context", () => {
    const paths: UnionPaths = { lowers: ['l/AAA', 'l/BBB'], upper: 'x/diff', work: 'x/work' };
    assert.equal(overlayMountData(paths, settings, '/h'), 'index=off,lowerdir=/h/l/AAA:/h/l/BBB,upperdir=/h/x/diff,workdir=/h/x/work');
    assert.equal(overlayMountData(paths, { ...settings, indexOff: false }, ''), 'lowerdir=l/AAA:l/BBB,upperdir=x/diff,workdir=x/work');
    assert.equal(
      overlayMountData(paths, { ...settings, userxattr: true, mountLabel: 'system_u:object_r:container_file_t:s0:c1,c2' }, '/h'),
      'index=off,userxattr,lowerdir=/h/l/AAA:/h/l/BBB,upperdir=/h/x/diff,workdir=/h/x/work,context="system_u:object_r:container_file_t:s0:c1,c2"',
    );
  });

  it('of a committed (read-only) union has lowers only', () => {
    assert.equal(overlayMountData({ lowers: ['x/diff', 'l/AAA'] }, settings, '/h'), 'index=off,lowerdir=/h/x/diff:/h/l/AAA');
  });

  it('picks absolute paths while they fit a page, then relative ones, then the new mount API', () => {
    const home = `/var/lib/unionctl/${'h'.repeat(40)}/overlay2`;
    assert.equal(chooseMountMethod(home, chainPaths(20), settings), 'absolute');
    assert.equal(chooseMountMethod(home, chainPaths(100), settings), 'relative');
    assert.equal(chooseMountMethod(home, chainPaths(200), settings), 'new-api');
    assert.throws(() => chooseMountMethod(home, chainPaths(200), { ...settings, newMountApi: false }), { code: 'UNSUPPORTED' });
  });

  it('counts the page limit in bytes, NUL included', () => {
    const home = '/h';
    // Find the largest relative chain that fits, then check one more lower tips it over.
    let n = 1;
    while (chooseMountMethod(home, chainPaths(n + 1), { ...settings, newMountApi: true }) !== 'new-api') n++;
    const data = overlayMountData(chainPaths(n), settings, '');
    assert.ok(Buffer.byteLength(data) <= 4095);
    assert.ok(Buffer.byteLength(overlayMountData(chainPaths(n + 1), settings, '')) > 4095);
  });
});

describe('overlay2 options', () => {
  it("parses sizes like Docker's RAMInBytes (binary units)", () => {
    assert.equal(parseByteSize('512', 'size'), 512);
    assert.equal(parseByteSize('10k', 'size'), 10 * 1024);
    assert.equal(parseByteSize('10M', 'size'), 10 * 1024 ** 2);
    assert.equal(parseByteSize('1.5g', 'size'), 1.5 * 1024 ** 3);
    assert.equal(parseByteSize('2GiB', 'size'), 2 * 1024 ** 3);
    assert.equal(parseByteSize('4 GB', 'size'), 4 * 1024 ** 3);
    assert.throws(() => parseByteSize('ten', 'size'), { code: 'BAD_OPTION' });
    assert.throws(() => parseByteSize('-1', 'size'), { code: 'BAD_OPTION' });
  });

  it('knows overlay2.size and overlay2.override_kernel_check, nothing else', () => {
    assert.deepEqual(parseDriverOptions({ 'overlay2.size': '1G', 'overlay2.override_kernel_check': '1' }), { defaultSize: 1024 ** 3 });
    assert.deepEqual(parseDriverOptions({ 'Overlay2.Size': '1k' }), { defaultSize: 1024 });
    assert.throws(() => parseDriverOptions({ 'dm.basesize': '1G' }), { code: 'BAD_OPTION' });
  });

  it('accepts size only for writable layers', () => {
    assert.deepEqual(parseLayerOptions({ size: '1M' }, true), { size: 1024 ** 2 });
    assert.deepEqual(parseLayerOptions(undefined, false), { size: undefined });
    assert.throws(() => parseLayerOptions({ size: '1M' }, false), { code: 'BAD_OPTION' });
    assert.throws(() => parseLayerOptions({ quota: '1M' }, true), { code: 'BAD_OPTION' });
  });
});

describe('overlay2 branch dirs → layers', () => {
  it('maps <home>/<id>/diff, <home>/l/<LID> and their relative forms; nothing else', () => {
    const home = mkdtempSync('/tmp/unionctl-unit-');
    try {
      const layout = new Overlay2Layout(home);
      const lid = newLinkId();
      mkdirSync(join(home, 'l'));
      mkdirSync(join(home, 'layer1', 'diff'), { recursive: true });
      symlinkSync('../layer1/diff', join(home, 'l', lid));
      assert.equal(layout.layerOfBranchDir(join(home, 'layer1', 'diff')), 'layer1');
      assert.equal(layout.layerOfBranchDir(join(home, 'l', lid)), 'layer1');
      assert.equal(layout.layerOfBranchDir(`l/${lid}`), 'layer1');
      assert.equal(layout.layerOfBranchDir('layer1/diff'), 'layer1');
      assert.equal(layout.layerOfBranchDir('/somewhere/else/diff'), undefined);
      assert.equal(layout.layerOfBranchDir(join(home, 'layer1', 'work')), undefined);
      assert.throws(() => layout.layerOfBranchDir(`l/${newLinkId()}`), { code: 'CORRUPT' });
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
