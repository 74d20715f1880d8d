#!/bin/sh
# `unionctl --driver devicemapper` from the CLI, inside the VM: import the sample image's first
# two layers, mount a writable layer on top, write through it, show branches and status, move the
# store to vfs and back (`migrate`: the layers' whole filesystems export the same tars after each
# move, the other driver's home is gone), check the store (a device left active with nothing
# mounting it and a second loop device on the pool's data file are found and repaired), clean up.
# Prints "dm-cli: ok" at the end; any failing step ends the script non-zero.
set -eu
DIST=${1:-dist}
root=$(mktemp -d /tmp/unionctl-dmcli-XXXXXX)
u() {
  node "$DIST/src/cli/main.js" --root "$root" --driver devicemapper \
    --storage-opt dm.loopdatasize=512M --storage-opt dm.loopmetadatasize=32M --storage-opt dm.basesize=128M "$@"
}
data_file="$root/devicemapper/devicemapper/data"
detach_all() { losetup -j "$data_file" 2>/dev/null | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null || true; }
trap 'u cleanup >/dev/null 2>&1 || true; detach_all; rm -rf "$root" "$root.check"' EXIT
base=$(u import fixtures/layers/1-base.tar | tail -n 1)
app=$(u import fixtures/layers/2-app.tar.gz --parent "$base" | tail -n 1)
out=$(u mount --rw "$app")
rw=$(echo "$out" | sed -n 's/^layer //p')
path=$(echo "$out" | tail -n 1)
echo "written in the vm" >"$path/dm-cli-file"
test -d "$path/etc"
u branches "$rw"
u info
u umount "$rw"
test "$(u ls | grep -c .)" -ge 3
u cleanup

# `check --quick` exits 4 (problems left) and reports CODE about SUBJECT.
finds() {
  set +e
  u --json check --quick >"$root.check"
  rc=$?
  set -e
  test "$rc" -eq 4
  # One finding: its subject is the line after its code (CheckFinding's field order, docs/json.md).
  grep -A1 "\"code\": \"$1\"" "$root.check" | grep -q "\"subject\": \"$2\""
}

# check: clean, then damaged the two ways a killed process leaves a dm store, then repaired.
# --quick: a full check reads every layer's files, and its mount and unmount of the base layer
# would deactivate the leaked device before the repair gets to it.
# The store's pool (one in the VM; its name changes with the home's inode), and a number field of
# a layer's metadata file.
pool_name() {
  p=$(dmsetup ls | awk '{print $1}' | grep -- '-pool$')
  test "$(echo "$p" | grep -c .)" -eq 1
  echo "$p"
}
meta_number() { sed "s/.*\"$2\":\([0-9]*\).*/\1/" "$root/devicemapper/metadata/$1"; }

u check >/dev/null
pool=$(pool_name)
prefix=${pool%-pool}
sectors=$(($(meta_number "$base" size) / 512))
DM_DISABLE_UDEV=1 dmsetup create "$prefix-$base" --table "0 $sectors thin /dev/mapper/$pool $(meta_number "$base" device_id)"
extra_loop=$(losetup -f --show "$data_file")
finds DM_DEVICE_LEAKED "$prefix-$base"
finds DM_LOOP_LEAKED "$extra_loop"
u check --repair --quick >"$root.check"
grep -q 'DM_DEVICE_LEAKED' "$root.check"
if dmsetup info "$prefix-$base" >/dev/null 2>&1; then echo "dm-cli: $prefix-$base still active after the repair"; exit 1; fi
test "$(losetup -j "$data_file" | grep -c .)" -eq 1
u check >/dev/null
echo "dm-cli: check ok"
u cleanup

# The whole filesystem of each layer, as the store's driver ($1) shows it.
views() {
  for l in "$base" "$app" "$rw"; do
    if [ "$1" = vfs ]; then node "$DIST/src/cli/main.js" --root "$root" export "$l"; else u export "$l"; fi | sha256sum
  done
}
before=$(views devicemapper)
u migrate --to vfs
test ! -e "$root/devicemapper" && test "$(views vfs)" = "$before"
u migrate --to devicemapper
test ! -e "$root/vfs" && test "$(views devicemapper)" = "$before"
# A layer whose thin device the pool lost (deleted behind the store's back) is DM_DEVICE_MISSING;
# nothing can repair it, and unionctl rm removes the layer.
gone=$(u import fixtures/layers/1-base.tar | tail -n 1)
DM_DISABLE_UDEV=1 dmsetup message "$(pool_name)" 0 "delete $(meta_number "$gone" device_id)"
finds DM_DEVICE_MISSING "$gone"
u rm "$gone"
u check
echo "dm-cli: device missing ok"
u cleanup
echo "dm-cli: ok"
