// unionctl as a library: build the bundled sample image's four layers in a throw-away store with
// the overlay2 driver, mount the top layer, read a file through the union, print the union's
// branches, then unmount and clean up. Run as root (it mounts) after `npm run build`:
//
//   node examples/library.mjs
//
// In your own code the import is `import { openStore } from 'unionctl'`.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isUnionctlError, openStore } from '../dist/src/index.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
// Bottom layer first. One plain tar, one gzip, one zstd: compression is sniffed from the bytes.
const layerFiles = ['1-base.tar', '2-app.tar.gz', '3-extras.tar.zst', '4-changes.tar'].map((f) => join(repo, 'fixtures', 'layers', f));

const root = mkdtempSync(join(tmpdir(), 'unionctl-example-'));
let nothingMounted = true;
try {
  const store = await openStore({ root, driver: 'overlay2' });
  nothingMounted = false;
  try {
    let parent;
    for (const file of layerFiles) {
      const layer = await store.importLayer(file, { parent });
      console.log(`imported ${file.slice(repo.length)} as ${layer.id} (${layer.diffId})`);
      parent = layer.id;
    }

    const { id, path } = await store.mount(parent);
    try {
      console.log(`\nmerged view of ${id}: ${path}`);
      // srv/app/current is a symlink that the top layer retargeted from releases/v1 to releases/v2.
      console.log(`srv/app/current/VERSION = ${readFileSync(join(path, 'srv/app/current/VERSION'), 'utf8').trim()}`);
      console.log('\nbranches, top first:');
      for (const b of await store.branches(id)) console.log(`  ${b.mode.padEnd(5)} ${b.layer}  ${b.path}`);
    } finally {
      await store.unmount(id);
    }
  } finally {
    try {
      await store.cleanup(); // unmount anything still mounted, even after an error
      nothingMounted = true;
    } finally {
      await store.close();
    }
  }
} catch (e) {
  // Library errors carry a message a person can act on, and often a hint.
  if (!isUnionctlError(e)) throw e;
  console.error(`error: ${e.message}${e.hint ? `\n  hint: ${e.hint}` : ''}`);
  process.exitCode = 1;
} finally {
  // Deleting the store while a union is still mounted on it would delete through the mount.
  if (nothingMounted) rmSync(root, { recursive: true, force: true });
  else console.error(`left ${root} in place: cleanup did not finish`);
}
