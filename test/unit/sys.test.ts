import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as sys from '../../src/sys/index.js';
import { SysCallError } from '../../src/errors.js';

const CAP_NET_BIND_SERVICE = Buffer.from([1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

describe('sys: parseMountInfo / parseOverlayOptions (text)', () => {
  it('unescapes octal escapes and splits fields', () => {
    const line = '36 35 98:0 /mnt1 /mnt\\040with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue';
    const [m] = sys.parseMountInfo(line + '\n');
    assert.equal(m.mountPoint, '/mnt with space');
    assert.equal(m.root, '/mnt1');
    assert.deepEqual(m.optionalFields, ['master:1']);
    assert.equal(m.fsType, 'ext3');
    assert.deepEqual(m.superOptions, ['rw', 'errors=continue']);
  });
  it('splits overlay lowerdirs on unescaped colons and reads lowerdir+ options', () => {
    const o = sys.parseOverlayOptions(['rw', 'lowerdir=/a\\134:b:/c', 'upperdir=/u', 'workdir=/w', 'index=off']);
    assert.deepEqual(o.lowerdirs, ['/a:b', '/c']);
    assert.equal(o.upperdir, '/u');
    assert.equal(o.other.index, 'off');
    assert.deepEqual(sys.parseOverlayOptions(['ro', 'lowerdir+=/x', 'lowerdir+=/y']).lowerdirs, ['/x', '/y']);
  });
});

describe('sys: real syscalls on a tmpfs', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync('/tmp/unionctl-test-sys-');
    sys.mount('tmpfs', dir, 'tmpfs', 0, 'size=64m');
  });
  after(() => {
    for (const m of sys.mountsUnder(dir).reverse()) sys.umount2(m.mountPoint, sys.MNT_DETACH);
    rmdirSync(dir);
  });

  it('mknod makes whiteouts, block devices and FIFOs', () => {
    sys.mknod(join(dir, 'wh'), sys.S_IFCHR, 0, 0);
    assert.ok(lstatSync(join(dir, 'wh')).isCharacterDevice());
    assert.equal(lstatSync(join(dir, 'wh')).rdev, 0);
    sys.mknod(join(dir, 'blk'), sys.S_IFBLK | 0o600, 8, 300);
    assert.equal(lstatSync(join(dir, 'blk')).rdev, Number(sys.makedev(8, 300)));
    sys.mknod(join(dir, 'fifo'), sys.S_IFIFO | 0o644, 0, 0);
    assert.ok(lstatSync(join(dir, 'fifo')).isFIFO());
  });

  it('lchown and utimensat act on a symlink itself, to the nanosecond', () => {
    symlinkSync('target', join(dir, 'ln'));
    sys.lchown(join(dir, 'ln'), 1000, 1001);
    sys.utimensat(join(dir, 'ln'), { sec: 1, nsec: 5 }, { sec: 1735689600, nsec: 123456789 }, { nofollow: true });
    const st = lstatSync(join(dir, 'ln'), { bigint: true });
    assert.equal(st.uid, 1000n);
    assert.equal(st.gid, 1001n);
    assert.equal(st.mtimeNs, 1735689600123456789n);
  });

  it('round-trips binary xattrs (NUL bytes included) and lists them', () => {
    writeFileSync(join(dir, 'f'), 'x');
    sys.lsetxattr(join(dir, 'f'), 'security.capability', CAP_NET_BIND_SERVICE);
    sys.lsetxattr(join(dir, 'f'), 'trusted.test', Buffer.from([0, 1, 0, 255]));
    assert.deepEqual(sys.lgetxattr(join(dir, 'f'), 'security.capability'), CAP_NET_BIND_SERVICE);
    assert.deepEqual(sys.lgetxattr(join(dir, 'f'), 'trusted.test'), Buffer.from([0, 1, 0, 255]));
    assert.equal(sys.lgetxattr(join(dir, 'f'), 'trusted.absent'), undefined);
    assert.deepEqual(sys.llistxattr(join(dir, 'f')).sort(), ['security.capability', 'trusted.test']);
    sys.lremovexattr(join(dir, 'f'), 'trusted.test');
    assert.deepEqual(sys.llistxattr(join(dir, 'f')), ['security.capability']);
    const big = Buffer.alloc(3000, 7); // larger than the first guess: ERANGE path
    sys.lsetxattr(join(dir, 'f'), 'trusted.big', big);
    assert.deepEqual(sys.lgetxattr(join(dir, 'f'), 'trusted.big'), big);
  });

  it('statfs names the filesystem', () => {
    assert.equal(sys.statfs(dir).typeName, 'tmpfs');
    assert.ok(sys.statfs(dir).bsize > 0);
  });

  it('flock: a second exclusive lock fails with EAGAIN', () => {
    const a = openSync(join(dir, 'lock'), 'w');
    const b = openSync(join(dir, 'lock'), 'r');
    try {
      sys.flock(a, sys.LOCK_EX | sys.LOCK_NB);
      assert.throws(() => sys.flock(b, sys.LOCK_EX | sys.LOCK_NB), (e: SysCallError) => e.errno === 'EAGAIN');
      sys.flock(a, sys.LOCK_UN);
      sys.flock(b, sys.LOCK_EX | sys.LOCK_NB);
    } finally {
      closeSync(a);
      closeSync(b);
    }
  });

  it('errors carry the errno name and the path', () => {
    assert.throws(
      () => sys.mount('none', join(dir, 'missing'), 'tmpfs', 0),
      (e: SysCallError) => e instanceof SysCallError && e.errno === 'ENOENT' && e.message.includes(join(dir, 'missing')),
    );
  });

  it('mounts an overlay with mount(2), shows it in mountinfo with a colon in a path, unmounts', () => {
    for (const d of ['a:b', 'b', 'u', 'w', 'm']) mkdirSync(join(dir, 'ov', d), { recursive: true });
    writeFileSync(join(dir, 'ov/b/file'), 'lower');
    const ov = (p: string) => join(dir, 'ov', p);
    sys.mount('overlay', ov('m'), 'overlay', 0, `lowerdir=${ov('a\\:b')}:${ov('b')},upperdir=${ov('u')},workdir=${ov('w')}`);
    try {
      assert.equal(readFileSync(ov('m/file'), 'utf8'), 'lower');
      const m = sys.findMount(ov('m'));
      assert.equal(m?.fsType, 'overlay');
      const o = sys.parseOverlayOptions(m!.superOptions);
      assert.deepEqual(o.lowerdirs, [ov('a:b'), ov('b')]);
      assert.equal(o.upperdir, ov('u'));
    } finally {
      sys.umount2(ov('m'));
    }
    assert.equal(sys.isMountPoint(ov('m')), false);
  });

  it('mounts an overlay with the new mount API (lowerdir+), one fsconfig per layer', () => {
    const ov = (p: string) => join(dir, 'ov2', p);
    for (const d of ['l1', 'l2', 'm']) mkdirSync(ov(d), { recursive: true });
    writeFileSync(ov('l2/file'), 'bottom');
    writeFileSync(ov('l1/file'), 'top');
    const fd = sys.fsopen('overlay');
    let mfd = -1;
    try {
      sys.fsconfig(fd, sys.FSCONFIG.SET_STRING, 'lowerdir+', ov('l1'));
      sys.fsconfig(fd, sys.FSCONFIG.SET_STRING, 'lowerdir+', ov('l2'));
      assert.throws(() => sys.fsconfig(fd, sys.FSCONFIG.SET_STRING, 'lowerdir+', ov('nope')), (e: SysCallError) => e.errno === 'ENOENT');
      sys.fsconfig(fd, sys.FSCONFIG.CMD_CREATE, null, null);
      mfd = sys.fsmount(fd);
      sys.moveMount(mfd, '', sys.AT_FDCWD, ov('m'), sys.MOVE_MOUNT_F_EMPTY_PATH);
    } finally {
      if (mfd >= 0) sys.closeFd(mfd);
      sys.closeFd(fd);
    }
    try {
      assert.equal(readFileSync(ov('m/file'), 'utf8'), 'top');
      assert.deepEqual(sys.parseOverlayOptions(sys.findMount(ov('m'))!.superOptions).lowerdirs, [ov('l1'), ov('l2')]);
    } finally {
      sys.umount2(ov('m'));
    }
  });

  it('probes report this machine', () => {
    assert.equal(sys.overlaySupported(), true);
    assert.equal(sys.supportsDType(dir), true);
    assert.equal(sys.newMountApiSupported(), true);
    assert.equal(sys.overlayLowerdirPlusSupported(), true); // kernel 6.18
    assert.equal(sys.pageSize(), 4096);
    assert.equal(sys.backingFs(dir), 'tmpfs');
    assert.equal(typeof sys.overlayModuleParams().hasIndexParam, 'boolean');
    assert.equal(sys.inUserNamespace(), false);
  });
});
