/**
 * devicemapper pieces that need no kernel: option parsing (Docker's keys, units and defaults),
 * the thin-pool status line, Docker's human sizes, the rules of its check. The driver itself is tested on a real pool in
 * the VM (test/vm/devicemapper.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dmFindings, type DmFacts, type DmRepairs } from '../../src/drivers/devicemapper/check.js';
import type { DevInfo } from '../../src/drivers/devicemapper/deviceset.js';
import { parsePoolStatus } from '../../src/drivers/devicemapper/dmsetup.js';
import { UnionctlError } from '../../src/errors.js';
import type { DriverCheckContext } from '../../src/graph/driver.js';
import { humanSize } from '../../src/drivers/devicemapper/driver.js';
import { parseDmOptions, parseLayerSize, parseSize } from '../../src/drivers/devicemapper/options.js';

const GiB = 1024 ** 3;

describe('devicemapper options', () => {
  it("has Docker's defaults", () => {
    const o = parseDmOptions({});
    assert.equal(o.baseSize, 10 * GiB);
    assert.equal(o.loopDataSize, 100 * GiB);
    assert.equal(o.loopMetadataSize, 2 * GiB);
    assert.equal(o.blockSectors, 128, '64K blocks');
    assert.equal(o.minFreeSpacePercent, 10);
    assert.equal(o.fs, 'ext4');
    assert.equal(o.baseSizeGiven, false);
    assert.equal(o.loopSizesGiven, false);
  });

  it('reads sizes in binary units, case-insensitive keys', () => {
    assert.equal(parseSize('k', '512'), 512);
    assert.equal(parseSize('k', '64k'), 65536);
    assert.equal(parseSize('k', '100M'), 100 * 1024 ** 2);
    assert.equal(parseSize('k', '1.5GB'), 1.5 * GiB);
    assert.equal(parseSize('k', '2GiB'), 2 * GiB);
    const o = parseDmOptions({
      'DM.BaseSize': '20G',
      'dm.blocksize': '512K',
      'dm.min_free_space': '0%',
      'dm.fs': 'xfs',
      'dm.mkfsarg': '-m crc=1',
    });
    assert.equal(o.baseSize, 20 * GiB);
    assert.equal(o.baseSizeGiven, true);
    assert.equal(o.blockSectors, 1024);
    assert.equal(o.minFreeSpacePercent, 0);
    assert.equal(o.fs, 'xfs');
    assert.deepEqual(o.mkfsArgs, ['-m', 'crc=1']);
    assert.equal(parseLayerSize({ size: '20G' }), 20 * GiB);
    assert.equal(parseLayerSize(undefined), undefined);
  });

  it('refuses bad values, naming the option', () => {
    const bad: Array<[Record<string, string>, RegExp]> = [
      [{ 'dm.basesize': 'lots' }, /dm\.basesize=lots: not a size/],
      [{ 'dm.blocksize': '96K' }, /multiple of 64K/],
      [{ 'dm.blocksize': '2G' }, /multiple of 64K/],
      [{ 'dm.min_free_space': '10' }, /% sign/],
      [{ 'dm.min_free_space': '100%' }, /0% to 99%/],
      [{ 'dm.fs': 'btrfs' }, /unsupported filesystem/],
      [{ 'dm.datadev': '/dev/sdb' }, /must be given together/],
      [{ 'dm.thinpooldev': 'p', 'dm.datadev': '/dev/a', 'dm.metadatadev': '/dev/b' }, /cannot be combined/],
      [{ 'dm.nosuch': '1' }, /unknown storage option "dm\.nosuch"/],
    ];
    for (const [opts, message] of bad)
      assert.throws(
        () => parseDmOptions(opts),
        (e: Error & { code?: string }) => e.code === 'BAD_OPTION' && message.test(e.message),
      );
    assert.throws(() => parseLayerSize({ quota: '1G' }), { code: 'BAD_OPTION' });
  });
});

describe('devicemapper status parsing', () => {
  it('reads a thin-pool status line', () => {
    const st = parsePoolStatus('0 2097152 thin-pool 7 95/16384 1216/16384 - rw no_discard_passdown error_if_no_space - 1024');
    assert.deepEqual(st, { transactionId: 7, metadataUsed: 95, metadataTotal: 16384, dataUsed: 1216, dataTotal: 16384, mode: 'rw' });
    assert.throws(() => parsePoolStatus('0 8 thin 0 -'), { code: 'CORRUPT' });
    // A failed pool, and lines whose block counts are not <used>/<total>: refused, not NaN.
    for (const line of [
      '0 2097152 thin-pool Fail',
      '0 2097152 thin-pool 7 95 1216/16384 - rw',
      '0 2097152 thin-pool x 95/16384 1216/16384 - rw',
      '',
    ])
      assert.throws(() => parsePoolStatus(line), { code: 'CORRUPT' });
  });

  it("formats sizes as Docker's units.HumanSize does", () => {
    assert.equal(humanSize(0), '0 B');
    assert.equal(humanSize(65536), '65.54 kB');
    assert.equal(humanSize(10 * GiB), '10.74 GB');
    assert.equal(humanSize(100 * GiB), '107.4 GB');
    assert.equal(humanSize(999), '999 B');
  });
});

describe('devicemapper check rules (dmFindings over read facts)', () => {
  const prefix = 'docker-8:1-42';
  const record = (device_id: number): DevInfo => ({
    device_id,
    size: 128 << 20,
    transaction_id: device_id,
    initialized: true,
    deleted: false,
  });
  const layers = (...ids: string[]): DriverCheckContext => ({
    root: '/s',
    layers: new Map(ids.map((id) => [id, { id, writable: false }])),
    recorded: new Set(ids),
  });
  const facts = (over: Partial<DmFacts>): DmFacts => ({
    prefix,
    poolName: `${prefix}-pool`,
    metadataRel: 'devicemapper/metadata',
    records: new Map([
      ['base', record(1)],
      ['a', record(2)],
      ['b', record(3)],
    ]),
    active: new Map(),
    mounted: new Set(),
    missingInPool: new Map(),
    poolDevices: new Set(['7:1', '7:0']),
    loops: [
      { file: '/s/devicemapper/devicemapper/data', attached: [{ device: '/dev/loop0', majorMinor: '7:0' }] },
      { file: '/s/devicemapper/devicemapper/metadata', attached: [{ device: '/dev/loop1', majorMinor: '7:1' }] },
    ],
    ...over,
  });
  const calls: string[] = [];
  const repairs: DmRepairs = {
    deactivate: async (name) => void calls.push(`deactivate ${name}`),
    detachLoop: async (device) => void calls.push(`detach ${device}`),
  };
  const codes = (f: DmFacts, ctx = layers('a', 'b')) => dmFindings(f, ctx, repairs).map((x) => `${x.code} ${x.subject} ${x.when}`);

  it('finds nothing in a store whose devices are all in the pool, mounted ones active, loops in use', () => {
    assert.deepEqual(codes(facts({ active: new Map([[`${prefix}-a`, '253:3']]), mounted: new Set(['253:3']) })), []);
  });

  it('an active device nothing mounts is leaked, and its repair deactivates it after the commit', async () => {
    const f = facts({
      active: new Map([
        [`${prefix}-a`, '253:3'],
        [`${prefix}-b`, '253:4'],
      ]),
      mounted: new Set(['253:3']),
    });
    const found = dmFindings(f, layers('a', 'b'), repairs);
    assert.deepEqual(
      found.map((x) => `${x.code} ${x.subject} ${x.when}`),
      [`DM_DEVICE_LEAKED ${prefix}-b default`],
    );
    const after: Array<() => Promise<void>> = [];
    const said = await found[0]!.fix!({
      write: () => assert.fail('writes no file'),
      delete: () => assert.fail(),
      afterCommit: (fn) => void after.push(fn),
    });
    assert.match(said, /deactivated/);
    assert.deepEqual(calls, [], 'nothing before the commit');
    for (const fn of after) await fn();
    assert.deepEqual(calls.splice(0), [`deactivate ${prefix}-b`]);
  });

  it('a second loop device on a store file that the pool does not use is leaked; the used one is not', async () => {
    const f = facts({});
    f.loops[0]!.attached.push({ device: '/dev/loop5', majorMinor: '7:5' });
    const found = dmFindings(f, layers('a', 'b'), repairs);
    assert.deepEqual(
      found.map((x) => `${x.code} ${x.subject}`),
      ['DM_LOOP_LEAKED /dev/loop5'],
    );
    const after: Array<() => Promise<void>> = [];
    await found[0]!.fix!({ write: () => assert.fail(), delete: () => assert.fail(), afterCommit: (fn) => void after.push(fn) });
    for (const fn of after) await fn();
    assert.deepEqual(calls.splice(0), ['detach /dev/loop5']);
    assert.deepEqual(codes(facts({ poolDevices: new Set(), loops: f.loops })), [], 'without a pool table nothing is called leaked');
  });

  it('damaged records, shared device ids and devices the pool lacks are reported, never repaired', () => {
    const f = facts({
      records: new Map<string, DevInfo | UnionctlError>([
        ['base', record(1)],
        ['a', record(2)],
        ['b', record(2)],
        ['c', new UnionctlError('CORRUPT', 'not valid JSON')],
        ['d', { ...record(2), deleted: true }],
      ]),
      missingInPool: new Map([
        ['a', 'Unable to activate'],
        ['gone', 'no record: the store judges it'],
      ]),
    });
    assert.deepEqual(codes(f, layers('a', 'b', 'c')), [
      'DM_DEVICE_MISSING a never',
      'DM_METADATA_DAMAGED c never',
      'DM_DEVICE_ID_SHARED a,b never',
    ]);
    const missingBase = codes(facts({ missingInPool: new Map([['base', 'gone']]) }));
    assert.deepEqual(missingBase, ['DM_DEVICE_MISSING devicemapper/metadata/base never']);
  });
});
