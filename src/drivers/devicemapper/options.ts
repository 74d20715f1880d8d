/**
 * devicemapper storage options, in Docker's names and with Docker's defaults (deviceset.go):
 * 100G / 2G sparse loop files, a 10G base device, 64K pool blocks, 10% minimum free space.
 * Sizes take Docker's units (RAMInBytes: 512, 64k, 100M, 10G, 1T — binary multiples).
 */
import { UnionctlError } from '../../errors.js';
import { parseStorageOpts } from '../../graph/registry.js';

export const DM_OPTION_KEYS = [
  'dm.basesize',
  'dm.loopdatasize',
  'dm.loopmetadatasize',
  'dm.fs',
  'dm.thinpooldev',
  'dm.datadev',
  'dm.metadatadev',
  'dm.blocksize',
  'dm.min_free_space',
  'dm.mkfsarg',
  'dm.mountopt',
];

/** Per-layer option of createReadWrite: the layer's filesystem size (grown from the parent's). */
export const DM_LAYER_OPTION_KEYS = ['size'];

const GiB = 1024 ** 3;

export interface DmOptions {
  baseSize: number;
  /** True when dm.basesize was given: only then is an existing base device grown to it. */
  baseSizeGiven: boolean;
  loopDataSize: number;
  loopMetadataSize: number;
  /**
   * True when dm.loopdatasize / dm.loopmetadatasize were given. Only then is an existing loop file
   * grown: Docker grows it to the (default) size on every start, which here would let one CLI call
   * without the option blow a small test pool's file up to 100G.
   */
  loopSizesGiven: boolean;
  fs: 'ext4' | 'xfs';
  /** An existing thin-pool's dm name (dm.thinpooldev, /dev/mapper/ stripped). */
  thinPoolDev?: string;
  dataDev?: string;
  metadataDev?: string;
  /** Pool block size in 512-byte sectors. */
  blockSectors: number;
  minFreeSpacePercent: number;
  mkfsArgs: string[];
  mountOpt: string;
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: GiB, t: 1024 ** 4, p: 1024 ** 5 };

/** "10G" → bytes (Docker's RAMInBytes: binary units, optional "b"/"ib" suffix). */
export function parseSize(key: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$/i.exec(value.trim());
  if (!m) {
    throw new UnionctlError('BAD_OPTION', `${key}=${value}: not a size`, { hint: `write a size such as 512M or 10G` });
  }
  // Both groups always participate (the unit one may be empty), and UNITS has every unit the pattern allows.
  const bytes = Math.floor(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!);
  if (bytes <= 0)
    throw new UnionctlError('BAD_OPTION', `${key}=${value}: the size must be above 0`, { hint: 'write a size such as 512M or 10G' });
  return bytes;
}

function badOption(key: string, value: string, why: string, hint: string): UnionctlError {
  return new UnionctlError('BAD_OPTION', `${key}=${value}: ${why}`, { hint });
}

export function parseDmOptions(raw: Record<string, string>): DmOptions {
  const o = parseStorageOpts(raw, DM_OPTION_KEYS, 'devicemapper driver');
  const size = (key: string, dflt: number) => (o[key] === undefined ? dflt : parseSize(key, o[key]));

  const fs = o['dm.fs'] ?? 'ext4';
  if (fs !== 'ext4' && fs !== 'xfs') throw badOption('dm.fs', fs, 'unsupported filesystem', 'use ext4 or xfs');

  const blockBytes = size('dm.blocksize', 64 * 1024);
  // The kernel's thin-pool limits: a multiple of 64K between 64K and 1G.
  if (blockBytes % (64 * 1024) !== 0 || blockBytes > GiB) {
    throw badOption(
      'dm.blocksize',
      o['dm.blocksize']!, // given: the default (64K) passes the check
      'the pool block size must be a multiple of 64K between 64K and 1G',
      'for example dm.blocksize=64K or 512K',
    );
  }

  let minFree = 10;
  if (o['dm.min_free_space'] !== undefined) {
    const v = o['dm.min_free_space'];
    const m = /^(\d+)%$/.exec(v);
    if (!m || Number(m[1]) > 99)
      throw badOption(
        'dm.min_free_space',
        v,
        'needs a percentage from 0% to 99% (with the % sign, as in Docker)',
        'for example dm.min_free_space=10%',
      );
    minFree = Number(m[1]);
  }

  const dataDev = o['dm.datadev'];
  const metadataDev = o['dm.metadatadev'];
  if ((dataDev === undefined) !== (metadataDev === undefined)) {
    throw new UnionctlError('BAD_OPTION', 'dm.datadev and dm.metadatadev must be given together', {
      hint: 'name both block devices, or neither to use loop files',
    });
  }
  const thinPoolDev = o['dm.thinpooldev']?.replace(/^\/dev\/mapper\//, '');
  if (thinPoolDev !== undefined && dataDev !== undefined) {
    throw new UnionctlError('BAD_OPTION', 'dm.thinpooldev cannot be combined with dm.datadev / dm.metadatadev', {
      hint: 'use an existing pool, or let unionctl build one from the devices',
    });
  }

  return {
    baseSize: size('dm.basesize', 10 * GiB),
    baseSizeGiven: o['dm.basesize'] !== undefined,
    loopDataSize: size('dm.loopdatasize', 100 * GiB),
    loopMetadataSize: size('dm.loopmetadatasize', 2 * GiB),
    loopSizesGiven: o['dm.loopdatasize'] !== undefined || o['dm.loopmetadatasize'] !== undefined,
    fs,
    thinPoolDev,
    dataDev,
    metadataDev,
    blockSectors: blockBytes / 512,
    minFreeSpacePercent: minFree,
    mkfsArgs: o['dm.mkfsarg'] === undefined ? [] : o['dm.mkfsarg'].split(/\s+/).filter(Boolean),
    mountOpt: o['dm.mountopt'] ?? '',
  };
}

/** The `size` option of createReadWrite, in bytes, or undefined. */
export function parseLayerSize(raw: Record<string, string> | undefined): number | undefined {
  const o = parseStorageOpts(raw, DM_LAYER_OPTION_KEYS, 'devicemapper layer');
  return o.size === undefined ? undefined : parseSize('size', o.size);
}
