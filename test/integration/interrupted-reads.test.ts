/**
 * Reads of a layer that stop half-way, and reads that race a removal, per driver (vfs, overlay2,
 * overlay, aufs through fuse-overlayfs):
 * - a `diff` whose reader goes away (EPIPE), a `diff` interrupted by SIGINT, an interrupted
 *   `changes` and a naive diff interrupted while it holds a union's mount leave no mount, no
 *   reference file and no FUSE process behind, and end by the signal;
 * - while a layer's diff is being read (in this process, or by another `unionctl diff` process),
 *   rmi of its image and rm of the layer refuse with IN_USE and change nothing; once the read is
 *   over they succeed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { listImages, loadImages, openStore, removeImage, UnionctlError } from '../../src/index.js';
import { CLI_MAIN, runCli, showResult } from '../helpers/cli.js';
import { makeScratch, scratchMissing, type Scratch } from '../helpers/scratch.js';
import { fuseProcessesUnder } from '../helpers/store-state.js';
import { makeLayerTar, writeOciLayout } from './images-helpers.js';

const DRIVERS = ['vfs', 'overlay2', 'overlay', 'aufs'] as const;

/** Mount points below `dir` (this mount namespace). */
function mountsBelow(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((point) => point.startsWith(`${dir}/`));
}

/** Reference files the driver keeps (none when nobody holds a layer). */
function referenceFiles(root: string, driver: string): string[] {
  try {
    return readdirSync(join(root, 'driver-state', driver, 'refs'));
  } catch {
    return [];
  }
}

/**
 * No mount and no FUSE process left, right away; and once the next command has opened the store
 * (which drops the reference files of processes that died), no reference file either.
 */
function assertNothingLeft(root: string, driver: string, after: string): void {
  assert.deepEqual(mountsBelow(root), [], `${after}: no mount left`);
  assert.deepEqual(fuseProcessesUnder(root), [], `${after}: no FUSE process left`);
  const ls = runCli(['--root', root, '--driver', driver, 'ls']);
  assert.equal(ls.status, 0, showResult(ls));
  assert.deepEqual(referenceFiles(root, driver), [], `${after}: no reference file left after the next open`);
}

/** Starts `unionctl diff` of `layer` with its stdout a pipe nobody reads yet; resolves once the first bytes came. */
async function startDiff(root: string, driver: string, layer: string, ...more: string[]) {
  const child = spawn(process.execPath, [CLI_MAIN, '--root', root, '--driver', driver, 'diff', layer, ...more], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  await once(child.stdout, 'readable');
  child.stdout.pause();
  return { child, exited, stderr: () => stderr };
}

/** Drivers whose layers are whole directory trees: reading one mounts nothing. */
const MOUNTLESS_READS = new Set(['vfs', 'overlay']);

/**
 * Runs `unionctl changes TOP` and stops it with SIGINT at some point of its run (its mount, where
 * it makes one, is held only briefly: the naive diff below is the test that hits a held mount). It
 * ends by the signal, or with status 0 when it was done first, and prints nothing.
 */
async function interruptChanges(root: string, driver: string, top: string): Promise<void> {
  const changes = spawn(process.execPath, [CLI_MAIN, '--root', root, '--driver', driver, 'changes', top], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  changes.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(changes, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  await sleep(150); // long enough for it to have opened the store and started
  changes.kill('SIGINT');
  const [status, signal] = await exited;
  assert.ok(signal === 'SIGINT' || status === 0, `changes ended by SIGINT or was done first, not with status ${status}: ${stderr}`);
  assert.equal(stderr, '', 'an interrupted changes prints nothing');
}

describe('interrupted and racing reads of a layer', { skip: scratchMissing }, () => {
  let scratch: Scratch;
  let image = '';
  let siblingTar = '';
  before(() => {
    scratch = makeScratch({ size: '2g' });
    const files: Record<string, string | Buffer> = { 'big/blob': Buffer.alloc(8 << 20, 0x61) };
    for (let i = 0; i < 2000; i++) files[`many/f${i}`] = `file ${i}\n`;
    const base = makeLayerTar(scratch.dir, 'base', { 'etc/os-release': 'ID=test\n' });
    const top = makeLayerTar(scratch.dir, 'top', files);
    image = writeOciLayout(join(scratch.dir, 'image'), { name: 'reads:1', layers: [{ tar: base }, { tar: top }] });
    siblingTar = join(scratch.dir, 'sibling.tar');
    writeFileSync(siblingTar, makeLayerTar(scratch.dir, 'sibling', { 'etc/hostname': 'sibling\n' }));
  });
  after(() => scratch?.dispose());

  for (const driver of DRIVERS) {
    describe(driver, () => {
      let root = '';
      let baseLayer = '';
      let topLayer = '';
      before(async () => {
        root = join(scratch.dir, `store-${driver}`);
        const store = await openStore({ root, driver });
        try {
          const [loaded] = await loadImages(store, image);
          assert.ok(loaded);
          baseLayer = loaded.layers[0]!.id;
          topLayer = loaded.layers.at(-1)!.id;
        } finally {
          await store.close();
        }
      });

      it('diff into a closed pipe, diff stopped by SIGINT, changes stopped by SIGINT: nothing left', async () => {
        for (const signal of ['SIGPIPE-reader-gone', 'SIGINT'] as const) {
          const diff = await startDiff(root, driver, topLayer);
          if (signal === 'SIGINT') diff.child.kill('SIGINT');
          else diff.child.stdout.destroy(); // the reader goes away: the next write is EPIPE
          const [status, sig] = await diff.exited;
          assert.ok(status !== 0 || sig !== null, `diff (${signal}) did not stop: ${diff.stderr()}`);
          if (signal !== 'SIGINT') assert.equal(status, 141, 'a reader gone is exit 141, as after SIGPIPE');
          assert.doesNotMatch(diff.stderr(), /internal error/);
          assertNothingLeft(root, driver, `diff (${signal})`);
        }
        await interruptChanges(root, driver, topLayer);
        assertNothingLeft(root, driver, 'changes (SIGINT)');

        // A naive diff (TOP against a sibling on BASE) holds both unions while it streams TOP's 8 MiB
        // into a pipe nobody reads: the signal comes while the mounts are held, and the process
        // unmounts them before it ends by the signal.
        const imported = runCli(['--root', root, '--driver', driver, 'import', '--parent', baseLayer, siblingTar]);
        assert.equal(imported.status, 0, showResult(imported));
        const sibling = imported.stdout.trim();
        const naive = await startDiff(root, driver, topLayer, '--parent', sibling);
        if (!MOUNTLESS_READS.has(driver)) assert.notDeepEqual(mountsBelow(root), [], 'the naive diff holds a mount');
        naive.child.kill('SIGINT');
        const [, sig] = await naive.exited;
        assert.equal(sig, 'SIGINT', `the naive diff ended by SIGINT: ${naive.stderr()}`);
        assert.equal(naive.stderr(), '', 'an interrupted diff prints nothing');
        assertNothingLeft(root, driver, 'naive diff (SIGINT)');
        const rm = runCli(['--root', root, '--driver', driver, 'rm', sibling]);
        assert.equal(rm.status, 0, showResult(rm));
      });

      it('rmi and rm refuse while a diff is being read, in this process and by another one', async () => {
        const store = await openStore({ root, driver });
        try {
          const stream = await store.diff(topLayer);
          await assert.rejects(removeImage(store, 'reads:1'), (e: unknown) => {
            return e instanceof UnionctlError && e.code === 'IN_USE' && /being read|mounted/.test(e.message);
          });
          await assert.rejects(store.remove(topLayer), { code: 'IN_USE' });
          assert.equal((await listImages(store)).length, 1, 'the image is still there');
          const ended = once(stream, 'close');
          stream.destroy();
          await ended;
          await sleep(50); // the release runs on 'close'
          assert.deepEqual(referenceFiles(root, driver), [], 'released when the stream closed');
        } finally {
          await store.close();
        }

        const diff = await startDiff(root, driver, topLayer);
        try {
          const rmi = runCli(['--root', root, '--driver', driver, 'rmi', 'reads:1']);
          assert.equal(rmi.status, 1, showResult(rmi));
          assert.match(rmi.stderr, /in use/);
          const rm = runCli(['--root', root, '--driver', driver, 'rm', topLayer]);
          assert.equal(rm.status, 1, showResult(rm));
          const images = runCli(['--root', root, '--driver', driver, 'images']);
          assert.match(images.stdout, /reads/, 'the image is still there');
        } finally {
          diff.child.kill('SIGKILL');
          await diff.exited;
        }
        // The reader died: its hold no longer counts.
        const rmi = runCli(['--root', root, '--driver', driver, 'rmi', 'reads:1']);
        assert.equal(rmi.status, 0, showResult(rmi));
        assertNothingLeft(root, driver, 'rmi');
      });
    });
  }
});
