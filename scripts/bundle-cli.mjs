#!/usr/bin/env node
// Bundles the CLI: `npm run build` runs it after tsc. dist/src/cli/main.js (the `unionctl` bin)
// becomes one ES module holding the CLI and the library instead of ~140 files.
//
// Why: Node's ES module loader costs ~0.5 ms per file (resolve, read, compile, link), so a
// `unionctl --version` took 0.21 s against node's own 0.07 s; bundled it takes 0.15 s, and every
// command (import, pull, a containerd start through `ctr`, …) starts that much sooner.
//
// What stays apart:
// - npm packages (commander, grpc-js, koffi, …) are imported from node_modules as before.
// - Code loaded with import() (the gRPC server, the bench runner) goes into chunk-*.js files next
//   to main.js, so `unionctl import` still never loads grpc-js.
// - The digest worker (src/archive/digest-worker.js) is a thread's own module, loaded by path.
// - tsc's unbundled entry is kept as main-modules.js: the benchmark's CPU profiles run it, since
//   they attribute samples to phases by module file.
// Every file of the bundle lies in dist/src/cli/, so paths taken from import.meta.url (the
// package.json and proto/ searches, the worker's '../archive/…', the bench's '../../bench/…')
// resolve as they do from the modules.
import { readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;
const outdir = join(root, 'dist', 'src', 'cli');

for (const f of readdirSync(outdir)) if (/^chunk-.*\.js(\.map)?$/.test(f)) rmSync(join(outdir, f));
renameSync(join(outdir, 'main.js'), join(outdir, 'main-modules.js'));
renameSync(join(outdir, 'main.js.map'), join(outdir, 'main-modules.js.map'));

const result = await build({
  entryPoints: [join(root, 'src', 'cli', 'main.ts')],
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  keepNames: true, // error and class names stay what the sources say
  sourcemap: true,
  outdir,
  entryNames: '[name]',
  chunkNames: 'chunk-[hash]',
  logLevel: 'warning',
  metafile: true,
});
const inputs = Object.keys(result.metafile.inputs).length;
const outputs = Object.keys(result.metafile.outputs).filter((f) => f.endsWith('.js')).length;
console.log(`bundle-cli: ${inputs} modules into ${outputs} files in ${join('dist', 'src', 'cli')} (main.js and chunks)`);
