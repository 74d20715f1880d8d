/**
 * Layer tars for the conformance suite, described entry by entry (order kept: the order is part of
 * several scenarios). Headers are encoded as given (the tar writer's encodeHeader does not clean
 * names), so hostile shapes (`..`, absolute names, links to nowhere) can be written too.
 */
import { Readable } from 'node:stream';
import { encodeHeader } from '../../src/archive/tar-writer.js';
import type { TarHeader } from '../../src/archive/types.js';

export type EntrySpec =
  | { type: 'dir'; path: string; mode?: number; uid?: number; gid?: number; mtime?: number; xattrs?: Record<string, Buffer> }
  | {
      type: 'file';
      path: string;
      content?: string | Buffer;
      mode?: number;
      uid?: number;
      gid?: number;
      mtime?: number;
      xattrs?: Record<string, Buffer>;
    }
  | { type: 'symlink'; path: string; target: string; mtime?: number }
  | { type: 'hardlink'; path: string; target: string }
  | { type: 'char' | 'block'; path: string; major: number; minor: number; mode?: number }
  | { type: 'fifo'; path: string; mode?: number };

const DEFAULT_MTIME = 1_700_000_000;

export const dir = (path: string, extra: Partial<Extract<EntrySpec, { type: 'dir' }>> = {}): EntrySpec => ({ type: 'dir', path, ...extra });
export const file = (
  path: string,
  content: string | Buffer = '',
  extra: Partial<Extract<EntrySpec, { type: 'file' }>> = {},
): EntrySpec => ({
  type: 'file',
  path,
  content,
  ...extra,
});
export const symlink = (path: string, target: string): EntrySpec => ({ type: 'symlink', path, target });
export const hardlink = (path: string, target: string): EntrySpec => ({ type: 'hardlink', path, target });

/** The whiteout entry deleting `path` (`dir/.wh.name`), as Docker writes it: an empty regular file. */
export function whiteout(path: string): EntrySpec {
  const slash = path.lastIndexOf('/');
  return file(`${path.slice(0, slash + 1)}.wh.${path.slice(slash + 1)}`, '', { mode: 0o600 });
}

/** The opaque marker of `dirPath` ('' for the root). */
export function opaque(dirPath: string): EntrySpec {
  return file(`${dirPath === '' ? '' : `${dirPath.replace(/\/$/, '')}/`}.wh..wh..opq`, '', { mode: 0o600 });
}

/**
 * Docker's makeTestLayer shorthand: "foo/" is a 0700 dir, anything else an empty 0600 file
 * (whiteout names included: they are plain files in a layer tar).
 */
export function fromPaths(paths: string[]): EntrySpec[] {
  return paths.map((p) => (p.endsWith('/') ? dir(p, { mode: 0o700 }) : file(p, '', { mode: 0o600 })));
}

const BLOCK = 512;

function toHeader(spec: EntrySpec): { header: TarHeader; body: Buffer } {
  const header: TarHeader = {
    path: spec.path,
    type: spec.type,
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: 0,
    mtime: { sec: 'mtime' in spec && spec.mtime !== undefined ? spec.mtime : DEFAULT_MTIME, nsec: 0 },
    linkname: '',
    devmajor: 0,
    devminor: 0,
    xattrs: new Map(),
  };
  let body: Buffer = Buffer.alloc(0);
  switch (spec.type) {
    case 'dir':
    case 'file':
      header.mode = spec.mode ?? (spec.type === 'dir' ? 0o755 : 0o644);
      header.uid = spec.uid ?? 0;
      header.gid = spec.gid ?? 0;
      header.xattrs = new Map(Object.entries(spec.xattrs ?? {}));
      if (spec.type === 'file') body = typeof spec.content === 'string' ? Buffer.from(spec.content) : (spec.content ?? body);
      header.size = body.length;
      break;
    case 'symlink':
    case 'hardlink':
      header.mode = spec.type === 'symlink' ? 0o777 : 0o644;
      header.linkname = spec.target;
      break;
    case 'char':
    case 'block':
      header.mode = spec.mode ?? 0o600;
      header.devmajor = spec.major;
      header.devminor = spec.minor;
      break;
    case 'fifo':
      header.mode = spec.mode ?? 0o600;
      break;
  }
  return { header, body };
}

/** The complete tar (with the two end-of-archive blocks) for these entries, in this order. */
export function tarOf(entries: EntrySpec[]): Buffer {
  const parts: Buffer[] = [];
  for (const spec of entries) {
    const { header, body } = toHeader(spec);
    parts.push(encodeHeader(header), body, Buffer.alloc((BLOCK - (body.length % BLOCK)) % BLOCK));
  }
  parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}

/** A byte stream (not object mode) of a tar held in memory, as applyDiff and importLayer take it. */
export function tarStream(tar: Buffer): Readable {
  return Readable.from([tar], { objectMode: false });
}
