/**
 * A store's state as the crash tests compare it: "exactly as before the operation, or exactly as
 * after it". Read straight from the disk and the kernel, without the code under test.
 *
 * snapshotStore(root, driver) returns
 * - `state`: canonical lines — the layer records (without timestamps and owners), the image records
 *   (without load times), every file under the root (path, type, mode, size and a hash of the
 *   content, symlink targets; merged views of mounted layers included), the live mount counts and
 *   the kernel's mounts below the root. Random names are replaced by what they stand for (overlay2's
 *   l/ names by the layer they link to, the 6 hex digits of a `mount --rw` layer's id by XXXXXX).
 *   Mount reference and lock files are not listed as files: their content is the counts (a
 *   reference file for a union that is not mounted counts nothing, exactly as the store reads it).
 * - `problems`: what must never be left, whatever the state: temp files, probe dirs, journals,
 *   spools, records still "creating"/"removing", records without storage and storage without
 *   records, mounts nobody counts, counts for a union that is not mounted where the store would read
 *   them as live, FUSE processes without their mount.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join, relative } from 'node:path';
import { mountsBelow } from './mounts.js';

export interface StoreSnapshot {
  state: string[];
  problems: string[];
}

export type DriverName = 'vfs' | 'overlay2' | 'aufs';

/** The fuse-overlayfs processes whose mount point (their last argument) is under `root`. */
export function fuseProcessesUnder(root: string): Array<{ pid: number; target: string }> {
  const out: Array<{ pid: number; target: string }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').slice(0, -1);
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
    } catch {
      continue;
    }
    const target = argv[argv.length - 1] ?? '';
    if (argv.length > 1 && (argv[0] ?? '').endsWith('fuse-overlayfs') && target.startsWith(`${root}/`))
      out.push({ pid: Number(name), target });
  }
  return out;
}

function processAlive(h: { pid?: unknown; start?: unknown }): boolean {
  try {
    const stat = readFileSync(`/proc/${String(h.pid)}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] === h.start;
  } catch {
    return false;
  }
}

const bootId = () => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

interface Layout {
  /** Layer ids the driver has storage for. */
  storage(): string[];
  /** Where the layer's union is mounted. */
  mountPoint(id: string): string;
  /** The layer's view needs a mount (else the view is its own directory and counts are kept without one). */
  needsMount(id: string): boolean;
  /** Directories holding a layer's files (not checked for dot names: a layer may hold any name). */
  isContent(rel: string): boolean;
}

function layoutOf(driver: DriverName, home: string): Layout {
  const ls = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);
  if (driver === 'overlay2') {
    return {
      storage: () => ls(home).filter((n) => n !== 'l'),
      mountPoint: (id) => join(home, id, 'merged'),
      needsMount: (id) => existsSync(join(home, id, 'lower')),
      isContent: (rel) => /^[^/]+\/(diff|merged)\//.test(rel),
    };
  }
  if (driver === 'aufs') {
    return {
      storage: () => ls(join(home, 'layers')),
      mountPoint: (id) => join(home, 'mnt', id),
      needsMount: (id) => existsSync(join(home, 'layers', id)) && readFileSync(join(home, 'layers', id), 'utf8').trim() !== '',
      isContent: (rel) => /^(diff|mnt)\/[^/]+\//.test(rel),
    };
  }
  return {
    storage: () => ls(join(home, 'dir')),
    mountPoint: (id) => join(home, 'dir', id),
    needsMount: () => false,
    isContent: (rel) => /^dir\/[^/]+\//.test(rel),
  };
}

/** JSON with the keys of the top-level object sorted: the same record, the same line. */
const sortedJson = (o: Record<string, unknown>) =>
  JSON.stringify(Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b))));

const sha = (data: Buffer | string) => createHash('sha256').update(data).digest('hex').slice(0, 16);

/** Reads the store under `root` (see the module doc). */
export function snapshotStore(root: string, driver: DriverName): StoreSnapshot {
  const home = join(root, driver);
  const stateDir = join(root, 'driver-state', driver);
  const layout = layoutOf(driver, home);
  const state: string[] = [];
  const problems: string[] = [];

  // Random names → what they stand for.
  const names = new Map<string, string>();
  if (driver === 'overlay2' && existsSync(join(home, 'l'))) {
    for (const lid of readdirSync(join(home, 'l'))) {
      let target = '';
      try {
        target = readlinkSync(join(home, 'l', lid));
      } catch {
        problems.push(`overlay2 l/${lid} is not a symlink`);
      }
      const m = /^\.\.\/([^/]+)\/diff$/.exec(target);
      if (m === null) problems.push(`overlay2 l/${lid} points to ${target}, not ../<id>/diff`);
      else {
        if (!existsSync(join(home, m[1]!, 'diff'))) problems.push(`overlay2 l/${lid} dangles (→ ${target})`);
        names.set(lid, `<link:${m[1]}>`);
      }
    }
  }
  const canon = (s: string) => {
    let out = s;
    for (const [from, to] of names) out = out.split(from).join(to);
    return out.replace(/-rw-[0-9a-f]{6}\b/g, '-rw-XXXXXX');
  };

  // Layer records.
  const recordIds: string[] = [];
  const layerdb = join(root, 'layerdb');
  for (const f of existsSync(layerdb) ? readdirSync(layerdb).sort() : []) {
    if (f.startsWith('.')) continue; // reported below as a temp file
    if (f.endsWith('.tar-split.gz')) continue; // listed as a file
    if (!f.endsWith('.json')) {
      problems.push(`layerdb/${f}: not a record`);
      continue;
    }
    const id = f.slice(0, -'.json'.length);
    recordIds.push(id);
    try {
      const r = JSON.parse(readFileSync(join(layerdb, f), 'utf8')) as Record<string, unknown>;
      if (r.state !== 'complete') problems.push(`layer record ${id} is still "${String(r.state)}"`);
      const { created: _c, owner: _o, ...rest } = r;
      state.push(canon(`layer ${sortedJson(rest)}`));
    } catch (e) {
      problems.push(`layer record ${f} does not parse: ${(e as Error).message}`);
    }
  }

  // Records ↔ storage.
  const storage = layout.storage();
  for (const id of recordIds) if (!storage.includes(id)) problems.push(`layer ${canon(id)} has a record but no storage`);
  for (const id of storage) {
    if (id.endsWith('-removing')) problems.push(`${driver} home holds ${canon(id)} (a removal's leftover)`);
    else if (!recordIds.includes(id)) problems.push(`${driver} home holds ${canon(id)}, which has no record`);
  }

  // Image records and load journals.
  const images = join(root, 'images');
  for (const f of existsSync(images) ? readdirSync(images).sort() : []) {
    if (f.startsWith('.load-')) {
      problems.push(`images/${f}: a load journal was left`);
      continue;
    }
    if (f.startsWith('.')) continue; // a temp file: reported below
    try {
      const r = JSON.parse(readFileSync(join(images, f), 'utf8')) as { loaded?: unknown; config?: string; layers?: Array<{ id: string }> };
      const { loaded: _l, config, ...rest } = r;
      state.push(canon(`image ${f} ${sortedJson({ ...rest, config: sha(config ?? '') })}`));
      for (const l of r.layers ?? [])
        if (!recordIds.includes(l.id)) problems.push(`image ${f} names layer ${canon(l.id)}, which has no record`);
    } catch (e) {
      problems.push(`image record ${f} does not parse: ${(e as Error).message}`);
    }
  }

  // Mount counts (as the store reads them) and the kernel's mounts.
  const kernel = mountsBelow(root);
  const mountedAt = new Set(kernel.map((m) => m.mountPoint));
  const counted = new Set<string>();
  /** The live mounts the reference files in `dir` count (as the store reads them), into `counted`. */
  const countMounts = (dir: string, what: string, needsMount: (id: string) => boolean, mountPoint: (id: string) => string) => {
    for (const id of existsSync(dir) ? readdirSync(dir).sort() : []) {
      if (id.startsWith('.')) continue; // a temp file: reported below
      let live = 0;
      let holders = 0;
      try {
        const r = JSON.parse(readFileSync(join(dir, id), 'utf8')) as {
          boot?: string;
          persistent?: number;
          count?: number;
          holders?: Array<{ pid: number; start: string; count: number }>;
          held?: string[];
        };
        if (r.boot === bootId()) {
          live = (r.persistent ?? r.count ?? 0) + (r.held?.length ?? 0);
          holders = (r.holders ?? []).filter(processAlive).reduce((n, h) => n + h.count, 0);
        }
      } catch (e) {
        problems.push(`mount reference file ${relative(root, join(dir, canon(id)))} does not parse: ${(e as Error).message}`);
        continue;
      }
      if (holders > 0) problems.push(`${what} ${canon(id)} is held by a live process`);
      // A union that needs a mount and has none has no live references, whatever the file says.
      if (needsMount(id) && !mountedAt.has(mountPoint(id))) continue;
      if (live > 0) {
        state.push(canon(`mounts ${what} ${id} ${live}`));
        counted.add(mountPoint(id));
      }
    }
  };
  countMounts(
    join(stateDir, 'refs'),
    'layer',
    (id) => layout.needsMount(id),
    (id) => layout.mountPoint(id),
  );
  // Read-only views of image layers (src/graph/read-only-views.ts): always a mount of their own.
  const views = join(stateDir, 'read-only');
  countMounts(
    join(views, 'refs'),
    'read-only view of',
    () => true,
    (id) => join(views, 'mnt', id),
  );
  for (const m of kernel) {
    state.push(canon(`kernel-mount ${relative(root, m.mountPoint)} ${m.fsType}`));
    if (!counted.has(m.mountPoint)) problems.push(`${canon(relative(root, m.mountPoint))} is mounted (${m.fsType}) but no mount counts it`);
  }
  for (const p of fuseProcessesUnder(root)) {
    if (!mountedAt.has(p.target))
      problems.push(`fuse-overlayfs process ${p.pid} serves ${canon(relative(root, p.target))}, which is not mounted`);
  }

  // Every file.
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const rel = relative(root, path);
      const relHome = relative(home, path);
      const inContent = !relHome.startsWith('..') && layout.isContent(relHome);
      if (!inContent && (name.startsWith('.') || /\.tmp$|^tmp-|probe/.test(name)))
        problems.push(`${canon(rel)}: a temp file or probe was left`);
      // The counts above; lock files come and go (a process killed while taking a lock leaves its file).
      if (/^driver-state\/[^/]+\/(read-only\/)?(refs\/|locks\/|[^/]+\.lock$)/.test(rel)) continue;
      if (rel === 'store.lock') continue;
      if (/^(layerdb\/[^/]+\.json|images\/[^/.][^/]*\.json)$/.test(rel)) continue; // the records above
      const st = lstatSync(path);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isSymbolicLink()) state.push(canon(`file ${rel} l ${mode} -> ${readlinkSync(path)}`));
      else if (st.isDirectory()) {
        // The read-only views' dirs are made on the first view of a store, as refs/ and locks/ are at its open: no state.
        // Nor is overlayfs's own work/work, which the kernel makes at a layer's first mount and leaves.
        const noState = /^driver-state\/[^/]+\/read-only(\/(refs|locks|mnt))?$|^overlay2?\/[^/]+\/work\/work$/;
        if (!noState.test(rel)) state.push(canon(`file ${rel} d ${mode}`));
        walk(path);
      } else if (st.isFile()) state.push(canon(`file ${rel} f ${mode} ${st.size} ${sha(canon(readFileSync(path, 'latin1')))}`));
      else state.push(canon(`file ${rel} ${st.isCharacterDevice() ? 'c' : st.isFIFO() ? 'p' : '?'} ${mode} ${st.rdev}`));
    }
  };
  walk(root);
  if (existsSync(join(root, 'journal'))) {
    const left = readdirSync(join(root, 'journal'));
    problems.push(
      left.length > 0 ? `journal/ holds ${left.join(', ')}: a transaction was never replayed` : 'an empty journal/ dir was left',
    );
  }
  if (existsSync(join(root, 'tmp'))) problems.push('tmp/ was left (a load spool)');
  // Sorted: canonical names (an l/ link named after its layer) do not sort like the random ones.
  return { state: state.sort(), problems };
}

/** The lines of `a` not in `b` and of `b` not in `a`, for messages. */
export function stateDiff(a: string[], b: string[]): string {
  const sa = new Set(a);
  const sb = new Set(b);
  const out = [...a.filter((l) => !sb.has(l)).map((l) => `- ${l}`), ...b.filter((l) => !sa.has(l)).map((l) => `+ ${l}`)];
  return out.length === 0 ? '(same lines, another order)' : out.slice(0, 40).join('\n');
}
