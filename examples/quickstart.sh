#!/usr/bin/env bash
# The quick start's main job, on the bundled sample image (fixtures/layers/: four real layer tars
# from a Docker 20.10 build, one plain, one gzip, one zstd, one with whiteouts and an opaque dir):
# build the layers, mount the merged view with overlay2, show its branches and read files through
# the union, then unmount and clean up. Run as root (it mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(mktemp -d /tmp/unionctl-quickstart.XXXXXX)
unionctl() { node dist/src/cli/main.js --root "$root" --driver overlay2 "$@"; }
cleanup() { unionctl cleanup >/dev/null 2>&1 || true; rm -rf "$root"; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "import the four layers (compression is sniffed, not guessed from the name)"
base=$(unionctl import fixtures/layers/1-base.tar)
app=$(unionctl import --parent "$base" fixtures/layers/2-app.tar.gz)
extras=$(unionctl import --parent "$app" fixtures/layers/3-extras.tar.zst)
top=$(unionctl import --parent "$extras" fixtures/layers/4-changes.tar)
unionctl ls

step "mount the top layer writable (a container layer on top of the image)"
mounted=$(unionctl --json mount --rw "$top")
json() { node -e 'const v = JSON.parse(process.argv[1]); console.log(eval("v" + process.argv[2]))' "$1" "$2"; }
container=$(json "$mounted" .id)
merged=$(json "$mounted" .path)
echo "writable layer: $container"
echo "merged view:    $merged"

step "branches of the union, as the kernel reports them"
unionctl branches "$container"

step "read through the union"
echo "\$ cat srv/app/current/VERSION   (symlink retargeted in layer 4)"; cat "$merged/srv/app/current/VERSION"
echo "\$ ls srv/app/plugins            (opaque dir in layer 4)"; ls "$merged/srv/app/plugins"
echo "\$ ls -A var/cache/app           (three whiteouts in layer 4)"; ls -A "$merged/var/cache/app"; echo "(empty)"
echo "\$ chroot . /srv/app/bin/run-app  (the image's CMD, run by its own busybox)"; chroot "$merged" /srv/app/bin/run-app

step "write through the union: copy-up and a whiteout land in the writable layer"
echo 'workers=8' >> "$merged/srv/app/etc/app.conf"
rm "$merged/srv/app/etc/logging.conf"
unionctl changes "$container"
upper=$(json "$(unionctl --json branches "$container")" '[0].path')
echo "\$ ls -l <rw branch>/srv/app/etc   (the copied-up file, and the deletion as a 0/0 char device)"
ls -l "$upper/srv/app/etc"

step "unmount"
unionctl umount "$container"
grep -q " $merged " /proc/self/mountinfo && { echo "still mounted!"; exit 1; } || echo "unmounted: nothing left in /proc/self/mountinfo"
