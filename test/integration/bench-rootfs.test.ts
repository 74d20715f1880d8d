/**
 * The bench's rootfs workload end to end (`unionctl bench --quick --workloads rootfs`), on the
 * cached Debian rootfs tar. Building that tar needs debootstrap and the network, which a test must
 * not: without the cache the test is skipped, saying how to make it. It fails on errors only, never
 * on how long anything took.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import type { BenchReport } from '../../bench/results.js';
import { ROOTFS_SUITE, rootfsCacheDir } from '../../bench/rootfs.js';
import { listMounts } from '../helpers/mounts.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const cached = join(rootfsCacheDir(), `debian-${ROOTFS_SUITE}-minbase.tar`);
const noCache = existsSync(cached)
  ? false
  : `no cached rootfs at ${cached}: run \`unionctl bench --workloads rootfs\` once (debootstrap, needs the network)`;
const out = mkdtempSync(join(tmpdir(), 'unionctl-bench-rootfs-'));
after(() => rmSync(out, { recursive: true, force: true }));
const benchMounts = () => listMounts().filter((m) => m.mountPoint.includes('/unionctl-bench-') || m.source.includes('/unionctl-bench-'));

describe('unionctl bench --workloads rootfs', () => {
  it(
    'times the whole import process against GNU tar, in wall and CPU time, with the phases and system calls',
    { skip: noCache, timeout: 15 * 60_000 },
    () => {
      const before = benchMounts().length;
      const json = join(out, 'rootfs.json');
      const args = [MAIN, 'bench', '--quick', '--workloads', 'rootfs', '--drivers', 'overlay2', '--runs', '1', '--json', json];
      const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
      assert.equal(r.status, 0, `unionctl bench exited ${r.status}:\n${r.stderr}\n${r.stdout.slice(-3000)}`);
      const report = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;
      for (const operation of ['import', 'import CPU (user+sys)', 'start-up', 'start-up CPU (user+sys)']) {
        const cells = report.results.filter((c) => c.workload === 'rootfs' && c.operation === operation);
        assert.equal(cells.length, 2, `a floor and a unionctl figure for rootfs ${operation}`);
        assert.ok(cells.some((c) => c.kind === 'floor') && cells.some((c) => c.kind === 'unionctl'));
        for (const c of cells) assert.ok(c.seconds.length === 1 && c.seconds[0]! > 0, `${c.subject} ${operation} measured`);
      }
      assert.ok(
        report.notes.some((n) => n.includes('| tar parsing |') && n.includes('| file create + write + close |')),
        'the per-phase table',
      );
      assert.ok(
        report.notes.some((n) => /\| utimensat \| \d+ \| \d+ \|/.test(n)) ||
          report.notes.some((n) => n.includes('strace is not installed')),
      );
      assert.equal(benchMounts().length, before, 'nothing of the bench left mounted');
    },
  );
});
