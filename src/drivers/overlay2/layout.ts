/**
 * The overlay2 home directory, byte-compatible with Docker 20.10–23 (DESIGN.md §4):
 *
 *   <home>/l/<LID>        → ../<id>/diff  (relative symlink; LID = 26 chars of base32)
 *   <home>/<id>/diff/     the layer's files (the upperdir while writable)
 *   <home>/<id>/link      the LID, no newline
 *   <home>/<id>/lower     only with a parent: "l/<LIDparent>:l/<LIDgrandparent>:…", nearest first
 *   <home>/<id>/work/     0700, only with a parent (overlay's workdir)
 *   <home>/<id>/merged/   the mount point, made by get and removed by put
 *   <home>/<id>/committed empty; written on a layer when a child is created on it
 *
 * The short l/ names exist so that 128 lowers fit one page of mount data: (26 + len("l/") + 1) * 128
 * < 4096 (Docker's own reasoning).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UnionctlError } from '../../errors.js';

export const LINK_DIR = 'l';
export const LINK_ID_LENGTH = 26;
const LINK_ID = /^[A-Z2-7]{26}$/;
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/**
 * A fresh link id: 16 random bytes (128 bits) in RFC 4648 base32 are exactly 26 characters,
 * the length Docker uses. Collisions are handled by the caller (symlink EEXIST → try again).
 */
export function newLinkId(): string {
  const bytes = randomBytes(16);
  let bits = 0;
  let acc = 0;
  let out = '';
  for (const byte of bytes) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(acc << (5 - bits)) & 31];
  return out;
}

export function isLinkId(s: string): boolean {
  return LINK_ID.test(s);
}

export class Overlay2Layout {
  constructor(readonly home: string) {}

  layerDir(id: string): string {
    return join(this.home, id);
  }
  diffDir(id: string): string {
    return join(this.home, id, 'diff');
  }
  workDir(id: string): string {
    return join(this.home, id, 'work');
  }
  mergedDir(id: string): string {
    return join(this.home, id, 'merged');
  }
  linkFile(id: string): string {
    return join(this.home, id, 'link');
  }
  lowerFile(id: string): string {
    return join(this.home, id, 'lower');
  }
  committedFile(id: string): string {
    return join(this.home, id, 'committed');
  }
  linksDir(): string {
    return join(this.home, LINK_DIR);
  }
  /** <home>/l/<LID> */
  linkPath(linkId: string): string {
    return join(this.home, LINK_DIR, linkId);
  }

  /** The layer's LID from its link file. */
  readLinkId(id: string): string {
    let lid: string;
    try {
      lid = readFileSync(this.linkFile(id), 'utf8');
    } catch (e) {
      throw new UnionctlError('CORRUPT', `overlay2 layer ${id} has no link file (${(e as Error).message})`, {
        hint: `the layer directory ${this.layerDir(id)} is incomplete; remove the layer and recreate it`,
      });
    }
    if (!isLinkId(lid)) {
      throw new UnionctlError('CORRUPT', `overlay2 layer ${id}: link file holds ${JSON.stringify(lid)}, not a 26-character link id`);
    }
    return lid;
  }

  /** The lower file's entries ("l/<LID>", nearest first), or undefined for a layer without a parent. */
  readLowerEntries(id: string): string[] | undefined {
    let text: string;
    try {
      text = readFileSync(this.lowerFile(id), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    return text === '' ? [] : text.split(':');
  }

  isCommitted(id: string): boolean {
    return existsSync(this.committedFile(id));
  }

  /** Which layer a `l/<LID>` link belongs to: its target is ../<id>/diff. */
  layerOfLink(linkId: string): string {
    let target: string;
    try {
      target = readlinkSync(this.linkPath(linkId));
    } catch (e) {
      throw new UnionctlError('CORRUPT', `overlay2 link ${LINK_DIR}/${linkId} is missing (${(e as Error).message})`, {
        hint: 'a lower layer was removed underneath its children; the store needs repair',
      });
    }
    const m = /^\.\.\/([^/]+)\/diff$/.exec(target);
    if (m === null)
      throw new UnionctlError('CORRUPT', `overlay2 link ${LINK_DIR}/${linkId} points to ${JSON.stringify(target)}, not ../<id>/diff`);
    return m[1]!;
  }

  /** The ancestors of a layer, nearest first, from its lower file. */
  ancestorIds(id: string): string[] {
    return (this.readLowerEntries(id) ?? []).map((entry) => this.layerOfLink(this.linkIdOfEntry(id, entry)));
  }

  /** Absolute diff dirs of the ancestors, nearest first (what metadata's LowerDir lists). */
  lowerDiffDirs(id: string): string[] {
    return this.ancestorIds(id).map((a) => this.diffDir(a));
  }

  private linkIdOfEntry(id: string, entry: string): string {
    const lid = entry.startsWith(`${LINK_DIR}/`) ? entry.slice(LINK_DIR.length + 1) : '';
    if (!isLinkId(lid))
      throw new UnionctlError('CORRUPT', `overlay2 layer ${id}: lower file entry ${JSON.stringify(entry)} is not l/<link id>`);
    return lid;
  }

  /**
   * The layer a branch directory belongs to, for any spelling the kernel may show: an absolute
   * `<home>/<id>/diff`, an absolute `<home>/l/<LID>`, or the same relative to the home (mounts made
   * with relative paths). Undefined when the dir is not a layer dir of this home.
   */
  layerOfBranchDir(dir: string): string | undefined {
    const abs = resolve(this.home, dir);
    const rel = abs.startsWith(`${this.home}/`) ? abs.slice(this.home.length + 1) : undefined;
    if (rel === undefined) return undefined;
    const [top, sub, ...deeper] = rel.split('/');
    if (top === undefined || sub === undefined || deeper.length > 0) return undefined;
    if (top === LINK_DIR && isLinkId(sub)) return this.layerOfLink(sub);
    if (sub === 'diff' && top !== LINK_DIR) return top;
    return undefined;
  }
}
