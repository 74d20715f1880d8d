#!/usr/bin/env bash
# Installs the system packages unionctl's tests, example and benchmarks need, when they are missing.
# Idempotent and quick when everything is there. Needs root (apt-get) only when something is missing.
set -euo pipefail

# command -> Debian package that provides it
declare -A NEED=(
  [python3]=python3          # test/treelist.py: the reference tree listing
  [tar]=tar                  # GNU tar: fixtures, cross-checks, the import benchmark's baseline
  [gzip]=gzip
  [zstd]=zstd
  [mkfs.ext4]=e2fsprogs      # loop-mounted ext4 for benchmarks
  [mkfs.xfs]=xfsprogs        # loop-mounted xfs with project quota (overlay2.size)
  [xfs_quota]=xfsprogs
  [losetup]=mount
  [mountpoint]=util-linux
  [setfattr]=attr            # xattr cross-checks in tests
  [fuse-overlayfs]=fuse-overlayfs  # the aufs driver's mount mechanism on kernels without aufs
  [fusermount3]=fuse3        # unmounting those FUSE mounts
  [strace]=strace            # test/crash/: kills a command at the K-th call of a syscall (-e inject=…:signal=KILL)
  [dockerd]=docker.io        # Docker 20.10 stores for the interop tests (bench/peers/dockerd.ts)
  [containerd]=containerd    # unionctl serve's tests and benchmark: a private containerd 1.6 with the proxy snapshotter
  [ctr]=containerd
  [runc]=runc
  [podman]=podman            # image interop tests (test/integration/interop-*.test.ts) and the load benchmark
  [skopeo]=skopeo            # image interop tests: skopeo inspect/copy of archives unionctl save wrote
  [docker-registry]=docker-registry  # a private registry (distribution 2.8) on 127.0.0.1: the CRI pull test, registry pull/push
  [htpasswd]=apache2-utils   # the registry tests' htpasswd (bcrypt) file for basic auth
  [umoci]=umoci              # unionctl bench: the umoci peer (skopeo copy + umoci raw unpack)
  [fstrim]=util-linux        # unionctl bench: hands freed loop-image blocks back to the tmpfs
  [qemu-system-x86_64]=qemu-system-x86  # the devicemapper test VM (scripts/vm/run.mjs)
  [busybox]=busybox-static   # the test VM's initramfs (a static busybox)
  [dmsetup]=dmsetup          # the devicemapper driver drives the kernel with it (in the VM)
  [xz]=xz-utils              # unpacking the VM kernel's vmlinux from its bzImage
  [blockdev]=util-linux
  [resize2fs]=e2fsprogs      # growing devicemapper layers' ext4
  [zsh]=zsh                  # test/integration/cli-completion.test.ts: zsh -n and the zsh script's definitions
  [fish]=fish                # test/integration/cli-completion.test.ts: fish --no-execute, complete -C
  [man]=man-db               # test/integration/cli-man.test.ts: man -l renders every page
)

missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "setup-system: installing $pkgs" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-system: need root to install $pkgs (run as root, or install them yourself)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi

# Kernel pieces the tests use: overlay (module may need loading) and loop devices.
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true

# The devicemapper test VM's kernel: Debian's linux-image-amd64, fetched with apt-get download and
# unpacked privately under ~/.cache/unionctl-vm (never installed, never into /boot).
node "$(dirname "$0")/vm/kernel.mjs" >/dev/null || {
  apt-get update -qq >/dev/null && node "$(dirname "$0")/vm/kernel.mjs" >/dev/null
}
exit 0
