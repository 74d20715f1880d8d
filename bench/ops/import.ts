/**
 * Import (apply a layer tar) and remove, on the distro, smallfiles and whiteouts workloads.
 *
 * Subjects, interleaved within each run so that background noise hits them alike: every unionctl
 * driver (store.importLayer in this process, then store.remove), overlay2 as a whole
 * `unionctl import` process (node start-up and module loading included), and GNU tar extracting the
 * same tar onto the same filesystem (the floor), then `rm -rf` of what it extracted (remove's floor).
 * For whiteouts the base layer is laid down untimed and the upper layer (1,000 deletions, 50
 * replaced dirs) is what is timed.
 *
 * runCompressedImport: one compressible layer as a whole `unionctl import` process, from a plain
 * tar (the floor: decompression can only add to it), a .tar.gz (node:zlib) and a .tar.zst decoded
 * by the zstd program and by fzstd (UNIONCTL_ZSTD=native / js), interleaved run by run.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { openStore } from '../../src/index.js';
import { freshDir, unionctlSubject, type BenchContext } from '../context.js';
import { sha256File } from '../image-archive.js';
import { sh, time } from '../measure.js';
import { removeTree, tarExtract } from '../peers/gnu-tar.js';
import { settle } from '../scratch-fs.js';
import type { LayerTar } from '../workloads.js';

export interface ImportWorkload {
  name: string;
  tar: LayerTar;
  /** Laid down untimed before the measured import (whiteouts). */
  base?: LayerTar;
  /** Also time removal of the imported layer. */
  remove: boolean;
}

type Cell = { subject: string; kind: 'unionctl' | 'floor'; op: 'import' | 'remove'; seconds: number[] };

export async function runImport(ctx: BenchContext, w: ImportWorkload): Promise<void> {
  ctx.say(`import: ${w.name} (${(w.tar.bytes / 1e6).toFixed(1)} MB, ${w.tar.entries} entries${w.base ? ', on a base layer' : ''})`);
  const expected = `sha256:${await sha256File(w.tar.path)}`;
  const cells = new Map<string, Cell>();
  const record = (subject: string, kind: Cell['kind'], op: Cell['op'], s: number) => {
    const key = `${subject}\0${op}`;
    if (!cells.has(key)) cells.set(key, { subject, kind, op, seconds: [] });
    cells.get(key)!.seconds.push(s);
  };
  const withCli = w.name === 'distro' && ctx.drivers.includes('overlay2');
  const failed = new Set<string>();
  /** KiB, of each CLI import process (when /usr/bin/time is there to tell). */
  const peakRss: number[] = [];

  for (let run = 0; run < ctx.runs; run++) {
    // GNU tar: the floor for import, and rm -rf the floor for remove.
    const dest = freshDir(ctx, 'tar');
    if (w.base) tarExtract(w.base.path, dest);
    settle();
    record('GNU tar', 'floor', 'import', await time(() => tarExtract(w.tar.path, dest)));
    settle();
    record('rm -rf', 'floor', 'remove', await time(() => removeTree(dest)));

    for (const driver of ctx.drivers) {
      const subject = unionctlSubject(driver);
      if (failed.has(subject)) continue;
      try {
        const [imp, rem] = await importOnce(ctx, driver, w, expected);
        record(subject, 'unionctl', 'import', imp);
        if (rem !== undefined) record(subject, 'unionctl', 'remove', rem);
      } catch (e) {
        failed.add(subject);
        ctx.log.skip({ subject, workload: w.name, operation: 'import', reason: `failed: ${(e as Error).message}` });
      }
    }

    if (withCli) {
      const root = freshDir(ctx, 'cli');
      const base = w.base ? ['--parent', 'base'] : [];
      if (w.base) sh(process.execPath, [ctx.cliMain, '--root', root, '--driver', 'overlay2', 'import', '--id', 'base', w.base.path]);
      settle();
      const argv = [ctx.cliMain, '--root', root, '--driver', 'overlay2', 'import', ...base, w.tar.path];
      record('unionctl overlay2 (CLI process)', 'unionctl', 'import', await time(() => peakRss.push(...runMeasuringRss(argv))));
      await discardStore(root, 'overlay2');
    }
    ctx.fs.trim();
  }

  for (const c of cells.values()) {
    if (c.op === 'remove' && !w.remove) continue;
    const bytes = c.op === 'import' ? w.tar.bytes : undefined;
    const files = c.op === 'import' ? w.tar.entries : undefined;
    ctx.log.add({
      workload: w.name,
      operation: c.op,
      subject: c.subject,
      kind: c.kind,
      seconds: c.seconds,
      bytes,
      files,
      note: c.subject.endsWith('(CLI process)')
        ? `a whole \`unionctl import\` process: node start-up, module loading and store open included${rssNote(peakRss)}`
        : undefined,
    });
  }
}

/** One import (and remove) into a fresh store; returns [import seconds, remove seconds]. */
async function importOnce(
  ctx: BenchContext,
  driver: string,
  w: ImportWorkload,
  expectedDiffId: string,
): Promise<[number, number | undefined]> {
  const root = freshDir(ctx, `store-${driver}`);
  const store = await openStore({ root, driver });
  try {
    const parent = w.base ? (await store.importLayer(w.base.path)).id : undefined;
    settle();
    let diffId: string | undefined;
    let id = '';
    const imp = await time(async () => {
      const rec = await store.importLayer(w.tar.path, { parent });
      diffId = rec.diffId;
      id = rec.id;
    });
    if (diffId !== expectedDiffId) throw new Error(`${driver} computed diffId ${diffId}, expected ${expectedDiffId}`);
    let rem: number | undefined;
    if (w.remove) {
      settle();
      rem = await time(() => store.remove(id));
    }
    return [imp, rem];
  } finally {
    await store.cleanup();
    await store.close();
    rmSync(root, { recursive: true, force: true });
  }
}

/** A form of the compression workload's layer and how `unionctl import` is run on it. */
interface CompressedForm {
  subject: string;
  kind: Cell['kind'];
  path: string;
  /** UNIONCTL_ZSTD for the process (which zstd decoder), if any. */
  zstd?: 'native' | 'js';
}

export async function runCompressedImport(ctx: BenchContext, plain: LayerTar): Promise<void> {
  const driver = ctx.drivers.includes('overlay2') ? 'overlay2' : ctx.drivers[0];
  if (driver === undefined) return;
  const forms = compressedForms(plain);
  const sizes = [...new Set(forms.map((f) => f.path))].map((p) => `${basename(p)} ${(statSync(p).size / 1e6).toFixed(0)} MB`);
  ctx.say(`import: compression (${plain.entries} entries; ${sizes.join(', ')})`);
  const seconds = forms.map(() => [] as number[]);
  const peakRss = forms.map(() => [] as number[]);
  for (let run = 0; run < ctx.runs; run++) {
    for (const [i, form] of forms.entries()) {
      const root = freshDir(ctx, 'cli');
      const env = form.zstd === undefined ? process.env : { ...process.env, UNIONCTL_ZSTD: form.zstd };
      settle();
      const argv = [ctx.cliMain, '--root', root, '--driver', driver, 'import', form.path];
      seconds[i]!.push(await time(() => peakRss[i]!.push(...runMeasuringRss(argv, env))));
      await discardStore(root, driver);
    }
    ctx.fs.trim();
  }
  for (const [i, form] of forms.entries()) {
    ctx.log.add({
      workload: 'compression',
      operation: 'import',
      subject: form.subject,
      kind: form.kind,
      seconds: seconds[i]!,
      bytes: plain.bytes,
      files: plain.entries,
      note: `a whole \`unionctl --driver ${driver} import\` process of ${basename(form.path)}${rssNote(peakRss[i]!)}`,
    });
  }
  for (const form of forms) if (form.path !== plain.path) rmSync(form.path, { force: true });
}

/** The plain tar, and it compressed with gzip -6 and zstd -3 (the defaults of docker and containerd) next to it (zstd is needed: scripts/setup-system.sh installs it). */
function compressedForms(plain: LayerTar): CompressedForm[] {
  const gz = `${plain.path}.gz`;
  const zst = `${plain.path}.zst`;
  sh('sh', ['-c', `gzip -6 -c "$0" > "$1"`, plain.path, gz]);
  sh('zstd', ['-3', '-q', '-f', '-T0', plain.path, '-o', zst]);
  return [
    { subject: 'plain tar (CLI process)', kind: 'floor', path: plain.path },
    { subject: 'gzip, node:zlib (CLI process)', kind: 'unionctl', path: gz },
    { subject: 'zstd, the zstd program (CLI process)', kind: 'unionctl', path: zst, zstd: 'native' },
    { subject: 'zstd, fzstd (CLI process)', kind: 'unionctl', path: zst, zstd: 'js' },
  ];
}

const TIME = '/usr/bin/time';

/**
 * Runs `node argv…` (with `env`) to completion; returns its peak RSS in KiB (GNU time's %M) as a one-element
 * list, or an empty list when GNU time is not installed.
 */
function runMeasuringRss(argv: string[], env: NodeJS.ProcessEnv = process.env): number[] {
  if (!existsSync(TIME)) {
    sh(process.execPath, argv, { env });
    return [];
  }
  const r = spawnSync(TIME, ['-f', 'unionctl-bench-maxrss=%M', process.execPath, ...argv], { encoding: 'utf8', maxBuffer: 1 << 26, env });
  if (r.status !== 0)
    throw new Error(
      `unionctl ${argv.slice(1, 6).join(' ')} … exited ${r.status ?? r.signal}: ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`,
    );
  const m = /unionctl-bench-maxrss=(\d+)/.exec(r.stderr);
  return m ? [Number(m[1])] : [];
}

/** "; peak RSS 80 MiB" — the memory a whole import process needed (bounded whatever the layer size). */
function rssNote(kib: number[]): string {
  return kib.length === 0 ? '' : `; peak RSS ${Math.round(Math.max(...kib) / 1024)} MiB`;
}

/** Removes a store directory a CLI process left (nothing is mounted by import). */
export async function discardStore(root: string, driver: string): Promise<void> {
  const store = await openStore({ root, driver });
  await store.cleanup();
  await store.close();
  rmSync(root, { recursive: true, force: true });
}
