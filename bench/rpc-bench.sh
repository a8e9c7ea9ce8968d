#!/usr/bin/env bash
# Flotilla's RPC protocol vs grpc-swift-2 (issue 2): builds bench/rpc-bench in release and runs it.
# Arguments are passed to `rpc-bench run`, e.g.:
#   bench/rpc-bench.sh --duration 10 --warmup 2 --rounds 3
# Progress goes to stderr; the Markdown report to stdout. A clean release build of the harness and its
# dependencies (gRPC, NIO, BoringSSL, ...) takes 15-25 minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/rpc-bench"
swift build -c release --product rpc-bench >&2
root="$(git -C "$here/.." rev-parse --show-toplevel 2>/dev/null || true)"
if [ -n "$root" ]; then
    commit="$(git -C "$root" rev-parse --short HEAD)"
    if [ -n "$(git -C "$root" status --porcelain -- Sources Package.swift)" ]; then
        commit="$commit + uncommitted changes in Sources/ or Package.swift"
    fi
    echo "Flotilla: $commit. Date: $(date -u +%Y-%m-%dT%H:%MZ). Machine: $(nproc) vCPU, $(uname -sm)."
    echo
fi
exec "$(swift build -c release --show-bin-path)/rpc-bench" run "$@"
