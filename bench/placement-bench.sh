#!/usr/bin/env bash
# Placements end to end (issue 5, benchmark b): 3 controllers (processes, fsync on) and 1,000 simulated
# agents in one process, each with its own mutual-TLS session to the leader; tasks committed with a node
# through Raft and received by their agents, per second.
#
#   bench/placement-bench.sh [--agents 1000] [--replicas 10000] [--trials 3] [--no-build]
#
# 1. Builds flotilla-controller and raft-bench in release in bench/raft-bench (shared with raft-bench.sh).
# 2. Starts 3 controllers on 127.0.0.1 as a user would (founder --init, two --join with its controller token).
# 3. `raft-bench placements`: joins the agents with a token (real CSRs and certificates), waits until all are
#    ready, then per trial creates one service with --replicas tasks and times (a) every task dispatched to its
#    agent and (b) every task reported running back through Raft; removes it; next trial.
# 4. Prints a Markdown table (stdout); progress on stderr.
#
# Everything started here is stopped by PID on exit (also on failure or Ctrl-C) and the temp dir removed
# (KEEP=1 keeps it, with the controllers' logs and the JSON result).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

agents=1000 replicas=10000 trials=3 build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --agents) agents="$2"; shift 2 ;;
        --replicas) replicas="$2"; shift 2 ;;
        --trials) trials="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        *) sed -n '2,16p' "$0" >&2; exit 2 ;;
    esac
done
say() { echo "placement-bench: $*" >&2; }

if [ "$build" = 1 ]; then
    say "building flotilla-controller and raft-bench (release) in $here/raft-bench"
    (cd "$here/raft-bench" && swift build -c release --product flotilla-controller >&2 && swift build -c release --product raft-bench >&2)
fi
bin="$(cd "$here/raft-bench" && swift build -c release --show-bin-path)"
controller="$bin/flotilla-controller" bench="$bin/raft-bench"
[ -x "$controller" ] && [ -x "$bench" ] || { say "no release binaries in $bin; build first"; exit 1; }

# shellcheck source=lib/controllers.sh
. "$here/lib/controllers.sh"
work="$(mktemp -d -t placement-bench.XXXXXX)"
cleanup() {
    local status=$?
    controllers_stop
    if [ "${KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Every simulated agent holds a TLS connection and the controllers accept them: raise the descriptor limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

controllers_setup "$work" "$controller"
say "3 controllers at $addresses (data in $work)"
controllers_start_three "$bench"
started="$(date -u +%Y-%m-%dT%H:%MZ)"
say "cluster ready; $agents agents, $replicas replicas, $trials trials"
"$bench" placements --addresses "$addresses" --credentials "$work/c1/admin.creds" --agents "$agents" \
    --replicas "$replicas" --trials "$trials" --json "$work/placements.json"

# shellcheck source=lib/commit.sh
. "$here/lib/commit.sh"
commit="$(bench_commit "$root")"
echo "Flotilla: $commit. Started: $started. Machine: $(nproc) vCPU, $(uname -sm). Load average at end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
python3 - "$work/placements.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("| Trial | Agents | Tasks | Dispatched (s) | Placements/s | All running, acknowledged (s) | Acknowledged/s |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for t in r["trials"]:
    print(f"| {t['trial']} | {t['agents']} | {t['replicas']} | {t['dispatched_s']:.3f} | {t['placements_per_s']:.0f} "
          f"| {t['acknowledged_s']:.3f} | {t['acknowledged_per_s']:.0f} |")
print()
print(f"Median placements/s: {r['median_placements_per_s']:.0f}.")
PY
