/**
 * applyLayer must never create, change or read anything outside the layer. Every shape of
 * Docker's pkg/archive breakout tests (TestUntarInvalidFilenames, TestUntarInvalidHardlink,
 * TestUntarInvalidSymlink, TestUntarHardlinkToSymlink, TestChrootApplyDotDotFile,
 * TestApplyLayerWhiteouts with "..") plus the write-through-a-symlink shapes Docker leaves to
 * its chroot: each malicious tar is applied into <tmp>/dest next to <tmp>/victim, in every
 * whiteout format, and the victim must be exactly as before.
 */
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { applyLayer } from '../../src/archive/apply.js';
import { UnionctlError, UnsafeEntryError } from '../../src/errors.js';
import type { WhiteoutFormat } from '../../src/graph/driver.js';
import { makeScratch, scratchMissing, type Scratch } from '../helpers/scratch.js';
import { buildTar, chunked, type TarSpec } from '../helpers/tarbuild.js';

const FORMATS: WhiteoutFormat[] = ['plain', 'overlay', 'aufs'];

let scratch: Scratch | undefined;
let counter = 0;
// Every suite below skips without root (scratchMissing); the file's scratch is made only when they run.
before(() => {
  if (scratchMissing === undefined) scratch = makeScratch({ size: '256m' });
});
after(() => scratch?.dispose());

interface Sandbox {
  root: string;
  dest: string;
  victim: string;
  lower: string;
}

/** <root>/dest (empty), <root>/victim (a file and a dir to steal or destroy), <root>/lower (a parent layer). */
function sandbox(): Sandbox {
  const root = join(scratch!.dir, `case-${counter++}`);
  const s = { root, dest: join(root, 'dest'), victim: join(root, 'victim'), lower: join(root, 'lower') };
  mkdirSync(s.dest, { recursive: true });
  mkdirSync(join(s.victim, 'dir'), { recursive: true });
  writeFileSync(join(s.victim, 'hello'), 'hello world\n', { mode: 0o644 });
  writeFileSync(join(s.victim, 'dir', 'precious'), 'do not delete\n');
  mkdirSync(s.lower);
  return s;
}

/** Everything an escape could change: the sandbox root's names, and every inode of the victim (type, mode, owner, links, size, times, content). */
function snapshot(s: Sandbox): string {
  const lines = [readdirSync(s.root).sort().join(',')];
  const walk = (path: string, rel: string) => {
    const st = lstatSync(path, { bigint: true });
    const content = st.isFile() ? readFileSync(path, 'latin1') : st.isSymbolicLink() ? readlinkSync(path) : '';
    lines.push(
      `${rel} ${st.mode} ${st.uid}:${st.gid} nlink=${st.nlink} size=${st.size} mtime=${st.mtimeNs} ctime=${st.ctimeNs} ${JSON.stringify(content)}`,
    );
    if (st.isDirectory()) for (const name of readdirSync(path).sort()) walk(join(path, name), `${rel}/${name}`);
  };
  walk(s.victim, 'victim');
  return lines.join('\n');
}

/**
 * Applies the tar in every format. Absolute symlink targets in the cases point at the sandbox
 * (`s.root`, `s.victim`), never at the host's "/", so that even a broken apply that follows them
 * can only damage the victim, where the test sees it. `refusedEntry`: the apply must fail with an UnsafeEntryError
 * naming that entry; undefined: the apply may succeed or fail, but must stay inside.
 */
async function expectContained(
  entries: TarSpec[] | ((s: Sandbox) => TarSpec[]),
  refusedEntry: string | undefined,
  setup?: (s: Sandbox) => void,
): Promise<Sandbox[]> {
  const boxes: Sandbox[] = [];
  for (const format of FORMATS) {
    const s = sandbox();
    setup?.(s);
    const before = snapshot(s);
    const tar = buildTar(typeof entries === 'function' ? entries(s) : entries);
    const outcome = await applyLayer(chunked(tar), s.dest, { whiteoutFormat: format, lowerDirs: [s.lower] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    if (refusedEntry !== undefined) {
      assert.ok(outcome instanceof UnsafeEntryError, `${format}: expected UnsafeEntryError, got ${String(outcome)}`);
      assert.equal(outcome.entry, refusedEntry, format);
      assert.match(
        outcome.message,
        new RegExp(`refusing tar entry ${JSON.stringify(refusedEntry).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
      );
    } else if (outcome !== undefined) {
      assert.ok(outcome instanceof UnionctlError, `${format}: a contained failure is still a typed error: ${String(outcome)}`);
    }
    assert.equal(snapshot(s), before, `${format}: the victim is unchanged`);
    boxes.push(s);
  }
  return boxes;
}

describe('apply safety: names (TestUntarInvalidFilenames, TestApplyLayerInvalidFilenames)', { skip: scratchMissing }, () => {
  it('refuses "../victim/dotdot"', async () => {
    await expectContained([{ name: '../victim/dotdot', content: 'x' }], '../victim/dotdot');
  });

  it('refuses "/../victim/slash-dotdot"', async () => {
    await expectContained([{ name: '/../victim/slash-dotdot', content: 'x' }], '/../victim/slash-dotdot');
  });

  it('refuses names that climb out after descending ("a/../../victim/x") and dirs named outside', async () => {
    await expectContained([{ name: 'a/../../victim/x', content: 'x' }], 'a/../../victim/x');
    await expectContained([{ name: '../victim/', type: 'dir', mode: 0o777, uid: 1234 }], '../victim/');
    await expectContained([{ name: '../victim/dir/precious', type: 'fifo' }], '../victim/dir/precious');
  });

  it('refuses to turn the layer root into something else', async () => {
    await expectContained([{ name: './', type: 'symlink', linkname: '../victim' }], './');
  });

  it('accepts "..gitme" and "a/../b" (inside) — TestChrootApplyDotDotFile', async () => {
    const [s] = await expectContained(
      [
        { name: '..gitme', content: 'x' },
        { name: 'a/../b', content: 'y' },
        { name: '...', content: 'z' },
      ],
      undefined,
    );
    assert.deepEqual(readdirSync(s.dest).sort(), ['...', '..gitme', 'b']);
  });
});

describe('apply safety: hardlinks (TestUntarInvalidHardlink)', { skip: scratchMissing }, () => {
  it('refuses a link to "../victim/hello" and to "/../victim/hello"', async () => {
    await expectContained([{ name: 'dotdot', type: 'hardlink', linkname: '../victim/hello' }], 'dotdot');
    await expectContained([{ name: 'slash-dotdot', type: 'hardlink', linkname: '/../victim/hello' }], 'slash-dotdot');
  });

  it('refuses the loophole-victim hardlink, whatever comes after it', async () => {
    const loophole: TarSpec = { name: 'loophole-victim', type: 'hardlink', linkname: '../victim', mode: 0o755 };
    for (const next of [
      { name: 'loophole-victim/file', content: 'x' }, // try writing victim/file
      { name: 'symlink', type: 'symlink', linkname: 'loophole-victim/hello' }, // try reading victim/hello (hardlink, symlink)
      { name: 'hardlink', type: 'hardlink', linkname: 'loophole-victim/hello' }, // (hardlink, hardlink)
      { name: 'loophole-victim', content: 'x' }, // try removing the victim directory
    ] as TarSpec[]) {
      await expectContained([loophole, next], 'loophole-victim');
    }
  });

  it('keeps an absolute target inside the layer ("/victim/hello" is <dest>/victim/hello)', async () => {
    await expectContained([{ name: 'abs', type: 'hardlink', linkname: '/victim/hello' }], undefined);
  });

  it('refuses a hardlink whose target path goes through a symlink in the layer', async () => {
    // ".." is resolved on the name, not by following "escape": this names <dest>/victim/hello, which does not exist
    await expectContained(
      (s) => [
        { name: 'escape', type: 'symlink', linkname: s.root }, // legal as a symlink: absolute targets mean the layer's root
        { name: 'stolen', type: 'hardlink', linkname: 'escape/../victim/hello' },
      ],
      undefined,
    );
    // following an absolute symlink would leave the layer: refused
    await expectContained(
      (s) => [
        { name: 'abs', type: 'symlink', linkname: s.victim },
        { name: 'stolen', type: 'hardlink', linkname: 'abs/hello' },
      ],
      'stolen',
    );
  });

  it('refuses a hardlink whose target goes through a symlink in a lower layer', async () => {
    await expectContained([{ name: 'stolen', type: 'hardlink', linkname: 'usr/hello' }], 'stolen', (s) =>
      symlinkSync(s.victim, join(s.lower, 'usr')),
    );
  });

  it('links to the symlink itself, not its target (TestUntarHardlinkToSymlink)', async () => {
    const boxes = await expectContained(
      [
        { name: 'symlink1', type: 'symlink', linkname: 'regfile' },
        { name: 'symlink2', type: 'hardlink', linkname: 'symlink1' },
        { name: 'regfile', content: 'x' },
      ],
      undefined,
    );
    for (const s of boxes) {
      assert.ok(lstatSync(join(s.dest, 'symlink2')).isSymbolicLink());
      assert.equal(readlinkSync(join(s.dest, 'symlink2')), 'regfile');
      assert.equal(lstatSync(join(s.dest, 'symlink2')).ino, lstatSync(join(s.dest, 'symlink1')).ino);
    }
  });
});

describe('apply safety: symlinks (TestUntarInvalidSymlink)', { skip: scratchMissing }, () => {
  it('refuses symlinks to "../victim/hello" and "/../victim/hello"', async () => {
    await expectContained([{ name: 'dotdot', type: 'symlink', linkname: '../victim/hello' }], 'dotdot');
    await expectContained([{ name: 'slash-dotdot', type: 'symlink', linkname: '/../victim/hello' }], 'slash-dotdot');
    await expectContained([{ name: 'a/b/deep', type: 'symlink', linkname: '../../../victim' }], 'a/b/deep');
  });

  it('refuses the loophole-victim symlink, whatever comes after it', async () => {
    const loophole: TarSpec = { name: 'loophole-victim', type: 'symlink', linkname: '../victim', mode: 0o755 };
    for (const next of [
      { name: 'loophole-victim/file', content: 'x' },
      { name: 'symlink', type: 'symlink', linkname: 'loophole-victim/hello' },
      { name: 'hardlink', type: 'hardlink', linkname: 'loophole-victim/hello' },
      { name: 'loophole-victim', content: 'x' },
    ] as TarSpec[]) {
      await expectContained([loophole, next], 'loophole-victim');
    }
  });

  it('never writes through a symlink the tar made, even one that points inside', async () => {
    // Docker leaves these to its chroot; without one, following an absolute symlink means the host.
    for (const target of [(s: Sandbox) => s.root, (s: Sandbox) => `${s.victim}/..`, () => 'inside', () => '.']) {
      await expectContained(
        (s) => [
          { name: 'inside/', type: 'dir' },
          { name: 'link', type: 'symlink', linkname: target(s) },
          { name: 'link/victim/hello', content: 'overwritten' },
        ],
        'link/victim/hello',
      );
    }
  });

  it('notices a dir that a later entry replaced by a symlink (no stale cache)', async () => {
    await expectContained(
      (s) => [
        { name: 'etc/', type: 'dir' },
        { name: 'etc/a', content: 'caches etc as a known dir' },
        { name: 'etc', type: 'symlink', linkname: s.root },
        { name: 'etc/victim/hello', content: 'overwritten' },
      ],
      'etc/victim/hello',
    );
  });
});

describe('apply safety: whiteouts with ".." (TestApplyLayerWhiteouts)', { skip: scratchMissing }, () => {
  it('refuses whiteouts that name "..", "." or nothing', async () => {
    for (const name of ['.wh...', 'sub/.wh...', '.wh..', 'sub/.wh.']) await expectContained([{ name }], name);
  });

  it('refuses whiteouts and opaque markers outside the layer', async () => {
    await expectContained([{ name: '../victim/.wh.hello' }], '../victim/.wh.hello');
    await expectContained([{ name: '../victim/.wh..wh..opq' }], '../victim/.wh..wh..opq');
    await expectContained([{ name: '../.wh.victim' }], '../.wh.victim');
  });

  it('refuses whiteouts and opaque markers through a symlinked dir', async () => {
    const link = (s: Sandbox): TarSpec => ({ name: 'ln', type: 'symlink', linkname: s.root });
    await expectContained((s) => [link(s), { name: 'ln/victim/.wh.hello' }], 'ln/victim/.wh.hello');
    await expectContained((s) => [link(s), { name: 'ln/victim/.wh..wh..opq' }], 'ln/victim/.wh..wh..opq');
  });

  it('removes a whited-out symlink, not what it points to', async () => {
    const boxes = await expectContained((s) => [{ name: 'ln', type: 'symlink', linkname: s.victim }, { name: '.wh.ln' }], undefined);
    assert.ok(!existsSync(join(boxes[0].dest, 'ln')), 'plain: the symlink itself is gone');
  });
});
