/**
 * GNU tar and coreutils: the floors. Extraction keeps what unionctl keeps (numeric owners,
 * permissions, xattrs); creation writes to a file, because GNU tar notices an archive on /dev/null
 * and skips reading file contents.
 */
import { mkdirSync } from 'node:fs';
import { sh } from '../measure.js';

export function tarExtract(tarPath: string, dest: string): void {
  mkdirSync(dest, { recursive: true });
  sh('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-xpf', tarPath, '-C', dest]);
}

export function tarCreate(dir: string, tarPath: string): void {
  sh('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-C', dir, '-cf', tarPath, '.']);
}

export function removeTree(dir: string): void {
  sh('rm', ['-rf', '--one-file-system', dir]);
}
