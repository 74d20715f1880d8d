/**
 * One measured import, in its own process so its peak RSS is its own:
 *   node dist/bench/import-child.js <storeRoot> <driver> <layer.tar>
 * Prints one JSON line: {"ms", "maxRssKiB", "diffId", "size"}.
 */
import { performance } from 'node:perf_hooks';
import { openStore } from '../src/graph/store.js';

const [root, driver, layer] = process.argv.slice(2);
const store = await openStore({ root, driver });
const start = performance.now();
const record = await store.importLayer(layer);
const ms = performance.now() - start;
await store.close();
console.log(JSON.stringify({ ms, maxRssKiB: process.resourceUsage().maxRSS, diffId: record.diffId, size: record.size }));
