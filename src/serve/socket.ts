/**
 * The unix socket a server listens on (both `unionctl serve` modes): taking the path (a stale
 * socket a killed server left is replaced; a live one is someone else's), and giving it back.
 */
import { lstatSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { UnionctlError } from '../errors.js';

/** Readies `path` for listen(): nothing there, or a stale socket (nobody answers) removed. IN_USE for a live one, USAGE for anything that is not a socket. */
export async function claimSocketPath(path: string): Promise<void> {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st === undefined) return;
  if (!st.isSocket()) {
    throw new UnionctlError('USAGE', `${path} exists and is not a socket`, { hint: 'remove it, or give another --socket' });
  }
  const live = await new Promise<boolean>((resolve) => {
    const c = connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) {
    throw new UnionctlError('IN_USE', `another process is serving on ${path}`, { hint: 'stop it first, or give another --socket' });
  }
  rmSync(path, { force: true });
}

/** The socket's inode, to know it again at removal. */
export function socketInode(path: string): number {
  return lstatSync(path).ino;
}

/** Removes the socket this server made (inode `ino`), not one another process put there since. */
export function releaseSocketPath(path: string, ino: number): void {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st !== undefined && st.isSocket() && st.ino === ino) rmSync(path, { force: true });
}
