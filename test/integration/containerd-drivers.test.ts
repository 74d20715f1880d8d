/**
 * `unionctl serve` as containerd's snapshotter on the other drivers that yield mounts (overlay2 has
 * its own file, containerd-snapshotter.test.ts): overlay (v1) with overlay mounts and committed
 * layers turned into root/ farms, aufs with fuse-overlayfs mounts that containerd makes through
 * mount.fuse3, and vfs with binds. Against Debian's containerd 1.6 started privately, for each
 * driver: the import (a Prepare and a Commit per layer) gives store layers with the image's chain
 * IDs in the driver's image-layer format; `ctr run` runs the image with its whiteouts and opaque dir
 * honoured; a container's changes (a change, a deletion, a dir replaced) survive Commit and show in
 * a View and in a child; removing the image lets the GC remove every snapshot and layer; no mount,
 * FUSE process or work dir is left; a server killed mid-Commit (overlay: at and right after the
 * root/ farm's rename) leaks nothing once restarted and the import is redone.
 */
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { containerdAvailable } from '../../bench/peers/containerd.js';
import { fuseUnsupportedReason } from '../../src/drivers/aufs/fuse.js';
import { llistxattr } from '../../src/sys/index.js';
import { fuseProcessesNaming, withRuntimeMount } from '../helpers/runtime-mount.js';
import { toolsMissing } from '../helpers/requires.js';
import { scratchMissing } from '../helpers/scratch.js';
import { type WireMount } from '../helpers/snapshots-client.js';
import { eventually } from '../helpers/wait.js';
import { CHAIN_IDS, IMAGE, SnapshotterRig, type ListedLayer } from './containerd-rig.js';

const baseSkip = scratchMissing ?? (containerdAvailable() ? undefined : 'containerd, ctr or runc is not installed');

interface DriverCase {
  driver: 'overlay' | 'aufs' | 'vfs';
  /** The fsType of the container's root in its /proc/mounts. */
  rootFsType: RegExp;
  skip?: string;
  /**
   * Renames (of the server, in an import on an empty store) to kill the server at: overlay's 19th
   * is the first root/ farm's rename at a Commit (killed at it: the farm is left in the layer dir),
   * the 20th the journal of that Commit's transaction right after it (root/ made, the record still
   * writable).
   */
  killAt: number[];
  /** Checks that the kill at rename `when` hit what it is meant to (the store as the killed server left it). */
  killedState?(home: string, when: number, layers: ListedLayer[]): void;
  /** Checks a committed (image) layer is in the driver's image-layer format. */
  imageLayerFormat(home: string, id: string): void;
}

const entries = (dir: string) => (existsSync(dir) ? readdirSync(dir).sort() : []);

const CASES: DriverCase[] = [
  {
    driver: 'overlay',
    rootFsType: /^overlay$/,
    killAt: [19, 20],
    killedState(home, when, layers) {
      const partial = layers.filter((l) => l.writable && existsSync(join(home, l.id, 'upper')) === (when === 19));
      const dirs = partial.map((l) => entries(join(home, l.id)));
      if (when === 19)
        assert.ok(
          dirs.some((d) => d.some((n) => n.startsWith('tmproot'))),
          `a farm left beside the upper: ${JSON.stringify(dirs)}`,
        );
      else
        assert.ok(
          dirs.some((d) => d.includes('root')),
          `a writable layer already a root/ farm: ${JSON.stringify(dirs)}`,
        );
    },
    imageLayerFormat(home, id) {
      assert.deepEqual(entries(join(home, id)), ['root'], `overlay layer ${id}: a root/ farm, no upper/work/lower-id`);
    },
  },
  {
    driver: 'aufs',
    rootFsType: /^fuse\.fuse-overlayfs$/,
    killAt: [20],
    skip: fuseUnsupportedReason(),
    imageLayerFormat(home, id) {
      assert.ok(lstatSync(join(home, 'diff', id)).isDirectory());
      const walk = (dir: string): void => {
        for (const name of readdirSync(dir)) {
          const p = join(dir, name);
          const st = lstatSync(p);
          assert.ok(!(st.isCharacterDevice() && st.rdev === 0), `${p}: an overlay whiteout left in the aufs branch`);
          assert.deepEqual(
            llistxattr(p).filter((x) => /overlay/.test(x)),
            [],
            `${p}: fuse-overlayfs xattrs left`,
          );
          if (st.isDirectory()) walk(p);
        }
      };
      walk(join(home, 'diff', id));
    },
  },
  {
    driver: 'vfs',
    rootFsType: /.*/,
    killAt: [],
    imageLayerFormat(home, id) {
      assert.ok(lstatSync(join(home, 'dir', id)).isDirectory());
    },
  },
];

for (const c of CASES) {
  describe(`unionctl serve on the ${c.driver} driver: a containerd snapshotter`, { skip: baseSkip ?? c.skip }, () => {
    let rig: SnapshotterRig;
    let root = '';
    let home = '';
    const layers = () => rig.layers();
    const snapshotDocs = () => rig.snapshotDocs();
    const snapshots = () => rig.snapshots();
    const noFuseLeft = () =>
      eventually('no fuse-overlayfs process of this test is left', () => fuseProcessesNaming(rig.scratch.dir).length === 0);

    /** No layer, writable mark or workdir in the driver's dirs, nothing mounted, no FUSE process. */
    const nothingLeft = async () => {
      const leftovers = {
        overlay: () => entries(home),
        aufs: () => [...entries(join(home, 'diff')), ...entries(join(home, 'layers')), ...entries(join(home, 'mnt'))],
        vfs: () => entries(join(home, 'dir')),
      }[c.driver]();
      assert.deepEqual(leftovers, [], `the ${c.driver} home holds no layer`);
      const state = join(root, 'driver-state', c.driver);
      for (const sub of ['rw', 'work', 'spec-work']) assert.deepEqual(entries(join(state, sub)), [], `driver-state/${sub} is empty`);
      assert.equal(
        readFileSync('/proc/self/mountinfo', 'utf8')
          .split('\n')
          .filter((l) => l.includes(root)).length,
        0,
        'nothing of the store is mounted',
      );
      await noFuseLeft();
    };

    before(async () => {
      rig = await SnapshotterRig.start(c.driver);
      root = rig.root;
      home = join(root, c.driver);
    });

    after(async () => {
      // A FUSE process is killed only after a failure: the tests assert there is none.
      await rig?.stop(() => fuseProcessesNaming(rig.scratch.dir).forEach((pid) => process.kill(pid, 'SIGKILL')));
    });

    it('ctr images import commits every layer: store layers with the chain IDs, in the image-layer format', async () => {
      const made = rig.importSample();
      for (const l of made) c.imageLayerFormat(home, l.id);
      await noFuseLeft();
    });

    it('ctr run starts the container on the store layers; whiteouts and the opaque dir hold inside', async () => {
      const rootMount = rig.runSample();
      assert.match(rootMount.split(' ')[2]!, c.rootFsType, rootMount);
      await eventually('the GC removed the container snapshots', () => snapshots().length === 4);
      await rig.gcSettled(); // the next test makes snapshots containerd does not know: no GC may run meanwhile
      await noFuseLeft();
    });

    it("a container's changes survive Commit: a View and a child show them, the view is read-only", async () => {
      const top = (await rig.client.list([`name~=${CHAIN_IDS[3]!.slice(7)}$`]))[0]!.name;
      const target = join(rig.scratch.dir, 'mnt');
      mkdirSync(target, { recursive: true });
      const mounted = (mounts: WireMount[], fn: () => void) => withRuntimeMount(mounts, target, fn);
      const rw = (await rig.client.call<{ mounts: WireMount[] }>('Prepare', { key: 'c/1', parent: top })).mounts;
      await mounted(rw, () => {
        writeFileSync(join(target, 'srv/app/etc/app.conf'), 'changed\n');
        rmSync(join(target, 'srv/app/etc/logging.conf'));
        rmSync(join(target, 'srv/app/extras'), { recursive: true });
        mkdirSync(join(target, 'srv/app/extras'));
        writeFileSync(join(target, 'srv/app/extras/only.txt'), 'only\n');
        writeFileSync(join(target, 'new.txt'), 'new\n');
      });
      await rig.client.call('Commit', { name: 'c/committed', key: 'c/1' });
      const check = () => {
        assert.equal(readFileSync(join(target, 'srv/app/etc/app.conf'), 'utf8'), 'changed\n');
        assert.equal(existsSync(join(target, 'srv/app/etc/logging.conf')), false, 'the deletion holds');
        assert.ok(existsSync(join(target, 'srv/app/etc/features.ini')), 'the rest of the dir is there');
        assert.deepEqual(readdirSync(join(target, 'srv/app/extras')), ['only.txt'], 'the replaced dir shows only its new content');
        assert.equal(readFileSync(join(target, 'new.txt'), 'utf8'), 'new\n');
        assert.equal(readFileSync(join(target, 'srv/app/releases/v2/VERSION'), 'utf8').length > 0, true);
      };
      const view = (await rig.client.call<{ mounts: WireMount[] }>('View', { key: 'c/v', parent: 'c/committed' })).mounts;
      await mounted(view, () => {
        check();
        assert.throws(() => writeFileSync(join(target, 'x'), 'x'), /EROFS|EPERM|EACCES/);
      });
      const child = (await rig.client.call<{ mounts: WireMount[] }>('Prepare', { key: 'c/2', parent: 'c/committed' })).mounts;
      await mounted(child, check);
      const committed = layers().find((l) => !CHAIN_IDS.includes(l.chainId ?? '') && !l.writable);
      assert.ok(committed !== undefined, 'the committed layer is an image layer');
      c.imageLayerFormat(home, committed.id);
      for (const key of ['c/2', 'c/v', 'c/committed']) await rig.client.call('Remove', { key });
      assert.equal(layers().length, 4);
    });

    it('removing the image lets the GC remove its snapshots and layers; nothing is left', async () => {
      rig.cd!.ctr(['images', 'rm', '--sync', IMAGE]);
      await eventually('no snapshots left', () => snapshots().length === 0);
      await eventually('no layers and no snapshot records left', () => layers().length === 0 && snapshotDocs().length === 0);
      await nothingLeft();
    });

    for (const when of c.killAt) {
      it(
        `a server killed at its rename no. ${when} (mid-Commit) leaks nothing: restarted, the import is redone`,
        { skip: toolsMissing(['strace']) },
        async () => {
          await rig.killedImportRedone(when, () => c.killedState?.(home, when, layers()));
          await nothingLeft();
        },
      );
    }
  });
}
