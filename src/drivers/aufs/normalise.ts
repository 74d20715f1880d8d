/**
 * Keeps a writable branch written through fuse-overlayfs in the aufs format, so Docker's aufs
 * driver (and the kernel's aufs) read it as their own. Run on a branch nothing is writing to:
 * after its fuse-overlayfs process has exited.
 *
 * What fuse-overlayfs leaves that aufs does not use:
 * - trusted.overlay.opaque=y on a dir made opaque (it also writes `.wh..wh..opq`, which is the aufs
 *   marker): the xattr is removed, the marker file made if it were missing;
 * - other trusted.overlay.* and user.fuseoverlayfs.* xattrs (origin of a copied-up file, …): removed;
 * - a char 0/0 device (a deletion made by a mount without FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT, e.g.
 *   by hand): replaced by the `.wh.<name>` file aufs uses.
 */
import { closeSync, lstatSync, openSync, readdirSync, unlinkSync, type Stats } from 'node:fs';
import { isOverlayWhiteout, isUnionBookkeepingXattr, OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE, whiteoutPath } from '../../archive/whiteout.js';
import { lgetxattr, llistxattr, lremovexattr } from '../../sys/index.js';

/** What a normalisation changed, for tests and logs. */
export interface NormaliseReport {
  /** Dirs whose opaque xattr became (or already had) a `.wh..wh..opq` file. */
  opaqueDirs: string[];
  /** char 0/0 devices turned into `.wh.` files. */
  whiteouts: string[];
  /** Inodes that lost bookkeeping xattrs. */
  xattrsRemoved: number;
}

/** An empty file, created only if missing (O_EXCL), mode 0600 like a `.wh.` tar entry. */
function touchMarker(path: string): void {
  try {
    closeSync(openSync(path, 'wx', 0o600));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
}

export function normaliseAufsBranch(branch: string): NormaliseReport {
  const report: NormaliseReport = { opaqueDirs: [], whiteouts: [], xattrsRemoved: 0 };
  const visit = (path: string, rel: string, st: Stats) => {
    if (isOverlayWhiteout(st)) {
      unlinkSync(path);
      touchMarker(whiteoutPath(path));
      report.whiteouts.push(rel);
      return;
    }
    const names = llistxattr(path).filter(isUnionBookkeepingXattr);
    if (st.isDirectory() && names.includes(OVERLAY_OPAQUE_XATTR) && lgetxattr(path, OVERLAY_OPAQUE_XATTR)?.toString() === 'y') {
      touchMarker(`${path}/${WHITEOUT_OPAQUE}`);
      report.opaqueDirs.push(rel);
    }
    for (const name of names) lremovexattr(path, name);
    if (names.length > 0) report.xattrsRemoved += 1;
    if (st.isDirectory()) {
      for (const name of readdirSync(path)) visit(`${path}/${name}`, rel === '' ? name : `${rel}/${name}`, lstatSync(`${path}/${name}`));
    }
  };
  visit(branch, '', lstatSync(branch));
  return report;
}
