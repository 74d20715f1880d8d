/**
 * src/sys against the real kernel (run as root): every test makes its own files under one temp
 * dir, half of it on a tmpfs mounted there, and `after` unmounts and removes everything.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  closeSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import * as sys from '../../src/sys/index.js';
import { SysCallError } from '../../src/errors.js';
import { rootMissing } from '../helpers/requires.js';

const CAP_NET_BIND_SERVICE = Buffer.from([1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

function isSysErr(errno: string, syscall?: string) {
  return (e: unknown) => e instanceof SysCallError && e.errno === errno && (syscall === undefined || e.syscall === syscall);
}

describe('sys: mountinfo and overlay option text', () => {
  it('splits fields and unescapes octal escapes in root, mount point and source', () => {
    const line =
      '36 35 98:0 /mnt\\0111 /mnt\\040with\\040space\\134x rw,noatime master:1 shared:2 - ext3 /dev/my\\040disk rw,errors=continue';
    const [m] = sys.parseMountInfo(`${line}\n`);
    assert.deepEqual(m, {
      id: 36,
      parentId: 35,
      major: 98,
      minor: 0,
      root: '/mnt\t1',
      mountPoint: '/mnt with space\\x',
      mountOptions: ['rw', 'noatime'],
      optionalFields: ['master:1', 'shared:2'],
      fsType: 'ext3',
      source: '/dev/my disk',
      superOptions: ['rw', 'errors=continue'],
    });
  });

  it('refuses a line that is not a mount record instead of guessing', () => {
    for (const line of [
      '36 35 98:0 /mnt',
      '36 35 98:0 / /mnt rw - ',
      'x 35 98:0 / /mnt rw - ext3 /dev/sda rw',
      '36 35 98 / /mnt rw - ext3 /dev/sda rw',
    ])
      assert.throws(() => sys.parseMountInfo(`1 0 8:1 / / rw - ext4 /dev/sda rw\n${line}\n`), { code: 'CORRUPT' });
  });

  it('findMount picks the top of a stack of mounts on one point', () => {
    const text = ['1 0 8:1 / / rw - ext4 /dev/sda rw', '2 1 0:5 / /m rw - tmpfs a rw', '3 2 0:6 / /m rw - tmpfs b rw', ''].join('\n');
    const mounts = sys.parseMountInfo(text);
    assert.equal(sys.findMount('/m/', mounts)?.source, 'b');
    assert.equal(sys.findMount('/x', mounts), undefined);
    assert.deepEqual(
      sys.mountsUnder('/', mounts).map((m) => m.id),
      [1, 2, 3],
    );
  });

  // Lines as kernel 6.18 printed them (see the real mounts below for the live check).
  it('parses the classic lowerdir list: escaped colons, spaces, data-only layers', () => {
    const [classic] = sys.parseMountInfo(
      '47 27 0:40 / /t/m rw,relatime - overlay overlay rw,lowerdir=/t/l1:/t/l\\134:2:/t/l\\0403,upperdir=/t/u,workdir=/t/w,uuid=on\n',
    );
    assert.deepEqual(sys.parseOverlayOptions(classic.superOptions), {
      lowerdirs: ['/t/l1', '/t/l:2', '/t/l 3'],
      datadirs: [],
      upperdir: '/t/u',
      workdir: '/t/w',
      other: { rw: true, uuid: 'on' },
    });
    const data = sys.parseOverlayOptions(['ro', 'lowerdir=/t/a:/t/b::/t/d1::/t/d2', 'redirect_dir=on', 'metacopy=on']);
    assert.deepEqual(data.lowerdirs, ['/t/a', '/t/b']);
    assert.deepEqual(data.datadirs, ['/t/d1', '/t/d2']);
    assert.equal(data.other.metacopy, 'on');
  });

  it('parses the lowerdir+ / datadir+ form of the new mount API', () => {
    const [plus] = sys.parseMountInfo(
      '56 27 0:42 / /t/m\\0402 rw,relatime - overlay none rw,lowerdir+=/t/l1,lowerdir+=/t/l:2,lowerdir+=/t/l\\0544,lowerdir+=/t/l=6,datadir+=/t/d,upperdir=/t/u2,workdir=/t/w2,uuid=on\n',
    );
    assert.equal(plus.mountPoint, '/t/m 2');
    const o = sys.parseOverlayOptions(plus.superOptions);
    assert.deepEqual(o.lowerdirs, ['/t/l1', '/t/l:2', '/t/l,4', '/t/l=6']);
    assert.deepEqual(o.datadirs, ['/t/d']);
    assert.equal(o.upperdir, '/t/u2');
  });
});

describe(
  'sys: syscalls and probes on this kernel',
  { skip: rootMissing('mounts tmpfs and overlays, mknod, lchown, trusted.* xattrs') },
  () => {
    let base = ''; // on the root filesystem (ext4 here)
    let tmpfs = ''; // a tmpfs mounted below base
    const onExt = (p: string) => join(base, p);
    const onTmpfs = (p: string) => join(tmpfs, p);

    before(() => {
      base = mkdtempSync('/tmp/unionctl-test-sys-');
      tmpfs = onExt('tmpfs');
      mkdirSync(tmpfs);
      sys.mount('tmpfs', tmpfs, 'tmpfs', 0, 'size=64m');
    });

    after(() => {
      for (const m of sys.mountsUnder(base).reverse()) sys.umount2(m.mountPoint, sys.MNT_DETACH);
      rmSync(base, { recursive: true, force: true });
      assert.deepEqual(sys.mountsUnder(base), [], 'nothing left mounted');
    });

    it('reads back a mount point with a space and a colon, and its source, from /proc/self/mountinfo', () => {
      const target = onExt('mnt with space:colon');
      mkdirSync(target);
      sys.mount('my source', target, 'tmpfs', sys.MS.NOSUID | sys.MS.NODEV, 'size=1m,mode=700');
      try {
        assert.ok(readFileSync('/proc/self/mountinfo', 'utf8').includes('mnt\\040with\\040space:colon'), 'the kernel escapes the space');
        const m = sys.findMount(target);
        assert.ok(m, 'found by its unescaped path');
        assert.equal(m.fsType, 'tmpfs');
        assert.equal(m.source, 'my source');
        assert.ok(m.mountOptions.includes('nosuid') && m.mountOptions.includes('nodev'));
        assert.ok(m.superOptions.includes('mode=700'));
        assert.equal(sys.isMountPoint(target), true);
      } finally {
        sys.umount2(target);
      }
      assert.equal(sys.isMountPoint(target), false);
    });

    it('mknod makes whiteouts (char 0/0), block devices and FIFOs', () => {
      sys.mknod(onTmpfs('wh'), sys.S_IFCHR, 0, 0);
      const wh = lstatSync(onTmpfs('wh'));
      assert.ok(wh.isCharacterDevice());
      assert.equal(wh.rdev, 0);
      sys.mknod(onExt('blk'), sys.S_IFBLK | 0o640, 259, 70000); // minor > 255 exercises makedev's split
      const blk = lstatSync(onExt('blk'));
      assert.ok(blk.isBlockDevice());
      assert.equal(blk.mode & 0o7777, 0o640 & ~process.umask());
      assert.equal(blk.rdev, Number(sys.makedev(259, 70000)));
      // glibc's layout: minor 0x11170 → low byte 0x70 at bit 0, the rest (0x111) at bit 20; major 0x103 at bit 8
      assert.equal(sys.makedev(259, 70000), 0x11110370n);
      assert.equal(execFileSync('stat', ['-c', '%Hr:%Lr', onExt('blk')], { encoding: 'utf8' }).trim(), '259:70000');
      sys.mknod(onExt('fifo'), sys.S_IFIFO | 0o644, 0, 0);
      assert.ok(lstatSync(onExt('fifo')).isFIFO());
    });

    it('lchown and utimensat(nofollow) act on a symlink itself, to the nanosecond', () => {
      writeFileSync(onExt('target'), 't');
      symlinkSync('target', onExt('ln'));
      const before = statSync(onExt('target'), { bigint: true });
      sys.lchown(onExt('ln'), 1000, 1001);
      sys.utimensat(onExt('ln'), { sec: 1, nsec: 5 }, { sec: 1735689600, nsec: 123456789 }, { nofollow: true });
      const link = lstatSync(onExt('ln'), { bigint: true });
      assert.equal(link.uid, 1000n);
      assert.equal(link.gid, 1001n);
      assert.equal(link.mtimeNs, 1735689600123456789n);
      assert.equal(link.atimeNs, 1000000005n);
      const target = statSync(onExt('target'), { bigint: true });
      assert.equal(target.uid, before.uid, 'the target keeps its owner');
      assert.equal(target.mtimeNs, before.mtimeNs, 'and its mtime');
      // without nofollow the target changes
      sys.utimensat(onExt('ln'), { sec: 7, nsec: 0 }, { sec: 8, nsec: 999999999 });
      assert.equal(statSync(onExt('target'), { bigint: true }).mtimeNs, 8999999999n);
    });

    for (const fs of ['tmpfs', 'ext4'] as const) {
      it(`round-trips binary xattrs with NUL bytes, lists and removes them (${fs})`, () => {
        const file = fs === 'tmpfs' ? onTmpfs('xf') : onExt('xf');
        writeFileSync(file, 'x');
        const binary = Buffer.from([0, 1, 0, 255, 0]);
        sys.lsetxattr(file, 'security.capability', CAP_NET_BIND_SERVICE);
        sys.lsetxattr(file, 'trusted.overlay.opaque', Buffer.from('y'));
        sys.lsetxattr(file, 'user.bin', binary);
        sys.lsetxattr(file, 'user.empty', Buffer.alloc(0));
        assert.deepEqual(sys.lgetxattr(file, 'security.capability'), CAP_NET_BIND_SERVICE);
        assert.deepEqual(sys.lgetxattr(file, 'trusted.overlay.opaque'), Buffer.from('y'));
        assert.deepEqual(sys.lgetxattr(file, 'user.bin'), binary);
        assert.deepEqual(sys.lgetxattr(file, 'user.empty'), Buffer.alloc(0));
        assert.equal(sys.lgetxattr(file, 'user.absent'), undefined);
        assert.deepEqual(sys.llistxattr(file).sort(), ['security.capability', 'trusted.overlay.opaque', 'user.bin', 'user.empty']);
        assert.throws(() => sys.lsetxattr(file, 'user.bin', binary, sys.XATTR_CREATE), isSysErr('EEXIST', 'lsetxattr'));
        sys.lremovexattr(file, 'user.bin');
        assert.equal(sys.lgetxattr(file, 'user.bin'), undefined);
        assert.throws(() => sys.lremovexattr(file, 'user.bin'), isSysErr('ENODATA', 'lremovexattr'));
      });
    }

    it('reads values bigger than the first-try buffer (ERANGE retry) and many names', () => {
      const file = onTmpfs('big');
      writeFileSync(file, '');
      const big = Buffer.alloc(10000, 7);
      big[5000] = 0;
      sys.lsetxattr(file, 'trusted.big', big);
      assert.deepEqual(sys.lgetxattr(file, 'trusted.big'), big);
      const names = Array.from({ length: 300 }, (_, i) => `user.a-rather-long-attribute-name-${i}`); // > 4 KiB of names
      for (const n of names) sys.lsetxattr(file, n, Buffer.from('v'));
      assert.deepEqual(sys.llistxattr(file).sort(), ['trusted.big', ...names].sort());
    });

    it('xattrs on a symlink: trusted.* is set on the link itself, user.* is refused with EPERM', () => {
      writeFileSync(onTmpfs('t'), '');
      symlinkSync('t', onTmpfs('sl'));
      sys.lsetxattr(onTmpfs('sl'), 'trusted.x', Buffer.from([0, 9]));
      assert.deepEqual(sys.lgetxattr(onTmpfs('sl'), 'trusted.x'), Buffer.from([0, 9]));
      assert.deepEqual(sys.llistxattr(onTmpfs('sl')), ['trusted.x']);
      assert.deepEqual(sys.llistxattr(onTmpfs('t')), [], 'not on the target');
      assert.throws(() => sys.lsetxattr(onTmpfs('sl'), 'user.x', Buffer.from('v')), isSysErr('EPERM', 'lsetxattr'));
    });

    it('statfs names the backing filesystem', () => {
      const root = sys.statfs('/');
      assert.equal(root.typeName, 'extfs');
      assert.ok(root.blocks > 0n && root.bfree <= root.blocks && root.bavail <= root.bfree);
      assert.equal(root.namelen, 255);
      const t = sys.statfs(tmpfs);
      assert.equal(t.type, 0x01021994);
      assert.equal(t.typeName, 'tmpfs');
      assert.equal(t.bsize, 4096);
      assert.equal(t.blocks, (64n * 1024n * 1024n) / 4096n);
      assert.equal(sys.fsTypeName(0x12345), '0x12345');
    });

    it('readdirTypes returns the raw d_type of each entry', () => {
      mkdirSync(onTmpfs('dt/d'), { recursive: true });
      writeFileSync(onTmpfs('dt/f'), '');
      symlinkSync('f', onTmpfs('dt/l'));
      sys.mknod(onTmpfs('dt/c'), sys.S_IFCHR, 0, 0);
      const types = Object.fromEntries(sys.readdirTypes(onTmpfs('dt')).map((e) => [e.name, e.type]));
      assert.deepEqual(types, { d: sys.DT.DIR, f: sys.DT.REG, l: sys.DT.LNK, c: sys.DT.CHR });
      assert.throws(() => sys.readdirTypes(onTmpfs('nope')), isSysErr('ENOENT', 'opendir'));
    });

    it('flock: a second exclusive lock on another open file description fails with EAGAIN', () => {
      writeFileSync(onExt('lock'), '');
      const a = openSync(onExt('lock'), 'r');
      const b = openSync(onExt('lock'), 'r');
      try {
        sys.flock(a, sys.LOCK_EX | sys.LOCK_NB);
        assert.throws(() => sys.flock(b, sys.LOCK_EX | sys.LOCK_NB), isSysErr('EAGAIN', 'flock'));
        assert.throws(() => sys.flock(b, sys.LOCK_SH | sys.LOCK_NB), isSysErr('EAGAIN', 'flock'));
        sys.flock(a, sys.LOCK_UN);
        sys.flock(b, sys.LOCK_SH | sys.LOCK_NB);
        sys.flock(a, sys.LOCK_SH | sys.LOCK_NB); // shared locks coexist
      } finally {
        closeSync(a);
        closeSync(b);
      }
      assert.throws(() => sys.flock(a, sys.LOCK_EX), isSysErr('EBADF', 'flock'));
    });

    it('errors carry the errno name, the call and the path', () => {
      const missing = onExt('missing');
      assert.throws(
        () => sys.mount('none', missing, 'tmpfs', 0),
        (e: unknown) =>
          isSysErr('ENOENT', 'mount')(e) &&
          (e as SysCallError).path === missing &&
          (e as SysCallError).message.startsWith(`mount ${missing}: ENOENT`),
      );
      assert.throws(() => sys.umount2(base), isSysErr('EINVAL', 'umount2'), 'not a mount point');
      assert.throws(() => sys.lchown(missing, 0, 0), isSysErr('ENOENT', 'lchown'));
      assert.throws(() => sys.lgetxattr(missing, 'user.x'), isSysErr('ENOENT', 'lgetxattr'));
      assert.throws(() => sys.statfs(missing), isSysErr('ENOENT', 'statfs'));
      sys.mknod(onExt('dup'), sys.S_IFCHR, 0, 0);
      assert.throws(() => sys.mknod(onExt('dup'), sys.S_IFCHR, 0, 0), isSysErr('EEXIST', 'mknod'));
      assert.throws(() => sys.fsopen('no-such-fs'), isSysErr('ENODEV', 'fsopen'));
    });

    it('fsconfig errors include the message the kernel queued on the context', () => {
      const fd = sys.fsopen('overlay');
      try {
        assert.throws(
          () => sys.fsconfig(fd, sys.FSCONFIG.SET_STRING, 'bogus', 'x'),
          (e: unknown) => isSysErr('EINVAL', 'fsconfig')(e) && /bogus=x: e overlay: Unknown parameter 'bogus'/.test((e as Error).message),
        );
        assert.throws(
          () => sys.fsconfig(fd, sys.FSCONFIG.SET_STRING, 'lowerdir+', onExt('nope')),
          (e: unknown) => isSysErr('ENOENT', 'fsconfig')(e) && (e as Error).message.includes(onExt('nope')),
        );
      } finally {
        sys.closeFd(fd);
      }
    });

    /** lower dirs (one with a ':' and a ' ' in its name), upper, work and merged dirs for one overlay */
    function overlayDirs(name: string) {
      const dir = (p: string) => onExt(join(name, p));
      const d = { top: dir('top:1'), bottom: dir('bottom 2'), upper: dir('upper'), work: dir('work'), merged: dir('merged') };
      for (const p of Object.values(d)) mkdirSync(p, { recursive: true });
      writeFileSync(join(d.bottom, 'file'), 'bottom');
      writeFileSync(join(d.bottom, 'only-bottom'), 'b');
      writeFileSync(join(d.top, 'file'), 'top');
      return d;
    }

    it('mounts an overlay with mount(2), reads and writes through it, unmounts it', () => {
      const d = overlayDirs('ov1');
      const escapeColon = (p: string) => p.replace(/:/g, '\\:'); // overlay's own escape in lowerdir lists
      sys.mount(
        'overlay',
        d.merged,
        'overlay',
        0,
        `lowerdir=${escapeColon(d.top)}:${escapeColon(d.bottom)},upperdir=${d.upper},workdir=${d.work}`,
      );
      try {
        assert.equal(readFileSync(join(d.merged, 'file'), 'utf8'), 'top');
        assert.equal(readFileSync(join(d.merged, 'only-bottom'), 'utf8'), 'b');
        writeFileSync(join(d.merged, 'new'), 'n');
        assert.equal(readFileSync(join(d.upper, 'new'), 'utf8'), 'n', 'writes land in the upper dir');
        const m = sys.findMount(d.merged);
        assert.equal(m?.fsType, 'overlay');
        const lowerOpt = m!.superOptions.find((o) => o.startsWith('lowerdir='));
        assert.equal(lowerOpt, `lowerdir=${d.top.replace(':', '\\134:')}:${d.bottom.replace(' ', '\\040')}`, "the kernel's escaping");
        const o = sys.parseOverlayOptions(m!.superOptions);
        assert.deepEqual(o.lowerdirs, [d.top, d.bottom]);
        assert.equal(o.upperdir, d.upper);
        assert.equal(o.workdir, d.work);
        assert.equal(sys.backingFs(d.merged), 'overlayfs');
      } finally {
        sys.umount2(d.merged);
      }
      assert.equal(sys.findMount(d.merged), undefined);
    });

    it('mounts an overlay with fsopen/fsconfig(lowerdir+)/fsmount/move_mount, unmounts it', () => {
      const d = overlayDirs('ov2');
      const fd = sys.fsopen('overlay');
      let mountFd = -1;
      try {
        sys.fsconfig(fd, sys.FSCONFIG.SET_STRING, 'lowerdir+', d.top); // no escaping: one path per call
        sys.fsconfig(fd, sys.FSCONFIG.SET_STRING, 'lowerdir+', d.bottom);
        sys.fsconfig(fd, sys.FSCONFIG.SET_STRING, 'upperdir', d.upper);
        sys.fsconfig(fd, sys.FSCONFIG.SET_STRING, 'workdir', d.work);
        sys.fsconfig(fd, sys.FSCONFIG.SET_STRING, 'index', 'on'); // not the module default, so the kernel shows it
        sys.fsconfig(fd, sys.FSCONFIG.CMD_CREATE, null, null);
        mountFd = sys.fsmount(fd, sys.FSMOUNT_CLOEXEC, sys.MOUNT_ATTR.NODEV);
        sys.moveMount(mountFd, '', sys.AT_FDCWD, d.merged, sys.MOVE_MOUNT_F_EMPTY_PATH);
      } finally {
        if (mountFd >= 0) sys.closeFd(mountFd);
        sys.closeFd(fd);
      }
      try {
        assert.equal(readFileSync(join(d.merged, 'file'), 'utf8'), 'top');
        writeFileSync(join(d.merged, 'only-bottom'), 'changed');
        assert.equal(readFileSync(join(d.upper, 'only-bottom'), 'utf8'), 'changed', 'copied up');
        assert.equal(readFileSync(join(d.bottom, 'only-bottom'), 'utf8'), 'b');
        const m = sys.findMount(d.merged)!;
        assert.ok(m.mountOptions.includes('nodev'));
        // one option per layer; ':' is not escaped in this form, a space is (\040)
        assert.ok(m.superOptions.includes(`lowerdir+=${d.top}`));
        assert.ok(m.superOptions.includes(`lowerdir+=${d.bottom.replace(/ /g, '\\040')}`));
        const o = sys.parseOverlayOptions(m.superOptions);
        assert.deepEqual(o.lowerdirs, [d.top, d.bottom]);
        assert.equal(o.upperdir, d.upper);
        assert.equal(o.other.index, 'on');
      } finally {
        sys.umount2(d.merged, sys.MNT_DETACH);
      }
      assert.equal(sys.isMountPoint(d.merged), false);
    });

    it('probes report this machine', () => {
      sys.clearProbeCache();
      assert.equal(sys.hasFilesystem('overlay'), true);
      assert.equal(sys.hasFilesystem('no-such-fs'), false);
      assert.equal(sys.overlaySupported(), true);
      assert.equal(sys.supportsDType(tmpfs), true);
      assert.equal(sys.supportsDType(base), true);
      assert.equal(sys.newMountApiSupported(), true);
      assert.equal(sys.overlayLowerdirPlusSupported(), true); // kernel 6.18 ≥ 6.8
      assert.equal(sys.overlayMaxLowerLayers(), 500);
      assert.equal(sys.pageSize(), 4096);
      assert.equal(sys.backingFs(tmpfs), 'tmpfs');
      assert.equal(sys.backingFs(base), 'extfs');
      assert.equal(sys.reflinkSupported(tmpfs), false);
      assert.equal(sys.projectQuotaSupported(tmpfs), false);
      assert.equal(sys.inUserNamespace(), false);
      const params = sys.overlayModuleParams();
      assert.equal(params.hasIndexParam, true);
      assert.equal(typeof params.index, 'boolean');
      assert.equal(typeof params.metacopy, 'boolean');
      assert.equal(sys.mountOf(onTmpfs('a/b'))?.mountPoint, tmpfs);
      assert.equal(sys.mountOf(base)?.mountPoint, '/');
      assert.deepEqual(
        sys.readdirTypes(tmpfs).filter((e) => e.name.startsWith('.')),
        [],
        'probe temp dirs are removed',
      );
      assert.equal(
        sys.readdirTypes('/tmp').some((e) => /^(unionctl-probe-|\.lowerdir-probe-)/.test(e.name)),
        false,
      );
    });
  },
);
