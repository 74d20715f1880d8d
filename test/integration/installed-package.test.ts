/**
 * unionctl as an installed package: what `npm pack` puts in the tarball (package.json "files":
 * dist/src, dist/man, proto, contrib, README, LICENSE), unpacked where `npm install -g --prefix P`
 * puts it (P/lib/node_modules/unionctl), its bin and man pages linked by npm's own linker
 * (bin-links: the step of a global install that makes P/bin/unionctl and P/share/man/man1/*.1).
 * Only the dependencies do not come from the registry: the repository's node_modules stands in.
 *
 * It has no benchmark suite: `bench` is then left out of the help and refused with a clear error,
 * never a crash (issue 14, point 18). Its man pages are installed, `man unionctl-mount` finds them,
 * and `unionctl completion bash` works from it (point 16).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { toolsMissing } from '../helpers/requires.js';

const REPO = process.env.UNIONCTL_REPO ?? process.cwd();

interface PackageJson {
  files: string[];
  man: string[];
  bin: Record<string, string>;
}

type BinLinks = (opts: { path: string; pkg: PackageJson; global: boolean; top: boolean; force: boolean }) => Promise<unknown>;

/** npm's bin-links, the module a global install links bins and man pages with. */
function npmBinLinks(): BinLinks {
  const npmRoot = spawnSync('npm', ['root', '-g'], { encoding: 'utf8' }).stdout.trim();
  return createRequire(join(npmRoot, 'npm', 'package.json'))('bin-links') as BinLinks;
}

/** `npm pack` of the repository into `dir`: the tarball's path and the files it holds. */
function npmPack(dir: string): { tarball: string; files: string[] } {
  const r = spawnSync('npm', ['pack', '--json', '--pack-destination', dir], { cwd: REPO, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const [packed] = JSON.parse(r.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  return { tarball: join(dir, packed!.filename), files: packed!.files.map((f) => f.path) };
}

describe('an installed package (npm pack, installed globally into a prefix)', () => {
  let prefix = '';
  let pkgDir = '';
  let packed: string[] = [];
  let manifest: PackageJson | undefined;

  before(async () => {
    prefix = mkdtempSync(join(tmpdir(), 'unionctl-installed-'));
    const { tarball, files } = npmPack(prefix);
    packed = files;
    pkgDir = join(prefix, 'lib', 'node_modules', 'unionctl');
    mkdirSync(pkgDir, { recursive: true });
    assert.equal(spawnSync('tar', ['-xzf', tarball, '-C', pkgDir, '--strip-components=1']).status, 0);
    symlinkSync(join(REPO, 'node_modules'), join(pkgDir, 'node_modules'));
    manifest = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as PackageJson;
    await npmBinLinks()({ path: pkgDir, pkg: manifest, global: true, top: true, force: true });
  });
  after(() => rmSync(prefix, { recursive: true, force: true }));

  const cli = (...args: string[]) => spawnSync(process.execPath, [join(prefix, 'bin', 'unionctl'), ...args], { encoding: 'utf8' });

  it('ships the licence, the man pages, and no benchmark suite or tests', () => {
    assert.ok(packed.includes('LICENSE'), 'the package ships its licence');
    assert.ok(packed.includes('dist/man/unionctl.1') && packed.includes('dist/man/unionctl-mount.1'));
    assert.ok(!packed.some((f) => f.startsWith('bench') || f.startsWith('dist/bench')), 'the benchmark suite is not shipped');
    assert.ok(!packed.some((f) => f.startsWith('dist/test')));
    for (const page of manifest!.man) assert.ok(packed.includes(page.replace(/^\.\//, '')), `${page} is in the package`);
  });

  it('leaves bench out of the help and refuses it with a hint', () => {
    const help = cli('--help');
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^ {2}import\b/m);
    assert.doesNotMatch(help.stdout, /^ {2}bench\b/m);
    const bench = cli('bench', '--quick');
    assert.equal(bench.status, 1, bench.stderr);
    assert.match(bench.stderr, /^unionctl: the benchmark suite is not part of this installation/);
    assert.doesNotMatch(bench.stderr, /^\s+at /m);
  });

  it('installs every man page into PREFIX/share/man/man1', () => {
    assert.ok(manifest!.man.length > 2);
    for (const page of manifest!.man) {
      const installed = join(prefix, 'share', 'man', 'man1', basename(page));
      assert.ok(existsSync(installed), `${installed} is installed`);
      assert.match(readFileSync(installed, 'utf8'), /^\.TH UNIONCTL/, installed);
    }
  });

  it('man finds unionctl(1) and unionctl-mount(1) there', { skip: toolsMissing(['man']) }, () => {
    const env = { ...process.env, MANPATH: join(prefix, 'share', 'man'), MANPAGER: 'cat', MANWIDTH: '100' };
    const main = spawnSync('man', ['unionctl'], { encoding: 'utf8', env });
    assert.equal(main.status, 0, main.stderr);
    assert.match(main.stdout, /^EXIT STATUS$/m);
    const mount = spawnSync('man', ['unionctl-mount'], { encoding: 'utf8', env });
    assert.equal(mount.status, 0, mount.stderr);
    assert.match(mount.stdout, /^\s+--rw\s/m);
  });

  it('prints completion scripts, and completes nothing from a store that is not there', () => {
    const bash = cli('completion', 'bash');
    assert.equal(bash.status, 0, bash.stderr);
    assert.match(bash.stdout, /^complete -F _unionctl unionctl$/m);
    assert.equal(spawnSync('bash', ['-n'], { input: bash.stdout }).status, 0);
    assert.doesNotMatch(bash.stdout, /'bench:/, 'bench is not completed where it is hidden');
    const none = cli('__complete', 'layers', '--root', join(prefix, 'no-store'));
    assert.deepEqual([none.status, none.stdout, none.stderr], [0, '', '']);
    assert.ok(!existsSync(join(prefix, 'no-store')));
  });
});
