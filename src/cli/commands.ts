/**
 * The unionctl commands. Each one parses its arguments, makes one or two calls into the library
 * (src/graph/store.ts) and prints the result; no storage logic lives here.
 */
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { release as osRelease } from 'node:os';
import { Command, Option } from 'commander';
import { isUnionctlError, UnionctlError } from '../errors.js';
import type { Change } from '../graph/driver.js';
import type { LayerRecord, LayerStore } from '../index.js';
import { resolveLayerRef } from '../image/index.js';
import { ImageArchiveSniffer, imageArchiveKindOf, type ImageArchiveKind } from '../image/archive.js';
import { writeOutputFile } from '../sys/user-file.js';
import { collect, nonEmpty, nonEmptyEach, type ListingOptions } from './args.js';
import { addAdoptCommand } from './adopt-command.js';
import { addImageCommands } from './image-commands.js';
import { withStore } from './store-access.js';
import { applyConfig } from './settings.js';
import { configReport, printConfigReport } from './config-report.js';
import { LOG_LEVELS, setLogLevel, type LogLevel } from './log-level.js';
import { addRegistryCommands } from './registry-commands.js';
import { inputFileSize, isPlainTar, stdinIsEmpty } from './files.js';
import {
  branchModeStyle,
  changeStyle,
  DamagedFiles,
  FailuresReported,
  escapeControls,
  humanBytes,
  idShortener,
  out,
  printJson,
  println,
  setOutputTemplate,
  printTable,
  printUnionctlError,
  printWarning,
  shownName,
  timeAgo,
} from './output.js';
import { colourPatch, patchesFor } from './patch.js';
import { explanationJson, infoJson, layerJson, mountJson, type ChangeJson } from './json-shapes.js';
import { parseTemplate } from './template.js';
import { startProgress } from './progress.js';
import { registerBenchCommand } from './bench-command.js';
import { registerServeCommand } from './serve-command.js';
import { registerCheckCommand } from './check-command.js';
import { printExplanation, registerDoctorCommand } from './doctor-command.js';
import { registerMigrateCommand } from './migrate-command.js';
import { addCompletionCommands } from './completion.js';
import { visibleCommands } from './command-model.js';

export const DEFAULT_ROOT = '/var/lib/unionctl';

// ---- info, ls -------------------------------------------------------------------------------

async function infoCommand(_opts: unknown, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const info = await store.info();
    const config = configReport(cmd);
    if (g.json) return printJson({ ...infoJson(info), config });
    const label = (s: string) => out.bold(s.padEnd(16));
    println(`${label('Driver:')}${info.driver}`);
    println(`${label('Root:')}${shownName(info.root)}`);
    println(out.bold('Status:'));
    for (const [key, value] of info.status) println(`  ${escapeControls(key)}: ${escapeControls(value)}`);
    println(out.bold('Limits:'));
    println(`  Max depth: ${info.capabilities.maxDepth}`);
    println(`  Whiteout format: ${info.capabilities.whiteoutFormat}`);
    println(`  Native diff: ${info.capabilities.nativeDiff}`);
    printConfigReport(config);
  });
}

/** "sha256:0123456789ab" — enough of a digest to recognise it in a table. */
function shortDigest(digest: string | undefined): string {
  if (!digest) return '-';
  const [algo, hex] = digest.split(':');
  return hex === undefined ? digest.slice(0, 12) : `${algo}:${hex.slice(0, 12)}`;
}

/** The layers with their sizes as they are now (LayerStore.currentSize: a writable layer's changes). */
async function withCurrentSizes(store: LayerStore, layers: LayerRecord[]): Promise<LayerRecord[]> {
  const sized: LayerRecord[] = [];
  for (const l of layers) sized.push({ ...l, size: await store.currentSize(l) });
  return sized;
}

async function lsCommand(opts: ListingOptions, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const damaged = new DamagedFiles();
    const listed = await store.list({ onDamaged: damaged.onDamaged });
    const shown = idShortener(
      listed.map((l) => l.id),
      opts.trunc === false,
    );
    if (opts.quiet === true && !g.json) {
      for (const l of listed) println(shown(l.id));
      return damaged.throwIfAny();
    }
    const layers = await withCurrentSizes(store, listed);
    if (g.json) {
      printJson(layers.map((l) => layerJson(l)));
      return damaged.throwIfAny();
    }
    printTable(
      ['ID', 'PARENT', 'KIND', 'SIZE', 'CREATED', 'DIFF ID'],
      layers.map((l) => [
        shown(l.id),
        { text: l.parent === undefined ? '-' : shown(l.parent), style: out.dim },
        l.writable ? { text: 'rw', style: out.green } : 'image',
        humanBytes(l.size),
        timeAgo(l.created),
        { text: opts.trunc === false ? (l.diffId ?? '-') : shortDigest(l.diffId), style: out.dim },
      ]),
    );
    damaged.throwIfAny();
  });
}

// ---- import, create, rm --------------------------------------------------------------------

interface ImportOptions {
  parent?: string;
  id?: string;
  force?: boolean;
}

/** The refusal of an image archive given to import (load is what reads those). */
function imageArchiveGiven(input: string, kind: ImageArchiveKind, file: string): UnionctlError {
  const load = file === '-' ? 'unionctl load -' : `unionctl load ${file}`;
  return new UnionctlError('USAGE', `${input} is an image archive (${kind}), not a layer tarball`, {
    hint: `load its images with ${load}; to import the whole archive as one plain layer anyway, add --force`,
  });
}

async function importCommand(file: string, opts: ImportOptions, cmd: Command): Promise<void> {
  // Check the input before the store is opened, so a typo changes nothing on disk.
  let total: number | undefined;
  if (file === '-') {
    if (process.stdin.isTTY) {
      throw new UnionctlError('USAGE', 'refusing to read a layer tarball from a terminal', {
        hint: 'pipe a tar into unionctl import -, or give a file name',
      });
    }
  } else {
    // Progress counts uncompressed tar bytes: a percentage of the file size only fits a plain tar.
    total = inputFileSize(file);
    if (total !== undefined && total > 0 && !isPlainTar(file)) total = undefined;
  }
  // 0 bytes is no tar at all: whether the tar engine refuses it or makes an empty layer of it, say so.
  const input = file === '-' ? 'the input on stdin' : `input file ${JSON.stringify(file)}`;
  // An image archive is refused: up front when its headers can be read without unpacking (a plain
  // tar file) and show it before any member that no image archive has, else once the whole tar
  // went by (the import is then rolled back).
  const sniffer = opts.force ? undefined : new ImageArchiveSniffer();
  if (sniffer !== undefined && total !== undefined && total > 0) {
    const kind = imageArchiveKindOf(file);
    if (kind !== undefined) throw imageArchiveGiven(input, kind, file);
  }
  const empty = file === '-' ? await stdinIsEmpty() : total === 0;
  await withStore(
    cmd,
    async (store, g) => {
      const progress = startProgress('importing', total);
      let layer: LayerRecord;
      try {
        // Counting bytes costs a stream stage: only ask for it when there is a bar to draw.
        const onProgress = progress.active ? (bytes: number) => progress.update(bytes) : undefined;
        // The engine's warnings (xattrs the filesystem refused…); for 0 bytes the line below names the input.
        const onWarning = empty ? () => {} : printWarning;
        const verify = () => {
          const kind = sniffer?.kind();
          if (kind !== undefined) throw imageArchiveGiven(input, kind, file);
        };
        const onEntry = sniffer === undefined ? undefined : (name: string) => sniffer.see(name);
        const parent = opts.parent === undefined ? undefined : await resolveLayerRef(store, opts.parent);
        layer = await store.importLayer(file, { id: opts.id, parent, onProgress, onWarning, onEntry, verify });
      } catch (e) {
        // The engine's own words for "no tar here" are about headers and blocks: name the cause instead.
        if (empty && isUnionctlError(e) && (e.code === 'BAD_TAR' || e.code === 'USAGE')) {
          throw new UnionctlError(e.code, `${input} is empty (0 bytes): it is not a layer tarball`, {
            hint: 'check what should have written it; an empty layer is made with unionctl create',
            cause: e,
          });
        }
        throw e;
      } finally {
        progress.done();
      }
      if (empty) printWarning(`${input} was empty (0 bytes): imported as an empty layer`);
      if (g.json) return printJson(layerJson(layer));
      println(layer.id);
    },
    { creates: true },
  );
}

interface CreateOptions {
  parent?: string;
  id?: string;
  rw?: boolean;
  layerOpt?: string[];
}

async function createCommand(opts: CreateOptions, cmd: Command): Promise<void> {
  await withStore(
    cmd,
    async (store, g) => {
      const parent = opts.parent === undefined ? undefined : await resolveLayerRef(store, opts.parent);
      const layer = await store.create({ id: opts.id, parent, writable: opts.rw ?? false, storageOpt: opts.layerOpt });
      if (g.json) return printJson(layerJson(layer));
      println(layer.id);
    },
    { creates: true },
  );
}

/**
 * rm: each layer in turn, in the order given (`rm child parent` works). A layer that cannot be
 * removed is reported and the others are still tried, as docker rm does; the exit code is then 1.
 * With --force, the layer's mounts (unionctl mount's) are released first.
 */
async function rmCommand(refs: string[], opts: { force?: boolean }, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const removed: string[] = [];
    let failures = 0;
    try {
      for (const ref of refs) {
        try {
          // A layer id or a unique prefix of one; never an image (rmi removes those).
          const id = await store.resolveLayer(ref);
          if (opts.force === true) for (let n = store.mountCount(id); n > 0; n--) await store.unmount(id);
          await store.remove(id);
          removed.push(id);
          if (!g.json) println(id);
        } catch (e) {
          if (!isUnionctlError(e)) throw e;
          printUnionctlError(e);
          failures++;
        }
      }
    } finally {
      if (g.json) printJson(removed);
    }
    if (failures > 0) throw new FailuresReported(failures);
  });
}

// ---- mount, umount, cleanup, branches ------------------------------------------------------

interface MountOptions {
  rw?: boolean;
  mountLabel?: string;
  name?: string;
  explain?: boolean;
}

async function mountCommand(id: string, opts: MountOptions, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    // An image name (or id) mounts the image's top layer.
    const layer = await resolveLayerRef(store, id);
    if (opts.explain === true) {
      if (opts.name !== undefined)
        throw new UnionctlError('USAGE', '--name names a layer --rw makes; --explain makes none', { hint: 'drop --name' });
      const explained = store.explainMount(layer, { rw: opts.rw, mountLabel: opts.mountLabel });
      return g.json ? printJson(explanationJson(explained)) : printExplanation(explained);
    }
    const mounted = await store.mount(layer, { rw: opts.rw ?? false, mountLabel: opts.mountLabel, name: opts.name });
    if (g.json) {
      // The Mount object mounts lists: the mount just made holds a reference, so it is listed.
      const entry = (await store.mounts()).find((e) => e.layer === mounted.id && e.path === mounted.path);
      if (entry === undefined) throw new Error(`layer ${mounted.id}, just mounted at ${mounted.path}, is not among the mounts`);
      return printJson(mountJson(entry));
    }
    // --rw on an image layer mounts a new writable layer on top, and an image name mounts its top
    // layer: say which, since umount needs it.
    // The path stays the last line so scripts can take `| tail -n 1`.
    if (mounted.id !== id) println(`layer ${mounted.id}`);
    println(shownName(mounted.path));
  });
}

async function umountCommand(refs: string[], opts: { all?: boolean }, cmd: Command): Promise<void> {
  if (opts.all === true && refs.length > 0) {
    throw new UnionctlError('USAGE', '--all releases every mount: give no layers with it', { hint: 'unionctl umount --all' });
  }
  if (opts.all !== true && refs.length === 0) {
    throw new UnionctlError('USAGE', 'umount needs a layer or image, or --all', { hint: 'unionctl mounts lists what is mounted' });
  }
  await withStore(cmd, async (store, g) => {
    if (opts.all === true) {
      const released = await store.unmountAll();
      if (g.json) return printJson({ released });
      for (const id of released) println(id);
      return;
    }
    // What mount accepts: a layer id or prefix, or an image name or id (its top layer). Each in turn.
    const released: string[] = [];
    try {
      for (const ref of refs) {
        const id = await resolveLayerRef(store, ref);
        await store.unmount(id);
        released.push(id);
      }
    } finally {
      if (g.json) printJson({ released });
    }
  });
}

async function mountsCommand(opts: ListingOptions, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const entries = await store.mounts();
    if (g.json) return printJson(entries.map(mountJson));
    const shown = idShortener(
      entries.map((e) => e.layer),
      opts.trunc === false,
    );
    if (opts.quiet === true) {
      for (const layer of new Set(entries.map((e) => e.layer))) println(shown(layer));
      return;
    }
    printTable(
      ['LAYER', 'MODE', 'MOUNTS', 'PROCESSES', 'PATH'],
      entries.map((e) => [
        shown(e.layer),
        e.readOnly ? { text: 'ro', style: out.dim } : { text: 'rw', style: out.green },
        String(e.mounts),
        e.processes.length === 0 ? '-' : e.processes.map((p) => (p.count === 1 ? `${p.pid}` : `${p.pid} (${p.count})`)).join(', '),
        e.path,
      ]),
    );
  });
}

async function cleanupCommand(_opts: unknown, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    await store.cleanup();
    if (g.json) printJson({});
  });
}

async function branchesCommand(ref: string, opts: { trunc?: boolean }, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const branches = await store.branches(await resolveLayerRef(store, ref));
    if (g.json) return printJson(branches.map((b) => ({ path: b.path, layer: b.layer, mode: b.mode })));
    const shown = idShortener(
      branches.map((b) => b.layer),
      opts.trunc === false,
    );
    printTable(
      ['MODE', 'LAYER', 'PATH'],
      branches.map((b) => [{ text: b.mode, style: branchModeStyle(b.mode) }, shown(b.layer), b.path]),
    );
  });
}

// ---- diff, changes, size -------------------------------------------------------------------

/** The layers `ref` and `--parent` name (each a layer id, an image, or a unique prefix), as ids. */
async function layerAndParent(store: LayerStore, ref: string, parent: string | undefined): Promise<{ id: string; parent?: string }> {
  const id = await resolveLayerRef(store, ref);
  return parent === undefined ? { id } : { id, parent: await resolveLayerRef(store, parent) };
}

/**
 * Streams the tar `make` returns to stdout (output undefined) or into the output file `output`,
 * which is checked (and its temp file made) before `make` runs. What diff and export share.
 */
async function writeTar(output: string | undefined, make: () => Promise<Readable>, notAFileHint: string): Promise<void> {
  if (output === undefined) return pipeline(await make(), process.stdout, { end: false });
  await writeOutputFile(output, async (file) => pipeline(await make(), file), { notAFileHint });
}

/** A tar on stdout leaves no room for a JSON document: --json needs -o FILE. */
function refuseJsonWithTarOnStdout(cmd: Command, toStdout: boolean): void {
  if (toStdout && cmd.optsWithGlobals<{ json?: boolean }>().json === true)
    throw new UnionctlError('USAGE', '--json and a tar archive on stdout cannot share it', { hint: 'give the tar a file: -o FILE' });
}

interface DiffOptions {
  parent?: string;
  output?: string;
}

async function diffCommand(ref: string, opts: DiffOptions, cmd: Command): Promise<void> {
  if (opts.output === undefined && process.stdout.isTTY) {
    throw new UnionctlError('USAGE', 'refusing to write a tar archive to a terminal', {
      hint: `use -o FILE, or redirect stdout: unionctl diff ${ref} > layer.tar`,
    });
  }
  refuseJsonWithTarOnStdout(cmd, opts.output === undefined);
  await withStore(cmd, async (store, g) => {
    const { id, parent } = await layerAndParent(store, ref, opts.parent);
    await writeTar(
      opts.output,
      () => store.diff(id, { parent }),
      `it is left alone: -o writes a regular file; to stream the tar, leave out -o and redirect stdout (unionctl diff ${ref} > ${opts.output})`,
    );
    if (g.json) printJson({ id, parent: parent ?? (await store.layer(id)).parent ?? null, output: opts.output });
  });
}

/** export: the flattened filesystem of a layer or an image's top layer, as `docker export` writes a container's. */
async function exportCommand(ref: string, opts: { output?: string }, cmd: Command): Promise<void> {
  const toStdout = opts.output === undefined || opts.output === '-';
  if (toStdout && process.stdout.isTTY) {
    throw new UnionctlError('USAGE', 'refusing to write a tar archive to a terminal', {
      hint: `use -o FILE, or redirect stdout: unionctl export ${ref} > rootfs.tar`,
    });
  }
  refuseJsonWithTarOnStdout(cmd, toStdout);
  await withStore(cmd, async (store, g) => {
    const id = await resolveLayerRef(store, ref);
    await writeTar(
      toStdout ? undefined : opts.output,
      () => store.flatten(id),
      'it is left alone: -o writes a regular file; to stream the tar, leave out -o and redirect stdout',
    );
    if (g.json) printJson({ id, output: opts.output });
  });
}

interface ChangesOptions {
  parent?: string;
  patch?: boolean;
}

async function changesCommand(ref: string, opts: ChangesOptions, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const { id, parent } = await layerAndParent(store, ref, opts.parent);
    const changes: Change[] = await store.changes(id, { parent });
    let patches = new Map<string, string>();
    if (opts.patch) patches = await patchesFor(store, id, parent ?? (await store.layer(id)).parent, changes);
    if (g.json) return printJson(changes.map((c): ChangeJson => ({ path: c.path, kind: c.kind, patch: patches.get(c.path) ?? null })));
    for (const c of changes) println(changeStyle(c.kind)(`${c.kind} ${shownName(c.path)}`));
    for (const p of patches.values()) {
      println();
      process.stdout.write(colourPatch(p.endsWith('\n') ? p : `${p}\n`));
    }
  });
}

async function sizeCommand(ref: string, opts: { parent?: string }, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const { id, parent } = await layerAndParent(store, ref, opts.parent);
    const size = await store.diffSize(id, { parent });
    if (g.json) return printJson({ id, size });
    println(size < 1024 ? `${size} bytes` : `${humanBytes(size)} (${size} bytes)`);
  });
}

// ---- the program ---------------------------------------------------------------------------

/** Commands whose --format is an archive or manifest format (save, push, as in podman), or that print no JSON. */
const NO_TEMPLATE = new Set(['save', 'push', 'serve', 'bench', 'completion']);
/** The commands given a --format TEMPLATE option. */
const TEMPLATED = new WeakSet<Command>();

/**
 * `--format TEMPLATE` on every command that prints JSON (json-shapes.ts, template.ts): added here,
 * after the commands are defined, so none is forgotten.
 */
function addTemplateOptions(program: Command): void {
  for (const command of visibleCommands(program)) {
    if (NO_TEMPLATE.has(command.name())) continue;
    command.addOption(
      new Option(
        '--format <template>',
        'print the --json objects through a Go-style template: "{{.id}} {{.size}}", "{{json .}}", "table {{.id}}\\t{{.size}}"',
      ).argParser(nonEmpty('the format template')),
    );
    TEMPLATED.add(command);
  }
}

export interface ProgramOptions {
  /** The program as an installed package has it (no benchmark suite): what the man pages describe. */
  asInstalled?: boolean;
}

/**
 * The commander program. Errors are not printed or acted on here: `exitOverride` turns commander's
 * own usage errors into exceptions, and main.ts prints every error the same way.
 */
export function buildProgram(version: string, opts: ProgramOptions = {}): Command {
  const program = new Command('unionctl')
    .description('Layer store and union-filesystem mounts (vfs, overlay2, ...), Docker graphdriver compatible')
    .version(version, '-V, --version', 'print the version')
    .addOption(
      new Option('--root <dir>', 'store root (storage.conf may set it)')
        .env('UNIONCTL_ROOT')
        .default(DEFAULT_ROOT)
        .argParser(nonEmpty('the store root')),
    )
    .addOption(
      new Option('--driver <name>', 'storage driver (default: the one the store uses, else the best this kernel supports)')
        .env('UNIONCTL_DRIVER')
        .argParser(nonEmpty('the driver name')),
    )
    .addOption(new Option('--storage-opt <key=value>', 'driver option, Docker names (repeatable)').argParser(collect))
    .option('--json', 'machine-readable output: one JSON document (docs/json.md describes each field)')
    .addOption(
      new Option(
        '--log-level <level>',
        'what else to say on stderr: error, warn, info (default: what the store did itself), debug (timings, stacks)',
      )
        .choices(LOG_LEVELS)
        .env('UNIONCTL_LOG_LEVEL'),
    )
    .hook('preAction', (_program, action) => {
      const logLevel = action.optsWithGlobals<{ logLevel?: LogLevel }>().logLevel;
      if (logLevel !== undefined) setLogLevel(logLevel);
      applyConfig(program);
      const format = TEMPLATED.has(action) ? action.opts<{ format?: string }>().format : undefined;
      // A template renders the --json objects: the command takes its --json path.
      if (format !== undefined) {
        setOutputTemplate(parseTemplate(format));
        program.setOptionValue('json', true);
      }
    })
    .exitOverride()
    .configureOutput({ outputError: () => {} })
    .showSuggestionAfterError(true);

  program
    .command('info')
    .description('show the driver, its status and its limits, and where each setting came from (flag, env, config file, default)')
    .action(infoCommand);

  program
    .command('import')
    .description('create a layer from a layer tarball (tar, tar.gz or tar.zst; - reads stdin); prints its id')
    .argument('<file>', 'layer tarball, or - for stdin', nonEmpty('the input file'))
    .option('--parent <id>', 'layer (id or unique prefix) or image to build on', nonEmpty('the parent layer id'))
    .option('--id <id>', 'id for the new layer (default: generated)', nonEmpty('the layer id'))
    .option('--force', 'import an image archive (docker save, OCI layout) as one plain layer instead of refusing it')
    .action(importCommand);

  program
    .command('create')
    .description('create an empty layer; prints its id')
    .option('--parent <id>', 'layer (id or unique prefix) or image to build on', nonEmpty('the parent layer id'))
    .option('--id <id>', 'id for the new layer (default: generated)', nonEmpty('the layer id'))
    .option('--rw', 'writable (container) layer instead of an image layer')
    .addOption(
      new Option('--layer-opt <key=value>', 'per-layer storage option, e.g. size=10G (writable layers only; repeatable)').argParser(
        collect,
      ),
    )
    .action(createCommand);

  program
    .command('mount')
    .description("mount a layer's or an image's merged view, read-only for image layers; prints the path on the last line")
    .argument('<id>', 'layer id or unique prefix, or image name or id', nonEmpty('the layer or image'))
    .option('--rw', 'writable view: an image layer gets a new writable layer on top, which is mounted')
    .option('--name <name>', 'id for the writable layer --rw makes (default: a random one)', nonEmpty('the layer name'))
    .option('--mount-label <label>', 'SELinux context for the mount', nonEmpty('the mount label'))
    .option('--explain', 'mount nothing: show the mount that would be made (method, mount data, option decisions and why)')
    .action(mountCommand);

  program
    .command('umount')
    .alias('unmount')
    .description('release mounts made by mount; the union is unmounted when nothing else uses it')
    .argument('[id...]', 'layer ids or unique prefixes, or image names or ids', nonEmptyEach('a layer or image'))
    .option('-a, --all', 'release every mount made by unionctl mount (cleanup also unmounts what running processes hold)')
    .action(umountCommand);

  program
    .command('mounts')
    .description('list mounted layers: mode, unionctl mounts outstanding, processes holding them, path')
    .option('-q, --quiet', 'only the layer ids, one per line')
    .option('--no-trunc', 'show layer ids whole')
    .action(mountsCommand);

  program
    .command('rm')
    .description('remove layers, in the order given; one that cannot be removed is reported and the rest are still tried')
    .argument('<id...>', 'layer ids or unique prefixes', nonEmptyEach('a layer id'))
    .option('-f, --force', "release the layers' mounts first")
    .action(rmCommand);

  program
    .command('ls')
    .description('list layers (ids cut to 12 characters; every command takes such a prefix)')
    .option('-q, --quiet', 'only the ids, one per line')
    .option('--no-trunc', 'show ids and digests whole')
    .action(lsCommand);

  addImageCommands(program, withStore);
  addAdoptCommand(program, withStore);
  addRegistryCommands(program, withStore);

  program.command('cleanup').description('unmount everything the driver mounted').action(cleanupCommand);

  program
    .command('branches')
    .description("the union's branches, top first, as the kernel reports them")
    .argument('<id>', 'layer id or unique prefix, or image name or id', nonEmpty('the layer or image'))
    .option('--no-trunc', 'show layer ids whole')
    .action(branchesCommand);

  program
    .command('diff')
    .description("the layer's changes as an OCI layer tar")
    .argument('<id>', 'layer id or unique prefix, or image name or id', nonEmpty('the layer or image'))
    .option(
      '--parent <id>',
      'layer (id or unique prefix) or image to compare against instead of the parent',
      nonEmpty('the parent layer id'),
    )
    .option('-o, --output <file>', 'write the tar to FILE instead of stdout', nonEmpty('the output file'))
    .action(diffCommand);

  program
    .command('export')
    .description("the whole filesystem of a layer (or an image's top layer) as one tar, no whiteouts, like docker export")
    .argument('<id>', 'layer id or unique prefix, or image name or id', nonEmpty('the layer or image'))
    .option('-o, --output <file>', 'write the tar to FILE (default, or -: stdout, unless it is a terminal)', nonEmpty('the output file'))
    .action(exportCommand);

  program
    .command('changes')
    .description('list added (A), changed (C) and deleted (D) paths')
    .argument('<id>', 'layer id or unique prefix, or image name or id', nonEmpty('the layer or image'))
    .option(
      '--parent <id>',
      'layer (id or unique prefix) or image to compare against instead of the parent',
      nonEmpty('the parent layer id'),
    )
    .option('--patch', 'add unified diffs of changed text files')
    .action(changesCommand);

  program
    .command('size')
    .description("bytes of the layer's changes")
    .argument('<id>', 'layer id or unique prefix, or image name or id', nonEmpty('the layer or image'))
    .option(
      '--parent <id>',
      'layer (id or unique prefix) or image to compare against instead of the parent',
      nonEmpty('the parent layer id'),
    )
    .action(sizeCommand);

  program
    .command('version')
    .description('print the version (with --json: also Node, the platform and the kernel)')
    .action((_opts: unknown, cmd: Command) => {
      if (cmd.optsWithGlobals<{ json?: boolean }>().json !== true) return println(version);
      printJson({ version, node: process.version, os: process.platform, arch: process.arch, kernel: osRelease() });
    });

  registerCheckCommand(program, withStore);
  registerServeCommand(program, withStore);
  registerDoctorCommand(program);
  registerMigrateCommand(program);
  registerBenchCommand(program, { hidden: opts.asInstalled });
  addCompletionCommands(program, withStore);
  addTemplateOptions(program);

  return program;
}
