/**
 * overlay2 storage options, with Docker's keys and value syntax.
 *
 * Driver-wide (`--storage-opt`): `overlay2.size` (default quota for writable layers) and
 * `overlay2.override_kernel_check` (accepted and ignored, as Docker ≥ 18 does).
 * Per layer (createReadWrite only): `size`.
 */
import { UnionctlError } from '../../errors.js';

export const DRIVER_OPTION_KEYS = ['overlay2.size', 'overlay2.override_kernel_check'] as const;

export interface DriverOptions {
  /** Default quota in bytes for every writable layer (0 = none). */
  defaultSize: number;
}

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 };

/**
 * A size the way Docker's units.RAMInBytes reads it: a number with an optional binary unit
 * ("512", "100k", "10M", "1.5g", "2GiB", "4 GB" — k/m/g/t/p are powers of 1024 either way).
 */
export function parseByteSize(value: string, key: string): number {
  const m = /^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$/.exec(value.trim());
  if (m === null) {
    throw new UnionctlError('BAD_OPTION', `invalid size ${JSON.stringify(value)} for ${key}`, {
      hint: 'give a number of bytes with an optional unit, e.g. 10G, 512M, 100k',
    });
  }
  return Math.floor(Number(m[1]) * UNITS[(m[2] ?? '').toLowerCase()]!); // every unit the pattern allows is in UNITS
}

/** Keys are case-insensitive in Docker; unknown ones are refused. */
export function parseDriverOptions(options: Record<string, string>): DriverOptions {
  const parsed: DriverOptions = { defaultSize: 0 };
  for (const [rawKey, value] of Object.entries(options)) {
    const key = rawKey.toLowerCase();
    if (key === 'overlay2.size') parsed.defaultSize = parseByteSize(value, rawKey);
    else if (key === 'overlay2.override_kernel_check')
      continue; // Docker accepts it and does nothing
    else {
      throw new UnionctlError('BAD_OPTION', `overlay2: unknown storage option ${JSON.stringify(rawKey)}`, {
        hint: `overlay2 knows ${DRIVER_OPTION_KEYS.join(', ')}`,
      });
    }
  }
  return parsed;
}

/**
 * Per-layer options. `writable` is false for create(): Docker accepts `size` only for read-write
 * layers (a quota on an image layer would only get in the way of applying it).
 */
export function parseLayerOptions(storageOpt: Record<string, string> | undefined, writable: boolean): { size?: number } {
  let size: number | undefined;
  for (const [rawKey, value] of Object.entries(storageOpt ?? {})) {
    const key = rawKey.toLowerCase();
    if (key !== 'size') {
      throw new UnionctlError('BAD_OPTION', `overlay2: unknown layer option ${JSON.stringify(rawKey)}`, {
        hint: 'overlay2 layers accept only size=<bytes> (read-write layers)',
      });
    }
    if (!writable) {
      throw new UnionctlError('BAD_OPTION', 'overlay2: the size option is only supported for read-write layers', {
        hint: 'create the layer read-write (createReadWrite / --rw) to give it a size',
      });
    }
    size = parseByteSize(value, rawKey);
  }
  return { size };
}
