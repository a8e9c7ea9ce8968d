#!/usr/bin/env bash
# Flotilla's controllers (Raft) vs etcd (issue 3): committed writes on loopback, fsync on, same run.
#
#   bench/raft-bench.sh [--duration 10] [--warmup 2] [--trials 5] [--clients 0]
#                       [--order flotilla-first|etcd-first] [--skip-etcd] [--skip-failover] [--no-build]
#
# 1. Builds flotilla-controller and bench/raft-bench in release (both in bench/raft-bench, see below).
#    A clean release build takes 20-30 minutes on 2 cores; after that, seconds.
# 2. Flotilla: 3 flotilla-controller processes on 127.0.0.1 (free ports, data dirs in a mktemp -d; the
#    write-ahead log always fsyncs). `raft-bench load`: 1, 16, 64 concurrent writers doing varPut (own keys,
#    100-byte values), 2 s warm-up + 10 s measured each; `--clients 0` = one AdminClient (one TLS connection)
#    per writer. `raft-bench failover`: SIGKILL the leader under a sequential writer per controller, time to
#    the first put invoked after the kill, restart, settle; 5 trials -> median.
# 3. etcd (Debian etcd-server): ../shared/bench/etcd-cluster.sh start --loopback, then etcd-bench.py with
#    the same concurrencies, duration and value size (puts and failover only), then stop.
# 4. Prints one Markdown table (stdout). Progress and per-phase lines go to stderr.
#
# Everything started here is stopped by PID on exit (also on failure or Ctrl-C) and the temp dir removed
# (KEEP=1 keeps it, with the controllers' logs and both JSON results).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
shared="${ETCD_BENCH_DIR:-$(cd "$root/../shared/bench" 2>/dev/null && pwd || echo /work/shared/bench)}"

duration=10 warmup=2 trials=5 clients=0 order=flotilla-first skip_etcd=0 skip_failover=0 build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --trials) trials="$2"; shift 2 ;;
        --clients) clients="$2"; shift 2 ;;
        --order) order="$2"; shift 2 ;;
        --skip-etcd) skip_etcd=1; shift ;;
        --skip-failover) skip_failover=1; shift ;;
        --no-build) build=0; shift ;;
        *) sed -n '2,20p' "$0" >&2; exit 2 ;;
    esac
done
say() { echo "raft-bench: $*" >&2; }

# ---------------------------------------------------------------- build
# By default flotilla-controller is built as a product of the bench package's path dependency (the same
# sources, release configuration), so Flotilla's dependencies (NIO, BoringSSL, swift-crypto, ...) are compiled
# once for both binaries. CONTROLLER_BUILD=root builds it in the repository root instead
# (`swift build -c release --product flotilla-controller` there): a second full release build.
controller_build="${CONTROLLER_BUILD:-bench}"
if [ "$controller_build" = root ]; then controller_dir="$root"; else controller_dir="$here/raft-bench"; fi
if [ "$build" = 1 ]; then
    say "building flotilla-controller (release) in $controller_dir"
    (cd "$controller_dir" && swift build -c release --product flotilla-controller >&2)
    say "building raft-bench (release) in $here/raft-bench"
    (cd "$here/raft-bench" && swift build -c release --product raft-bench >&2)
fi
controller="$(cd "$controller_dir" && swift build -c release --show-bin-path)/flotilla-controller"
bench="$(cd "$here/raft-bench" && swift build -c release --show-bin-path)/raft-bench"
[ -x "$controller" ] || { say "no $controller; build first"; exit 1; }
[ -x "$bench" ] || { say "no $bench; build first"; exit 1; }

# ---------------------------------------------------------------- cleanup
# shellcheck source=lib/controllers.sh
. "$here/lib/controllers.sh"
work="$(mktemp -d -t raft-bench.XXXXXX)"
etcd_started=0
stop_controllers() { controllers_stop; }
cleanup() {
    local status=$?
    stop_controllers
    if [ "$etcd_started" = 1 ]; then "$shared/etcd-cluster.sh" stop >&2 || true; fi
    if [ "${KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- Flotilla
controllers_setup "$work" "$controller"

run_flotilla() {
    say "Flotilla: 3 controllers at $addresses (data in $work)"
    controllers_start_three "$bench"
    say "Flotilla: cluster ready; load (1, 16, 64 writers, ${warmup}s warm-up + ${duration}s each)"
    "$bench" load --addresses "$addresses" --credentials "$work/c1/admin.creds" --conc 1,16,64 \
        --duration "$duration" --warmup "$warmup" --value-size 100 --clients "$clients" --pid-dir "$work" \
        --json "$work/flotilla-load.json"
    if [ "$skip_failover" = 0 ]; then
        say "Flotilla: failover, $trials trials"
        "$bench" failover --addresses "$addresses" --credentials "$work/c1/admin.creds" --pid-dir "$work" \
            --restart "$work/start.sh" --trials "$trials" --timeout-ms 300 --json "$work/flotilla-failover.json"
    fi
    stop_controllers
}

# ---------------------------------------------------------------- etcd
run_etcd() {
    command -v etcd >/dev/null || { say "etcd not installed (apt-get install -y etcd-server)"; return 1; }
    say "etcd: $(etcd --version | head -1), 3 members on loopback"
    etcd_started=1
    "$shared/etcd-cluster.sh" start --loopback >&2
    local skip=get,sget
    [ "$skip_failover" = 1 ] && skip=get,sget,failover
    python3 "$shared/etcd-bench.py" --conc 1,16,64 --duration "$duration" --value-size 100 \
        --failover-trials "$trials" --skip "$skip" --json "$work/etcd.json" >&2
    "$shared/etcd-cluster.sh" stop >&2
    etcd_started=0
}

started="$(date -u +%Y-%m-%dT%H:%MZ)"
if [ "$order" = etcd-first ] && [ "$skip_etcd" = 0 ]; then run_etcd; fi
run_flotilla
if [ "$order" != etcd-first ] && [ "$skip_etcd" = 0 ]; then run_etcd; fi

# ---------------------------------------------------------------- report
# shellcheck source=lib/commit.sh
. "$here/lib/commit.sh"
commit="$(bench_commit "$root")"
echo "Flotilla: $commit. etcd: $(etcd --version 2>/dev/null | head -1 | sed 's/etcd Version: //'). Started: $started. Machine: $(nproc) vCPU, $(uname -sm). Load average at end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
python3 - "$work" "$clients" <<'EOF'
import json, os, sys
work, clients = sys.argv[1], int(sys.argv[2])
def load(name):
    p = os.path.join(work, name)
    return json.load(open(p)) if os.path.exists(p) else None
fl = load("flotilla-load.json") or {}
ff = load("flotilla-failover.json") or {}
et = load("etcd.json")
er = et["runs"][0] if et else {}
fput = {p["concurrency"]: p for p in fl.get("put", [])}
eput = {p["concurrency"]: p for p in er.get("put", [])}
def f(v, fmt="{:.0f}"):
    return "–" if v is None else fmt.format(v)
def ratio(a, b):
    return "–" if a is None or b in (None, 0) else f"{a / b:.2f}"
print("| Writers | Flotilla writes/s | etcd writes/s | ratio | Flotilla p50 ms | etcd p50 ms | ratio | Flotilla p99 ms | etcd p99 ms | ratio | Flotilla errors | etcd errors | Flotilla controller CPU % |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for c in (1, 16, 64):
    a, b = fput.get(c, {}), eput.get(c, {})
    cpu = "/".join(str(int(x)) for x in a.get("controller_cpu_pct", [])) or "–"
    print(f"| {c} | {f(a.get('ops_per_s'))} | {f(b.get('ops_per_s'))} | {ratio(a.get('ops_per_s'), b.get('ops_per_s'))} "
          f"| {f(a.get('p50_ms'), '{:.2f}')} | {f(b.get('p50_ms'), '{:.2f}')} | {ratio(a.get('p50_ms'), b.get('p50_ms'))} "
          f"| {f(a.get('p99_ms'), '{:.2f}')} | {f(b.get('p99_ms'), '{:.2f}')} | {ratio(a.get('p99_ms'), b.get('p99_ms'))} "
          f"| {a.get('errors', '–')} | {b.get('errors', '–')} | {cpu} |")
fg = [t["gap_s"] for t in ff.get("failover", [])]
eg = [t["gap_s"] for t in er.get("failover", [])]
print()
print("| Failover (SIGKILL leader → first acknowledged put invoked after the kill) | Flotilla | etcd |")
print("|---|---:|---:|")
print(f"| median over trials, s | {f(ff.get('failover_median_s'), '{:.3f}')} | {f(er.get('failover_median_s'), '{:.3f}')} |")
print(f"| trials, s | {', '.join(f(g, '{:.3f}') for g in fg) or '–'} | {', '.join(f(g, '{:.3f}') for g in eg) or '–'} |")
print()
print(f"Ratios are Flotilla / etcd: above 1 is better for writes/s, below 1 is better for latency. "
      f"Flotilla clients: {'one AdminClient (TLS connection) per writer' if clients <= 0 else f'{clients} AdminClient(s) shared round-robin'}; "
      f"etcd: one HTTP/1.1 keep-alive connection per writer, round-robin over the 3 members.")
EOF
