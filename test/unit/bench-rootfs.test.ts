import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { phaseTimes } from '../../bench/cpu-profile.js';
import { debianMirrorIn } from '../../bench/rootfs.js';

describe('bench rootfs workload', () => {
  it('finds the Debian mirror in deb822 and one-line apt sources, not the security archive', () => {
    const deb822 =
      'Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.local/debian/\nSuites: bookworm\n';
    assert.equal(debianMirrorIn([deb822]), 'http://mirror.local/debian');
    assert.equal(
      debianMirrorIn(['# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://proxy:3142/debian bookworm main\n']),
      'http://proxy:3142/debian',
    );
    assert.equal(
      debianMirrorIn(['deb https://packages.cloud.google.com/apt cloud-sdk main\n', 'URIs: http://ftp.de.debian.org/debian\n']),
      'http://ftp.de.debian.org/debian',
    );
    assert.equal(debianMirrorIn(['URIs: https://deb.nodesource.com/node_20.x\n']), undefined);
  });

  it('splits a CPU profile into import phases by the stack of each sample', () => {
    const frame = (id: number, functionName: string, url: string, children: number[] = []) => ({
      id,
      callFrame: { functionName, url },
      children,
    });
    const profile = {
      nodes: [
        frame(1, '(root)', '', [2, 5, 7, 8]),
        frame(2, 'applyLayer', 'file:///x/dist/src/archive/apply.js', [3, 4]),
        frame(3, 'open', ''), // a system call made by the apply: file creation
        frame(4, 'decodeHeader', 'file:///x/dist/src/archive/tar-header.js'),
        frame(5, 'raw', 'file:///x/dist/src/archive/tar-split.js', [6]),
        frame(6, 'copy', 'node:buffer'),
        frame(7, '(garbage collector)', ''),
        frame(8, '(idle)', ''),
      ],
      samples: [3, 3, 4, 6, 7, 8],
      timeDeltas: [1000, 1000, 2000, 3000, 500, 9000],
    };
    const dir = mkdtempSync(join(tmpdir(), 'unionctl-cpuprof-'));
    try {
      const file = join(dir, 'main.cpuprofile');
      writeFileSync(file, JSON.stringify(profile));
      const phases = phaseTimes(file);
      assert.equal(phases.get('file create + write + close'), 2);
      assert.equal(phases.get('tar parsing'), 2);
      assert.equal(phases.get('tar-split recording'), 3);
      assert.equal(phases.get('garbage collector'), 0.5);
      assert.equal(
        [...phases.values()].reduce((a, b) => a + b, 0),
        7.5,
        'idle time is no phase',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
