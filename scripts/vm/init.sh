#!/bin/busybox sh
# PID 1 of the unionctl test VM (runs from the initramfs built by initramfs.mjs).
# 1. loads the kernel modules listed in /modules.order (dm, thin-pool, loop, ext4, xfs, 9p, …),
# 2. mounts the host's root read-only over 9p at /newroot, a tmpfs on its /tmp, /run and /root, the
#    shares named on the kernel command line read-write at their host paths, the run dir (the
#    command script, the exit status) at /run/unionctl-vm,
# 3. runs the command chrooted into the host root, writes its exit status and powers off.
# Anything that goes wrong here is printed and ends the VM: the host sees no status file and fails.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
  echo "unionctl-vm init: $*" >&2
  reboot -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
hostname unionctl-vm

for m in $(cat /modules.order); do
  err=$(insmod "/modules/$m" 2>&1) || grep -q "^${m%.ko} " /proc/modules || fail "insmod $m failed: $err"
done

# unionctl.shares=tag:path,tag:path  (paths without spaces or commas; run.mjs checks that)
shares=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    unionctl.shares=*) shares="${arg#unionctl.shares=}" ;;
  esac
done

P9="trans=virtio,version=9p2000.L,msize=524288"
mkdir -p /newroot
# cache=loose: the host root does not change while the VM runs, so the guest may cache it (node
# reads thousands of files at start-up).
mount -t 9p -o "$P9,ro,cache=loose" hostroot /newroot || fail "cannot mount the host root over 9p"
mount -t devtmpfs devtmpfs /newroot/dev || fail "cannot mount /dev"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
# A writable, empty home for root (npm/npx keep their cache there).
mount -t tmpfs -o mode=0700 tmpfs /newroot/root
mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot/run/unionctl-vm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t 9p -o "$P9,cache=none" rundir /newroot/run/unionctl-vm || fail "cannot mount the run dir"

IFS_SAVED="$IFS"
IFS=,
for share in $shares; do
  tag="${share%%:*}"
  path="${share#*:}"
  # A path under /tmp or /run lies on the fresh tmpfs: make its mount point there.
  [ -d "/newroot$path" ] || mkdir -p "/newroot$path" || fail "no mount point for $path"
  mount -t 9p -o "$P9,cache=mmap" "$tag" "/newroot$path" || fail "cannot mount share $path"
done
IFS="$IFS_SAVED"

chroot /newroot /bin/sh /run/unionctl-vm/cmd.sh </dev/console >/dev/console 2>&1
echo "$?" >/newroot/run/unionctl-vm/status
sync
echo 0 >/proc/sys/kernel/printk # no "reboot: Restarting system" after the command's output
reboot -f
