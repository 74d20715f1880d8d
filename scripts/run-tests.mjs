#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) with node's test runner, one file at a
// time (the tests mount real filesystems; running files side by side would make leak checks and
// timings noisy), then checks that no union mount, loop device or tmpfs made by the tests is left.
// Usage: node scripts/run-tests.mjs [substring-filter ...]   (matched against the path below dist/test,
// e.g. `unit/` for every unit test, `conformance/overlay2`)
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const testDir = join(root, 'dist', 'test');

function findTests(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...findTests(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

/**
 * Mounts a test run may leave behind: unions anywhere, and anything under a test scratch dir.
 * With UNIONCTL_TEST_SCOPE=NAME (another run may be going on beside this one, e.g. in a second
 * worktree), only what is under this run's scratch dirs (/tmp/unionctl-test-NAME-*, see
 * test/helpers/scratch.ts) counts.
 */
function leftoverMounts() {
  const scope = process.env.UNIONCTL_TEST_SCOPE;
  const union = new Set(['overlay', 'aufs', 'fuse.fuse-overlayfs']);
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [pre, post] = line.split(' - ');
      return { mountPoint: pre.split(' ')[4], fsType: post.split(' ')[0] };
    })
    .filter((m) =>
      scope ? m.mountPoint.includes(`/unionctl-test-${scope}-`) : union.has(m.fsType) || /\/unionctl-(test|bench)/.test(m.mountPoint),
    );
}

const filters = process.argv.slice(2);
const files = findTests(testDir).filter((f) => filters.length === 0 || filters.some((s) => relative(testDir, f).includes(s)));
if (files.length === 0) {
  console.error(`run-tests: no test files matched in ${relative(root, testDir)}`);
  process.exit(1);
}
// Without root the tests mount nothing (those that would, skip): a mount that shows up meanwhile is
// someone else's (the mount table is the machine's), so the check is left out.
const checkLeaks = process.getuid?.() === 0;
const before = new Set(leftoverMounts().map((m) => m.mountPoint));
const run = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], { stdio: 'inherit', cwd: root });
const leaked = checkLeaks ? leftoverMounts().filter((m) => !before.has(m.mountPoint)) : [];
if (leaked.length > 0) {
  console.error('run-tests: mounts left behind by the tests:');
  for (const m of leaked) console.error(`  ${m.fsType} ${m.mountPoint}`);
  process.exit(1);
}
process.exit(run.status ?? 1);
