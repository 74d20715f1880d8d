/**
 * devicemapper's part of `unionctl check` (graph/check.ts): the metadata files against the pool
 * and the kernel's devices.
 *
 * gatherDmFacts reads what there is (the metadata files, the store's active dm devices, the
 * mounted block devices, the loop devices on the store's loop files, and, by activating each
 * inactive device for a moment, which thin devices the pool lacks); dmFindings judges those facts,
 * so its rules are tested without a kernel. Findings:
 * - DM_METADATA_DAMAGED (never): a metadata file that is not a device record.
 * - DM_DEVICE_ID_SHARED (never): two records naming one thin device id (one sees the other's data).
 * - DM_DEVICE_MISSING (never): a record whose thin device the pool does not have (its files are gone).
 * - DM_DEVICE_LEAKED (repaired): an active device of this store that nothing mounts (a process
 *   killed between activating and mounting, or between unmounting and deactivating). Deactivating
 *   it loses nothing: the thin device stays in the pool.
 * - DM_LOOP_LEAKED (repaired): a second loop device on the store's data or metadata file, which
 *   the pool does not use. Detaching it loses nothing.
 * Layers that have a metadata file but no record are the store's LAYER_UNACCOUNTED (storedLayerIds).
 */
import { join, relative } from 'node:path';
import { isUnionctlError, UnionctlError } from '../../errors.js';
import type { CheckFinding, DriverCheckContext } from '../../graph/driver.js';
import { readMountInfo } from '../../sys/index.js';
import { BASE, type DeviceSet, type DevInfo } from './deviceset.js';
import { createDevice, detachLoop, DmCommandError, dmsetup, loopDevicesOf, removeDevice, tableOf } from './dmsetup.js';

/** A loop file of the store (data or metadata) and the loop devices attached to it. */
export interface LoopFileFacts {
  file: string;
  /** Every loop device on the file: its name and major:minor. */
  attached: Array<{ device: string; majorMinor: string }>;
}

/** What the check reads of the store's metadata and the kernel. */
export interface DmFacts {
  /** The store's device-name prefix (docker-<maj>:<min>-<ino>) and its pool's dm name. */
  prefix: string;
  poolName: string;
  /** Path of the metadata directory relative to the store root, for subjects. */
  metadataRel: string;
  /** Every device record (the base's included): hash → the record, or why it is not one. */
  records: Map<string, DevInfo | UnionctlError>;
  /** Active dm devices whose names start with the prefix, but the pool: name → major:minor. */
  active: Map<string, string>;
  /** major:minor of every mounted filesystem. */
  mounted: Set<string>;
  /** Hashes whose thin device the pool refused to activate: hash → what dmsetup said. */
  missingInPool: Map<string, string>;
  /** The pool's table devices (metadata, data) as major:minor; empty when the pool is not there. */
  poolDevices: Set<string>;
  loops: LoopFileFacts[];
}

/** What the repairs do; the real ones run dmsetup and losetup under the pool lock. */
export interface DmRepairs {
  deactivate(name: string): Promise<void>;
  detachLoop(device: string): Promise<void>;
}

export function dmFindings(facts: DmFacts, ctx: DriverCheckContext, repairs: DmRepairs): CheckFinding[] {
  return [...recordFindings(facts, ctx), ...leakedDevices(facts, repairs), ...leakedLoops(facts, repairs)];
}

function recordFindings(facts: DmFacts, ctx: DriverCheckContext): CheckFinding[] {
  const findings: CheckFinding[] = [];
  const byDeviceId = new Map<number, string[]>();
  for (const [hash, record] of facts.records) {
    const subject = hash === BASE ? join(facts.metadataRel, BASE) : hash;
    if (isUnionctlError(record)) {
      findings.push({
        code: 'DM_METADATA_DAMAGED',
        subject,
        message: `devicemapper record ${join(facts.metadataRel, hash)} is damaged: ${record.message}`,
        repair: `restore ${join(facts.metadataRel, hash)} from a backup; without it the thin device cannot be found`,
        when: 'never',
      });
      continue;
    }
    if (record.deleted) continue; // Docker's deferred deletion: its id may be reused
    byDeviceId.set(record.device_id, [...(byDeviceId.get(record.device_id) ?? []), hash]);
    const reason = facts.missingInPool.get(hash);
    if (reason !== undefined && (hash === BASE || ctx.layers.has(hash))) {
      findings.push({
        code: 'DM_DEVICE_MISSING',
        subject,
        message: `thin device ${record.device_id} of ${hash === BASE ? 'the base device' : `layer ${hash}`} is not in pool ${facts.poolName}: ${reason}`,
        repair:
          hash === BASE
            ? 'new layers cannot be made without the base device; move the layers to another store (unionctl migrate) or start the store afresh'
            : "the layer's files are gone; remove it (unionctl rm) and import it again",
        when: 'never',
      });
    }
  }
  for (const [deviceId, hashes] of byDeviceId) {
    if (hashes.length < 2) continue;
    findings.push({
      code: 'DM_DEVICE_ID_SHARED',
      subject: hashes.join(','),
      message: `${hashes.join(' and ')} name the same thin device ${deviceId}: each sees the other's files`,
      repair: 'find the layer whose files are not its own (unionctl export), remove it (unionctl rm) and import it again',
      when: 'never',
    });
  }
  return findings;
}

function leakedDevices(facts: DmFacts, repairs: DmRepairs): CheckFinding[] {
  const findings: CheckFinding[] = [];
  for (const [name, majorMinor] of facts.active) {
    if (facts.mounted.has(majorMinor)) continue;
    findings.push({
      code: 'DM_DEVICE_LEAKED',
      subject: name,
      message: `device-mapper device ${name} (${majorMinor}) is active but nothing mounts it`,
      repair: `deactivate it (dmsetup remove ${name}); its thin device stays in the pool`,
      when: 'default',
      fix: (rtx) => {
        rtx.afterCommit(() => repairs.deactivate(name));
        return `deactivated ${name}`;
      },
    });
  }
  return findings;
}

function leakedLoops(facts: DmFacts, repairs: DmRepairs): CheckFinding[] {
  const findings: CheckFinding[] = [];
  if (facts.poolDevices.size === 0) return findings; // no pool to tell the used one apart
  for (const loop of facts.loops) {
    for (const { device, majorMinor } of loop.attached) {
      if (facts.poolDevices.has(majorMinor)) continue;
      findings.push({
        code: 'DM_LOOP_LEAKED',
        subject: device,
        message: `loop device ${device} is attached to ${loop.file}, but pool ${facts.poolName} uses another`,
        repair: `detach it (losetup -d ${device})`,
        when: 'default',
        fix: (rtx) => {
          rtx.afterCommit(() => repairs.detachLoop(device));
          return `detached ${device}`;
        },
      });
    }
  }
  return findings;
}

// ---- reading the facts -------------------------------------------------------------------------

/** Reads the facts; activates (and deactivates again) each inactive device, under the pool lock. */
export async function gatherDmFacts(devices: DeviceSet, ctx: DriverCheckContext): Promise<DmFacts> {
  return devices.locked(async () => {
    const records = readRecords(devices);
    const active = await activeDevices(devices);
    return {
      prefix: devices.prefix,
      poolName: devices.poolName,
      metadataRel: relative(ctx.root, devices.metadataDir),
      records,
      active,
      mounted: new Set(readMountInfo().map((m) => `${m.major}:${m.minor}`)),
      missingInPool: await probePool(devices, records, active),
      poolDevices: await poolTableDevices(devices.poolName),
      loops: await loopFiles(devices),
    };
  });
}

function readRecords(devices: DeviceSet): Map<string, DevInfo | UnionctlError> {
  const records = new Map<string, DevInfo | UnionctlError>();
  for (const hash of [BASE, ...devices.layerHashes()]) {
    try {
      const info = devices.info(hash);
      if (info === undefined) continue;
      if (typeof info !== 'object' || info === null || !Number.isInteger(info.device_id) || !Number.isInteger(info.size)) {
        throw new UnionctlError('CORRUPT', 'it lacks a whole-number device_id or size', { hint: 'restore it from a backup' });
      }
      records.set(hash, info);
    } catch (e) {
      if (!isUnionctlError(e)) throw e;
      records.set(hash, e);
    }
  }
  return records;
}

/** `dmsetup info` of every device, the store's own (but the pool): name → major:minor. */
async function activeDevices(devices: DeviceSet): Promise<Map<string, string>> {
  const out = await dmsetup(['info', '-c', '--noheadings', '--separator', ' ', '-o', 'name,major,minor']);
  const active = new Map<string, string>();
  for (const line of out.split('\n')) {
    const [name, major, minor] = line.trim().split(' ');
    if (name === undefined || major === undefined || minor === undefined || !/^\d+$/.test(major)) continue; // "No devices found"
    if (name.startsWith(`${devices.prefix}-`) && name !== devices.poolName) active.set(name, `${major}:${minor}`);
  }
  return active;
}

/** Each recorded device that is not active is activated and deactivated: a refusal means the pool lacks it. */
async function probePool(
  devices: DeviceSet,
  records: Map<string, DevInfo | UnionctlError>,
  active: Map<string, string>,
): Promise<Map<string, string>> {
  const missing = new Map<string, string>();
  for (const [hash, info] of records) {
    if (isUnionctlError(info) || info.deleted) continue;
    const name = devices.deviceName(hash);
    if (active.has(name)) continue;
    try {
      await createDevice(name, devices.thinTable(info));
    } catch (e) {
      if (!(e instanceof DmCommandError)) throw e;
      missing.set(hash, e.stderr.trim().split('\n').pop() ?? e.message);
      continue;
    }
    await removeDevice(name);
  }
  return missing;
}

/** The metadata and data devices of the pool's table, as major:minor. */
async function poolTableDevices(poolName: string): Promise<Set<string>> {
  try {
    const fields = (await tableOf(poolName)).split(/\s+/); // 0 <len> thin-pool <meta> <data> …
    return new Set([fields[3], fields[4]].filter((f): f is string => f !== undefined && /^\d+:\d+$/.test(f)));
  } catch (e) {
    if (e instanceof DmCommandError) return new Set();
    throw e;
  }
}

async function loopFiles(devices: DeviceSet): Promise<LoopFileFacts[]> {
  const files = [devices.devices.dataLoopFile, devices.devices.metadataLoopFile].filter((f): f is string => f !== undefined);
  const loops: LoopFileFacts[] = [];
  for (const file of files) loops.push({ file, attached: await loopDevicesOf(file) });
  return loops;
}

/** The real repairs: each looks again under the pool lock, so a device mounted meanwhile is left alone. */
export function dmRepairs(devices: DeviceSet): DmRepairs {
  return {
    deactivate: (name) =>
      devices.locked(async () => {
        const now = await activeDevices(devices);
        const majorMinor = now.get(name);
        // Gone already, or mounted since the check looked: nothing to do (the next check says).
        if (majorMinor === undefined || readMountInfo().some((m) => `${m.major}:${m.minor}` === majorMinor)) return;
        await removeDevice(name);
      }),
    detachLoop: (device) =>
      devices.locked(async () => {
        const used = await poolTableDevices(devices.poolName);
        const loop = (await loopFiles(devices)).flatMap((l) => l.attached).find((a) => a.device === device);
        if (loop !== undefined && !used.has(loop.majorMinor)) await detachLoop(device);
      }),
  };
}
