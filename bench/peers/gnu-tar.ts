/**
 * GNU tar and coreutils: the floors. Extraction keeps what unionctl keeps (numeric owners,
 * permissions, xattrs); creation writes to a file, because GNU tar notices an archive on /dev/null
 * and skips reading file contents.
 */
import { mkdirSync } from 'node:fs';
import { sh } from '../measure.js';

/** `tar …ARGS TARFILE -C DEST` extracts keeping what unionctl keeps. */
export const TAR_EXTRACT_ARGS = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-xpf'];

export function tarExtract(tarPath: string, dest: string): void {
  mkdirSync(dest, { recursive: true });
  sh('tar', [...TAR_EXTRACT_ARGS, tarPath, '-C', dest]);
}

export function tarCreate(dir: string, tarPath: string): void {
  sh('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-C', dir, '-cf', tarPath, '.']);
}

export function removeTree(dir: string): void {
  sh('rm', ['-rf', '--one-file-system', dir]);
}
