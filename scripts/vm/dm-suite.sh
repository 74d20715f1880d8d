#!/bin/sh
# Runs inside the test VM (see test/vm/devicemapper.test.ts): the devicemapper conformance suite
# (with the breakout shapes), the devicemapper-specific tests, the containerd snapshot service on
# devicemapper, then the CLI against a real pool.
# Usage: sh scripts/vm/dm-suite.sh [DIST [full|quick]]   DIST = the compiled tree (default dist)
# quick (what npm test and CI run) has every test, with fewer repetitions where the work is
# repetition (test/conformance/devicemapper.test.ts: a 16-layer deep chain instead of 50, 4
# concurrent siblings instead of 12); full (the default, npm run test:vm:full) runs them all.
set -eu
DIST=${1:-dist}
case "${2:-full}" in
  full | quick) export UNIONCTL_DM_RUN="${2:-full}" ;;
  *) echo "dm-suite: unknown run '$2' (full or quick)" >&2 && exit 2 ;;
esac
node --test --test-concurrency=1 --test-reporter=tap \
  "$DIST/test/conformance/devicemapper.test.js" \
  "$DIST/test/conformance/devicemapper-specific.test.js" \
  "$DIST/test/conformance/devicemapper-snapshots.test.js"
sh "$(dirname "$0")/dm-cli.sh" "$DIST"
