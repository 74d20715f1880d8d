/**
 * The driver conformance suite: every storage driver must pass it. One call per driver registers
 * the whole suite with node:test:
 *
 *   // test/conformance/<driver>.test.ts
 *   import { runDriverConformance } from './suite.js';
 *   runDriverConformance('overlay2', { deeperChains: [210] });
 *
 * Everything is real: a fresh tmpfs per driver (never the root filesystem), real mounts, real
 * writes, real second processes. The suite reads what it needs to know about a driver from
 * capabilities() (whiteout format, maxDepth) and metadata() (where a layer keeps its own files), so
 * new drivers plug in without changes here; ConformanceOptions holds the few knobs left.
 *
 * Scenarios: see scenarios-graph.ts (Docker graphtest), scenarios-mounts.ts (containerd snapshotter
 * suite), scenarios-content.ts (whiteouts, file types, xattrs, names, modes, the sample image) and
 * scenarios-breakout.ts (hostile tars). The last test checks that nothing is left mounted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { mountsBelow, overlayMountsMentioning } from '../helpers/mounts.js';
import { DriverFixture, type ConformanceOptions } from './fixture.js';
import { breakoutScenarios } from './scenarios-breakout.js';
import { contentScenarios } from './scenarios-content.js';
import { graphScenarios } from './scenarios-graph.js';
import { mountScenarios } from './scenarios-mounts.js';

export type { ConformanceOptions } from './fixture.js';

export function runDriverConformance(driverName: string, opts: ConformanceOptions = {}): void {
  describe(`${driverName} driver conformance`, () => {
    let fixture: DriverFixture | undefined;
    const fx = (): DriverFixture => {
      assert.ok(fixture, `the ${driverName} fixture did not open (see the before hook's error)`);
      return fixture;
    };

    before(async () => {
      fixture = await DriverFixture.open(driverName, opts);
    });
    after(async () => {
      await fixture?.close();
    });

    it('reports its capabilities', () => {
      const caps = fx().caps;
      assert.ok(['overlay', 'aufs', 'plain'].includes(caps.whiteoutFormat));
      assert.equal(typeof caps.nativeDiff, 'boolean');
      assert.ok(caps.maxDepth >= 1, 'maxDepth is a positive number (Infinity when unlimited)');
      assert.equal(fx().driver.name, driverName);
    });

    graphScenarios(fx, opts);
    mountScenarios(fx, opts);
    contentScenarios(fx);
    breakoutScenarios(fx);

    it('leaves nothing mounted under the store and no overlay mount of its layers', () => {
      assert.deepEqual(
        mountsBelow(fx().scratch.dir).map((m) => `${m.fsType} ${m.mountPoint}`),
        [],
      );
      assert.deepEqual(
        overlayMountsMentioning(fx().root).map((m) => m.mountPoint),
        [],
      );
    });
  });
}
