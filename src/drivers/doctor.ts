/**
 * `unionctl doctor`: the kernel and filesystem facts that decide which drivers work here and how
 * they mount, each probed for real, with what it means for each driver and what to do about it.
 *
 * The decisions are not made again here: the overlay mount settings come from
 * decideOverlaySettings and the mount methods from planOverlayMount (the code the drivers mount
 * with), and whether a driver can run at all from its registry entry's unsupportedReason (the code
 * driver selection uses). Probes that write (d_type, xattrs, test mounts) do so in a scratch dir
 * under the store root's tmp/ (a temp dir when the root does not exist yet), removed afterwards;
 * test mounts are detached (fsopen … fsmount, never attached), so nothing is ever left mounted.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  backingFs,
  hasFilesystem,
  inUserNamespace,
  mountOf,
  newMountApiSupported,
  overlayAccepts,
  overlayLowerdirPlusSupported,
  overlayModuleParams,
  overlayMaxLowerLayers,
  pageSize,
  removeEntriesOfDeadProcesses,
  supportsDType,
  xattrSupported,
  type ProbeResult,
} from '../sys/index.js';
import { builtinDrivers } from './index.js';
import { findFuseOverlayfs, findProgram, FUSE_MOUNT_HELPER } from './aufs/fuse.js';
import { deviceMapperMissingReason } from './devicemapper/dmsetup.js';
import { decideOverlaySettings, planOverlayMount, type MountSettings, type UnionPaths } from './overlayfs/mount.js';
import { LEGACY_MAX_DEPTH } from './overlay2/features.js';

/** What one fact means for one driver. */
export interface DriverConsequence {
  /** The drivers it applies to ("all": every driver). */
  drivers: string[];
  effect: string;
}

/** One probed fact: its value, what it means per driver, and what to do (when something can be done). */
export interface DoctorFact {
  name: string;
  value: string;
  /** How it was found out (the file read, the probe made). */
  source: string;
  consequences: DriverConsequence[];
  action?: string;
}

/** Whether a driver can run on this root, by the check driver selection makes. */
export interface DoctorDriver {
  name: string;
  usable: boolean;
  reason?: string;
}

export interface DoctorReport {
  root: string;
  /** Where the writing probes ran (removed again). */
  scratch: string;
  facts: DoctorFact[];
  drivers: DoctorDriver[];
}

const OVERLAY_DRIVERS = ['overlay', 'overlay2'];

function both(effect: string): DriverConsequence[] {
  return [{ drivers: OVERLAY_DRIVERS, effect }];
}

function shown(r: ProbeResult | undefined): string {
  if (r === undefined) return 'not probed (no new mount API)';
  return r.ok ? 'yes' : `no (${r.error ?? 'refused'})`;
}

function readTrimmed(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * Runs `probe` with a scratch dir for the writing probes: <root>/tmp/doctor-<pid>-XXXXXX when the
 * root exists (tmp/ is removed again if doctor made it and it is empty), else one in the system
 * temp dir. The scratch dir is removed whatever happens (and by the next doctor, if this process is killed).
 */
function withScratch<T>(root: string, probe: (scratch: string) => T): T {
  const inStore = existsSync(root);
  const parent = inStore ? join(root, 'tmp') : tmpdir();
  const madeParent = inStore && !existsSync(parent);
  if (madeParent) mkdirSync(parent, { mode: 0o700 });
  // What a doctor killed mid-probe left (its pid is in the name) goes first.
  if (inStore) removeEntriesOfDeadProcesses(parent, /^doctor-(\d+)-/);
  const scratch = mkdtempSync(join(parent, `${inStore ? '' : 'unionctl-'}doctor-${process.pid}-`));
  try {
    return probe(scratch);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    if (madeParent && readdirSync(parent).length === 0) rmdirSync(parent);
  }
}

/**
 * How many lower layers an overlay2 union under `home` can have with each mount method, found by
 * asking planOverlayMount (the drivers' own decision) for chains of growing depth, with the
 * longest names overlay2 makes (26-character link ids, 64-hex layer ids).
 */
export function overlay2MethodLimits(home: string, settings: MountSettings, maxDepth: number): Record<string, number> {
  const id = 'f'.repeat(64);
  const chain = (n: number): UnionPaths => ({
    lowers: Array.from({ length: n }, () => `l/${'L'.repeat(26)}`),
    upper: `${id}/diff`,
    work: `${id}/work`,
  });
  const limits: Record<string, number> = {};
  for (let n = 1; n <= maxDepth; n++) {
    let method: string;
    try {
      method = planOverlayMount(home, join(home, id, 'merged'), chain(n), settings).method;
    } catch {
      break; // no method mounts this many
    }
    limits[method] = n;
  }
  return limits;
}

function overlayFacts(home: string, scratch: string): DoctorFact[] {
  const overlay = hasFilesystem('overlay');
  const facts: DoctorFact[] = [
    {
      name: 'overlay',
      value: overlay ? 'yes' : 'no',
      source: '/proc/filesystems',
      consequences: both(overlay ? 'the kernel has overlayfs' : 'cannot run: the kernel has no overlayfs'),
      action: overlay ? undefined : 'modprobe overlay (CONFIG_OVERLAY_FS)',
    },
  ];
  if (!overlay) return facts;
  const paramDir = '/sys/module/overlay/parameters';
  const params = existsSync(paramDir) ? readdirSync(paramDir).sort() : [];
  facts.push({
    name: 'overlay.parameters',
    value: params.map((p) => `${p}=${readTrimmed(join(paramDir, p)) ?? '?'}`).join(' ') || 'none',
    source: paramDir,
    consequences: both('the module defaults below apply to every mount (unionctl passes only index=off and userxattr)'),
  });
  const lowerdirPlus = newMountApiSupported() && overlayLowerdirPlusSupported(scratch);
  const settings = decideOverlaySettings({
    params: overlayModuleParams(),
    inUserNamespace: inUserNamespace(),
    pageSize: pageSize(),
    lowerdirPlus,
  });
  for (const d of settings.decisions) {
    facts.push({
      name: `overlay.${d.name}`,
      value: d.value,
      source: 'decideOverlaySettings (the drivers’ own decision)',
      consequences: both(d.why),
    });
  }
  facts.push({
    name: 'overlay2.native-diff',
    value: String(settings.nativeDiff),
    source: 'redirect_dir, metacopy, user namespace',
    consequences: [
      {
        drivers: ['overlay2'],
        effect: settings.nativeDiff
          ? 'diffs are read straight from diff/'
          : 'diffs are computed by comparing trees (slower, still correct)',
      },
    ],
    action: settings.nativeDiff ? undefined : 'load overlay with redirect_dir=N metacopy=N for native diffs',
  });
  const newApi = newMountApiSupported();
  facts.push({
    name: 'new-mount-api',
    value: newApi ? 'yes' : 'no',
    source: "fsopen('overlay')",
    consequences: [
      { drivers: ['overlay2'], effect: newApi ? 'fsopen/fsconfig available' : 'only mount(2): chains are limited by a page of mount data' },
    ],
  });
  facts.push({
    name: 'lowerdir+',
    value: lowerdirPlus ? 'yes' : 'no',
    source: 'a detached test mount with two lowerdir+ calls in the scratch dir',
    consequences: [
      {
        drivers: ['overlay2'],
        effect: lowerdirPlus
          ? `chains too deep for a page of mount data are mounted with one lowerdir+ per layer: up to ${overlayMaxLowerLayers()} lowers`
          : `no lowerdir+: at most ${LEGACY_MAX_DEPTH} lowers (Docker's cap)`,
      },
      { drivers: ['overlay'], effect: 'not needed: one lower per mount' },
    ],
    action: lowerdirPlus ? undefined : 'Linux ≥ 6.8 lifts the depth limit',
  });
  const depth = lowerdirPlus ? overlayMaxLowerLayers() : LEGACY_MAX_DEPTH;
  const limits = overlay2MethodLimits(home, settings, depth);
  facts.push({
    name: 'page-size',
    value: String(settings.pageSize),
    source: 'sysconf(_SC_PAGESIZE)',
    consequences: [
      {
        drivers: ['overlay2'],
        effect: `mount(2) data must fit one page: under ${home} absolute paths fit up to ${limits.absolute ?? 0} lowers, relative l/ paths up to ${limits.relative ?? 0}${limits['new-api'] === undefined ? '' : `, lowerdir+ up to ${limits['new-api']}`}`,
      },
    ],
  });
  const mountFeatures: Array<[string, Array<[string, string | null]>, string]> = [
    ['overlay.mount', [], 'a writable union mounts on this filesystem'],
    ['overlay.mount.index=on', [['index', 'on']], 'unionctl mounts index=off; this says whether the kernel knows the feature'],
    ['overlay.mount.redirect_dir=on', [['redirect_dir', 'on']], 'unionctl never asks for it (it would break native diffs)'],
    ['overlay.mount.metacopy=on', [['metacopy', 'on']], 'unionctl never asks for it (it would break native diffs)'],
    ['overlay.mount.userxattr', [['userxattr', null]], 'what mounts in a user namespace (rootless) use'],
  ];
  for (const [name, options, meaning] of mountFeatures) {
    const r = overlayAccepts(scratch, options);
    facts.push({
      name,
      value: shown(r),
      source: 'a detached test mount (fsopen … fsmount) in the scratch dir',
      consequences: both(meaning),
      action: name === 'overlay.mount' && r?.ok === false ? 'dmesg shows why overlayfs refused the mount' : undefined,
    });
  }
  return facts;
}

function filesystemFacts(root: string, scratch: string): DoctorFact[] {
  const fs = backingFs(scratch);
  const dType = supportsDType(scratch);
  const trusted = xattrSupported(scratch, 'trusted');
  const user = xattrSupported(scratch, 'user');
  const m = mountOf(scratch);
  const pquota = m !== undefined && m.superOptions.some((o) => o === 'prjquota' || o === 'pquota');
  return [
    {
      name: 'backing-fs',
      value: `${fs}${m === undefined ? '' : ` (${m.mountPoint})`}`,
      source: `statfs of ${root}`,
      consequences: [
        ...both(fs === 'overlayfs' ? 'cannot run: overlay cannot be an upper layer of another overlay' : `${fs} can hold upper layers`),
        { drivers: ['aufs'], effect: ['btrfs', 'ecryptfs', 'aufs'].includes(fs) ? `kernel aufs refuses ${fs}` : 'fine for aufs' },
      ],
    },
    {
      name: 'd_type',
      value: dType ? 'yes' : 'no',
      source: 'readdir(3) of a file made in the scratch dir',
      consequences: both(dType ? 'readdir fills in d_type, as overlayfs needs' : 'cannot run: overlayfs needs d_type'),
      action: dType ? undefined : 'put the store on ext4, or xfs made with mkfs.xfs -n ftype=1',
    },
    {
      name: 'xattr.trusted',
      value: shown(trusted),
      source: 'set and read back trusted.unionctl-probe in the scratch dir',
      consequences: [
        ...both(trusted.ok ? 'overlay keeps opaque dirs and redirects in trusted.overlay.*' : 'overlay needs userxattr (user.overlay.*)'),
        {
          drivers: ['vfs'],
          effect: trusted.ok ? 'trusted.* xattrs in layer tars are kept' : 'trusted.* xattrs in layer tars cannot be kept',
        },
      ],
      action: trusted.ok ? undefined : 'run as root in the initial user namespace',
    },
    {
      name: 'xattr.user',
      value: shown(user),
      source: 'set and read back user.unionctl-probe in the scratch dir',
      consequences: [
        ...both(
          user.ok ? 'userxattr mounts (user namespaces) can work here' : 'no userxattr: overlay cannot work in a user namespace here',
        ),
        { drivers: ['aufs'], effect: user.ok ? 'fuse-overlayfs can keep its xattrs' : 'fuse-overlayfs may fail to keep xattrs' },
      ],
    },
    {
      name: 'project-quota',
      value: pquota ? `yes (${m?.fsType} prjquota)` : `no (${m?.fsType ?? fs} without prjquota)`,
      source: 'the mount options of the filesystem holding the root (/proc/self/mountinfo)',
      consequences: [
        {
          drivers: ['overlay2'],
          effect:
            pquota && m?.fsType === 'xfs'
              ? 'overlay2.size and per-layer size= work'
              : pquota
                ? `overlay2.size needs xfs; ${m?.fsType} project quota is not used`
                : 'overlay2.size and size= are refused',
        },
        { drivers: ['devicemapper'], effect: 'sizes come from the thin-pool, not from quotas' },
      ],
      action: pquota && m?.fsType === 'xfs' ? undefined : 'for overlay2.size: put the store on xfs mounted with -o prjquota',
    },
  ];
}

function otherFacts(): DoctorFact[] {
  const aufs = hasFilesystem('aufs');
  const fuse = findFuseOverlayfs();
  const devFuse = existsSync('/dev/fuse');
  const helper = findProgram(FUSE_MOUNT_HELPER);
  const dm = deviceMapperMissingReason();
  const thin = existsSync('/sys/module/dm_thin_pool');
  const erofs = hasFilesystem('erofs');
  const maxUserNs = readTrimmed('/proc/sys/user/max_user_namespaces');
  const clone = readTrimmed('/proc/sys/kernel/unprivileged_userns_clone');
  const apparmor = readTrimmed('/proc/sys/kernel/apparmor_restrict_unprivileged_userns');
  const userNsOpen = maxUserNs !== '0' && clone !== '0' && apparmor !== '1';
  const inNs = inUserNamespace();
  return [
    {
      name: 'aufs',
      value: aufs ? 'yes' : 'no',
      source: '/proc/filesystems',
      consequences: [
        {
          drivers: ['aufs'],
          effect: aufs ? 'mounted with the kernel aufs module' : 'the aufs layout is mounted with fuse-overlayfs instead',
        },
      ],
    },
    {
      name: 'fuse-overlayfs',
      value: fuse === undefined ? 'no' : `${fuse}${devFuse ? '' : ' (no /dev/fuse)'}`,
      source: 'PATH, /dev/fuse',
      consequences: [
        {
          drivers: ['aufs'],
          effect: aufs
            ? 'not needed (kernel aufs)'
            : fuse !== undefined && devFuse
              ? 'mounts the aufs layout'
              : 'cannot run: neither kernel aufs nor fuse-overlayfs',
        },
        {
          drivers: ['aufs'],
          effect:
            helper === undefined
              ? `no ${FUSE_MOUNT_HELPER}: containerd cannot mount aufs snapshots`
              : `${helper} lets containerd mount aufs snapshots`,
        },
      ],
      action: fuse === undefined ? 'apt-get install fuse-overlayfs fuse3' : devFuse ? undefined : 'modprobe fuse',
    },
    {
      name: 'device-mapper',
      value: dm === undefined ? 'yes' : 'no',
      source: '/proc/misc, /dev/mapper/control',
      consequences: [
        { drivers: ['devicemapper'], effect: dm === undefined ? 'the kernel has device-mapper' : 'cannot run: no device-mapper' },
      ],
      action: dm === undefined ? undefined : 'modprobe dm_mod',
    },
    {
      name: 'dm-thin-pool',
      value: thin ? 'loaded' : 'not loaded',
      source: '/sys/module/dm_thin_pool',
      consequences: [
        {
          drivers: ['devicemapper'],
          effect: thin
            ? 'thin provisioning available'
            : 'a thin-pool cannot be made until the module is loaded (dmsetup loads it if it can)',
        },
      ],
      action: thin ? undefined : 'modprobe dm_thin_pool',
    },
    {
      name: 'erofs',
      value: erofs ? 'yes' : 'no',
      source: '/proc/filesystems',
      consequences: [{ drivers: ['all'], effect: "no unionctl driver uses erofs (containerd's erofs snapshotter and composefs do)" }],
    },
    {
      name: 'user-namespaces',
      value: `max_user_namespaces=${maxUserNs ?? '?'}${clone === undefined ? '' : ` unprivileged_userns_clone=${clone}`}${apparmor === undefined ? '' : ` apparmor_restrict_unprivileged_userns=${apparmor}`}`,
      source: '/proc/sys/user/max_user_namespaces, /proc/sys/kernel/unprivileged_userns_clone, apparmor_restrict_unprivileged_userns',
      consequences: [
        {
          drivers: ['all'],
          effect: userNsOpen
            ? 'unprivileged users may make user namespaces (rootless runtimes)'
            : 'unprivileged user namespaces are off: rootless runtimes fail',
        },
      ],
      action: userNsOpen ? undefined : 'sysctl user.max_user_namespaces=15000 (and kernel.unprivileged_userns_clone=1 where it exists)',
    },
    {
      name: 'in-user-namespace',
      value: inNs ? 'yes' : 'no',
      source: '/proc/self/uid_map',
      consequences: both(inNs ? 'mounts use userxattr; diffs are computed naively' : 'mounts use trusted.overlay.* xattrs'),
    },
  ];
}

/** Every fact, probed now (nothing is cached across calls that matters: memoised probes answer the same). */
export function doctor(root: string): DoctorReport {
  return withScratch(root, (scratch) => {
    const facts = [...overlayFacts(join(root, 'overlay2'), scratch), ...filesystemFacts(root, scratch), ...otherFacts()];
    const drivers = builtinDrivers.map((entry): DoctorDriver => {
      const reason = entry.unsupportedReason(join(root, entry.name));
      return reason === undefined ? { name: entry.name, usable: true } : { name: entry.name, usable: false, reason };
    });
    return { root, scratch, facts, drivers };
  });
}
