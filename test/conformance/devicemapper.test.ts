/**
 * The conformance suite against devicemapper, on a real thin-pool. The kernel of the build
 * machines has no device-mapper, so this runs for real inside the test VM (test/vm/devicemapper.test.ts
 * boots it: `npm run vm -- node --test dist/test/conformance/devicemapper.test.js`); elsewhere it
 * is skipped, saying why.
 *
 * UNIONCTL_DM_RUN=quick (scripts/vm/dm-suite.sh quick, what CI runs) keeps every test but repeats
 * less where the work is repetition: a shorter deep chain and fewer concurrent siblings.
 */
import { it } from 'node:test';
import { devicemapperEntry } from '../../src/drivers/devicemapper/index.js';
import { DM_STATE_FILES, DM_TEST_OPTIONS } from '../helpers/devicemapper.js';
import { runDriverConformance } from './suite.js';

const missing = devicemapperEntry.unsupportedReason('/');
const quick = process.env.UNIONCTL_DM_RUN === 'quick';
if (missing !== undefined) {
  it('devicemapper driver conformance', { skip: `${missing}; this suite runs inside the VM (test/vm/devicemapper.test.ts)` }, () => {});
} else {
  runDriverConformance(devicemapperEntry, {
    driverOptions: DM_TEST_OPTIONS,
    layerFilesThroughGet: true,
    storeStateFiles: DM_STATE_FILES,
    // Docker's graphtest reads through 50 layers; every layer here is a thin snapshot, made and
    // mounted under software emulation, so the chain stays at Docker's length (16 in a quick run).
    deepChain: quick ? 16 : 50,
    siblings: quick ? 4 : 12,
  });
}
