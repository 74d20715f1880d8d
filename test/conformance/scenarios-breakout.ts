/**
 * Hostile layer tars (DESIGN.md §3, after Docker's pkg/archive breakout tests) imported through the
 * store into every driver. Each shape aims at a victim dir next to the store; afterwards the victim
 * and everything else outside the layer must be exactly as before. Shapes that can only be refused
 * must fail with an error naming the offending entry and leave the store as it was (the layer is
 * gone); shapes that may also be contained (absolute names and link targets, read relative to the
 * layer root) may succeed, but then only inside the layer.
 */
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { before, describe, it } from 'node:test';
import { DriverFixture } from './fixture.js';
import { snapshot } from './inspect.js';
import { dir, file, hardlink, opaque, symlink, tarOf, tarStream, whiteout, type EntrySpec } from './tars.js';

interface Shape {
  name: string;
  entries: EntrySpec[];
  /** 'refuse': must fail, naming one of `offending`. 'contain': may fail or succeed, but touches nothing outside. */
  expect: 'refuse' | 'contain';
  /** Entry names the error may blame (a symlink pointing out may be refused itself, or the entry that uses it). */
  offending?: string[];
}

/**
 * `up` is the relative path from a layer's own files dir to the victim dir (as deep as the driver's
 * layout needs), `victim` its absolute path.
 */
function shapes(up: string, victim: string): Shape[] {
  const refuse = (name: string, entries: EntrySpec[], ...offending: string[]): Shape => ({ name, entries, expect: 'refuse', offending });
  const contain = (name: string, entries: EntrySpec[]): Shape => ({ name, entries, expect: 'contain' });
  return [
    refuse('a file name climbing out with ..', [file(`${up}/dotdot`, 'x')], `${up}/dotdot`),
    refuse('a dir name climbing out with ..', [dir(`${up}/newdir/`)], `${up}/newdir`),
    refuse('.. in the middle of a name', [dir('a/'), file(`a/../${up}/middle`, 'x')], `a/../${up}/middle`),
    refuse('a hardlink to ../victim/hello', [hardlink('dotdot', `${up}/hello`)], 'dotdot'),
    refuse('a hardlink to an absolute path', [hardlink('abs', `${victim}/hello`)], 'abs'),
    refuse('a file written through a symlink to ..', [symlink('loophole', up), file('loophole/evil', 'x')], 'loophole', 'loophole/evil'),
    refuse('a dir made through a symlink to ..', [symlink('loophole', up), dir('loophole/sub/')], 'loophole', 'loophole/sub'),
    refuse(
      'a hardlink read through a symlink to ..',
      [symlink('loophole', up), hardlink('stolen', 'loophole/hello')],
      'loophole',
      'stolen',
    ),
    refuse('a whiteout through a symlink to ..', [symlink('loophole', up), whiteout('loophole/hello')], 'loophole', 'loophole/.wh.hello'),
    refuse('an opaque marker through a symlink to ..', [symlink('loophole', up), opaque('loophole')], 'loophole', 'loophole/.wh..wh..opq'),
    refuse('a whiteout naming ..', [file('.wh...', '')], '.wh...'),
    refuse('a whiteout climbing out with ..', [whiteout(`${up}/hello`)], `${up}/.wh.hello`),
    refuse('a hardlink to a hardlink to ..', [hardlink('first', `${up}/hello`), hardlink('second', 'first')], 'first'),
    contain('an absolute file name', [file(`${victim}/absolute`, 'x')]),
    contain('a file through an absolute symlink', [symlink('abslink', victim), file('abslink/evil', 'x')]),
    contain('a file through a symlink to the layer root', [symlink('self', '.'), file('self/evil', 'x')]),
    contain('a symlink pointing out, never followed', [symlink('out', `${up}/hello`)]),
    contain('a symlink replaced by a file', [symlink('s', `${up}/hello`), file('s', 'replaced')]),
    contain('a hardlink to a symlink pointing out', [symlink('symlink1', `${up}/hello`), hardlink('hardlink-to-symlink', 'symlink1')]),
    contain('a symlink chain out of the layer', [symlink('step1', 'step2'), symlink('step2', up), file('step1/evil', 'x')]),
  ];
}

/** Inode numbers of every regular file below dir (to prove no victim file was linked in). */
function inodesBelow(dirPath: string): Set<number> {
  const out = new Set<number>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.add(lstatSync(p).ino);
    }
  };
  walk(dirPath);
  return out;
}

export function breakoutScenarios(fx: () => DriverFixture): void {
  describe('hostile layer tars (breakout shapes)', () => {
    let victim = '';
    let up = '';
    before(async () => {
      victim = join(fx().workDir(), 'victim');
      mkdirSync(join(victim, 'sub'), { recursive: true });
      writeFileSync(join(victim, 'hello'), 'hello');
      writeFileSync(join(victim, 'sub', 'file'), 'keep me');
      // Every layer of a driver keeps its files at the same depth below the store root.
      const probe = fx().id('probe');
      await fx().driver.create(probe);
      up = await fx().withOwnFiles(probe, (own) => relative(own, victim));
      await fx().driver.remove(probe);
    });

    // Lock and mount-reference files may appear or change; the store's records and layers may not.
    const storeSnapshot = () => snapshot(fx().root, ['store.lock', 'driver-state', ...fx().storeStateFiles]);

    // Test names are registered before the victim exists: list the shapes with placeholder paths
    // for their names, and build the real ones inside each test.
    for (const index of shapes('UP', '/VICTIM').keys()) {
      it(`withstands shape ${index + 1}: ${shapes('UP', '/VICTIM')[index].name}`, async () => {
        const shape = shapes(up, victim)[index];
        const outside = () => snapshot(fx().scratch.dir, ['store']);
        const outsideBefore = outside();
        const storeBefore = storeSnapshot();
        const layersBefore = (await fx().store.list()).map((l) => l.id);
        const victimInodes = inodesBelow(victim);
        const id = fx().id('hostile');
        let accepted = false;
        try {
          await fx().store.importLayer(tarStream(tarOf(shape.entries)), { id });
          accepted = true;
        } catch (e) {
          const message = (e as Error).message;
          if (shape.offending !== undefined) {
            assert.ok(
              shape.offending.some((name) => message.includes(name)),
              `the error names one of ${shape.offending.join(', ')}: ${message}`,
            );
          }
        }
        assert.deepEqual(outside(), outsideBefore, 'nothing outside the store changed');
        if (shape.expect === 'refuse') assert.equal(accepted, false, 'the tar is refused');
        if (accepted) {
          await fx().withOwnFiles(id, (own) => {
            for (const ino of inodesBelow(own)) assert.ok(!victimInodes.has(ino), 'no victim file is linked into the layer');
          });
          await fx().store.remove(id);
        } else {
          assert.deepEqual(
            (await fx().store.list()).map((l) => l.id),
            layersBefore,
            'the refused layer is gone',
          );
          assert.equal(await fx().driver.exists(id), false);
          assert.deepEqual(storeSnapshot(), storeBefore, 'the store is as it was');
        }
      });
    }
  });
}
