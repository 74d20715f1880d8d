/**
 * Issue 11's cross-process race, as the CLI meets it: 16 processes at once, each running its own
 * mixed cycle of `unionctl mount` / `unionctl umount` (212 operations in all) on sibling layers
 * that share a parent (overlay2, real mounts). Every operation must succeed; every mount's path
 * must be mounted and show the parent's files when the command returns, whatever the others are
 * doing to the siblings; afterwards every count is zero, nothing is mounted, and no reference or
 * lock file is left. (The mount lifecycle, src/graph/mounts.ts, is what makes this safe: one lock
 * per layer, counts across processes, the mount point removed only by the unmount of its own layer.)
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openStore } from '../../src/index.js';
import { prng, unionctl } from '../helpers/faults.js';
import { mountAt, mountsBelow } from '../helpers/mounts.js';
import { withScratchFs } from '../helpers/scratch.js';
import { makeLayerTar } from './images-helpers.js';

const PROCESSES = 16;
const OPERATIONS = 212;

type Op = { kind: 'mount' | 'umount'; id: string };

/**
 * Each process's cycle: mounts and umounts of random layers, every umount giving back one of its
 * own mounts, ending with none held; `pairs` mounts and as many umounts.
 */
function cycle(pairs: number, layers: string[], random: () => number): Op[] {
  const ops: Op[] = [];
  const held: string[] = [];
  let mounts = 0;
  while (ops.length < pairs * 2) {
    const mountNow = mounts < pairs && (held.length === 0 || random() < 0.55);
    if (mountNow) {
      const id = layers[Math.floor(random() * layers.length)]!;
      held.push(id);
      mounts++;
      ops.push({ kind: 'mount', id });
    } else {
      const [id] = held.splice(Math.floor(random() * held.length), 1);
      ops.push({ kind: 'umount', id: id! });
    }
  }
  return ops;
}

describe('cross-process mount race (overlay2)', () => {
  it(
    `${PROCESSES} processes, ${OPERATIONS} mount/umount operations on sibling layers sharing a parent: all succeed, nothing is left`,
    { timeout: 15 * 60_000 },
    async (t) => {
      const scratch = await withScratchFs(t, { size: '1g' });
      const root = join(scratch, 'store');
      const tar = (name: string, files: Record<string, string>) => {
        const path = join(scratch, `${name}.tar`);
        writeFileSync(path, makeLayerTar(scratch, name, files));
        return path;
      };
      const store = await openStore({ root, driver: 'overlay2' });
      t.after(() => unionctl(['--root', root, '--driver', 'overlay2', 'cleanup']));
      await store.importLayer(tar('base', { 'etc/os-release': 'ID=race\n' }), { id: 'base' });
      await store.importLayer(tar('parent', { 'srv/parent': 'p\n' }), { id: 'parent', parent: 'base' });
      for (const s of ['a', 'b']) await store.importLayer(tar(s, { [`srv/${s}`]: `${s}\n` }), { id: `img-${s}`, parent: 'parent' });
      for (const w of ['a', 'b', 'c']) await store.create({ id: `rw-${w}`, parent: 'parent', writable: true });
      const layers = ['parent', 'img-a', 'img-b', 'rw-a', 'rw-b', 'rw-c'];

      // 106 mount/umount pairs over 16 processes: 10 of them do 7 pairs, 6 do 6.
      const random = prng(212);
      const cycles = Array.from({ length: PROCESSES }, (_, i) => cycle(i < 10 ? 7 : 6, layers, random));
      assert.equal(
        cycles.reduce((n, c) => n + c.length, 0),
        OPERATIONS,
      );

      // The CLI as users run it (the default libuv pool, unlike the crash sweep's single thread).
      const env: NodeJS.ProcessEnv = { ...process.env };
      delete env.FORCE_COLOR;
      const failures: string[] = [];
      await Promise.all(
        cycles.map(async (ops, p) => {
          for (const [i, op] of ops.entries()) {
            const r = await unionctl(['--root', root, '--driver', 'overlay2', op.kind, op.id], { env, timeoutMs: 5 * 60_000 });
            const what = `process ${p}, operation ${i + 1} (${op.kind} ${op.id})`;
            if (r.status !== 0) {
              failures.push(`${what}: exit ${r.status ?? r.signal}: ${r.stderr.trim()}`);
              continue;
            }
            if (op.kind === 'umount') continue;
            // This process still holds the mount: whatever the others do, the view must be there.
            const path = r.stdout.trim().split('\n').pop() ?? '';
            if (mountAt(path)?.fsType !== 'overlay') failures.push(`${what}: ${path} is not mounted when the command returns`);
            else if (!existsSync(join(path, 'srv', 'parent')) || readFileSync(join(path, 'etc', 'os-release'), 'utf8') !== 'ID=race\n')
              failures.push(`${what}: ${path} does not show the parent's and the base's files`);
          }
        }),
      );
      assert.deepEqual(failures, [], `${failures.length} of ${OPERATIONS} operations failed`);

      for (const id of ['base', ...layers])
        assert.deepEqual(
          store.references(id),
          { persistent: 0, processes: [], readers: [], heldBy: [], total: 0, mounted: false },
          `layer ${id}`,
        );
      assert.deepEqual(
        mountsBelow(root).map((m) => m.mountPoint),
        [],
        'nothing is mounted',
      );
      const state = join(root, 'driver-state', 'overlay2');
      assert.deepEqual(readdirSync(join(state, 'refs')), [], 'no reference file is left');
      assert.deepEqual(readdirSync(join(state, 'locks')), [], 'no lock file is left');
      for (const id of layers)
        assert.equal(existsSync(join(root, 'overlay2', id, 'merged')), false, `${id}/merged is removed with its last unmount`);
      await store.close();
    },
  );
});
