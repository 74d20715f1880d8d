import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import '../../src/index.js'; // the composition root registers the built-in drivers
import { UnionctlError } from '../../src/errors.js';
import { driverNames, lookupDriver, parseStorageOpts, selectDriver, splitStorageOpts } from '../../src/graph/registry.js';

const dir = mkdtempSync(join(tmpdir(), 'unionctl-registry-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function badOption(pattern: RegExp, hint?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof UnionctlError);
    assert.equal(e.code, 'BAD_OPTION');
    assert.match(e.message, pattern);
    if (hint) assert.match(e.hint ?? '', hint);
    return true;
  };
}

describe('driver registry', () => {
  it('has the built-in drivers', () => {
    assert.ok(driverNames().includes('vfs'));
    assert.ok(driverNames().includes('overlay2'));
    assert.equal(lookupDriver('vfs').name, 'vfs');
    assert.deepEqual(lookupDriver('vfs').optionKeys, []);
  });

  it('refuses an unknown driver name, listing the known ones', () => {
    assert.throws(() => lookupDriver('zfs'), badOption(/zfs/, /overlay2, vfs/));
  });

  it('selects the named driver, or says why it cannot run', () => {
    assert.equal(selectDriver(join(dir, 'a'), 'vfs').name, 'vfs');
    const overlay2 = lookupDriver('overlay2');
    const reason = overlay2.unsupportedReason(join(dir, 'a', 'overlay2'));
    if (reason === undefined) assert.equal(selectDriver(join(dir, 'a'), 'overlay2').name, 'overlay2');
    else assert.throws(() => selectDriver(join(dir, 'a'), 'overlay2'), { code: 'UNSUPPORTED' });
  });

  it('auto-selects overlay2 where it works, else vfs', () => {
    const root = join(dir, 'auto');
    const expected = lookupDriver('overlay2').unsupportedReason(join(root, 'overlay2')) === undefined ? 'overlay2' : 'vfs';
    assert.equal(selectDriver(root).name, expected);
  });

  it('keeps the driver that already has layers under root (prior driver)', () => {
    const root = join(dir, 'prior');
    mkdirSync(join(root, 'vfs', 'dir', 'layer1'), { recursive: true });
    mkdirSync(join(root, 'overlay2', 'l'), { recursive: true }); // an empty skeleton does not count
    assert.equal(selectDriver(root).name, 'vfs');
    writeFileSync(join(root, 'overlay2', 'l', 'ABC'), '');
    assert.throws(() => selectDriver(root), badOption(/overlay2, vfs/, /--driver/));
  });
});

describe('storage options', () => {
  it('splits key=value items, lower-cases keys, keeps "=" in values', () => {
    assert.deepEqual(splitStorageOpts(['Overlay2.Size=10G', 'dm.mkfsarg=-O ^has_journal', ' a = b=c '], 'x'), {
      'overlay2.size': '10G',
      'dm.mkfsarg': '-O ^has_journal',
      a: 'b=c',
    });
    assert.deepEqual(splitStorageOpts({ Size: ' 1G ' }, 'x'), { size: '1G' });
    assert.deepEqual(splitStorageOpts(undefined, 'x'), {});
  });

  it('refuses items that are not key=value', () => {
    assert.throws(() => splitStorageOpts(['size'], 'vfs layer'), badOption(/vfs layer.*"size".*key=value/));
    assert.throws(() => splitStorageOpts(['=1G'], 'vfs layer'), badOption(/key=value/));
  });

  it('refuses unknown keys, naming the key and the allowed ones', () => {
    assert.deepEqual(parseStorageOpts(['overlay2.size=1G'], ['overlay2.size', 'overlay2.override_kernel_check'], 'overlay2 driver'), {
      'overlay2.size': '1G',
    });
    assert.throws(
      () => parseStorageOpts(['overlay2.sise=1G'], ['overlay2.size', 'overlay2.override_kernel_check'], 'overlay2 driver'),
      badOption(/overlay2 driver: unknown storage option "overlay2.sise"/, /overlay2.size, overlay2.override_kernel_check/),
    );
    assert.throws(() => parseStorageOpts({ 'vfs.size': '1G' }, [], 'vfs driver'), badOption(/vfs\.size/, /accepts no storage options/));
  });
});
