#!/bin/sh
# Runs inside the test VM (see test/vm/devicemapper.test.ts): the devicemapper conformance suite
# (with the breakout shapes), the devicemapper-specific tests, then the CLI against a real pool.
# Usage: sh scripts/vm/dm-suite.sh [DIST]   DIST = the compiled tree (default dist)
set -eu
DIST=${1:-dist}
node --test --test-concurrency=1 --test-reporter=tap \
  "$DIST/test/conformance/devicemapper.test.js" \
  "$DIST/test/conformance/devicemapper-specific.test.js"
sh "$(dirname "$0")/dm-cli.sh" "$DIST"
