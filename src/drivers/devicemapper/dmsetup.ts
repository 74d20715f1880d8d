/**
 * The kernel's device-mapper, driven with the `dmsetup` command (package dmsetup) and loop devices
 * with `losetup`. Every call runs with DM_DISABLE_UDEV=1: dmsetup then makes the /dev/mapper nodes
 * itself instead of waiting for udev, which is absent in containers and minimal VMs (there it would
 * never see its node, and a thin table naming the pool fails with ENODEV).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { UnionctlError } from '../../errors.js';

const exec = promisify(execFile);

export class DmCommandError extends UnionctlError {
  readonly stderr: string;
  constructor(command: string, args: string[], stderr: string) {
    super('SYSCALL', `${command} ${args.join(' ')} failed: ${stderr.trim().split('\n').slice(-2).join(' / ') || 'no message'}`, {
      hint: 'check `dmsetup ls`, `dmsetup status` and the kernel log (dmesg)',
    });
    this.name = 'DmCommandError';
    this.stderr = stderr;
  }
}

async function runTool(command: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await exec(command, args, { env: { ...process.env, DM_DISABLE_UDEV: '1' }, maxBuffer: 16 << 20 });
    return stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') {
      throw new UnionctlError('UNSUPPORTED', `${command} is not installed`, {
        hint: `install it (Debian: apt-get install ${command === 'dmsetup' ? 'dmsetup' : 'mount'})`,
      });
    }
    throw new DmCommandError(command, args, err.stderr ?? err.message);
  }
}

export function dmsetup(args: string[]): Promise<string> {
  return runTool('dmsetup', args);
}

/** Why this kernel cannot run thin provisioning, or undefined when it can (no command is run). */
export function deviceMapperMissingReason(): string | undefined {
  let misc = '';
  try {
    misc = readFileSync('/proc/misc', 'utf8');
  } catch {
    // no /proc/misc: treat as missing below
  }
  if (!/\bdevice-mapper\b/.test(misc) && !existsSync('/dev/mapper/control')) {
    return 'this kernel has no device-mapper (no device-mapper in /proc/misc, no /dev/mapper/control; load dm_mod and dm_thin_pool, or run unionctl where the kernel has them)';
  }
  return undefined;
}

export async function deviceExists(name: string): Promise<boolean> {
  try {
    await dmsetup(['info', '-c', '--noheadings', '-o', 'name', name]);
    return true;
  } catch (e) {
    if (e instanceof DmCommandError) return false;
    throw e;
  }
}

export async function createDevice(name: string, table: string): Promise<void> {
  await dmsetup(['create', name, '--table', table]);
}

/** Deactivates a device; --retry rides out a short-lived open (blkid, a just-unmounted fs). */
export async function removeDevice(name: string): Promise<void> {
  await dmsetup(['remove', '--retry', name]);
}

export async function suspendDevice(name: string): Promise<void> {
  await dmsetup(['suspend', name]);
}

export async function resumeDevice(name: string): Promise<void> {
  await dmsetup(['resume', name]);
}

export async function poolMessage(pool: string, message: string): Promise<void> {
  await dmsetup(['message', pool, '0', message]);
}

/** The first line of a command's output; '' when it printed nothing (a device without a table). */
function firstLine(stdout: string): string {
  const text = stdout.trim();
  const end = text.indexOf('\n');
  return end < 0 ? text : text.slice(0, end);
}

/** "0 <sectors> <target> <args…>" of the device's first target. */
export async function tableOf(name: string): Promise<string> {
  return firstLine(await dmsetup(['table', name]));
}

export async function statusOf(name: string): Promise<string> {
  return firstLine(await dmsetup(['status', name]));
}

/** What `dmsetup status <pool>` says about a thin-pool. */
export interface PoolStatus {
  transactionId: number;
  metadataUsed: number;
  metadataTotal: number;
  dataUsed: number;
  dataTotal: number;
  /** rw, ro, out_of_data_space, or Fail */
  mode: string;
}

/** "<used>/<total>" blocks, both decimal. */
const USED_OF_TOTAL = /^(\d+)\/(\d+)$/;

/** Parses "0 <len> thin-pool <txid> <used>/<total meta> <used>/<total data> <held root> <mode> …". */
export function parsePoolStatus(line: string): PoolStatus {
  const [, , target, txid, metaBlocks, dataBlocks, , mode] = line.trim().split(/\s+/);
  const meta = USED_OF_TOTAL.exec(metaBlocks ?? '');
  const data = USED_OF_TOTAL.exec(dataBlocks ?? '');
  // A failed pool says just "0 <len> thin-pool Fail"; a short or garbled line is refused the same way.
  if (target !== 'thin-pool' || txid === undefined || !/^\d+$/.test(txid) || meta === null || data === null || mode === undefined) {
    throw new UnionctlError('CORRUPT', `unexpected thin-pool status: ${JSON.stringify(line)}`, {
      hint: 'the pool may have failed: see dmesg',
    });
  }
  return {
    transactionId: Number(txid),
    metadataUsed: Number(meta[1]),
    metadataTotal: Number(meta[2]),
    dataUsed: Number(data[1]),
    dataTotal: Number(data[2]),
    mode,
  };
}

export async function poolStatus(pool: string): Promise<PoolStatus> {
  return parsePoolStatus(await statusOf(pool));
}

// ---- loop devices ------------------------------------------------------------------------------

export function losetup(args: string[]): Promise<string> {
  return runTool('losetup', args);
}

/** Every loop device backed by `file`: its name (/dev/loopN) and major:minor. */
export async function loopDevicesOf(file: string): Promise<Array<{ device: string; majorMinor: string }>> {
  const out = await losetup(['--list', '--noheadings', '--output', 'NAME,MAJ:MIN', '--associated', file]);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f): f is [string, string] => f.length === 2 && /^\d+:\d+$/.test(f[1]!))
    .map(([device, majorMinor]) => ({ device, majorMinor }));
}

/** The loop device already backed by `file`, if any. */
export async function loopDeviceOf(file: string): Promise<string | undefined> {
  return (await loopDevicesOf(file))[0]?.device;
}

export async function attachLoop(file: string): Promise<string> {
  return (await losetup(['-f', '--show', file])).trim();
}

export async function detachLoop(device: string): Promise<void> {
  await losetup(['-d', device]);
}
