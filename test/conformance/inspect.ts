/**
 * Looking at files the way a user would, without going through unionctl's own syscall layer:
 * getfattr(1) for xattrs, lstat for the rest, test/treelist.py for whole trees.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, type Stats } from 'node:fs';
import { join, relative } from 'node:path';
import type { Readable } from 'node:stream';

export const REPO = process.env.UNIONCTL_REPO ?? process.cwd();

/** The value of one xattr (not following symlinks), or undefined when the file does not have it. */
export function xattrOf(path: string, name: string): Buffer | undefined {
  const r = spawnSync('getfattr', ['--absolute-names', '-h', '-n', name, '-e', 'hex', path], { encoding: 'utf8' });
  if (r.status !== 0) {
    if (/No such attribute|No data available/.test(r.stderr)) return undefined;
    throw new Error(`getfattr ${name} ${path}: ${r.stderr.trim()}`);
  }
  const line = r.stdout.split('\n').find((l) => l.startsWith(`${name}=`));
  if (line === undefined) return undefined;
  const value = line.slice(name.length + 1);
  return value.startsWith('0x') ? Buffer.from(value.slice(2), 'hex') : Buffer.alloc(0);
}

/** Linux's major/minor split of st_rdev. */
export function deviceNumbers(st: Stats): { major: number; minor: number } {
  const rdev = BigInt(st.rdev);
  return {
    major: Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)),
    minor: Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)),
  };
}

/** An overlay whiteout: a character device 0/0. */
export function isOverlayWhiteout(path: string): boolean {
  try {
    const st = lstatSync(path);
    const { major, minor } = deviceNumbers(st);
    return st.isCharacterDevice() && major === 0 && minor === 0;
  } catch {
    return false;
  }
}

export function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

export function text(path: string): string {
  return readFileSync(path, 'utf8');
}

/** `python3 test/treelist.py <dir>`: the reference listing (types, modes, owners, sizes, hashes, xattrs, hardlinks). */
export function treeList(dir: string, args: string[] = []): string {
  return execFileSync('python3', [join(REPO, 'test', 'treelist.py'), dir, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
}

/** Reads a stream to the end. */
export async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}

/** Entry names of a tar, via GNU tar (independent of unionctl's tar reader). */
export function tarNames(tar: Buffer): string[] {
  return execFileSync('tar', ['-tf', '-'], { input: tar, encoding: 'utf8', maxBuffer: 64 << 20 })
    .split('\n')
    .filter(Boolean)
    .map((n) => n.replace(/^\.\//, '').replace(/\/$/, ''))
    .filter((n) => n !== '' && n !== '.');
}

/**
 * Every path below `dir` with its type, mode, owner, size and (for files) content, sorted: what
 * "nothing outside changed" compares. `skip` lists relative paths whose subtrees are not walked.
 */
export function snapshot(dir: string, skip: string[] = []): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const rel = relative(dir, p);
      if (skip.some((s) => rel === s || rel.startsWith(`${s}/`))) continue;
      const st = lstatSync(p);
      const kind = st.isDirectory() ? 'd' : st.isFile() ? 'f' : st.isSymbolicLink() ? 'l' : 'o';
      const body = kind === 'f' ? createHash('sha256').update(readFileSync(p)).digest('hex') : '';
      out.push(`${rel} ${kind} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${st.size} ${body}`);
      if (kind === 'd') walk(p);
    }
  };
  walk(dir);
  return out;
}
