/**
 * unionctl as an installed package has what package.json's "files" ships (dist/src, proto,
 * contrib, README, LICENSE) and no benchmark suite: `bench` is then left out of the help and
 * refused with a clear error, never a crash (issue 14, point 18).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const REPO = process.env.UNIONCTL_REPO ?? process.cwd();
const DIST_SRC = fileURLToPath(new URL('../../src', import.meta.url));

describe('an installed package (dist/src without bench/)', () => {
  let pkg = '';
  before(() => {
    pkg = mkdtempSync(join(tmpdir(), 'unionctl-installed-'));
    const files = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { files: string[] }).files;
    assert.ok(files.includes('LICENSE') && existsSync(join(REPO, 'LICENSE')), 'the package ships its licence');
    assert.ok(!files.some((f) => f.startsWith('bench')), 'the benchmark suite is not shipped');
    cpSync(DIST_SRC, join(pkg, 'dist', 'src'), { recursive: true });
    cpSync(join(REPO, 'package.json'), join(pkg, 'package.json'));
    symlinkSync(join(REPO, 'node_modules'), join(pkg, 'node_modules'));
  });
  after(() => rmSync(pkg, { recursive: true, force: true }));

  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [join(pkg, 'dist', 'src', 'cli', 'main.js'), ...args], { encoding: 'utf8' });

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
});
