/**
 * The driver conformance suite: every storage driver must pass it. One call per driver registers
 * the whole suite with node:test:
 *
 *   // test/conformance/<driver>.test.ts
 *   import { overlay2Entry } from '../../src/drivers/overlay2/index.js';
 *   import { runDriverConformance } from './suite.js';
 *   runDriverConformance(overlay2Entry, { deeperChains: [210] });
 *
 * The suite takes the driver's factory (its DriverEntry) and gives each scenario group a fresh
 * store root, as containerd's snapshotter testsuite does. Everything is real: a fresh tmpfs per
 * group (never the root filesystem), real mounts, real
 * writes, real second processes. The suite reads what it needs to know about a driver from
 * capabilities() (whiteout format, maxDepth) and metadata() (where a layer keeps its own files), so
 * new drivers plug in without changes here; ConformanceOptions holds the few knobs left.
 *
 * Scenarios: see scenarios-graph.ts (Docker graphtest), scenarios-mounts.ts (containerd snapshotter
 * suite), scenarios-content.ts (whiteouts, file types, xattrs, names, modes, the sample image) and
 * scenarios-breakout.ts (hostile tars), scenarios-contract.ts (each sentence of the Driver
 * interface's contract). Each group's last test checks that nothing is left mounted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { mountsBelow, overlayMountsMentioning } from '../helpers/mounts.js';
import { DriverFixture, type ConformanceOptions } from './fixture.js';
import { breakoutScenarios } from './scenarios-breakout.js';
import { contentScenarios } from './scenarios-content.js';
import { graphScenarios } from './scenarios-graph.js';
import { mountScenarios } from './scenarios-mounts.js';
import { contractScenarios } from './scenarios-contract.js';
import type { DriverEntry } from '../../src/graph/registry.js';

export type { ConformanceOptions } from './fixture.js';

/** A group of scenarios, given the fixture it runs on. */
type ScenarioGroup = (fx: () => DriverFixture) => void;

/**
 * Registers the suite for the driver `entry` makes (its factory: the registry entry, as a new
 * driver would register it). Every scenario group runs on a fresh store root of its own, so one
 * group's leftovers cannot make another pass or fail.
 */
export function runDriverConformance(entry: DriverEntry, opts: ConformanceOptions = {}): void {
  const driverName = entry.name;
  describe(`${driverName} driver conformance`, () => {
    const onFreshRoot = (title: string, scenarios: ScenarioGroup): void => {
      describe(title, () => {
        let fixture: DriverFixture | undefined;
        const fx = (): DriverFixture => {
          assert.ok(fixture, `the ${driverName} fixture did not open (see the before hook's error)`);
          return fixture;
        };
        before(async () => {
          fixture = await DriverFixture.open(entry, opts);
        });
        after(async () => {
          await fixture?.close();
        });
        scenarios(fx);
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
    };

    onFreshRoot('capabilities', (fx) => {
      it('reports its capabilities', () => {
        const caps = fx().caps;
        assert.ok(['overlay', 'aufs', 'plain'].includes(caps.whiteoutFormat));
        assert.equal(typeof caps.nativeDiff, 'boolean');
        assert.ok(caps.maxDepth >= 1, 'maxDepth is a positive number (Infinity when unlimited)');
        assert.equal(fx().driver.name, driverName);
      });
    });
    onFreshRoot('graph', (fx) => graphScenarios(fx, opts));
    onFreshRoot('mounts', (fx) => mountScenarios(fx, opts));
    onFreshRoot('contract', contractScenarios);
    onFreshRoot('content', contentScenarios);
    onFreshRoot('breakout', breakoutScenarios);
  });
}
