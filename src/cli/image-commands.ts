/**
 * The image commands: load, images, rmi, save. Thin, like the rest of the CLI: each one is a call
 * into src/image/ and a print.
 */
import { existsSync } from 'node:fs';
import { Command, Option } from 'commander';
import type { WithStore } from './store-access.js';
import { UnionctlError } from '../errors.js';
import {
  commitLayer,
  exportStorage,
  listExports,
  listImages,
  removeExport,
  loadImages,
  removeImage,
  saveImages,
  diskUsage,
  imageHistory,
  inspect,
  prune,
  tagImage,
  untagImage,
  type LayerCompression,
  type LoadedImage,
  type SaveFormat,
} from '../image/index.js';
import { collect, nonEmpty, nonEmptyEach, type ListingOptions } from './args.js';
import {
  DamagedFiles,
  eprintln,
  humanBytes,
  idShortener,
  layersDone,
  out,
  printJson,
  println,
  printTable,
  printWarning,
  shortImageId,
  shownName,
  timeAgo,
} from './output.js';
import { startLayerProgress } from './progress.js';
import { imageJson, layerJson, loadedImagesJson, reusedLayers, storedImageJson } from './json-shapes.js';

async function loadCommand(withStore: WithStore, file: string, opts: { image?: string }, cmd: Command): Promise<void> {
  if (file === '-' && process.stdin.isTTY) {
    throw new UnionctlError('USAGE', 'refusing to read an image archive from a terminal', {
      hint: 'pipe an archive into unionctl load -, or give a file name',
    });
  }
  // Before the store is opened, so a typo changes nothing on disk.
  if (file !== '-' && !existsSync(file))
    throw new UnionctlError('NOT_FOUND', `image archive ${file} does not exist`, { hint: 'check the path' });
  await withStore(
    cmd,
    async (store, g) => {
      // One progress line per layer: "loading layer 2/4", bytes of that layer's tar.
      const progress = startLayerProgress('loading');
      let images: LoadedImage[];
      try {
        images = await loadImages(store, file, { image: opts.image, onProgress: progress.onProgress });
      } finally {
        progress.done();
      }
      if (g.json) return printJson(await loadedImagesJson(store, images));
      for (const i of images) {
        println(
          `Loaded image: ${i.names.length > 0 ? i.names.map(shownName).join(', ') : i.id} (${shortImageId(i.id)}, ${layersDone(i.layers)})`,
        );
      }
    },
    { creates: true },
  );
}

async function imagesCommand(withStore: WithStore, opts: ListingOptions, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const damaged = new DamagedFiles();
    const images = await listImages(store, { onDamaged: damaged.onDamaged });
    if (g.json) {
      printJson(images.map(imageJson));
      return damaged.throwIfAny();
    }
    if (opts.quiet === true) {
      for (const i of images) println(opts.trunc === false ? i.id : shortImageId(i.id));
      return damaged.throwIfAny();
    }
    const rows = images.flatMap((i) =>
      (i.names.length > 0 ? i.names : ['<none>']).map((n) => [
        n,
        opts.trunc === false ? i.id : shortImageId(i.id),
        String(i.layers.length),
        humanBytes(i.size),
        timeAgo(i.loaded),
      ]),
    );
    printTable(['NAME', 'IMAGE ID', 'LAYERS', 'SIZE', 'LOADED'], rows);
    damaged.throwIfAny();
  });
}

async function rmiCommand(withStore: WithStore, refs: string[], _opts: unknown, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const results = [];
    for (const ref of refs) {
      const r = await removeImage(store, ref);
      results.push(r);
      if (g.json) continue;
      for (const n of r.untagged) println(`Untagged: ${shownName(n)}`);
      if (r.deleted !== undefined) println(`Deleted: ${shownName(r.deleted)}`);
      for (const l of r.layers) println(out.dim(`Deleted layer: ${shownName(l)}`));
      for (const l of r.keptLayers)
        println(`Kept layer: ${shownName(l)} (made by import or create, not by the image; unionctl rm removes it)`);
    }
    if (g.json) printJson(results.map((r) => ({ ...r, deleted: r.deleted ?? null })));
  });
}

interface CommitCliOptions {
  message?: string;
  author?: string;
  change?: string[];
}

async function commitCommand(
  withStore: WithStore,
  ref: string,
  name: string | undefined,
  opts: CommitCliOptions,
  cmd: Command,
): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const image = await commitLayer(store, ref, { name, message: opts.message, author: opts.author, changes: opts.change });
    if (g.json)
      return printJson({
        image: await storedImageJson(store, image.id),
        base: image.base ?? null,
        reusedLayers: reusedLayers(image.layers),
      });
    // The id alone on stdout, as docker commit prints it: ID=$(unionctl commit …) works.
    println(image.id);
  });
}

async function tagCommand(withStore: WithStore, ref: string, names: string[], cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const results = [];
    for (const name of names) results.push(await tagImage(store, ref, name));
    if (g.json) return printJson(results.map((r) => ({ ...r, movedFrom: r.movedFrom ?? null })));
    for (const r of results) {
      const moved = r.movedFrom === undefined ? '' : ` (moved from ${shortImageId(r.movedFrom)})`;
      println(`Tagged: ${shownName(r.name)}${moved}`);
    }
  });
}

async function untagCommand(withStore: WithStore, ref: string, names: string[], cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const r = await untagImage(store, ref, names);
    if (g.json) return printJson(r);
    for (const n of r.untagged) println(`Untagged: ${shownName(n)}`);
  });
}

async function inspectCommand(withStore: WithStore, refs: string[], _opts: unknown, cmd: Command): Promise<void> {
  // JSON whatever the flags, as docker inspect: one object per REF, in an array.
  await withStore(cmd, async (store) => {
    const found = [];
    for (const ref of refs) {
      const i = await inspect(store, ref);
      // The layer in the one shape every command prints a layer in.
      found.push(i.type === 'layer' ? { ...i, layer: layerJson(i.layer) } : i);
    }
    printJson(found);
  });
}

async function historyCommand(withStore: WithStore, ref: string, opts: ListingOptions, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const entries = await imageHistory(store, ref);
    if (g.json) {
      return printJson(
        entries.map((e) => ({
          layer: e.layer ?? null,
          created: e.created ?? null,
          createdBy: e.createdBy,
          size: e.size,
          comment: e.comment ?? null,
        })),
      );
    }
    const shown = idShortener(
      entries.flatMap((e) => (e.layer === undefined ? [] : [e.layer])),
      opts.trunc === false,
    );
    if (opts.quiet === true) {
      for (const e of entries) println(e.layer === undefined ? '<missing>' : shown(e.layer));
      return;
    }
    printTable(
      ['LAYER', 'CREATED', 'CREATED BY', 'SIZE', 'COMMENT'],
      entries.map((e) => [
        e.layer === undefined ? { text: '<missing>', style: out.dim } : shown(e.layer),
        e.created === undefined ? '-' : timeAgo(e.created),
        // docker history cuts the command at 45 characters, unless --no-trunc.
        opts.trunc === false || e.createdBy.length <= 45 ? e.createdBy : `${e.createdBy.slice(0, 44)}…`,
        humanBytes(e.size),
        e.comment ?? '',
      ]),
    );
  });
}

async function pruneCommand(withStore: WithStore, opts: { dryRun?: boolean }, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const dryRun = opts.dryRun === true;
    const r = await prune(store, { dryRun });
    if (g.json) return printJson({ ...r, dryRun });
    const verb = dryRun ? 'Would delete' : 'Deleted';
    for (const i of r.images) println(`${verb} image: ${shortImageId(i)}`);
    for (const l of r.layers) println(`${verb} layer: ${shownName(l)}`);
    if (r.images.length + r.layers.length === 0) println('Nothing to prune');
  });
}

async function dfCommand(withStore: WithStore, opts: { verbose?: boolean; trunc?: boolean }, cmd: Command): Promise<void> {
  await withStore(cmd, async (store, g) => {
    const usage = await diskUsage(store);
    if (g.json) return printJson(usage);
    const t = usage.total;
    printTable(
      ['TYPE', 'TOTAL', 'SIZE', 'SHARED', 'OUTSIDE IMAGES'],
      [
        ['Images', String(t.images), humanBytes(usage.images.reduce((n, i) => n + i.unique, 0) + t.shared), humanBytes(t.shared), '-'],
        ['Layers', String(t.layers), humanBytes(t.size), humanBytes(t.shared), humanBytes(t.outsideImages)],
      ],
    );
    if (opts.verbose !== true) return;
    const shown = idShortener(
      usage.layers.map((l) => l.id),
      opts.trunc === false,
    );
    println();
    printTable(
      ['IMAGE', 'IMAGE ID', 'SIZE', 'UNIQUE', 'SHARED'],
      usage.images.map((i) => [
        i.names[0] ?? '<none>',
        opts.trunc === false ? i.id : shortImageId(i.id),
        humanBytes(i.size),
        humanBytes(i.unique),
        humanBytes(i.shared),
      ]),
    );
    println();
    printTable(
      ['LAYER', 'KIND', 'SIZE', 'IMAGES'],
      usage.layers.map((l) => [shown(l.id), l.writable ? 'rw' : 'image', humanBytes(l.size), String(l.images)]),
    );
  });
}

interface SaveCliOptions {
  output?: string;
  format: SaveFormat;
  compress: LayerCompression;
}

async function saveCommand(withStore: WithStore, refs: string[], opts: SaveCliOptions, cmd: Command): Promise<void> {
  // No -o, or -o -: the archive goes to stdout (as docker save does), never to a terminal.
  const toStdout = opts.output === undefined || opts.output === '-';
  if (toStdout && process.stdout.isTTY) {
    throw new UnionctlError('USAGE', 'refusing to write an image archive to a terminal', {
      hint: `use -o FILE, or redirect stdout: unionctl save ${refs.join(' ')} > images.tar`,
    });
  }
  if (toStdout && cmd.optsWithGlobals<{ json?: boolean }>().json === true) {
    throw new UnionctlError('USAGE', '--json and an archive on stdout cannot share it', { hint: 'give the archive a file: -o FILE' });
  }
  await withStore(cmd, async (store, g) => {
    const saveOpts = { format: opts.format, compress: opts.compress, onWarning: printWarning };
    if (toStdout) {
      await saveImages(store, refs, process.stdout, saveOpts);
      return;
    }
    const output = opts.output!;
    const saved = await saveImages(store, refs, output, saveOpts);
    if (g.json) return printJson({ output, images: saved });
    for (const s of saved)
      println(`Saved ${s.names.map(shownName).join(', ') || s.id} (${shortImageId(s.savedId)}) to ${shownName(output)}`);
  });
}

async function exportStorageCommand(
  withStore: WithStore,
  dir: string | undefined,
  opts: { remove?: boolean },
  cmd: Command,
): Promise<void> {
  if (opts.remove && dir === undefined)
    throw new UnionctlError('USAGE', '--remove needs the export dir', { hint: 'unionctl export-storage --remove DIR' });
  await withStore(cmd, async (store, g) => {
    const onWait = (m: string) => eprintln(`unionctl: ${m}`);
    if (dir === undefined) {
      const dirs = listExports(store);
      if (g.json) return printJson({ exports: dirs });
      for (const d of dirs) println(shownName(d));
      return;
    }
    if (opts.remove) {
      await removeExport(store, dir, { onWait });
      if (g.json) return printJson({ removed: dir });
      return println(
        `Stopped the containers-storage export to ${shownName(dir)}: it holds no images now; drop it from storage.conf, then delete it`,
      );
    }
    const s = await exportStorage(store, dir, { onWait });
    if (g.json) return printJson(s);
    const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
    println(`Exported ${plural(s.images, 'image')} (${plural(s.layers, 'layer')}) to ${shownName(s.dir)}, kept up to date by load and rmi`);
    println(out.dim(`storage.conf: [storage.options] additionalimagestores = [${JSON.stringify(s.dir)}]`));
  });
}

/** Adds load, images, rmi, save and export-storage to the program. */
export function addImageCommands(program: Command, withStore: WithStore): void {
  program
    .command('load')
    .description('load images from a docker save or OCI archive, or an OCI layout directory (- reads stdin)')
    .argument('<file>', 'archive, OCI layout directory, or - for stdin', nonEmpty('the image archive'))
    .option('--image <name>', 'load only this image of a multi-image archive', nonEmpty('the image name'))
    .action((file: string, opts: { image?: string }, cmd: Command) => loadCommand(withStore, file, opts, cmd));

  program
    .command('images')
    .description('list images')
    .option('-q, --quiet', 'only the image ids, one per line')
    .option('--no-trunc', 'show image ids whole')
    .action((opts: ListingOptions, cmd: Command) => imagesCommand(withStore, opts, cmd));

  program
    .command('rmi')
    .description('remove images (a name of several: only that name), and the layers no other image uses')
    .argument('<image...>', 'names or ids', nonEmptyEach('an image name or id'))
    .action((refs: string[], opts: unknown, cmd: Command) => rmiCommand(withStore, refs, opts, cmd));

  program
    .command('commit')
    .description("make an image of a layer (a writable one from mount --rw) and its ancestry, its config derived from the base image's")
    .argument('<layer>', 'layer id or unique prefix', nonEmpty('the layer'))
    .argument('[image-name]', 'name for the new image, [host[:port]/]name[:tag]', nonEmpty('the image name'))
    .option('-m, --message <text>', 'comment for the history entry', nonEmpty('the message'))
    .option('-a, --author <name>', 'author of the image (e.g. "Jane Doe <jane@example.com>")', nonEmpty('the author'))
    .option(
      '-c, --change <instruction>',
      'Dockerfile instruction to apply to the config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR (repeatable)',
      collect,
    )
    .action((ref: string, name: string | undefined, opts: CommitCliOptions, cmd: Command) =>
      commitCommand(withStore, ref, name, opts, cmd),
    );

  program
    .command('tag')
    .description('give an image more names (a name another image has moves here; ":latest" is added to a name without a tag)')
    .argument('<image>', 'name or id', nonEmpty('the image'))
    .argument('<name...>', 'new names, [host[:port]/]name[:tag]', nonEmptyEach('an image name'))
    .action((ref: string, names: string[], _opts: unknown, cmd: Command) => tagCommand(withStore, ref, names, cmd));

  program
    .command('untag')
    .description('take names off an image (all of them when none are given); the image stays, rmi removes it')
    .argument('<image>', 'name or id', nonEmpty('the image'))
    .argument('[name...]', 'names to take off', nonEmptyEach('an image name'))
    .action((ref: string, names: string[], _opts: unknown, cmd: Command) => untagCommand(withStore, ref, names, cmd));

  program
    .command('inspect')
    .description('everything the store knows about layers or images, as JSON (record, driver data, mounts, config, sizes)')
    .argument('<ref...>', 'layer ids or unique prefixes, image names or ids', nonEmptyEach('a layer or image'))
    .action((refs: string[], opts: unknown, cmd: Command) => inspectCommand(withStore, refs, opts, cmd));

  program
    .command('history')
    .description("an image's build steps, newest first: the layer each made, when, how, its size")
    .argument('<image>', 'name or id', nonEmpty('the image'))
    .option('-q, --quiet', 'only the layer ids')
    .option('--no-trunc', 'show layer ids whole')
    .action((ref: string, opts: ListingOptions, cmd: Command) => historyCommand(withStore, ref, opts, cmd));

  program
    .command('prune')
    .description('remove images without names, then every layer no image, mount, process or containerd snapshot uses')
    .option('--dry-run', 'say what would be removed, remove nothing')
    .action((opts: { dryRun?: boolean }, cmd: Command) => pruneCommand(withStore, opts, cmd));

  program
    .command('df')
    .description('bytes the images and layers take: shared between images, and outside any image (docker system df)')
    .option('-v, --verbose', 'per image (unique and shared bytes) and per layer')
    .option('--no-trunc', 'show ids whole')
    .action((opts: { verbose?: boolean; trunc?: boolean }, cmd: Command) => dfCommand(withStore, opts, cmd));

  program
    .command('save')
    .description('write images to an archive that docker load, podman load and skopeo read (to stdout without -o)')
    .argument('<image...>', 'names or ids', nonEmptyEach('an image name or id'))
    .option('-o, --output <file>', 'archive to write (default, or -: stdout, unless it is a terminal)', nonEmpty('the output file'))
    .addOption(new Option('--format <format>', 'archive layout').choices(['docker', 'oci']).default('docker'))
    .addOption(new Option('--compress <kind>', 'layer compression').choices(['none', 'gzip', 'zstd']).default('none'))
    .action((refs: string[], opts: SaveCliOptions, cmd: Command) => saveCommand(withStore, refs, opts, cmd));

  program
    .command('export-storage')
    .description(
      "keep DIR a read-only containers/storage image store of this store's images (podman, buildah, CRI-O additionalimagestores); without DIR, list the export dirs",
    )
    .argument('[dir]', 'the export dir (new, empty, or an export of this store)', nonEmpty('the export dir'))
    .option('--remove', 'stop exporting to DIR: it is left an empty image store, to drop from storage.conf')
    .action((dir: string | undefined, opts: { remove?: boolean }, cmd: Command) => exportStorageCommand(withStore, dir, opts, cmd));
}
