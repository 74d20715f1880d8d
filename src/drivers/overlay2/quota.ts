/**
 * overlay2.size: an xfs project quota per writable layer, the way Docker's quota package does it.
 *
 * Each limited layer dir gets its own project id (FS_IOC_FSSETXATTR with PROJINHERIT, so diff/ and
 * work/ and everything below inherit it), and the id gets a block hard+soft limit. Ids are allocated
 * above the home dir's own project id and above every id already used by a layer dir (Docker scans
 * the same way, so both tools can share a home).
 *
 * The limit itself is set with `xfs_quota -x -c 'limit -p …'` because src/sys has no quotactl
 * binding (Q_XSETQLIM on the backing block device would avoid the child process).
 */
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { UnionctlError } from '../../errors.js';
import { backingFs, getProjectId, mountOf, projectQuotaSupported, setProjectQuota } from '../../sys/index.js';

function withDirFd<T>(dir: string, fn: (fd: number) => T): T {
  const fd = openSync(dir, 'r');
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

/** Why overlay2.size cannot work under `home`, or undefined when it can. */
export function quotaUnsupportedReason(home: string, root: string): string | undefined {
  if (projectQuotaSupported(home)) return undefined;
  return `overlay2.size needs xfs with the pquota mount option; ${root} is on ${backingFs(home)}`;
}

export function assertQuotaSupported(home: string, root: string): void {
  const reason = quotaUnsupportedReason(home, root);
  if (reason !== undefined) {
    throw new UnionctlError('UNSUPPORTED', reason, {
      hint: 'put the store on an xfs filesystem mounted with -o prjquota (pquota), or drop the size option',
    });
  }
}

/** The next free project id: above the home's own id and every id a layer dir of the home uses. */
function nextProjectId(home: string): number {
  let highest = withDirFd(home, getProjectId);
  for (const entry of readdirSync(home, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    try {
      highest = Math.max(highest, withDirFd(join(home, entry.name), getProjectId));
    } catch {
      /* a dir removed meanwhile, or one we cannot open: it holds no id we could collide with */
    }
  }
  return highest + 1;
}

/**
 * Limits everything below `layerDir` to `bytes`. Call on the fresh, still empty layer dir (before
 * diff/ and work/ exist), under the driver's lock so two creates do not pick the same id.
 */
export function limitLayerDir(home: string, layerDir: string, bytes: number): number {
  const projectId = nextProjectId(home);
  withDirFd(layerDir, (fd) => setProjectQuota(fd, projectId));
  const mountPoint = mountOf(layerDir)?.mountPoint;
  if (mountPoint === undefined) throw new UnionctlError('UNSUPPORTED', `cannot find the filesystem mount of ${layerDir}`);
  // xfs_quota reads plain numbers as bytes. Docker sets soft = hard.
  const command = `limit -p bsoft=${bytes} bhard=${bytes} ${projectId}`;
  try {
    execFileSync('xfs_quota', ['-x', '-c', command, mountPoint], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const stderr = (e as { stderr?: Buffer }).stderr?.toString().trim();
    throw new UnionctlError(
      'SYSCALL',
      `xfs_quota could not set project ${projectId}'s limit on ${mountPoint}: ${stderr || (e as Error).message}`,
      {
        hint: 'xfs_quota comes with xfsprogs (apt-get install xfsprogs)',
      },
    );
  }
  return projectId;
}
