#!/bin/sh
# `unionctl --driver devicemapper` from the CLI, inside the VM: import the sample image's first
# two layers, mount a writable layer on top, write through it, show branches and status, move the
# store to vfs and back (`migrate`: the layers' whole filesystems export the same tars after each
# move, the other driver's home is gone), clean up.
# Prints "dm-cli: ok" at the end; any failing step ends the script non-zero.
set -eu
DIST=${1:-dist}
root=$(mktemp -d /tmp/unionctl-dmcli-XXXXXX)
u() {
  node "$DIST/src/cli/main.js" --root "$root" --driver devicemapper \
    --storage-opt dm.loopdatasize=512M --storage-opt dm.loopmetadatasize=32M --storage-opt dm.basesize=128M "$@"
}
trap 'u cleanup >/dev/null 2>&1 || true; rm -rf "$root"' EXIT
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
u cleanup
echo "dm-cli: ok"
