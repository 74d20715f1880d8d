/**
 * `unionctl check`: fsck for a store. It walks the layer records, the driver's home and the
 * kernel's view of the mounts, and reports each problem as a CheckFinding (driver.ts): a stable
 * code, what it is about, a message, the repair it would make and when --repair makes it.
 *
 * Who checks what:
 * - here, whatever every driver shares: damaged or unfinished records, records whose storage is
 *   gone, layers in the home no record knows (LAYER_UNACCOUNTED), tar-splits without a layer or
 *   that no longer rebuild the diff ID, leftovers in tmp/, reference files that disagree with the
 *   kernel's mounts, mounts in the home that no layer explains;
 * - the driver (Driver.check): its own layout files (overlay2's l/ links and lower files, …);
 * - the store extensions (StoreExtension.check): image records naming missing layers.
 *
 * Repair. The structural checks run inside a store transaction (under the store lock, so no
 * create or removal runs meanwhile), and with --repair the fixes of that pass are queued in the
 * same transaction: file rewrites are journaled (all or none), the rest (symlinks, unmounts,
 * deletions of trees) runs after the commit and is atomic and idempotent one by one. A repair
 * killed half-way therefore leaves either the old state or a partly repaired one that the next
 * `check --repair` finishes. Some repairs make others possible (a rebuilt link file lets the
 * children's lower files be rebuilt), so passes repeat until one repairs nothing more.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { sha256Of } from '../archive/stream-digest.js';
import { readTarSplit, rebuildTarStream } from '../archive/tar-split.js';
import { isValidId, type UnionctlError } from '../errors.js';
import { processAlive, readMountInfo, removeStoreTree, storeDirExists, umount2 } from '../sys/index.js';
import type { CheckedLayer, CheckFinding, RepairTx, RepairWhen } from './driver.js';
import { storeExtensions, type LayerStore, type StoredRecord, type StoreTx } from './store.js';

export type { CheckFinding, RepairWhen };

export interface CheckOptions {
  /** Make the repairs whose `when` is 'default' (and 'remove-orphans' ones with removeOrphans). */
  repair?: boolean;
  /** With repair: also delete what nobody accounts for (LAYER_UNACCOUNTED, records without storage, tmp/ leftovers). */
  removeOrphans?: boolean;
  /** Skip rebuilding each imported layer's tar from its tar-split (the slow part: it reads every file). */
  skipContent?: boolean;
  /** Told each repair as it is made (after its pass has committed), and each that failed. */
  onRepair?: (finding: ReportedFinding, action: string, failed?: Error) => void;
}

/** A finding as the report gives it: CheckFinding without its fix, and whether --repair made it. */
export interface ReportedFinding extends Omit<CheckFinding, 'fix'> {
  repaired: boolean;
}

export interface CheckReport {
  /** Every problem found by the first pass, sorted by code and subject. */
  findings: ReportedFinding[];
  /** What is still wrong once the repairs are made (without --repair: every finding). */
  remaining: ReportedFinding[];
}

/** Names of the subdirectories of `dir` that are layer ids (a driver's storedLayerIds), sorted; `except`: names of the layout's own dirs. */
export function layerIdsIn(dir: string, except: readonly string[] = []): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries
    .filter((e) => e.isDirectory() && isValidId(e.name) && !except.includes(e.name))
    .map((e) => e.name)
    .sort();
}

/** Passes of repairs at most: each makes the next one possible (3 is the longest chain: link file → link → lower). */
const MAX_PASSES = 4;

/** Runs every check, repairs what opts allow, and says what was found and what is left. */
export async function checkStore(store: LayerStore, opts: CheckOptions = {}): Promise<CheckReport> {
  const first = await structuralPass(store, undefined);
  if (!opts.repair) {
    const findings = sortFindings([...first, ...(opts.skipContent ? [] : await contentFindings(store))]).map(reported(false));
    return { findings, remaining: findings };
  }
  const repaired = new Set<string>();
  let last = first;
  for (let pass = 0; pass < MAX_PASSES && last.some((f) => allowed(f, opts)); pass++) {
    const before = repaired.size;
    await structuralPass(store, { opts, repaired });
    last = await structuralPass(store, undefined);
    if (repaired.size === before) break; // every repair tried failed (a busy mount): trying again changes nothing
  }
  // The layers' content is read once, after the repairs (a rebuilt lower file makes a layer mountable again).
  const content = opts.skipContent ? [] : await contentFindings(store);
  const remaining = sortFindings([...last, ...content]);
  const left = new Set(remaining.map(keyOf));
  const findings = sortFindings([...first, ...content.filter((c) => !first.some((f) => keyOf(f) === keyOf(c)))]);
  return {
    findings: findings.map((f) => ({ ...strip(f), repaired: repaired.has(keyOf(f)) && !left.has(keyOf(f)) })),
    remaining: remaining.map(reported(false)),
  };
}

function allowed(f: CheckFinding, opts: CheckOptions): boolean {
  return f.fix !== undefined && (f.when === 'default' || (f.when === 'remove-orphans' && opts.removeOrphans === true));
}

const keyOf = (f: CheckFinding): string => `${f.code}\0${f.subject}`;

function strip(f: CheckFinding): Omit<CheckFinding, 'fix'> {
  const { fix: _fix, ...rest } = f;
  return rest;
}

const reported =
  (repaired: boolean) =>
  (f: CheckFinding): ReportedFinding => ({ ...strip(f), repaired });

function sortFindings(fs: CheckFinding[]): CheckFinding[] {
  return [...fs].sort((a, b) => a.code.localeCompare(b.code) || a.subject.localeCompare(b.subject));
}

/**
 * One transaction: finds the structural problems and, with `repair`, queues the allowed fixes in
 * it. Returns the findings. The repairs are told to onRepair after the commit.
 */
async function structuralPass(
  store: LayerStore,
  repair: { opts: CheckOptions; repaired: Set<string> } | undefined,
): Promise<CheckFinding[]> {
  const done: Array<{ finding: CheckFinding; action: string }> = [];
  const failed: Array<{ finding: CheckFinding; error: Error }> = [];
  const findings = await store.transaction(async (tx) => {
    const found = await structuralFindings(store, tx);
    if (repair === undefined) return found;
    for (const f of found.filter((x) => allowed(x, repair.opts))) {
      const rtx: RepairTx = {
        write: (path, text, o) => tx.writeDocument(path, text, o),
        delete: (path) => tx.deleteDocument(path),
        // One failing repair (a busy mount) must not stop the others: it is reported, and stays a finding.
        afterCommit: (fn) =>
          tx.afterCommit(async () => {
            try {
              await fn();
            } catch (e) {
              failed.push({ finding: f, error: e as Error });
            }
          }),
      };
      done.push({ finding: f, action: await f.fix!(rtx) });
    }
    return found;
  });
  for (const { finding, action } of done) {
    const error = failed.find((x) => x.finding === finding)?.error;
    if (error === undefined) repair!.repaired.add(keyOf(finding));
    repair!.opts.onRepair?.(reported(error === undefined)(finding), action, error);
  }
  return findings;
}

/** Every check that reads files and the kernel's mounts (no layer content), under the store lock. */
async function structuralFindings(store: LayerStore, tx: StoreTx): Promise<CheckFinding[]> {
  const scan = tx.scanRecords();
  const layers = new Map<string, CheckedLayer>();
  for (const r of scan.records) if (r.state === 'complete') layers.set(r.id, { id: r.id, parent: r.parent, writable: r.writable });
  const recorded = new Set([...scan.records.map((r) => r.id), ...scan.damaged.map((d) => d.id)]);
  const findings: CheckFinding[] = [
    ...scan.damaged.map((d) => damagedRecord(d.id, d.error)),
    ...scan.records.filter(unfinished).map(unfinishedRecord),
    ...(await recordFindings(store, tx, scan.records)),
    ...unaccountedLayers(store, recorded),
    ...orphanTarSplits(tx, recorded),
    ...tmpLeftovers(store),
    ...referenceFindings(store, recorded),
    ...strayMounts(store, recorded),
    ...((await store.driver.check?.({ root: store.root, layers, recorded })) ?? []),
  ];
  for (const ext of storeExtensions()) findings.push(...(ext.check?.(tx) ?? []));
  return findings;
}

// ---- records ---------------------------------------------------------------------------------

function damagedRecord(id: string, error: UnionctlError): CheckFinding {
  return {
    code: 'RECORD_DAMAGED',
    subject: `layerdb/${id}.json`,
    message: error.message,
    repair: "what the record said is lost; restore it from a backup, or remove it and the layer's driver directory by hand",
    when: 'never',
  };
}

/** A record that opening the store should have finished and could not (its recovery warned why). */
function unfinished(r: StoredRecord): boolean {
  return r.state === 'removing' || (r.state === 'creating' && !processAlive(r.owner));
}

function unfinishedRecord(r: StoredRecord): CheckFinding {
  return {
    code: 'RECORD_UNFINISHED',
    subject: r.id,
    message: `layer ${r.id} is still "${r.state}" although the process doing it is gone: recovery could not finish it`,
    repair: 'opening the store retries it, and its warning says what stops it',
    when: 'never',
  };
}

async function recordFindings(store: LayerStore, tx: StoreTx, records: StoredRecord[]): Promise<CheckFinding[]> {
  const ids = new Set(records.map((r) => r.id));
  const findings: CheckFinding[] = [];
  for (const r of records.filter((x) => x.state === 'complete')) {
    if (r.parent !== undefined && !ids.has(r.parent)) {
      findings.push({
        code: 'LAYER_PARENT_MISSING',
        subject: r.id,
        message: `layer ${r.id} is built on layer ${r.parent}, which has no record`,
        repair: "the parent's files are needed to show this layer; remove the layer (unionctl rm), or restore the parent",
        when: 'never',
      });
    }
    if (!(await store.driver.exists(r.id))) findings.push(storageMissing(tx, r));
  }
  return findings;
}

function storageMissing(tx: StoreTx, r: StoredRecord): CheckFinding {
  const children = tx.records().filter((c) => c.parent === r.id);
  const guard = tx.removeGuardOf(r.id);
  const keep =
    children.length > 0
      ? `layers are built on it (${children.map((c) => c.id).join(', ')})`
      : guard !== undefined
        ? guard.reason
        : undefined;
  const base = {
    code: 'LAYER_STORAGE_MISSING',
    subject: r.id,
    message: `layer ${r.id} has a record but no storage in ${tx.store.driver.home}`,
  };
  if (keep !== undefined) return { ...base, repair: `the record stays because ${keep}; remove those first`, when: 'never' };
  return {
    ...base,
    repair: 'delete the record (its files are gone already)',
    when: 'remove-orphans',
    fix: () => {
      tx.deleteRecord(r.id);
      return `deleted the record of layer ${r.id}`;
    },
  };
}

function unaccountedLayers(store: LayerStore, recorded: ReadonlySet<string>): CheckFinding[] {
  const stored = store.driver.storedLayerIds?.() ?? [];
  return stored
    .filter((id) => !recorded.has(id))
    .map((id) => ({
      code: 'LAYER_UNACCOUNTED',
      subject: id,
      message: `${store.driver.name} layer ${id} is in ${store.driver.home} but no record of this store knows it`,
      repair: 'remove its storage (it may be data another program put there: only with --remove-orphans)',
      when: 'remove-orphans' as const,
      fix: (rtx: RepairTx) => {
        rtx.afterCommit(() => store.driver.remove(id));
        return `removed the storage of unaccounted layer ${id}`;
      },
    }));
}

/** layerdb/<id>.tar-split.gz without a record: a removal that stopped after the record went. */
function orphanTarSplits(tx: StoreTx, recorded: ReadonlySet<string>): CheckFinding[] {
  const suffix = '.tar-split.gz';
  return tx
    .listDocuments('layerdb')
    .filter((n) => n.endsWith(suffix) && !n.startsWith('.') && !recorded.has(n.slice(0, -suffix.length)))
    .map((n) => ({
      code: 'TARSPLIT_ORPHAN',
      subject: `layerdb/${n}`,
      message: `tar-split layerdb/${n} belongs to no layer`,
      repair: 'delete it (it rebuilds nothing without its layer)',
      when: 'default' as const,
      fix: (rtx: RepairTx) => {
        rtx.delete(`layerdb/${n}`);
        return `deleted layerdb/${n}`;
      },
    }));
}

// ---- leftovers ---------------------------------------------------------------------------------

/** A tmp/ entry named for its process (a load's or commit's spool, load-<pid>-…) whose process runs is in use, not left over. */
function ownerRunning(name: string): boolean {
  const pid = /^load-(\d+)-/.exec(name)?.[1];
  return pid !== undefined && existsSync(`/proc/${pid}`);
}

/** What loads, saves, pushes and commits staged in <root>/tmp and did not remove (their process was killed). */
function tmpLeftovers(store: LayerStore): CheckFinding[] {
  const tmp = join(store.root, 'tmp');
  if (!storeDirExists(tmp, 'store temp directory')) return [];
  return readdirSync(tmp)
    .filter((n) => !ownerRunning(n))
    .map((n) => ({
      code: 'STAGING_LEFTOVER',
      subject: `tmp/${n}`,
      message: `tmp/${n} is left from a load, save, push or commit that did not finish`,
      repair: 'delete it (only with --remove-orphans: a command running now may be using it)',
      when: 'remove-orphans' as const,
      fix: (rtx: RepairTx) => {
        rtx.afterCommit(async () => removeStoreTree(store.root, join('tmp', n), 'staging leftover'));
        return `deleted tmp/${n}`;
      },
    }));
}

// ---- references and mounts ---------------------------------------------------------------------

/** The driver's reference files against the kernel: damaged ones, ones of layers that are gone, unions mounted that nothing counts. */
function referenceFindings(store: LayerStore, recorded: ReadonlySet<string>): CheckFinding[] {
  const driver = store.driver;
  const refsRel = `driver-state/${driver.name}/refs`;
  const findings: CheckFinding[] = [];
  const ids = new Set([...driver.referencedIds(), ...[...recorded].filter((id) => isValidId(id))]);
  for (const id of ids) {
    let refs;
    try {
      refs = driver.references(id);
    } catch (e) {
      findings.push({
        code: 'REFS_DAMAGED',
        subject: `${refsRel}/${id}`,
        message: (e as Error).message,
        repair: "delete the reference file, then unmount the layer's union if it is mounted (nothing can say who holds it)",
        when: 'default',
        fix: (rtx) => {
          rtx.delete(`${refsRel}/${id}`);
          if (isValidId(id)) rtx.afterCommit(() => releaseUncounted(store, id));
          return `deleted ${refsRel}/${id}`;
        },
      });
      continue;
    }
    if (refs.mounted && refs.total === 0) {
      findings.push({
        code: 'MOUNT_LEAKED',
        subject: id,
        message: `the union of layer ${id} is mounted at ${driver.viewPath(id)}, but no reference counts it (a process was killed mounting it)`,
        repair: 'unmount it (adopted and released through the mount lifecycle)',
        when: 'default',
        fix: (rtx) => {
          rtx.afterCommit(() => releaseUncounted(store, id));
          return `unmounted the union of layer ${id}`;
        },
      });
    }
  }
  return findings;
}

/** Adopts a union mounted without a reference and gives it back: the lifecycle unmounts it at zero. */
async function releaseUncounted(store: LayerStore, id: string): Promise<void> {
  const refs = store.driver.references(id);
  if (!refs.mounted || refs.total > 0) return;
  await store.driver.get(id);
  await store.driver.put(id);
}

/**
 * Mounts inside the driver's home that are no layer's view (a bind or a union left on a diff dir,
 * a mount point of a layer that no longer exists): they keep the layer from being removed.
 */
function strayMounts(store: LayerStore, recorded: ReadonlySet<string>): CheckFinding[] {
  const driver = store.driver;
  const known = new Set<string>();
  // A layer's view path is its union's mount point only where the lifecycle says its union is
  // mounted: a mount on a base layer's own dir (which needs none) is stray too.
  for (const id of new Set([...recorded, ...(driver.storedLayerIds?.() ?? [])])) {
    try {
      if (driver.references(id).mounted) known.add(driver.viewPath(id));
    } catch {
      /* no storage: no view; a damaged reference file: REFS_DAMAGED */
    }
  }
  const home = `${driver.home}/`;
  return readMountInfo()
    .filter((m) => m.mountPoint.startsWith(home) && !known.has(m.mountPoint))
    .map((m) => {
      const rel = m.mountPoint.slice(store.root.length + 1);
      return {
        code: 'MOUNT_STRAY',
        subject: rel,
        message: `${m.fsType} is mounted on ${m.mountPoint}, which is no layer's view`,
        repair: 'unmount it (refused while it is busy)',
        when: 'default' as const,
        fix: (rtx: RepairTx) => {
          rtx.afterCommit(async () => umount2(m.mountPoint));
          return `unmounted ${m.mountPoint}`;
        },
      };
    });
}

// ---- content -----------------------------------------------------------------------------------

/**
 * Each imported layer's tar rebuilt from its tar-split and its files (the same rebuild save and
 * push use), hashed and compared with its diff ID. Outside the lock: it mounts and reads every
 * layer. A mismatch has no repair: the layer's files changed after it was imported.
 */
async function contentFindings(store: LayerStore): Promise<CheckFinding[]> {
  const findings: CheckFinding[] = [];
  for (const layer of await store.list({ onDamaged: () => {} })) {
    if (layer.writable || layer.diffId === undefined || !(await store.driver.exists(layer.id))) continue;
    const problem = await tarSplitProblem(store, layer.id, layer.diffId);
    if (problem !== undefined) findings.push(problem);
  }
  return findings;
}

async function tarSplitProblem(store: LayerStore, id: string, diffId: string): Promise<CheckFinding | undefined> {
  const subject = `layerdb/${id}.tar-split.gz`;
  let record;
  try {
    record = readTarSplit(store.tarSplitPath(id));
  } catch (e) {
    return {
      code: 'TARSPLIT_DAMAGED',
      subject,
      message: (e as Error).message,
      repair: 'save and push export the layer afresh instead (a new diff ID); or import the layer again',
      when: 'never',
    };
  }
  if (record === undefined) return undefined; // a layer made before tar-splits were kept: nothing to compare
  let rebuilt: string;
  try {
    // A CORRUPT from the rebuild is the content's (a file shorter or longer than the tar had it);
    // anything from showing the layer's files (a refused mount, a damaged layout) is not.
    rebuilt = await store.withLayerFiles(id, async (dir) => {
      try {
        return await sha256Of(rebuildTarStream(record, dir));
      } catch (e) {
        if ((e as UnionctlError).code !== 'CORRUPT') throw e;
        return `nothing (${(e as Error).message})`;
      }
    });
  } catch (e) {
    return unreadable(id, e as Error);
  }
  if (rebuilt === diffId) return undefined;
  return {
    code: 'TARSPLIT_MISMATCH',
    subject: id,
    message: `layer ${id}'s tar rebuilt from its tar-split is ${rebuilt}, not its diff ID ${diffId}: its files changed since it was imported`,
    repair: 'the original bytes are gone; save and push export the layer afresh (a new diff ID), or import it again',
    when: 'never',
  };
}

/** The layer's view could not be shown (a mount refused): its tar cannot be rebuilt to be compared. */
function unreadable(id: string, e: Error): CheckFinding {
  return {
    code: 'LAYER_UNREADABLE',
    subject: id,
    message: `layer ${id}'s files cannot be read to rebuild its tar: ${e.message}`,
    repair: 'repair the findings about its layout first (check --repair), then check again',
    when: 'never',
  };
}
