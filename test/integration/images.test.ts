/**
 * Images end to end through the CLI, on vfs and overlay2: load (docker, OCI gzip, OCI zstd, OCI
 * layout dir, stdin), images, mount by name, save in every format and compression, byte-identical
 * layers on re-export, load → save → load round trips, multi-image archives, rmi.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { CLI_MAIN } from '../helpers/cli.js';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { mountsBelow } from '../helpers/mounts.js';
import {
  DIFF_IDS,
  DOCKER_IMAGE_ID,
  EXPECTED_TREE,
  OCI_IMAGE_ID,
  SAMPLE_DOCKER,
  SAMPLE_OCI_GZIP,
  SAMPLE_OCI_ZSTD,
  ok,
  sha256,
  unionctl,
  untar,
  flattenedTree,
  tarDir,
  treeList,
  scratchStores,
} from './images-helpers.js';

const stores = scratchStores();

interface LoadJson {
  images: Array<{ id: string; names: string[]; layers: Array<{ id: string; diffId: string; chainId: string }> }>;
}

const freshRoot = stores.freshRoot;

/** Mounts REF, lists the tree, unmounts. */
for (const driver of ['vfs', 'overlay2']) {
  describe(`images on ${driver}`, () => {
    it('load of docker save output: ids, names, chain IDs, and mount by name gives the expected tree', () => {
      const g = freshRoot(driver);
      const loaded = JSON.parse(ok(unionctl([...g, '--json', 'load', SAMPLE_DOCKER]))) as LoadJson;
      assert.equal(loaded.images.length, 1);
      const image = loaded.images[0];
      assert.equal(image.id, DOCKER_IMAGE_ID);
      assert.deepEqual(image.names, ['sample-app:1']);
      assert.deepEqual(
        image.layers.map((l) => l.diffId),
        DIFF_IDS,
      );
      assert.equal(image.layers[0].chainId, DIFF_IDS[0]);
      assert.equal(image.layers[3].chainId, 'sha256:6dedba2aa0f99182ca7d2aabec7e17910c0049db3eca8ee50c6a55a5e435a90e');
      const listed = JSON.parse(ok(unionctl([...g, '--json', 'images']))) as Array<{ id: string; names: string[] }>;
      assert.deepEqual(
        listed.map((i) => [i.id, i.names]),
        [[DOCKER_IMAGE_ID, ['sample-app:1']]],
      );
      assert.equal(flattenedTree(g, 'sample-app:1'), EXPECTED_TREE);
      assert.equal(flattenedTree(g, DOCKER_IMAGE_ID.slice(7, 19)), EXPECTED_TREE, 'mount by short image id');
      assert.deepEqual(mountsBelow(stores.dir), [], 'nothing left mounted');
    });

    it('docker, OCI gzip, OCI zstd and an OCI layout dir of the same image give the same tree', () => {
      const layoutDir = untar(SAMPLE_OCI_ZSTD, join(stores.dir, `layout-${driver}`));
      for (const archive of [SAMPLE_OCI_GZIP, SAMPLE_OCI_ZSTD, layoutDir]) {
        const g = freshRoot(driver);
        const loaded = JSON.parse(ok(unionctl([...g, '--json', 'load', archive]))) as LoadJson;
        assert.equal(loaded.images[0].id, OCI_IMAGE_ID, archive);
        assert.deepEqual(
          loaded.images[0].layers.map((l) => l.diffId),
          DIFF_IDS,
          archive,
        );
        assert.equal(flattenedTree(g, 'sample-app:1'), EXPECTED_TREE, archive);
      }
    });

    it('load from stdin; a second load reuses every layer by chain ID', () => {
      const g = freshRoot(driver);
      ok(unionctl([...g, 'load', '-'], { input: readFileSync(SAMPLE_DOCKER) }));
      const layersBefore = JSON.parse(ok(unionctl([...g, '--json', 'ls']))) as unknown[];
      const out = ok(unionctl([...g, 'load', SAMPLE_OCI_GZIP]));
      assert.match(out, /4 already present/);
      assert.equal((JSON.parse(ok(unionctl([...g, '--json', 'ls']))) as unknown[]).length, layersBefore.length);
      // The name moved to the image loaded last, as with docker load.
      const images = JSON.parse(ok(unionctl([...g, '--json', 'images']))) as Array<{ id: string; names: string[] }>;
      assert.deepEqual(images.find((i) => i.id === OCI_IMAGE_ID)?.names, ['sample-app:1']);
      assert.deepEqual(images.find((i) => i.id === DOCKER_IMAGE_ID)?.names, []);
      assert.ok(!existsSync(join(g[1], 'tmp')), 'the stdin spool is gone');
    });

    it('save re-exports every layer byte-identical, in docker and OCI form, uncompressed, gzip and zstd', () => {
      const g = freshRoot(driver);
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      for (const format of ['docker', 'oci']) {
        for (const compress of ['none', 'gzip', 'zstd']) {
          const out = join(stores.dir, `${driver}-${format}-${compress}.tar`);
          ok(unionctl([...g, 'save', 'sample-app:1', '-o', out, '--format', format, '--compress', compress]));
          // Round trip: a fresh store loads it with the same image id and diff IDs, and the same tree.
          const g2 = freshRoot(driver);
          const loaded = JSON.parse(ok(unionctl([...g2, '--json', 'load', out]))) as LoadJson;
          assert.equal(loaded.images[0].id, DOCKER_IMAGE_ID, `${format}/${compress}`);
          assert.deepEqual(loaded.images[0].names, ['sample-app:1']);
          assert.deepEqual(
            loaded.images[0].layers.map((l) => l.diffId),
            DIFF_IDS,
            `${format}/${compress}`,
          );
          assert.equal(flattenedTree(g2, 'sample-app:1'), EXPECTED_TREE);
          if (compress !== 'none') continue;
          // Uncompressed: the layer files in the archive are the original tars, byte for byte.
          const dir = untar(out, join(stores.dir, `x-${driver}-${format}`));
          const layerFiles =
            format === 'docker'
              ? (JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>)[0].Layers
              : DIFF_IDS.map((d) => `blobs/sha256/${d.slice(7)}`);
          assert.deepEqual(
            layerFiles.map((f) => sha256(readFileSync(join(dir, f)))),
            DIFF_IDS,
          );
        }
      }
    });

    // vfs keeps full copies: a file added to the top layer cannot be told from an inherited one.
    for (const change of driver === 'vfs' ? (['rewrite'] as const) : (['rewrite', 'add'] as const)) {
      it(`a layer changed in its own directory after the load (${change} a file) is exported afresh: a warning, a new image id, the change kept`, () => {
        const g = freshRoot(driver);
        const loadedFirst = JSON.parse(ok(unionctl([...g, '--json', 'load', SAMPLE_DOCKER]))) as LoadJson;
        const top = loadedFirst.images[0].layers.at(-1)!.id;
        // Not through a mount (an image mounts read-only): straight into the layer's own directory,
        // as a tool writing into the store would.
        const own = driver === 'vfs' ? join(g[1]!, 'vfs', 'dir', top) : join(g[1]!, 'overlay2', top, 'diff');
        const file = change === 'rewrite' ? 'srv/app/plugins/search.plug' : 'srv/app/plugins/added.plug';
        mkdirSync(dirname(join(own, file)), { recursive: true }); // overlay2: the dir may be only in a lower layer
        writeFileSync(join(own, file), 'changed\n');
        const out = join(stores.dir, `${driver}-changed.tar`);
        const r = unionctl([...g, 'save', 'sample-app:1', '-o', out]);
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stderr, new RegExp(`warning: layer ${top} changed since it was loaded`));
        const g2 = freshRoot(driver);
        const loaded = JSON.parse(ok(unionctl([...g2, '--json', 'load', out]))) as LoadJson;
        assert.notEqual(loaded.images[0].id, DOCKER_IMAGE_ID);
        assert.deepEqual(
          loaded.images[0].layers.slice(0, 3).map((l) => l.diffId),
          DIFF_IDS.slice(0, 3),
          'the untouched layers are still byte-identical',
        );
        assert.notEqual(loaded.images[0].layers[3].diffId, DIFF_IDS[3]);
        assert.match(flattenedTree(g2, 'sample-app:1'), new RegExp(`^f 0644 0:0 8 \\d+ [0-9a-f]{16} ${file}$`, 'm'));
      });
    }

    it('save without -o (or with -o -) writes the archive to stdout, byte for byte what -o FILE writes', () => {
      const g = freshRoot(driver);
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      const file = join(stores.dir, `${driver}-stdout-ref.tar`);
      ok(unionctl([...g, 'save', 'sample-app:1', '-o', file]));
      for (const args of [[], ['-o', '-']]) {
        const r = spawnSync(process.execPath, [CLI_MAIN, ...g, 'save', 'sample-app:1', ...args], { maxBuffer: 64 << 20 });
        assert.equal(r.status, 0, r.stderr.toString());
        assert.equal(r.stderr.toString(), '');
        assert.ok(r.stdout.equals(readFileSync(file)), `save ${args.join(' ')} to stdout: the same archive`);
      }
      assert.deepEqual(readdirSync(join(g[1], 'tmp')), [], 'the staged layers are gone');
      assert.equal(ok(unionctl([...g, 'images', '-q'])), `${DOCKER_IMAGE_ID.slice(7, 19)}\n`);
      assert.equal(ok(unionctl([...g, 'images', '-q', '--no-trunc'])), `${DOCKER_IMAGE_ID}\n`);
      const json = unionctl([...g, '--json', 'save', 'sample-app:1']);
      assert.equal(json.status, 1);
      assert.match(json.stderr, /^unionctl: --json and an archive on stdout cannot share it/);
    });

    it('tag gives an image more names (moving one another image had), untag takes them off; a bad name changes nothing', () => {
      const g = freshRoot(driver);
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      ok(unionctl([...g, 'load', SAMPLE_OCI_GZIP])); // takes sample-app:1; the docker image is left without names
      const names = () =>
        Object.fromEntries(
          (JSON.parse(ok(unionctl([...g, '--json', 'images']))) as Array<{ id: string; names: string[] }>).map((i) => [i.id, i.names]),
        );
      assert.deepEqual(JSON.parse(ok(unionctl([...g, '--json', 'tag', DOCKER_IMAGE_ID.slice(7, 19), 'mine/app', 'mine/app:2']))), [
        { id: DOCKER_IMAGE_ID, name: 'mine/app:latest', movedFrom: null },
        { id: DOCKER_IMAGE_ID, name: 'mine/app:2', movedFrom: null },
      ]);
      assert.equal(
        ok(unionctl([...g, 'tag', 'mine/app', 'sample-app:1'])),
        `Tagged: sample-app:1 (moved from ${OCI_IMAGE_ID.slice(7, 19)})\n`,
      );
      assert.deepEqual(names(), { [DOCKER_IMAGE_ID]: ['mine/app:latest', 'mine/app:2', 'sample-app:1'], [OCI_IMAGE_ID]: [] });
      const before = names();
      for (const bad of ['Mine/App', 'mine/app@sha256:' + '0'.repeat(64), 'a:b:c']) {
        const r = unionctl([...g, 'tag', 'mine/app', bad]);
        assert.equal(r.status, 1, r.stderr);
        assert.match(r.stderr, /^unionctl: .*(not an image reference|names a digest)/);
      }
      assert.equal(unionctl([...g, 'tag', 'no-such-image', 'x']).status, 1);
      assert.deepEqual(names(), before, 'refused tags change nothing');
      // save by the new name writes that name.
      const out = join(stores.dir, `${driver}-tagged.tar`);
      ok(unionctl([...g, 'save', 'mine/app:2', '-o', out]));
      const manifest = JSON.parse(execFileSync('tar', ['-xOf', out, 'manifest.json'], { encoding: 'utf8' })) as Array<{
        RepoTags: string[];
      }>;
      assert.deepEqual(manifest[0]!.RepoTags, ['mine/app:2']);
      // untag: the names given, or all; the image stays.
      assert.equal(ok(unionctl([...g, 'untag', 'mine/app', 'mine/app'])), 'Untagged: mine/app:latest\n');
      const missing = unionctl([...g, 'untag', 'sample-app:1', 'not-its-name']);
      assert.equal(missing.status, 1);
      assert.match(missing.stderr, /has no name not-its-name/);
      assert.deepEqual(JSON.parse(ok(unionctl([...g, '--json', 'untag', DOCKER_IMAGE_ID]))), {
        id: DOCKER_IMAGE_ID,
        untagged: ['mine/app:2', 'sample-app:1'],
      });
      assert.deepEqual(names(), { [DOCKER_IMAGE_ID]: [], [OCI_IMAGE_ID]: [] });
    });

    it("history lists the config's steps newest first with their layers; inspect gives an image's or a layer's whole record", () => {
      const g = freshRoot(driver);
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      const image = (JSON.parse(ok(unionctl([...g, '--json', 'images']))) as Array<{ layers: Array<{ id: string }> }>)[0]!;
      const steps = JSON.parse(ok(unionctl([...g, '--json', 'history', 'sample-app:1']))) as Array<Record<string, unknown>>;
      assert.equal(steps.length, 7, 'the sample was built in 7 steps');
      assert.deepEqual(
        steps.filter((h) => h.layer !== null).map((h) => h.layer),
        image.layers.map((l) => l.id).reverse(),
        'the steps that made a layer, newest first, are the layers top first',
      );
      for (const h of steps) assert.equal(typeof h.createdBy, 'string');
      assert.match(String(steps[0]!.createdBy), /CMD \["\/srv\/app\/bin\/run-app"\]/);
      const quiet = ok(unionctl([...g, 'history', '-q', 'sample-app:1']))
        .trim()
        .split('\n');
      assert.deepEqual(
        quiet,
        steps.map((h) => (h.layer === null ? '<missing>' : String(h.layer).slice(0, 12))),
      );
      const table = ok(unionctl([...g, 'history', 'sample-app:1'])).split('\n');
      assert.match(table[0]!, /^LAYER\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT$/);
      assert.ok(!table.join('\n').includes('chown -R 2000:2000'), 'commands are cut to 45 characters');
      assert.ok(ok(unionctl([...g, 'history', '--no-trunc', 'sample-app:1'])).includes('chown -R 2000:2000 /srv/app/spool'));
      assert.match(table[1]!, /\s(\d+ \w+|About an? \w+|Less than a second) ago\s/, 'when, as docker says it');

      const [img] = JSON.parse(ok(unionctl([...g, 'inspect', 'sample-app:1']))) as Array<Record<string, unknown>>;
      assert.equal(img!.type, 'image');
      assert.equal(img!.id, DOCKER_IMAGE_ID);
      assert.deepEqual((img!.config as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids, DIFF_IDS);
      const layers = img!.layers as Array<{ id: string; size: number }>;
      assert.equal(
        img!.size,
        layers.reduce((n, l) => n + l.size, 0),
      );
      const top = image.layers.at(-1)!.id;
      const [layer] = JSON.parse(ok(unionctl([...g, 'inspect', top.slice(0, 12)]))) as Array<Record<string, unknown>>;
      assert.equal(layer!.type, 'layer');
      assert.equal((layer!.layer as { id: string }).id, top);
      assert.deepEqual(layer!.images, ['sample-app:1']);
      assert.deepEqual(layer!.children, []);
      assert.equal(layer!.mounts, 0);
      assert.ok(Object.keys(layer!.driverData as object).length > 0, 'the driver says where the layer is');
      const missing = unionctl([...g, 'inspect', 'no-such']);
      assert.equal(missing.status, 1);
      assert.match(missing.stderr, /^unionctl: no layer or image no-such/);
    });

    it("export writes the image's whole filesystem as one tar: unpacked, it is the expected tree", () => {
      const g = freshRoot(driver);
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      const file = join(stores.dir, `${driver}-rootfs.tar`);
      ok(unionctl([...g, 'export', 'sample-app:1', '-o', file]));
      const streamed = spawnSync(process.execPath, [CLI_MAIN, ...g, 'export', 'sample-app:1'], { maxBuffer: 64 << 20 });
      assert.equal(streamed.status, 0, streamed.stderr.toString());
      assert.ok(streamed.stdout.equals(readFileSync(file)), 'stdout and -o FILE get the same tar');
      const dir = join(stores.dir, `${driver}-rootfs`);
      mkdirSync(dir);
      execFileSync('tar', ['-xpf', file, '-C', dir, '--numeric-owner']);
      assert.equal(treeList(dir), EXPECTED_TREE);
      assert.deepEqual(mountsBelow(g[1]!), [], 'the view mounted for the export is gone');
    });

    it('prune removes images without names and the layers nothing uses; --dry-run only says so', () => {
      const g = freshRoot(driver);
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      ok(unionctl([...g, 'load', SAMPLE_OCI_GZIP])); // takes sample-app:1: the docker image is dangling now
      const top = (JSON.parse(ok(unionctl([...g, '--json', 'images']))) as Array<{ layers: Array<{ id: string }> }>)[0]!.layers.at(-1)!.id;
      ok(unionctl([...g, 'create', '--parent', top, '--id', 'junk']));
      ok(unionctl([...g, 'create', '--parent', 'junk', '--id', 'junk-child']));
      ok(unionctl([...g, 'create', '--rw', '--parent', top, '--id', 'in-use']));
      ok(unionctl([...g, 'mount', 'in-use']));
      try {
        const layersBefore = ok(unionctl([...g, 'ls', '-q', '--no-trunc']));
        const dry = JSON.parse(ok(unionctl([...g, '--json', 'prune', '--dry-run']))) as {
          images: string[];
          layers: string[];
          dryRun: boolean;
        };
        assert.deepEqual(dry, { images: [DOCKER_IMAGE_ID], layers: ['junk-child', 'junk'], dryRun: true });
        assert.equal(ok(unionctl([...g, 'ls', '-q', '--no-trunc'])), layersBefore, 'a dry run changes nothing');
        assert.equal((JSON.parse(ok(unionctl([...g, '--json', 'images']))) as unknown[]).length, 2);
        const out = ok(unionctl([...g, 'prune']));
        assert.equal(out, `Deleted image: ${DOCKER_IMAGE_ID.slice(7, 19)}\nDeleted layer: junk-child\nDeleted layer: junk\n`);
        const images = JSON.parse(ok(unionctl([...g, '--json', 'images']))) as Array<{ id: string; layers: unknown[] }>;
        assert.deepEqual(
          images.map((i) => i.id),
          [OCI_IMAGE_ID],
        );
        const left = ok(unionctl([...g, 'ls', '-q', '--no-trunc']))
          .trim()
          .split('\n')
          .sort();
        assert.equal(
          left.length,
          5,
          `the OCI image's 4 layers (shared with the dangling one) and the mounted layer stay:\n${left.join('\n')}`,
        );
        assert.ok(left.includes('in-use'));
        assert.equal(ok(unionctl([...g, 'prune'])), 'Nothing to prune\n');
      } finally {
        ok(unionctl([...g, 'umount', 'in-use']));
      }
      // Unmounted, the writable layer is unused too.
      assert.deepEqual(JSON.parse(ok(unionctl([...g, '--json', 'prune']))), { images: [], layers: ['in-use'], dryRun: false });
    });

    it('df counts each layer once: shared between images, unique to one, outside any image', () => {
      const g = freshRoot(driver);
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      ok(unionctl([...g, 'load', SAMPLE_OCI_GZIP])); // the same four layers under another config
      const src = join(stores.dir, `${driver}-df-src`);
      mkdirSync(src);
      writeFileSync(join(src, 'loose.bin'), Buffer.alloc(3000));
      ok(unionctl([...g, 'import', '--id', 'loose', tarDir(src, join(stores.dir, `${driver}-df.tar`))]));
      const listed = JSON.parse(ok(unionctl([...g, '--json', 'ls']))) as Array<{ id: string; size: number }>;
      const imageBytes = listed.filter((l) => l.id !== 'loose').reduce((n, l) => n + l.size, 0);
      const usage = JSON.parse(ok(unionctl([...g, '--json', 'df']))) as {
        images: Array<{ id: string; size: number; unique: number; shared: number }>;
        total: Record<string, number>;
      };
      assert.deepEqual(usage.total, { images: 2, layers: 5, size: imageBytes + 3000, shared: imageBytes, outsideImages: 3000 });
      for (const i of usage.images) assert.deepEqual([i.size, i.unique, i.shared], [imageBytes, 0, imageBytes], i.id);
      // Without the docker image, the OCI image's layers are its own.
      ok(unionctl([...g, 'rmi', DOCKER_IMAGE_ID]));
      const after = JSON.parse(ok(unionctl([...g, '--json', 'df']))) as typeof usage;
      assert.deepEqual(
        after.images.map((i) => [i.id, i.unique, i.shared]),
        [[OCI_IMAGE_ID, imageBytes, 0]],
      );
      const table = ok(unionctl([...g, 'df', '-v']));
      assert.match(table, /^TYPE\s+TOTAL\s+SIZE\s+SHARED\s+OUTSIDE IMAGES$/m);
      assert.match(table, /^loose\s+image\s+2\.93 KiB\s+0$/m);
    });

    it('multi-image archives: save of two images, load of all or of one with --image', () => {
      const g = freshRoot(driver);
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      ok(unionctl([...g, 'load', SAMPLE_OCI_GZIP])); // takes the name sample-app:1
      const both = join(stores.dir, `${driver}-two.tar`);
      ok(unionctl([...g, 'save', 'sample-app:1', DOCKER_IMAGE_ID, '-o', both]));
      const g2 = freshRoot(driver);
      const all = JSON.parse(ok(unionctl([...g2, '--json', 'load', both]))) as LoadJson;
      assert.deepEqual(all.images.map((i) => i.id).sort(), [DOCKER_IMAGE_ID, OCI_IMAGE_ID].sort());
      const g3 = freshRoot(driver);
      const one = JSON.parse(ok(unionctl([...g3, '--json', 'load', '--image', 'sample-app:1', both]))) as LoadJson;
      assert.deepEqual(
        one.images.map((i) => i.id),
        [OCI_IMAGE_ID],
      );
      assert.equal((JSON.parse(ok(unionctl([...g3, '--json', 'images']))) as unknown[]).length, 1);
    });

    it('rmi keeps a layer the user imported before a load reused it (and says so); the layers that came with the image go', () => {
      const g = freshRoot(driver);
      const manifest = JSON.parse(execFileSync('tar', ['-xOf', SAMPLE_DOCKER, 'manifest.json'], { encoding: 'utf8' })) as Array<{
        Layers: string[];
      }>;
      const baseTar = join(stores.dir, `${driver}-user-base.tar`);
      writeFileSync(baseTar, execFileSync('tar', ['-xOf', SAMPLE_DOCKER, manifest[0]!.Layers[0]!], { maxBuffer: 64 << 20 }));
      const base = ok(unionctl([...g, 'import', baseTar])).trim();
      const loaded = JSON.parse(ok(unionctl([...g, '--json', 'load', SAMPLE_DOCKER]))) as LoadJson;
      assert.equal(loaded.images[0].layers[0].id, base, 'the load reused the imported layer by its chain ID');
      const removed = JSON.parse(ok(unionctl([...g, '--json', 'rmi', 'sample-app:1']))) as Array<{
        layers: string[];
        keptLayers: string[];
      }>;
      assert.deepEqual(removed[0]!.keptLayers, [base]);
      assert.deepEqual(
        [...removed[0]!.layers].sort(),
        loaded.images[0].layers
          .slice(1)
          .map((l) => l.id)
          .sort(),
      );
      const layers = JSON.parse(ok(unionctl([...g, '--json', 'ls']))) as Array<{ id: string; origin?: string }>;
      assert.deepEqual(
        layers.map((l) => [l.id, l.origin]),
        [[base, 'user']],
      );
      // Loaded again and removed in plain text: it says which layer it kept.
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      assert.match(ok(unionctl([...g, 'rmi', 'sample-app:1'])), new RegExp(`^Kept layer: ${base} \\(made by import or create`, 'm'));
      ok(unionctl([...g, 'rm', base]));
    });

    it('rmi keeps layers another image uses, removes the rest, and refuses while mounted', () => {
      const g = freshRoot(driver);
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      ok(unionctl([...g, 'load', SAMPLE_OCI_GZIP]));
      const lines = ok(unionctl([...g, 'mount', 'sample-app:1']))
        .trim()
        .split('\n');
      const top = /^layer (\S+)$/.exec(lines[0])![1];
      const refused = unionctl([...g, 'rmi', DOCKER_IMAGE_ID.slice(7)]);
      assert.equal(refused.status, 0, 'the docker image shares its layers with the OCI one, so removing it touches no layer');
      const refusedMounted = unionctl([...g, 'rmi', 'sample-app:1']);
      assert.equal(refusedMounted.status, 1);
      assert.match(refusedMounted.stderr, /mounted/);
      ok(unionctl([...g, 'umount', top]));
      const rmLayer = unionctl([...g, 'rm', top]);
      assert.equal(rmLayer.status, 1, 'a layer of an image is removed with the image, not on its own');
      assert.match(rmLayer.stderr, /belongs to image sample-app:1/);
      const removed = ok(unionctl([...g, 'rmi', 'sample-app:1']));
      assert.match(removed, /Deleted: sha256:457ebf04/);
      assert.deepEqual(JSON.parse(ok(unionctl([...g, '--json', 'ls']))), []);
      assert.deepEqual(JSON.parse(ok(unionctl([...g, '--json', 'images']))), []);
    });
  });
}
