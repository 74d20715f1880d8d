/**
 * The union view of a stack of layer directories in one whiteout format, read straight from the
 * layer dirs (no mount): what the merged view shows at a path, and which names it shows in a dir.
 * The one lookup apply (hardlink targets and implicit dirs over lower layers), the native change
 * lists and everything else in src/archive use.
 *
 * The rules are overlayfs's (and aufs's, and fuse-overlayfs's), top layer first:
 * - a name comes from the topmost layer that has it; a whiteout of the name there means nothing;
 * - a directory merges with the directories of the same name below it, down to the first layer
 *   where it is opaque, whited out, or not a directory (a non-directory below a directory is not
 *   merged; a non-directory on top is what the view shows, and it has no children);
 * - so a path is hidden by any ancestor that an upper layer made opaque, whited out or replaced
 *   with a non-directory, whatever the layers further down hold;
 * - whether a layer's root dir can be opaque is the format's call (overlayfs ignores it there);
 * - a layer of a full-tree format ('plain') is the whole view: nothing below it shows.
 *
 * The layers must not change while a LayerStack is in use: it remembers the directories it has
 * resolved.
 */
import { lstatSync, readdirSync, type BigIntStats } from 'node:fs';
import { isDirStat, lstatIfExists } from './changes.js';
import type { WhiteoutFormat } from './types.js';
import { whiteoutConverter, whitedOutName, type WhiteoutConverter } from './whiteout.js';

/** Why a path is not in the view although a layer below may hold it. */
export type HiddenBy = 'whiteout' | 'opaque' | 'non-dir';

/** What the merged view shows at a path. `layer` indexes the stack, 0 = the top. */
export type UnionEntry =
  /** The entry of `layer`, at `path` (the absolute path in that layer dir). */
  | { kind: 'found'; layer: number; path: string; st: BigIntStats }
  /** `layer` deleted the name itself. */
  | { kind: 'whiteout'; layer: number }
  /**
   * The dir `at` (relative, '' = the root) of `layer` hides it from the layers below: it is
   * opaque there, whited out there, or not a directory there (then `st` is that entry's stat).
   */
  | { kind: 'hidden'; layer: number; by: HiddenBy; at: string; st?: BigIntStats }
  /** No layer holds it, and nothing hides it. */
  | { kind: 'absent' };

/** A directory as the view resolves it. */
interface DirView {
  /** The layers in which it is a directory that shows in the view, top first. */
  layers: number[];
  /** What keeps the layers below the last of `layers` out of it; undefined when none does. */
  cut: (UnionEntry & { kind: 'hidden' }) | undefined;
}

const ABSENT: UnionEntry = { kind: 'absent' };

const parentOf = (rel: string) => rel.slice(0, Math.max(0, rel.lastIndexOf('/')));
const baseOf = (rel: string) => rel.slice(rel.lastIndexOf('/') + 1);

/** Paths are relative to the layer roots, without leading or trailing slashes: "a/b", '' for the root. */
export class LayerStack {
  readonly converter: WhiteoutConverter;
  private readonly layers: readonly string[];
  private readonly dirs = new Map<string, DirView>();

  /** `layerDirs`: the layer directories, top (nearest) first. */
  constructor(layerDirs: readonly string[], format: WhiteoutFormat) {
    this.converter = whiteoutConverter(format);
    const roots = layerDirs.map((d) => (d.length > 1 ? d.replace(/\/+$/, '') : d));
    this.layers = this.converter.fullTree ? roots.slice(0, 1) : roots;
  }

  /** The absolute path of `rel` in layer `k` (an index of `layers`, as every DirView holds). */
  private pathIn(k: number, rel: string): string {
    const root = this.layers[k]!;
    return rel === '' ? root : `${root}/${rel}`;
  }

  /** What the merged view shows at `rel`. */
  lookup(rel: string): UnionEntry {
    if (rel === '') {
      const top = this.layers[0];
      if (top === undefined) return ABSENT;
      return { kind: 'found', layer: 0, path: top, st: lstatSync(top, { bigint: true }) };
    }
    const parentRel = parentOf(rel);
    const name = baseOf(rel);
    const parent = this.dir(parentRel);
    for (const k of parent.layers) {
      const dir = this.pathIn(k, parentRel);
      if (this.converter.hasWhiteoutMarker(dir, name)) return { kind: 'whiteout', layer: k };
      const path = `${dir}/${name}`;
      const st = lstatIfExists(path);
      if (st === undefined) continue;
      if (this.converter.isWhiteout(st)) return { kind: 'whiteout', layer: k };
      return { kind: 'found', layer: k, path, st };
    }
    return parent.cut ?? ABSENT;
  }

  /** The names the merged view shows in the directory `rel` (none when it is no directory there). */
  children(rel: string): Set<string> {
    const names = new Set<string>();
    const hidden = new Set<string>();
    for (const k of this.dir(rel).layers) {
      const dir = this.pathIn(k, rel);
      const shown: string[] = [];
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const name = entry.name;
        const marker = this.converter.markerKind(name);
        if (marker !== undefined) {
          if (marker === 'whiteout') hidden.add(whitedOutName(name));
        } else if (entry.isCharacterDevice() && this.converter.isWhiteout(lstatSync(`${dir}/${name}`, { bigint: true }))) {
          hidden.add(name);
        } else {
          shown.push(name);
        }
      }
      // A layer's whiteouts hide its own name too, as in lookup; names seen above stay.
      for (const name of shown) if (!hidden.has(name)) names.add(name);
    }
    return names;
  }

  /** Resolves (once) which layers make up the directory `rel` in the view. */
  private dir(rel: string): DirView {
    const known = this.dirs.get(rel);
    if (known !== undefined) return known;
    const view: DirView = rel === '' ? this.root() : this.subdir(rel);
    this.dirs.set(rel, view);
    return view;
  }

  private root(): DirView {
    const layers: number[] = [];
    for (const [k, root] of this.layers.entries()) {
      layers.push(k);
      if (this.converter.isOpaque(root, true)) return { layers, cut: { kind: 'hidden', layer: k, by: 'opaque', at: '' } };
    }
    return { layers, cut: undefined };
  }

  private subdir(rel: string): DirView {
    const parentRel = parentOf(rel);
    const name = baseOf(rel);
    const parent = this.dir(parentRel);
    const layers: number[] = [];
    for (const k of parent.layers) {
      const dir = this.pathIn(k, parentRel);
      if (this.converter.hasWhiteoutMarker(dir, name)) return { layers, cut: { kind: 'hidden', layer: k, by: 'whiteout', at: rel } };
      const path = `${dir}/${name}`;
      const st = lstatIfExists(path);
      if (st === undefined) continue;
      if (this.converter.isWhiteout(st)) return { layers, cut: { kind: 'hidden', layer: k, by: 'whiteout', at: rel } };
      if (!isDirStat(st)) return { layers, cut: { kind: 'hidden', layer: k, by: 'non-dir', at: rel, st } };
      layers.push(k);
      if (this.converter.isOpaque(path, false)) return { layers, cut: { kind: 'hidden', layer: k, by: 'opaque', at: rel } };
    }
    return { layers, cut: parent.cut };
  }
}
