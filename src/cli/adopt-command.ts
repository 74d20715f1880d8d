/**
 * unionctl adopt docker|podman PATH: the images of a stopped dockerd's data root or a podman
 * graphroot, copied into the store from their own tar-split data (src/image/adopt/). Thin: the
 * foreign store is read and checked before the store is opened, so a wrong path or a running
 * daemon changes nothing of either.
 */
import { Argument, type Command } from 'commander';
import { adoptStore, FOREIGN_KINDS, readForeignStore, type ForeignKind } from '../image/index.js';
import { nonEmpty } from './args.js';
import { loadedImagesJson } from './json-shapes.js';
import { layersDone, printJson, println, shortImageId, shownName } from './output.js';
import { startLayerProgress } from './progress.js';
import type { GlobalOptions, WithStore } from './store-access.js';

async function adoptCommand(
  withStore: WithStore,
  kind: ForeignKind,
  path: string,
  opts: { takeOver?: boolean },
  cmd: Command,
): Promise<void> {
  // The refusals first, before a store is made.
  readForeignStore(kind, path, { takeOver: opts.takeOver, storeRoot: cmd.optsWithGlobals<GlobalOptions>().root });
  await withStore(
    cmd,
    async (store, g) => {
      const progress = startLayerProgress('adopting');
      let adopted;
      try {
        adopted = await adoptStore(store, kind, path, { takeOver: opts.takeOver, onProgress: progress.onProgress });
      } finally {
        progress.done();
      }
      if (g.json) {
        const loaded = await loadedImagesJson(store, adopted.images);
        return printJson({ kind: adopted.kind, path: adopted.path, driver: adopted.driver, ...loaded });
      }
      for (const i of adopted.images) {
        println(
          `Adopted image: ${i.names.length > 0 ? i.names.map(shownName).join(', ') : i.id} (${shortImageId(i.id)}, ${layersDone(i.layers)})`,
        );
      }
      if (adopted.images.length === 0) println(`${adopted.path} holds no images`);
    },
    { creates: true },
  );
}

/** Adds adopt to the program. */
export function addAdoptCommand(program: Command, withStore: WithStore): void {
  program
    .command('adopt')
    .description(
      "copy the images of a stopped dockerd's data root or a podman graphroot (overlay2, overlay, vfs) into the store, byte-identical through their own tar-split; the other store is only read",
    )
    .addArgument(new Argument('<kind>', 'whose store it is').choices(FOREIGN_KINDS))
    .argument('<path>', "dockerd's --data-root, or podman's graphroot", nonEmpty('the store path'))
    .option('--take-over', 'move the layers out of the other store instead of copying them (not implemented: refused)')
    .action((kind: ForeignKind, path: string, opts: { takeOver?: boolean }, cmd: Command) =>
      adoptCommand(withStore, kind, path, opts, cmd),
    );
}
