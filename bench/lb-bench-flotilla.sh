#!/usr/bin/env bash
# Flotilla's load balancer (flotilla-agent proxy, release build) against HAProxy and NGINX, same backends, same
# load, same proxy threads (bench/lb-bench.sh does the work). The fair setting, recorded in bench/RESULTS.md:
#   PROXY_THREADS=1 WRK_THREADS=1 NICE=-10 bench/lb-bench-flotilla.sh            # throughput and latency
#   PROXY_THREADS=1 WRK_THREADS=1 NICE=-10 bench/lb-bench-flotilla.sh failover   # a backend killed mid-run
# Needs root for NICE<0, and: apt-get install -y wrk haproxy nginx-light
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk haproxy nginx; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y wrk haproxy nginx-light" >&2; exit 1; }
done
swift build -c release --product flotilla-agent >&2
AGENT=$PWD/.build/release/flotilla-agent
export CANDIDATE_NAME=${CANDIDATE_NAME:-flotilla}
# LB_BACKENDS, LB_PORT, LB_THREADS and LB_MODE come from lb-bench.sh.
export CANDIDATE_CMD="exec $AGENT proxy --listen 127.0.0.1:\$LB_PORT --backend \$LB_BACKENDS --mode \$LB_MODE --workers \$LB_THREADS"
exec bench/lb-bench.sh "$@"
