#!/usr/bin/env bash
# Container start latency (issue 6): assignment received → task running, through the agent's worker and OCI
# driver, with a cached image, for crun and runc, on the host's network and on the node's bridge network.
#
#   bench/start-bench.sh [--starts 50] [--warmup 3] [--runtimes crun,runc] [--networks host,bridge] [--no-build]
#
# 1. Builds bench/raft-bench's start-bench in release (with Flotilla's sources; a few minutes after the first
#    release build of that package, which takes 20-30 minutes on 2 cores).
# 2. Builds the demo image (deploy/images/build-demo.sh) into a mktemp -d.
# 3. Runs start-bench (see the head of bench/raft-bench/Sources/start-bench/main.swift for what is timed).
# 4. Prints one Markdown table (stdout); progress on stderr.
#
# Needs root, crun and/or runc, catatonit, busybox-static, python3. Everything is removed on exit, also on
# failure or Ctrl-C: containers left in the runtimes' state, overlay mounts, the bench nodes' network
# namespaces, veths, bridges and nftables tables, their cgroups, and the temp dir (KEEP=1 keeps the temp dir).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

args=() build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --starts|--warmup|--runtimes|--networks) args+=("$1" "$2"); shift 2 ;;
        --no-build) build=0; shift ;;
        *) sed -n '2,16p' "$0" >&2; exit 2 ;;
    esac
done
say() { echo "start-bench: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root (mounts, cgroups, namespaces)"; exit 2; }

if [ "$build" = 1 ]; then
    say "building start-bench (release) in $here/raft-bench"
    (cd "$here/raft-bench" && swift build -c release --product start-bench >&2)
fi
bench="$(cd "$here/raft-bench" && swift build -c release --show-bin-path)/start-bench"
[ -x "$bench" ] || { say "no $bench; build first"; exit 1; }

work="$(mktemp -d -t start-bench.XXXXXX)"
# The bench's nodes are named startbench<runtime>; their network names start with the node prefix.
prefixes=$(python3 -c 'import hashlib; print(" ".join("f" + hashlib.sha256(("startbench" + r).encode()).hexdigest()[:6] for r in ("crun", "runc")))')
cleanup() {
    local status=$?
    for state in "$work"/run/flotilla-*/*; do
        [ -d "$state" ] || continue
        for id in $("$(basename "$state")" --root "$state" list -q 2>/dev/null); do
            "$(basename "$state")" --root "$state" delete --force "$id" >/dev/null 2>&1 || true
        done
    done
    awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r mount; do umount -l "$mount" || true; done
    for prefix in $prefixes; do
        for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix-" || true); do ip netns del "$ns" || true; done
        for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$prefix" || true); do ip link del "$link" || true; done
        nft delete table ip "$prefix" 2>/dev/null || true
    done
    for cgroup in /sys/fs/cgroup/*/flotilla-startbench*; do
        [ -d "$cgroup" ] || continue
        find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$root/deploy/images/build-demo.sh" "$work/image" 1 >&2
started="$(date -u +%Y-%m-%dT%H:%MZ)"
status=0
"$bench" --image "oci:$work/image:1" --work "$work" "${args[@]}" --json "$work/result.json" || status=$?
[ -f "$work/result.json" ] || { say "no result"; exit 1; }

# shellcheck source=lib/commit.sh
. "$here/lib/commit.sh"
commit="$(bench_commit "$root" Sources Package.swift bench/raft-bench)"
echo "Flotilla: $commit. Started: $started. Machine: $(nproc) vCPU, $(uname -sr). crun $(crun --version 2>/dev/null | head -1 | awk '{print $3}'), runc $(runc --version 2>/dev/null | head -1 | awk '{print $3}'). Load average at end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
python3 - "$work/result.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
def f(v):
    return "–" if v is None else f"{v:.1f}"
print(f"{r['starts']} timed starts per series after {r['warmup']} untimed; milliseconds from `TaskWorker.apply` to the task reported running.")
print()
print("| Runtime | Network | p50 | p90 | p99 | min | max | mean | failed |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for s in r["series"]:
    print(f"| {s['runtime']} | {s['network']} | {f(s.get('p50_ms'))} | {f(s.get('p90_ms'))} | {f(s.get('p99_ms'))} | {f(s.get('min_ms'))} "
          f"| {f(s.get('max_ms'))} | {f(s.get('mean_ms'))} | {s['failed']} |")
ratios = r.get("p50_ratio_crun_over_runc", {})
if ratios:
    print()
    print("p50 crun / runc: " + ", ".join(f"{n} network {v:.2f}" for n, v in sorted(ratios.items())))
marks = ["image prepared, overlay mounted", "network + config.json", "create launched", "create done", "start launched"]
print()
print("Where the time goes (median ms after the apply at which each step was done, from the bundle files' mtimes):")
print()
print("| Runtime | Network | " + " | ".join(marks) + " | running |")
print("|---|---|" + "---:|" * (len(marks) + 1))
for s in r["series"]:
    p = s.get("phase_marks_p50_ms", {})
    print(f"| {s['runtime']} | {s['network']} | " + " | ".join(f(p.get(m)) for m in marks) + f" | {f(s.get('p50_ms'))} |")
for s in r["series"]:
    for failure in s.get("failures", []):
        print(f"\n{s['runtime']}/{s['network']} failure: {failure}")
EOF
exit $status
