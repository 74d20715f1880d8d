import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { sha256File, writeImageArchive } from '../../bench/image-archive.js';
import { prng, seededBytes, type SyntheticShape } from '../../bench/synthetic-layer.js';
import { buildDeepChain, buildSyntheticLayer, buildWhiteoutLayers, deepFileOf, pickDistinct } from '../../bench/workloads.js';
import { scratchMissing, withScratchFs } from '../helpers/scratch.js';

const SHAPE: SyntheticShape = { smallFiles: 60, largeFiles: 2, largeMean: 200_000, dirs: 20, symlinks: 5, hardlinks: 3, xattrs: 4 };
const list = (tar: string) => execFileSync('tar', ['-tvf', tar, '--numeric-owner']).toString().trim().split('\n');
const names = (tar: string) => execFileSync('tar', ['-tf', tar]).toString().trim().split('\n');

describe('bench workloads', () => {
  it('seeded bytes are the same for a seed and differ between seeds', () => {
    assert.deepEqual(seededBytes(1001, 5), seededBytes(1001, 5));
    assert.notDeepEqual(seededBytes(64, 5), seededBytes(64, 6));
    assert.equal(seededBytes(1001, 5).length, 1001);
  });

  it('picks distinct items deterministically', () => {
    const xs = Array.from({ length: 50 }, (_, i) => i);
    const a = pickDistinct(xs, 20, prng(1));
    assert.equal(new Set(a).size, 20);
    assert.deepEqual(a, pickDistinct(xs, 20, prng(1)));
  });

  it('a synthetic layer packs to the same tar for the same seed, another for another seed', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t);
    for (const d of ['a', 'b', 'c']) mkdirSync(join(dir, d));
    const a = buildSyntheticLayer(join(dir, 'a'), 'layer', SHAPE, 42);
    const b = buildSyntheticLayer(join(dir, 'b'), 'layer', SHAPE, 42);
    const c = buildSyntheticLayer(join(dir, 'c'), 'layer', SHAPE, 43);
    assert.equal(await sha256File(a.path), await sha256File(b.path));
    assert.notEqual(await sha256File(a.path), await sha256File(c.path));
    const entries = list(a.path);
    assert.equal(entries.length, a.entries);
    assert.equal(entries.filter((l) => l.startsWith('-')).length, SHAPE.smallFiles + SHAPE.largeFiles, 'regular files');
    assert.equal(entries.filter((l) => l.startsWith('l')).length, SHAPE.symlinks);
    assert.equal(entries.filter((l) => l.startsWith('h')).length, SHAPE.hardlinks);
    const xattrs = execFileSync('tar', ['--xattrs', '-tvvf', a.path])
      .toString()
      .split('\n')
      .filter((l) => l.includes('user.bench.origin'));
    assert.ok(xattrs.length >= 1 && xattrs.length <= SHAPE.xattrs!, `${xattrs.length} files with xattrs`);
  });

  it('the whiteout upper layer deletes base files and makes dirs opaque, the same way every time', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t);
    const sizes = { base: { ...SHAPE, smallFiles: 200, dirs: 30 }, deletions: 25, replacedDirs: 3, filesPerReplacedDir: 2 };
    mkdirSync(join(dir, 'a'));
    mkdirSync(join(dir, 'b'));
    const a = buildWhiteoutLayers(join(dir, 'a'), sizes, 9);
    const b = buildWhiteoutLayers(join(dir, 'b'), sizes, 9);
    assert.equal(await sha256File(a.upper.path), await sha256File(b.upper.path));
    const upper = names(a.upper.path);
    const base = new Set(names(a.base.path).map((n) => n.replace(/\/$/, '')));
    const deletions = upper.filter((n) => /\/\.wh\.[^/]+$/.test(n) && !n.endsWith('.wh..wh..opq'));
    const opaque = upper.filter((n) => n.endsWith('/.wh..wh..opq'));
    assert.equal(deletions.length, 25);
    assert.equal(opaque.length, 3);
    for (const d of deletions) assert.ok(base.has(d.replace('/.wh.', '/')), `${d} deletes a file of the base`);
    for (const o of opaque) assert.ok(base.has(o.replace('/.wh..wh..opq', '')), `${o} is in a dir of the base`);
  });

  it('the deep chain puts one file in each layer', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t);
    const chain = buildDeepChain(dir, 3);
    assert.equal(chain.length, 3);
    chain.forEach((layer, i) => assert.ok(names(layer.path).includes(`./${deepFileOf(i + 1)}`), names(layer.path).join(' ')));
  });

  it('the image archive is docker-save format and byte-identical for the same layers', { skip: scratchMissing }, async (t) => {
    const dir = await withScratchFs(t);
    const layers = buildDeepChain(dir, 2);
    const a = await writeImageArchive(join(dir, 'a.tar'), layers);
    const b = await writeImageArchive(join(dir, 'b.tar'), layers);
    assert.equal(await sha256File(a.path), await sha256File(b.path));
    const manifest = JSON.parse(execFileSync('tar', ['-xOf', a.path, 'manifest.json']).toString());
    assert.equal(manifest.length, 1);
    assert.deepEqual(manifest[0].RepoTags, ['unionctl-bench/image:latest']);
    const config = execFileSync('tar', ['-xOf', a.path, manifest[0].Config]);
    assert.equal(`${createHash('sha256').update(config).digest('hex')}.json`, manifest[0].Config, 'config named by its digest');
    const diffIds = JSON.parse(config.toString()).rootfs.diff_ids;
    assert.deepEqual(diffIds, await Promise.all(layers.map(async (l) => `sha256:${await sha256File(l.path)}`)));
    assert.deepEqual(
      manifest[0].Layers,
      diffIds.map((d: string) => `${d.slice(7)}/layer.tar`),
    );
    const inner = execFileSync('tar', ['-xOf', a.path, manifest[0].Layers[1]]);
    assert.deepEqual(inner, readFileSync(layers[1].path));
  });
});
