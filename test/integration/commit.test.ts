/**
 * unionctl commit (issue 14 point 8), on vfs and overlay2: a writable layer made by `mount --rw`
 * on an image becomes an image whose config is derived from the base image's (runtime settings
 * kept and changed by --change, diff IDs, a history entry, author, a new id); the base's layers are
 * reused, the writable layer's diff is a new layer; a second commit of the same content makes no
 * new layer; `save` exports the image and a load elsewhere gives the same id and the same tree.
 * Bad input (a --change commit cannot apply, a digest as the name, no such layer) changes nothing.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import {
  DIFF_IDS,
  DOCKER_IMAGE_ID,
  EXPECTED_TREE,
  SAMPLE_DOCKER,
  flattenedTree,
  listing,
  ok,
  show,
  unionctl,
  scratchStores,
} from './images-helpers.js';

/** An image as images --json prints it. */
interface ImageJson {
  id: string;
  names: string[];
  layers: Array<{ id: string; diffId: string; chainId: string; size: number }>;
}

/** What commit --json prints. */
interface CommitJson {
  image: ImageJson;
  base: string | null;
  reusedLayers: string[];
}

interface ImageInspection {
  id: string;
  config: {
    author?: string;
    created: string;
    config: { Env?: string[]; Cmd?: string[]; Labels?: Record<string, string>; WorkingDir?: string };
    rootfs: { diff_ids: string[] };
    history: Array<{ created_by?: string; comment?: string; author?: string; empty_layer?: boolean }>;
  };
}

const stores = scratchStores();

const freshRoot = stores.freshRoot;

/** A file the sample image has, deleted through the writable layer (a whiteout in its diff). */
const DELETED = 'srv/app/etc/app.conf';

for (const driver of ['vfs', 'overlay2']) {
  describe(`commit on ${driver}`, () => {
    const g = freshRoot(driver);
    let view = '';
    let committed: ImageJson;

    before(() => {
      ok(unionctl([...g, 'load', SAMPLE_DOCKER]));
      assert.match(EXPECTED_TREE, new RegExp(` ${DELETED}$`, 'm'), 'the sample has the file the test deletes');
      view = (JSON.parse(ok(unionctl([...g, '--json', 'mount', '--rw', '--name', 'work', 'sample-app:1']))) as { path: string }).path;
      writeFileSync(join(view, 'added.txt'), 'made in the container\n');
      unlinkSync(join(view, DELETED));
    });

    it('makes an image of the writable layer: the base layers reused, the diff a new layer, named, the id on stdout', () => {
      const r = unionctl([
        ...g,
        '--json',
        'commit',
        'work',
        'app:v2',
        '-m',
        'add a file',
        '-a',
        'Jane Doe <jane@example.com>',
        '-c',
        'ENV GREETING="hello world"',
        '-c',
        'CMD ["/bin/sh", "-c", "cat /added.txt"]',
        '-c',
        'LABEL stage=committed',
        '-c',
        'WORKDIR data',
      ]);
      const result = JSON.parse(ok(r)) as CommitJson;
      committed = result.image;
      assert.deepEqual(committed.names, ['app:v2']);
      assert.equal(result.base, DOCKER_IMAGE_ID);
      assert.equal(committed.layers.length, 5);
      assert.deepEqual(
        committed.layers.slice(0, 4).map((l) => l.diffId),
        DIFF_IDS,
      );
      const top = committed.layers[4]!;
      assert.deepEqual(
        result.reusedLayers,
        committed.layers.slice(0, 4).map((l) => l.id),
        'the base layers reused, the top one new',
      );
      assert.equal(top.size, 22, 'the added file');
      assert.notEqual(top.id, 'work', 'the writable layer stays a writable layer; its diff is a new one');
      // The layer list shows the new image layer read-only and the writable one still there.
      const layers = JSON.parse(ok(unionctl([...g, '--json', 'ls']))) as Array<{ id: string; writable: boolean; diffId?: string }>;
      assert.equal(layers.find((l) => l.id === top.id)?.writable, false);
      assert.equal(layers.find((l) => l.id === top.id)?.diffId, top.diffId);
      assert.equal(layers.find((l) => l.id === 'work')?.writable, true);
      // Without --json: the id alone, as docker commit prints it.
      const plain = ok(unionctl([...g, 'commit', 'work']));
      assert.match(plain, /^sha256:[0-9a-f]{64}\n$/);
    });

    it("derives the config from the base image's: runtime settings kept and changed, diff IDs, history, author, id = its sha256", () => {
      const [image] = JSON.parse(ok(unionctl([...g, 'inspect', 'app:v2']))) as ImageInspection[];
      const [base] = JSON.parse(ok(unionctl([...g, 'inspect', 'sample-app:1']))) as ImageInspection[];
      assert.equal(image!.id, committed.id);
      const c = image!.config;
      assert.equal(c.author, 'Jane Doe <jane@example.com>');
      assert.deepEqual(c.rootfs.diff_ids, [...DIFF_IDS, committed.layers[4]!.diffId]);
      assert.deepEqual(c.config.Env, [...(base!.config.config.Env ?? []), 'GREETING=hello world']);
      assert.deepEqual(c.config.Cmd, ['/bin/sh', '-c', 'cat /added.txt']);
      assert.equal(c.config.Labels?.stage, 'committed');
      for (const [k, v] of Object.entries(base!.config.config.Labels ?? {})) assert.equal(c.config.Labels?.[k], v, `label ${k} kept`);
      assert.equal(c.config.WorkingDir, join(base!.config.config.WorkingDir || '/', 'data'));
      assert.deepEqual(c.history.slice(0, -1), base!.config.history, "the base's history, then one entry");
      assert.deepEqual(c.history.at(-1), {
        created_by: 'unionctl commit',
        author: 'Jane Doe <jane@example.com>',
        comment: 'add a file',
        created: c.created,
      });
      assert.ok(Date.now() - Date.parse(c.created) < 10 * 60_000, 'created now');
      const history = ok(unionctl([...g, 'history', 'app:v2']));
      assert.match(history.split('\n')[1]!, /unionctl commit .* add a file/);
    });

    it('the image shows the writable layer as it was: the added file, the deleted one gone', () => {
      const tree = flattenedTree(g, 'app:v2');
      assert.match(tree, /^f 0644 0:0 22 \d+ [0-9a-f]{16} added\.txt$/m);
      assert.doesNotMatch(tree, new RegExp(` ${DELETED}$`, 'm'));
      const expected = EXPECTED_TREE.split('\n').filter((l) => !l.endsWith(` ${DELETED}`));
      const rest = tree.split('\n').filter((l) => !l.endsWith(' added.txt'));
      assert.deepEqual(rest, expected);
    });

    it('a second commit of the same content reuses the layer the first one made', () => {
      const again = JSON.parse(ok(unionctl([...g, '--json', 'commit', 'work', 'app:v3', '-m', 'same files']))) as CommitJson;
      assert.notEqual(again.image.id, committed.id, 'another config (time, message)');
      assert.deepEqual(
        again.image.layers.map((l) => l.id),
        committed.layers.map((l) => l.id),
      );
      assert.deepEqual(
        again.reusedLayers,
        committed.layers.map((l) => l.id),
        'every layer reused',
      );
    });

    it('save exports the committed image; a load into another store gives the same id, layers and tree', () => {
      const archive = join(stores.dir, `${driver}-committed.tar`);
      ok(unionctl([...g, 'save', 'app:v2', '-o', archive]));
      const g2 = freshRoot(driver);
      const loaded = JSON.parse(ok(unionctl([...g2, '--json', 'load', archive]))) as { images: ImageJson[] };
      assert.equal(loaded.images[0]!.id, committed.id);
      assert.deepEqual(
        loaded.images[0]!.layers.map((l) => l.diffId),
        committed.layers.map((l) => l.diffId),
      );
      assert.equal(flattenedTree(g2, 'app:v2'), flattenedTree(g, 'app:v2'));
      // skopeo reads the archive as an image with the committed config.
      const skopeo = spawnSync('skopeo', ['inspect', '--config', `docker-archive:${archive}`], { encoding: 'utf8' });
      assert.equal(skopeo.status, 0, skopeo.stderr);
      const config = JSON.parse(skopeo.stdout) as ImageInspection['config'];
      assert.equal(config.author, 'Jane Doe <jane@example.com>');
      assert.deepEqual(
        config.rootfs.diff_ids,
        committed.layers.map((l) => l.diffId),
      );
    });

    it('refuses bad input and changes nothing: an instruction commit cannot apply, a digest as the name, no such layer', () => {
      const root = g[1]!;
      const before = listing(root);
      const cases: Array<[string[], RegExp, number]> = [
        [['commit', 'work', '-c', 'RUN make'], /bad --change "RUN make": RUN is not an instruction/, 1],
        [['commit', 'work', '-c', 'CMD [not json'], /JSON array/, 1],
        [['commit', 'work', '-c', 'EXPOSE http'], /"http" is not a port/, 1],
        [['commit', 'work', `app@sha256:${'0'.repeat(64)}`], /names a digest/, 1],
        [['commit', 'no-such-layer'], /layer no-such-layer does not exist/, 1],
      ];
      for (const [args, message, status] of cases) {
        const r = unionctl([...g, ...args]);
        assert.equal(r.status, status, show(r));
        assert.match(r.stderr, message, show(r));
        assert.equal(r.stdout, '', show(r));
      }
      assert.deepEqual(listing(root), before);
    });

    it('a layer without an image below it (imported by the user) commits with a config of its own', () => {
      const g3 = freshRoot(driver);
      const src = join(stores.dir, `${driver}-plain`);
      rmSync(src, { recursive: true, force: true });
      spawnSync('mkdir', ['-p', src]);
      writeFileSync(join(src, 'hello'), 'hi\n');
      const tar = join(stores.dir, `${driver}-plain.tar`);
      assert.equal(spawnSync('tar', ['-C', src, '-cf', tar, 'hello']).status, 0);
      const layer = ok(unionctl([...g3, 'import', tar])).trim();
      const image = JSON.parse(ok(unionctl([...g3, '--json', 'commit', layer, 'plain']))) as CommitJson;
      assert.equal(image.base, null);
      assert.deepEqual(
        image.image.layers.map((l) => l.id),
        [layer],
      );
      assert.deepEqual(image.reusedLayers, [layer]);
      const [inspected] = JSON.parse(ok(unionctl([...g3, 'inspect', 'plain:latest']))) as ImageInspection[];
      assert.equal(inspected!.config.history.length, 1);
      assert.equal((inspected!.config as unknown as { os: string }).os, 'linux');
    });
  });
}
