/**
 * A load that cannot finish leaves the store as it was:
 * - the disk fills up in the middle of a layer (the store on a small loop-mounted ext4);
 * - the process is SIGKILLed while applying its second layer: the next command that opens the
 *   store rolls back the half layer and the complete first layer (no image record points at it).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { mountsBelow } from '../helpers/mounts.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { assertCleanFailure, listing, makeLayerTar, MAIN, ok, unionctl, writeOciLayout } from './images-helpers.js';

let scratchFs: Scratch;
let scratch = '';

before(() => {
  scratchFs = makeScratch();
  scratch = scratchFs.dir;
});

after(() => scratchFs.dispose());

/** Pseudo-random bytes (incompressible, so a filesystem cannot store them in less space). */
function noise(size: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, i);
  }
  return out;
}

function smallImage(name: string): string {
  return writeOciLayout(join(scratch, name), {
    name: `${name}:1`,
    layers: [{ tar: makeLayerTar(scratch, name, { 'etc/hostname': `${name}\n` }) }],
  });
}

describe('load interrupted', () => {
  it('by a full disk: one error naming the layer, the store unchanged', (t) => {
    const image = join(scratch, 'ext4.img');
    const mnt = join(scratch, 'small');
    mkdirSync(mnt);
    execFileSync('truncate', ['-s', '48M', image]);
    execFileSync('mkfs.ext4', ['-q', '-F', image]);
    execFileSync('mount', ['-o', 'loop', image, mnt]);
    t.after(() => {
      unionctl(['--root', join(mnt, 'root'), 'cleanup']);
      execFileSync('umount', [mnt]);
    });
    for (const driver of ['overlay2', 'vfs']) {
      const g = ['--root', join(mnt, 'root'), '--driver', driver];
      ok(unionctl([...g, 'load', smallImage(`before-${driver}`)]));
      const big = writeOciLayout(join(scratch, `big-${driver}`), {
        name: 'big:1',
        layers: [
          { tar: makeLayerTar(scratch, `base-${driver}`, { 'etc/os-release': 'ID=test\n', 'usr/lib/a.bin': noise(4 << 20, 1) }) },
          { tar: makeLayerTar(scratch, `fill-${driver}`, { 'usr/share/huge.bin': noise(64 << 20, 2) }), compression: 'gzip' },
        ],
      });
      const before = listing(join(mnt, 'root'));
      const r = unionctl([...g, 'load', big]);
      assertCleanFailure(r, /layer 2 of image big:1.*(ENOSPC|no space left)/i);
      assert.match(r.stderr, /free space/);
      assert.deepEqual(listing(join(mnt, 'root')), before, `${driver}: the store root is unchanged`);
      assert.deepEqual(mountsBelow(mnt), [], 'nothing mounted');
      ok(unionctl([...g, 'rmi', `before-${driver}:1`]));
    }
  });

  it('by SIGKILL during the second layer: the next open rolls the whole load back', async () => {
    const g = ['--root', join(scratch, 'root-kill'), '--driver', 'overlay2'];
    ok(unionctl([...g, 'load', smallImage('kept')]));
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 12000; i++) files[`usr/share/d${i % 60}/f${i}`] = noise(1024, i + 7);
    const archive = writeOciLayout(join(scratch, 'killme'), {
      name: 'killme:1',
      layers: [{ tar: makeLayerTar(scratch, 'kill-base', { 'etc/motd': 'one\n' }) }, { tar: makeLayerTar(scratch, 'kill-big', files) }],
    });
    const root = g[1];
    const before = listing(root);

    const child = spawn(process.execPath, [MAIN, ...g, 'load', archive], { stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    // Wait until the load journal names two layers and the second one is being created.
    const deadline = Date.now() + 30_000;
    let secondLayer: string | undefined;
    while (Date.now() < deadline && secondLayer === undefined && child.exitCode === null) {
      const journal = existsSync(join(root, 'images')) ? readdirSync(join(root, 'images')).find((f) => f.startsWith('.load-')) : undefined;
      if (journal !== undefined) {
        try {
          const layers = (JSON.parse(readFileSync(join(root, 'images', journal), 'utf8')) as { created: string[] }).created;
          if (layers.length === 2 && existsSync(join(root, 'layerdb', `${layers[1]}.json`))) secondLayer = layers[1];
        } catch {
          /* being written */
        }
      }
      await sleep(5);
    }
    child.kill('SIGKILL');
    await exited;
    assert.ok(secondLayer !== undefined, 'the load was killed while applying its second layer');
    const state = (JSON.parse(readFileSync(join(root, 'layerdb', `${secondLayer}.json`), 'utf8')) as { state: string }).state;
    assert.equal(state, 'creating', 'the second layer was half made when the process died');
    assert.notDeepEqual(listing(root), before, 'the killed load had changed the store');

    // Any command opens the store, which rolls back what the dead load left.
    const images = JSON.parse(ok(unionctl([...g, '--json', 'images']))) as Array<{ names: string[] }>;
    assert.deepEqual(
      images.map((i) => i.names),
      [['kept:1']],
    );
    assert.deepEqual(listing(root), before, 'the store root is as before the load');
    assert.deepEqual(mountsBelow(scratch), []);
  });
});
