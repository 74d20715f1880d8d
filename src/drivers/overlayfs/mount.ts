/**
 * Mounting an overlay2 layer's union, in the three ways Docker's format allows:
 *
 * 1. absolute paths in one mount(2) data string (what Docker does while it fits a page);
 * 2. the same with paths relative to the home dir (`l/<LID>`, 28 bytes per lower), mounted from
 *    inside the home dir — Docker's fallback when the absolute form is longer than a page;
 * 3. the new mount API (fsopen/fsconfig/fsmount/move_mount, kernel ≥ 6.8) with one `lowerdir+`
 *    call per layer, for chains whose relative form does not fit a page either (≈140+ layers) —
 *    this also lifts Docker's 128-layer cap to the kernel's 500.
 */
import {
  assertDirsInside,
  AT_FDCWD,
  closeFd,
  FSCONFIG,
  fsconfig,
  fsmount,
  fsopen,
  mount,
  MOVE_MOUNT_F_EMPTY_PATH,
  moveMount,
  type OverlayParams,
} from '../../sys/index.js';
import { UnionctlError } from '../../errors.js';
import { join, relative } from 'node:path';
import type { MountDecision, MountPlan, MountSpec } from '../../graph/driver.js';

/** The branches of one union, as paths relative to the overlay2 home ("l/<LID>", "<id>/diff"). */
export interface UnionPaths {
  /** lowerdir entries, top first. A committed layer's own diff comes first here. */
  lowers: string[];
  /** Present for a writable union. */
  upper?: string;
  work?: string;
}

export interface MountSettings {
  /** The module has an `index` parameter: mount with index=off, as Docker does. */
  indexOff: boolean;
  /** In a user namespace overlay must use user.overlay.* xattrs. */
  userxattr: boolean;
  /** SELinux context for every file of the mount. */
  mountLabel?: string;
  pageSize: number;
  /** fsopen & co. and overlay's `lowerdir+` key are available. */
  newMountApi: boolean;
  /** The kernel-wide decisions above (and what the module's own defaults mean), each with its reason: what `mount --explain` shows. */
  decisions?: MountDecision[];
}

export type MountMethod = 'absolute' | 'relative' | 'new-api';

/** The kernel facts the overlay mount settings are decided from (probed by src/sys, or made up by a test). */
export interface OverlayKernelFacts {
  /** /sys/module/overlay/parameters, as overlayModuleParams reads them. */
  params: OverlayParams;
  inUserNamespace: boolean;
  pageSize: number;
  /** fsopen works for overlay and a test mount with `lowerdir+` succeeded. */
  lowerdirPlus: boolean;
}

/** The overlay mount settings of this kernel, and whether diff/ is a faithful change set, with their reasons. */
export interface OverlaySettings extends MountSettings {
  decisions: MountDecision[];
  /** diff/ (the upper dir) is a faithful change set: no redirect_dir, no metacopy, not in a user namespace. */
  nativeDiff: boolean;
  metacopy: boolean;
}

function shownParam(v: boolean | string | undefined): string {
  if (v === undefined) return 'no such module parameter';
  return typeof v === 'boolean' ? (v ? 'Y' : 'N') : v;
}

/**
 * The one place the overlay drivers' mount options are decided: pure, from the kernel's facts.
 * index=off where the module has the parameter (Docker's rule: with index=on a lower dir shared
 * by many layers would be tied to the first upper mounted over it); userxattr in a user namespace
 * (trusted.* xattrs cannot be set there); redirect_dir and metacopy are never passed, so the
 * module's defaults apply, and they decide whether diff/ can be read as the layer's changes.
 * `useNewApi` is the driver's say: overlay (one lower per mount) never needs lowerdir+.
 */
export function decideOverlaySettings(facts: OverlayKernelFacts, useNewApi = true): OverlaySettings {
  const { params } = facts;
  const metacopy = params.metacopy === true;
  // redirect_dir "on" (Y) makes renamed dirs redirects in the upper dir; "follow"/"off" do not create any.
  const redirects = params.redirectDir === true || params.redirectDir === 'on';
  const decisions: MountDecision[] = [
    {
      name: 'index',
      value: params.hasIndexParam ? 'off' : 'not set',
      why: params.hasIndexParam
        ? `the module has an index parameter (default ${shownParam(params.index)}): mounted with index=off as Docker does, so a lower dir shared by many layers is not tied to one upper`
        : 'the module has no index parameter (kernel < 4.13): nothing to turn off',
    },
    {
      name: 'userxattr',
      value: facts.inUserNamespace ? 'on' : 'off',
      why: facts.inUserNamespace
        ? 'running in a user namespace: trusted.* xattrs cannot be set, overlay keeps its own in user.overlay.*'
        : 'not in a user namespace: overlay keeps its xattrs in trusted.overlay.*',
    },
    {
      name: 'redirect_dir',
      value: `module default (${shownParam(params.redirectDir)})`,
      why: redirects
        ? 'not passed; the module default makes a renamed dir a redirect in the upper dir, so diff/ is not a plain change set (diffs are computed naively)'
        : 'not passed; with the module default a renamed dir is copied up whole, so diff/ stays a plain change set',
    },
    {
      name: 'metacopy',
      value: `module default (${shownParam(params.metacopy)})`,
      why: metacopy
        ? 'not passed; the module default copies up metadata only, so diff/ holds files without their data (diffs are computed naively)'
        : 'not passed; with the module default a copy-up copies the whole file, so diff/ holds real files',
    },
  ];
  return {
    indexOff: params.hasIndexParam,
    userxattr: facts.inUserNamespace,
    pageSize: facts.pageSize,
    newMountApi: useNewApi && facts.lowerdirPlus,
    metacopy,
    nativeDiff: !metacopy && !redirects && !facts.inUserNamespace,
    decisions,
  };
}

/** The options every union of this kernel is mounted with: index=off (as Docker does), userxattr (in a user namespace). */
function featureOptions(settings: Pick<MountSettings, 'indexOff' | 'userxattr'>): string[] {
  return [...(settings.indexOff ? ['index=off'] : []), ...(settings.userxattr ? ['userxattr'] : [])];
}

/**
 * Docker's mount data: "[index=off,][userxattr,]lowerdir=a:b[,upperdir=u,workdir=w][,context="label"]".
 * `base` is prefixed to every path ('' keeps them relative to the home).
 */
export function overlayMountData(
  paths: UnionPaths,
  settings: Pick<MountSettings, 'indexOff' | 'userxattr' | 'mountLabel'>,
  base: string,
): string {
  // Plain concatenation: both parts are clean paths we made (path.join's normalising showed up in profiles).
  const prefix = base === '' ? '' : `${base.replace(/\/+$/, '')}/`;
  const at = (p: string) => prefix + p;
  let data = [...featureOptions(settings), `lowerdir=${paths.lowers.map(at).join(':')}`].join(',');
  if (paths.upper !== undefined && paths.work !== undefined) data += `,upperdir=${at(paths.upper)},workdir=${at(paths.work)}`;
  // label.FormatMountLabel quotes the label (Go %q): context="system_u:object_r:…"
  if (settings.mountLabel) data += `,context=${JSON.stringify(settings.mountLabel)}`;
  return data;
}

/**
 * The fsconfig calls of the new-API mount, in order, as [key, value] (value null: a flag). Paths
 * are absolute; the label is the raw value (no quoting as in the mount(2) string).
 */
export function overlayFsconfigCalls(home: string, paths: UnionPaths, settings: MountSettings): Array<[string, string | null]> {
  const calls: Array<[string, string | null]> = [['source', 'overlay']]; // what mount(2) shows as the source, too
  if (settings.indexOff) calls.push(['index', 'off']);
  if (settings.userxattr) calls.push(['userxattr', null]);
  for (const lower of paths.lowers) calls.push(['lowerdir+', join(home, lower)]);
  if (paths.upper !== undefined && paths.work !== undefined) {
    calls.push(['upperdir', join(home, paths.upper)], ['workdir', join(home, paths.work)]);
  }
  if (settings.mountLabel) calls.push(['context', settings.mountLabel]);
  return calls;
}

/**
 * The mounts a runtime makes itself for a union of host directories (containerd's overlayfs
 * snapshotter's shapes): a writable union with lowers is one overlay; one without lowers is a
 * bind of the upper; a read-only union is a read-only bind of its one dir, or an overlay of two
 * or more lowers (overlayfs needs two lowers when there is no upper).
 */
export function overlayMountSpecs(
  dirs: { lowers: string[]; upper?: string; work?: string },
  settings: Pick<MountSettings, 'indexOff' | 'userxattr'>,
): MountSpec[] {
  const bind = (source: string, mode: 'rw' | 'ro'): MountSpec[] => [{ type: 'bind', source, options: [mode, 'rbind'] }];
  const flags = featureOptions(settings);
  const lowerdir = `lowerdir=${dirs.lowers.join(':')}`;
  if (dirs.upper !== undefined) {
    if (dirs.lowers.length === 0 || dirs.work === undefined) return bind(dirs.upper, 'rw');
    return [{ type: 'overlay', source: 'overlay', options: [...flags, `workdir=${dirs.work}`, `upperdir=${dirs.upper}`, lowerdir] }];
  }
  if (dirs.lowers.length === 1) return bind(dirs.lowers[0]!, 'ro');
  return [{ type: 'overlay', source: 'overlay', options: [...flags, lowerdir] }];
}

/** The method Docker's rules pick for this union: the first whose data fits a page. */
export function chooseMountMethod(home: string, paths: UnionPaths, settings: MountSettings): MountMethod {
  return planOverlayMount(home, home, paths, settings).method as MountMethod;
}

/**
 * The mount of one union, decided without touching anything (pure): Docker's rules, the first
 * method whose data fits a page (mount(2) copies at most one page, NUL included) — absolute paths,
 * then paths relative to the home (mounted from inside it), then the new mount API where the
 * kernel has it. UNSUPPORTED when none can. mountOverlay carries out exactly this plan, and
 * `mount --explain` shows it: the two cannot disagree.
 */
export function planOverlayMount(home: string, target: string, paths: UnionPaths, settings: MountSettings): MountPlan {
  const absolute = overlayMountData(paths, settings, home);
  const relativeData = overlayMountData(paths, settings, '');
  const bytes = (data: string) => Buffer.byteLength(data) + 1;
  const base = { path: target, fsType: 'overlay', pageSize: settings.pageSize };
  const lowers = `${paths.lowers.length} lower layer${paths.lowers.length === 1 ? '' : 's'}`;
  const decision = (value: MountMethod, why: string): MountDecision[] => [
    { name: 'method', value, why: `${lowers}: ${why}` },
    ...(settings.decisions ?? []),
  ];
  if (bytes(absolute) <= settings.pageSize) {
    return {
      ...base,
      method: 'absolute',
      data: [absolute],
      dataBytes: bytes(absolute),
      decisions: decision(
        'absolute',
        `the mount data with absolute paths is ${bytes(absolute)} bytes, within the ${settings.pageSize}-byte page`,
      ),
    };
  }
  const tooLong = `with absolute paths the mount data would be ${bytes(absolute)} bytes, more than the ${settings.pageSize}-byte page mount(2) copies`;
  if (bytes(relativeData) <= settings.pageSize) {
    return {
      ...base,
      method: 'relative',
      cwd: home,
      data: [relativeData],
      dataBytes: bytes(relativeData),
      decisions: decision(
        'relative',
        `${tooLong}; relative to ${home} (l/<LID> links) it is ${bytes(relativeData)} bytes, mounted from inside the home`,
      ),
    };
  }
  if (settings.newMountApi) {
    const calls = overlayFsconfigCalls(home, paths, settings).map(([k, v]) => (v === null ? k : `${k}=${v}`));
    return {
      ...base,
      method: 'new-api',
      data: calls,
      decisions: decision(
        'new-api',
        `${tooLong}, and ${bytes(relativeData)} bytes even with relative paths: fsopen/fsconfig with one lowerdir+ call per layer (no page limit)`,
      ),
    };
  }
  throw new UnionctlError(
    'UNSUPPORTED',
    `cannot mount a union of ${lowers}: the mount data does not fit a ${settings.pageSize}-byte page even with relative paths`,
    {
      hint: 'this kernel lacks the new mount API (fsopen, overlay lowerdir+; Linux ≥ 6.8) that deep chains need; flatten the image',
    },
  );
}

/**
 * Mounts the union at `target` (an existing empty dir inside `home`) and returns the method used,
 * after assertUnionInside: CORRUPT when a path of the union or the target leads outside the home.
 * Errors name the target and the method, with the kernel's errno.
 */
export function mountUnion(home: string, target: string, paths: UnionPaths, settings: MountSettings): MountMethod {
  assertUnionInside(home, target, paths);
  return mountOverlay(home, target, paths, settings);
}

/**
 * The mount itself, without mountUnion's checks of the paths: for a caller that owns every
 * directory involved (the benchmark's bare-mount floor, whose target is outside any store).
 */
export function mountOverlay(home: string, target: string, paths: UnionPaths, settings: MountSettings): MountMethod {
  const plan = planOverlayMount(home, target, paths, settings);
  const method = plan.method as MountMethod;
  try {
    if (method === 'absolute') mount('overlay', target, 'overlay', 0, plan.data[0]);
    else if (method === 'relative') mountFromHome(home, target, plan.data[0]!);
    else mountWithNewApi(target, overlayFsconfigCalls(home, paths, settings));
  } catch (e) {
    throw new UnionctlError(
      'SYSCALL',
      `cannot mount overlay at ${target} (${paths.lowers.length} lower layers, ${method} paths): ${(e as Error).message}`,
      {
        cause: e,
        hint: 'check dmesg for the overlayfs message explaining the refusal',
      },
    );
  }
  return method;
}

/**
 * The kernel follows symlinks in every path of the mount data and in the target: each must stay
 * inside the home before it is handed over, or a damaged layer (its work/ a symlink to some other
 * directory, which overlayfs would empty) makes the mount write outside the store. The layout's
 * only symlinks are overlay2's `l/<LID>` links, which may be followed as long as they stay inside
 * the home; nothing else may be a symlink. CORRUPT names the first path that does not fit.
 */
export function assertUnionInside(home: string, target: string, paths: UnionPaths): void {
  const mountPoint = relative(home, target);
  const own = [paths.upper, paths.work, mountPoint].filter((p): p is string => p !== undefined);
  const role = (p: string) => (p === mountPoint ? 'mount point' : p === paths.upper ? 'overlay upper dir' : 'overlay work dir');
  assertDirsInside(home, own, 'no-symlinks', role);
  assertDirsInside(
    home,
    paths.lowers.filter((p) => !p.startsWith('l/')),
    'no-symlinks',
    'overlay lower dir',
  );
  assertDirsInside(
    home,
    paths.lowers.filter((p) => p.startsWith('l/')),
    'beneath',
    'overlay lower dir',
  );
}

/**
 * mount(2) with paths relative to the home dir: the kernel resolves them against the process's
 * working directory, so chdir into the home, mount, chdir back. All three calls are synchronous
 * (mount is a koffi call), so no other JavaScript of this process runs while the working directory
 * is changed. (What could still see it is an async fs call with a *relative* path already handed to
 * libuv's thread pool; unionctl itself only uses absolute paths.) Docker does the same in a
 * re-exec'd child (mountFrom) because Go cannot chdir one thread safely.
 */
function mountFromHome(home: string, target: string, data: string): void {
  const previous = process.cwd();
  process.chdir(home);
  try {
    mount('overlay', target, 'overlay', 0, data);
  } finally {
    process.chdir(previous);
  }
}

/**
 * The new mount API: the plan's fsconfig calls (one `lowerdir+` per layer, so the number of layers
 * is bounded by the kernel's stack limit, 500, not by a page of mount data), then create, fsmount
 * and move_mount onto the target.
 */
function mountWithNewApi(target: string, calls: Array<[string, string | null]>): void {
  const fsFd = fsopen('overlay');
  let mountFd = -1;
  try {
    for (const [key, value] of calls) fsconfig(fsFd, value === null ? FSCONFIG.SET_FLAG : FSCONFIG.SET_STRING, key, value);
    fsconfig(fsFd, FSCONFIG.CMD_CREATE, null, null);
    mountFd = fsmount(fsFd);
    moveMount(mountFd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
  } finally {
    if (mountFd >= 0) closeFd(mountFd);
    closeFd(fsFd);
  }
}
