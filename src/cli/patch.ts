/**
 * `unionctl changes --patch`: unified diffs of the files a layer changed. The old content comes
 * from the parent's merged view and the new content from the layer's, so both sides are what a
 * container would see; both views are mounted just for this and released afterwards.
 */
import { closeSync, lstatSync, openSync, readFileSync, readSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import type { Change } from '../graph/driver.js';
import type { LayerStore } from '../graph/store.js';
import { escapeControls, out } from './output.js';

/** Files above this size get a note instead of a patch (diffing them is slow and unreadable). */
const MAX_PATCH_BYTES = 1024 * 1024;
/** Like git and GNU diff: a NUL byte near the start means binary. */
const BINARY_SNIFF_BYTES = 8192;

/**
 * Patches (or one-line notes) for every changed regular file in `changes`, by path, in the same order.
 * Added and deleted files, directories, symlinks and devices get nothing: the change line says it all.
 */
export async function patchesFor(
  store: LayerStore,
  id: string,
  parent: string | undefined,
  changes: Change[],
): Promise<Map<string, string>> {
  const changed = changes.filter((c) => c.kind === 'C');
  if (changed.length === 0 || parent === undefined) return new Map();
  // Loaded here, not at the top: the diff package costs ~15 ms to load, and only --patch needs it.
  const diff = await import('diff');
  const oldView = (await store.mount(parent)).path;
  try {
    const newView = (await store.mount(id)).path;
    try {
      const patches = new Map<string, string>();
      for (const c of changed) {
        const patch = patchOne(diff, c.path, join(oldView, c.path), join(newView, c.path));
        if (patch !== undefined) patches.set(c.path, patch);
      }
      return patches;
    } finally {
      await store.unmount(id);
    }
  } finally {
    await store.unmount(parent);
  }
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

function patchOne(diff: typeof import('diff'), path: string, oldFile: string, newFile: string): string | undefined {
  const before = lstatOrUndefined(oldFile);
  const after = lstatOrUndefined(newFile);
  if (!before?.isFile() || !after?.isFile()) return undefined;
  if (before.size > MAX_PATCH_BYTES || after.size > MAX_PATCH_BYTES) {
    return `Files a${path} and b${path} differ (larger than 1 MiB, no patch shown)\n`;
  }
  if (looksBinary(oldFile) || looksBinary(newFile)) return `Binary files a${path} and b${path} differ\n`;
  const oldText = readFileSync(oldFile, 'utf8');
  const newText = readFileSync(newFile, 'utf8');
  // A metadata-only change (mode, owner, mtime) is a C too, but has no text difference to show.
  if (oldText === newText) return undefined;
  return diff.createTwoFilesPatch(`a${path}`, `b${path}`, oldText, newText, undefined, undefined, {
    headerOptions: diff.FILE_HEADERS_ONLY,
  });
}

function looksBinary(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(BINARY_SNIFF_BYTES);
    const n = readSync(fd, head, 0, head.length, 0);
    return head.subarray(0, n).includes(0);
  } finally {
    closeSync(fd);
  }
}

/**
 * Colours a unified diff line by line, the way `git diff` does. The lines hold the files' content
 * and names: control characters but tabs are escaped (\x1b, \r), so a file cannot drive the terminal.
 */
export function colourPatch(patch: string): string {
  return patch
    .split('\n')
    .map((raw) => {
      const line = escapeControls(raw, { keepTabs: true });
      if (line.startsWith('+++') || line.startsWith('---')) return out.bold(line);
      if (line.startsWith('@@')) return out.cyan(line);
      if (line.startsWith('+')) return out.green(line);
      if (line.startsWith('-')) return out.red(line);
      return line;
    })
    .join('\n');
}
