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
import { existsSync, readlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { corruptError, isValidId } from '../../errors.js';
import { readStoreFile } from '../../sys/index.js';

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

/** Why a lower entry that is not l/<LID> would be dangerous in mount data, for the message. */
function lowerEntryDanger(entry: string): string {
  if (entry.includes(',')) return ' (a comma would add mount options)';
  if (entry.includes('=')) return " (an '=' would set a mount option)";
  if (entry.includes('\\')) return ' (a backslash escapes the next character in overlay mount data)';
  if (entry.split('/').includes('..')) return " ('..' would lead out of the store)";
  if (entry.startsWith('/')) return ' (an absolute path names a directory outside the store)';
  return '';
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

  /** The layer's LID from its link file (exactly 26 characters of base32, as Docker writes it). */
  readLinkId(id: string): string {
    const file = this.linkFile(id);
    const lid = readStoreFile(file, 'overlay2 link file');
    if (lid === undefined) {
      throw corruptError(`overlay2 layer ${id} has no link file ${file}`, {
        repair: `the layer directory ${this.layerDir(id)} is incomplete; remove the layer and recreate it`,
      });
    }
    if (!isLinkId(lid))
      throw corruptError(`overlay2 link file ${file} holds ${JSON.stringify(lid.slice(0, 80))}, not a 26-character link id`);
    return lid;
  }

  /**
   * The lower file's entries ("l/<LID>", nearest first), or undefined for a layer without a
   * parent. Every entry must be exactly Docker's `l/<26 characters of base32>`: the file's text
   * goes into the mount data, so anything else (a comma or `=` adding mount options, a `\`
   * escape, `..`, an absolute path) is CORRUPT naming the file, never mounted.
   */
  readLowerEntries(id: string): string[] | undefined {
    const file = this.lowerFile(id);
    const text = readStoreFile(file, 'overlay2 lower file');
    if (text === undefined) return undefined;
    if (text === '') return [];
    const entries = text.split(':');
    for (const entry of entries) {
      if (isLinkId(entry.startsWith(`${LINK_DIR}/`) ? entry.slice(LINK_DIR.length + 1) : '')) continue;
      throw corruptError(
        `overlay2 lower file ${file} has the entry ${JSON.stringify(entry.slice(0, 80))}, not l/<26-character link id>${lowerEntryDanger(entry)}`,
        {
          repair: 'nothing was mounted; restore the file (the parent\'s l/ link, then its own lower entries, joined by ":")',
        },
      );
    }
    return entries;
  }

  isCommitted(id: string): boolean {
    return existsSync(this.committedFile(id));
  }

  /** Which layer a `l/<LID>` link belongs to: its target is ../<id>/diff. */
  layerOfLink(linkId: string): string {
    const path = this.linkPath(linkId);
    let target: string;
    try {
      target = readlinkSync(path);
    } catch (e) {
      throw corruptError(
        `overlay2 link ${path} is missing or not a symbolic link (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
        {
          repair: 'a lower layer was removed underneath its children, or the link was replaced',
        },
      );
    }
    const m = /^\.\.\/([^/]+)\/diff$/.exec(target);
    if (m === null || !isValidId(m[1]))
      throw corruptError(`overlay2 link ${path} points to ${JSON.stringify(target)}, not ../<layer id>/diff`);
    return m[1];
  }

  /** The ancestors of a layer, nearest first, from its lower file. */
  ancestorIds(id: string): string[] {
    return (this.readLowerEntries(id) ?? []).map((entry) => this.layerOfLink(this.linkIdOfEntry(entry)));
  }

  /** Absolute diff dirs of the ancestors, nearest first (what metadata's LowerDir lists). */
  lowerDiffDirs(id: string): string[] {
    return this.ancestorIds(id).map((a) => this.diffDir(a));
  }

  /** The LID of a lower entry readLowerEntries has checked. */
  private linkIdOfEntry(entry: string): string {
    return entry.slice(LINK_DIR.length + 1);
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
