#!/usr/bin/env bash
# The pure scheduler and reconciler on synthetic clusters (issue 5): tasks placed per second.
#
#   bench/scheduler-bench.sh [--nodes 5000] [--tasks 100000] [--services 100] [--rounds 3] [--no-build]
#
# Builds bench/scheduler-bench in release (a clean build compiles Flotilla's dependencies too: minutes),
# then runs it. Progress on stderr, a JSON summary on stdout. Pure computation, no network, no files.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build=1
args=()
for argument in "$@"; do
    if [ "$argument" = --no-build ]; then build=0; else args+=("$argument"); fi
done
if [ "$build" = 1 ]; then
    (cd "$here/scheduler-bench" && swift build -c release --product scheduler-bench >&2)
fi
"$(cd "$here/scheduler-bench" && swift build -c release --show-bin-path)/scheduler-bench" "${args[@]}"
