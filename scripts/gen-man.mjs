#!/usr/bin/env node
// Writes unionctl's man pages into dist/man/ from the built CLI's command definitions
// (src/cli/man-page.ts): `npm run build` runs it after tsc. The pages describe the program as an
// installed package has it (no bench); package.json "files" ships dist/man and "man" installs them.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = new URL('..', import.meta.url).pathname;
const load = (path) => import(pathToFileURL(join(root, 'dist', 'src', 'cli', path)).href);
const { buildProgram } = await load('commands.js');
const { manPages } = await load('man-page.js');

const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const dir = join(root, 'dist', 'man');
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
const pages = manPages(buildProgram(version, { asInstalled: true }), version);
for (const page of pages) writeFileSync(join(dir, page.file), page.text);
console.log(`gen-man: ${pages.length} pages in ${join('dist', 'man')}`);
