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

# Every process a test starts is recorded here; whatever is still running when the tests end (a test that
# crashed cannot clean up) is stopped by PID.
FLOTILLA_TEST_PIDFILE="$(mktemp)"
export FLOTILLA_TEST_PIDFILE
cleanup() {
  while read -r pid; do
    # Only if that PID is still one of ours (a PID can be reused once its process has exited).
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "flotilla"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done < "$FLOTILLA_TEST_PIDFILE"
  rm -f "$FLOTILLA_TEST_PIDFILE"
}
trap cleanup EXIT

# One test at a time: many suites run clusters of real processes, containers and registries, and on two cores
# their heartbeats and deadlines miss when they all run at once (about 5 minutes in a row here).
swift test --skip-build --no-parallel "$@"
