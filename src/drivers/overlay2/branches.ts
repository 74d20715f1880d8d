/**
 * overlay2 branch lists: from the kernel's mount table when the layer is mounted, otherwise from the
 * layer's own lower/committed files (the same list the next get would mount).
 */
import type { Branch } from '../../graph/driver.js';
import { UnionctlError } from '../../errors.js';
import { parseOverlayOptions } from '../../sys/index.js';
import type { Overlay2Layout } from './layout.js';

function branchOf(layout: Overlay2Layout, dir: string, mode: Branch['mode'], where: string): Branch {
  const layer = layout.layerOfBranchDir(dir);
  if (layer === undefined) {
    throw new UnionctlError('CORRUPT', `${where} has branch ${JSON.stringify(dir)}, which is not a layer of ${layout.home}`, {
      hint: 'something other than unionctl mounted over the layer; unmount it',
    });
  }
  return { path: layout.diffDir(layer), layer, mode };
}

/**
 * What the kernel says about the overlay mounted at the layer's merged dir: the upperdir is `rw`,
 * every lowerdir (given as `lowerdir=a:b`, as repeated `lowerdir+=`, absolute or relative to the
 * home) is `ro`. A committed layer's read-only mount has no upperdir: all branches `ro`.
 */
export function branchesFromMount(layout: Overlay2Layout, mountPoint: string, superOptions: string[]): Branch[] {
  const where = `the overlay mount at ${mountPoint}`;
  const parsed = parseOverlayOptions(superOptions);
  const branches: Branch[] = [];
  if (parsed.upperdir !== undefined) branches.push(branchOf(layout, parsed.upperdir, 'rw', where));
  for (const lower of parsed.lowerdirs) branches.push(branchOf(layout, lower, 'ro', where));
  return branches;
}

/**
 * The union an unmounted layer would get: its own diff (rw, or ro once committed — a committed
 * layer mounts read-only), then its ancestors' diffs, nearest first, all ro. A layer without a
 * parent is never mounted; get hands out its diff dir, which is then the one branch.
 */
export function branchesFromLayout(layout: Overlay2Layout, id: string): Branch[] {
  const own: Branch = { path: layout.diffDir(id), layer: id, mode: layout.isCommitted(id) ? 'ro' : 'rw' };
  const lowers = layout.ancestorIds(id).map((a): Branch => ({ path: layout.diffDir(a), layer: a, mode: 'ro' }));
  return [own, ...lowers];
}
