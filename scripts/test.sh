#!/usr/bin/env bash
# Runs every test Flotilla has: unit tests of the cores, in-process cluster tests on loopback, and the
# process-level tests of the built executables. Tests that need root or a tool say so and skip themselves
# without it; CI runs as root with every tool installed by .ci/run.
# Usage: scripts/test.sh [extra `swift test` arguments, e.g. --filter TransportTests]
set -euo pipefail
cd "$(dirname "$0")/.."

# Build everything (products and tests) once, then run without rebuilding: SwiftPM re-plans on every
# invocation, so one build step saves minutes.
swift build --build-tests
FLOTILLA_BIN_DIR="$(swift build --show-bin-path)"
export FLOTILLA_BIN_DIR
swift test --skip-build "$@"
