#!/usr/bin/env bash
# Flotilla's copy of shared/bench/lb-bench.sh (kept in step with it), extended so the candidate runs in both
# modes (cases candidate-tcp and candidate-http, LB_MODE passed to CANDIDATE_CMD) and in the failover run
# (variants candidate-tcp and candidate-http). bench/lb-bench-flotilla.sh runs it against flotilla-agent proxy.
#
# lb-bench.sh - side-by-side loopback benchmark of L4/L7 load balancers
# (HAProxy, NGINX, and an optional candidate command) in front of N cheap
# nginx backends, driven by wrk.  Everything binds to 127.0.0.1 only, every
# load run is bounded in time, and every process started here is stopped on
# exit (trap), by process-group id.
#
# Usage:
#   lb-bench.sh [bench]      throughput/latency matrix (default)
#   lb-bench.sh failover     kill one backend mid-run, count client errors
#   lb-bench.sh summarize F.csv...   medians over several runs (same CSV or several)
#   lb-bench.sh help
#
# Environment (bench):
#   N=3                 number of backends
#   DURATION=6          seconds per wrk measurement (a 1 s warm-up precedes each case)
#   CONNS="32 256"      wrk connection counts
#   MODES="ka close"    ka = HTTP keep-alive, close = 'Connection: close' (new TCP conn per request)
#   WRK_THREADS=nproc   wrk threads (capped at the connection count)
#   PROXY_THREADS=nproc HAProxy nbthread / NGINX worker_processes / LB_THREADS for the candidate
#   PIN=0               1 = pin with taskset: WRK_CPUS, PROXY_CPUS, BACKEND_CPUS (defaults 0 / 1 / 0)
#   CASES="haproxy-tcp direct haproxy-http-rr haproxy-http-leastconn haproxy-http-source
#          nginx-stream nginx-http-rr nginx-http-leastconn nginx-http-iphash [candidate-tcp candidate-http]"
#                       optional extra case: haproxy-http-rr-reuse (http-reuse always)
#   OUT=/tmp/lb-bench-<timestamp>.csv   CSV output (appended to if it exists)
#   BASE_PORT=18000     backends listen on BASE_PORT+1..BASE_PORT+N, proxies on BASE_PORT+100
#   KEEP=0              1 = keep the temporary work dir (configs, logs)
#   RUN_LABEL=""        free-form label written to the CSV
#   QUIET_MAX_WAIT=0    >0: before each measurement wait up to this many seconds until
#   QUIET_PCT=20        CPU used by processes outside the run drops below QUIET_PCT %
#   NICE=0              e.g. -10: run backends, proxies and wrk at that nice level (root only);
#                       reduces interference from other work on a shared machine
#
# Candidate (the project's own load balancer), added to the default CASES
# when CANDIDATE_CMD is set (add "candidate" yourself if you set CASES):
#   CANDIDATE_CMD='...'   shell command line; runs in the foreground of its own
#                         process group (do not daemonize).  It gets the env vars
#                         LB_BACKENDS=127.0.0.1:p1,127.0.0.1:p2,...  LB_PORT  LB_THREADS
#   CANDIDATE_PORT=18200  port the candidate listens on (127.0.0.1)
#   CANDIDATE_NAME=candidate
#
# Environment (failover):
#   FO_DURATION=10  FO_KILL_AT=3  FO_CONNS=32  FO_SIGNAL=KILL (KILL = crash, STOP = hang)
#   FO_MODE=ka      (ka or close)
#   FO_CASES="..."  subset of the failover variants (see fo_setup below):
#     ha-http-noretry ha-http-retry3 ha-http-redispatch ha-http-redispatch-chk
#     ha-http-retryon-chk ha-http-retryon-chk-obs ha-http-timeout-retryon-chk
#     ha-http-timeout-retryon-httpchk ha-tcp-noretry ha-tcp-redispatch-chk
#     ha-tcp-redispatch-chk-obs nginx-http-default nginx-http-timeout nginx-stream-default
#   Caveat: wrk does not count requests stalled on a hung (SIGSTOP) backend as
#   errors; judge STOP runs by completed requests and latency too.
#
# Caveat (bench): wrk has one source IP, so source/ip hash cases send all
# traffic to a single backend; they measure proxy cost, not distribution.
#
# Output columns (bench): case conns mode rps p50_ms p99_ms ratio_vs_haproxy_tcp
#   errors(non-2xx + socket errors) proxy_cpu% (sum over the proxy's processes,
#   100 = one core) req_per_proxy_cpu_s, other_cpu% (CPU used on the machine by
#   processes that are not part of this run: a noisy-neighbour indicator).

set -u -o pipefail

MODE_CMD=${1:-bench}

N=${N:-3}
DURATION=${DURATION:-6}
CONNS=${CONNS:-"32 256"}
MODES=${MODES:-"ka close"}
NPROC=$(nproc)
WRK_THREADS=${WRK_THREADS:-$NPROC}
PROXY_THREADS=${PROXY_THREADS:-$NPROC}
PIN=${PIN:-0}
NICE=${NICE:-0}
# Every process group started here gets its own session, hence (with
# kernel.sched_autogroup_enabled=1) its own scheduler autogroup, and a plain
# nice value would only matter inside that group: so set the autogroup's nice too.
NICE_WRAP=(bash -c 'n=$1; shift; echo "$n" >/proc/self/autogroup 2>/dev/null; exec nice -n "$n" "$@"' nicewrap "$NICE")
WRK_CPUS=${WRK_CPUS:-0}
PROXY_CPUS=${PROXY_CPUS:-1}
BACKEND_CPUS=${BACKEND_CPUS:-0}
BASE_PORT=${BASE_PORT:-18000}
PROXY_PORT=$((BASE_PORT + 100))
CANDIDATE_CMD=${CANDIDATE_CMD:-}
CANDIDATE_PORT=${CANDIDATE_PORT:-$((BASE_PORT + 200))}
CANDIDATE_NAME=${CANDIDATE_NAME:-candidate}
DEFAULT_CASES="haproxy-tcp direct haproxy-http-rr haproxy-http-leastconn haproxy-http-source nginx-stream nginx-http-rr nginx-http-leastconn nginx-http-iphash"
[ -n "$CANDIDATE_CMD" ] && DEFAULT_CASES="$DEFAULT_CASES candidate-tcp candidate-http"
CASES=${CASES:-$DEFAULT_CASES}
OUT=${OUT:-/tmp/lb-bench-$(date +%Y%m%d-%H%M%S).csv}
KEEP=${KEEP:-0}
RUN_LABEL=${RUN_LABEL:-}
FO_DURATION=${FO_DURATION:-10}
FO_KILL_AT=${FO_KILL_AT:-3}
FO_CONNS=${FO_CONNS:-32}
FO_SIGNAL=${FO_SIGNAL:-KILL}
FO_MODE=${FO_MODE:-ka}

HAPROXY=${HAPROXY:-haproxy}
NGINX=${NGINX:-nginx}
WRK=${WRK:-wrk}
STREAM_MODULE=${STREAM_MODULE:-}
if [ -z "$STREAM_MODULE" ]; then
  for m in /usr/lib/nginx/modules/ngx_stream_module.so /usr/lib64/nginx/modules/ngx_stream_module.so; do
    [ -f "$m" ] && STREAM_MODULE=$m && break
  done
fi

CLK_TCK=$(getconf CLK_TCK)
# raise the fd limit as far as allowed; proxies get maxconn = (fd limit - 200) / 2
HARD_NOFILE=$(ulimit -Hn); [ "$HARD_NOFILE" = unlimited ] && HARD_NOFILE=1048576
ulimit -n "$HARD_NOFILE" 2>/dev/null || true
MAXCONN=$(( ($(ulimit -n) - 200) / 2 )); [ "$MAXCONN" -gt 50000 ] && MAXCONN=50000
WD=$(mktemp -d /tmp/lb-bench.XXXXXX)
RUN_ID=$(date +%Y%m%dT%H%M%S)-$$
declare -a GROUPS_STARTED=()   # process-group ids (== pid of the leader we started)
declare -a BACKEND_PIDS=()
PROXY_PG=""
KILLER_PID=""

log() { printf '%s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- processes

# start_group NAME CPUS CMD...   -> starts CMD in its own session/process group,
# records its pid (== pgid) in GROUPS_STARTED and sets STARTED_PID.
# (Never call it inside $(...): the registration would be lost in the subshell.)
STARTED_PID=""
start_group() {
  local name=$1 cpus=$2; shift 2
  [ "$NICE" != 0 ] && set -- "${NICE_WRAP[@]}" "$@"
  if [ "$PIN" = 1 ] && [ -n "$cpus" ]; then
    setsid taskset -c "$cpus" "$@" >"$WD/$name.out" 2>&1 </dev/null &
  else
    setsid "$@" >"$WD/$name.out" 2>&1 </dev/null &
  fi
  STARTED_PID=$!
  disown "$STARTED_PID" 2>/dev/null   # no "Killed" job notices; stop_group polls instead of wait
  GROUPS_STARTED+=("$STARTED_PID")
}

alive() { kill -0 "$1" 2>/dev/null; }

# stop_group PGID: SIGCONT (in case it was stopped), SIGTERM the group, wait up to 3 s, then SIGKILL.
stop_group() {
  local pg=$1 i
  [ -z "$pg" ] && return 0
  kill -CONT -- "-$pg" 2>/dev/null || kill -CONT "$pg" 2>/dev/null
  kill -TERM -- "-$pg" 2>/dev/null || kill -TERM "$pg" 2>/dev/null
  for i in $(seq 30); do
    pgrep -g "$pg" >/dev/null 2>&1 || break
    sleep 0.1
  done
  if pgrep -g "$pg" >/dev/null 2>&1 || alive "$pg"; then kill -KILL -- "-$pg" 2>/dev/null; kill -KILL "$pg" 2>/dev/null; sleep 0.2; fi
  local keep=() g
  for g in "${GROUPS_STARTED[@]}"; do [ "$g" != "$pg" ] && keep+=("$g"); done
  GROUPS_STARTED=("${keep[@]}")
  return 0
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$KILLER_PID" ] && kill "$KILLER_PID" 2>/dev/null
  local g
  for g in "${GROUPS_STARTED[@]}"; do stop_group "$g"; done
  if [ "$KEEP" = 1 ]; then log "work dir kept: $WD"; else rm -rf "$WD"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

port_listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

wait_port() {   # wait_port PORT PGID [timeout_s]
  local port=$1 pg=$2 t=${3:-10} i
  for i in $(seq $((t * 10))); do
    port_listening "$port" && return 0
    alive "$pg" || { log "process $pg exited; output:"; tail -n 20 "$WD"/*.out >&2; return 1; }
    sleep 0.1
  done
  log "port $port not listening after ${t}s"; return 1
}

# ---------------------------------------------------------------- backends

backend_port() { echo $((BASE_PORT + $1)); }

backend_list() {   # comma-separated host:port list
  local i s=""
  for i in $(seq "$N"); do s="$s${s:+,}127.0.0.1:$(backend_port "$i")"; done
  echo "$s"
}

write_backend_conf() {
  local i=$1 port; port=$(backend_port "$i")
  mkdir -p "$WD/be$i"
  cat >"$WD/be$i/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WD/be$i/nginx.pid;
error_log $WD/be$i/error.log error;
events { worker_connections 16384; }
http {
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  keepalive_timeout 65s;
  client_body_temp_path $WD/be$i/tmp;
  proxy_temp_path $WD/be$i/tmp;
  fastcgi_temp_path $WD/be$i/tmp;
  uwsgi_temp_path $WD/be$i/tmp;
  scgi_temp_path $WD/be$i/tmp;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / { return 200 "backend $i\n"; }
  }
}
EOF
}

start_backend() {   # start_backend I  (one nginx process, master_process off)
  local i=$1 pid port; port=$(backend_port "$i")
  port_listening "$port" && die "port $port already in use"
  start_group "be$i" "$BACKEND_CPUS" "$NGINX" -e stderr -p "$WD/be$i/" -c "$WD/be$i/nginx.conf"
  pid=$STARTED_PID
  BACKEND_PIDS[$i]=$pid
  wait_port "$port" "$pid" || die "backend $i did not start"
}

start_backends() {
  local i
  for i in $(seq "$N"); do write_backend_conf "$i"; start_backend "$i"; done
}

# ---------------------------------------------------------------- proxies

# haproxy_conf MODE(tcp|http) BALANCE EXTRA_DEFAULTS EXTRA_SERVER_OPTS
haproxy_conf() {
  local mode=$1 balance=$2 extra_defaults=${3:-} srv_opts=${4:-} i
  {
    echo "global"
    echo "  nbthread $PROXY_THREADS"
    echo "  maxconn $MAXCONN"
    echo "  stats socket $WD/haproxy.sock mode 600 level admin"
    echo "defaults"
    echo "  mode $mode"
    echo "  maxconn $MAXCONN"
    echo "  timeout connect 2s"
    echo "  timeout client 30s"
    echo "  timeout server 30s"
    [ "$mode" = http ] && echo "  timeout http-keep-alive 30s"
    [ -n "$extra_defaults" ] && printf '%b\n' "$extra_defaults"
    echo "frontend fe"
    echo "  bind 127.0.0.1:$PROXY_PORT"
    echo "  default_backend be"
    echo "backend be"
    echo "  balance $balance"
    for i in $(seq "$N"); do echo "  server s$i 127.0.0.1:$(backend_port "$i") $srv_opts"; done
  } >"$WD/haproxy.cfg"
}

# nginx_conf KIND(stream|http) BALANCE_DIRECTIVE EXTRA_UPSTREAM EXTRA_SERVER_PARAMS EXTRA_LOCATION
nginx_conf() {
  local kind=$1 balance=${2:-} extra_up=${3:-} srv_params=${4:-} extra_loc=${5:-} i
  mkdir -p "$WD/px/tmp"
  {
    [ "$kind" = stream ] && echo "load_module $STREAM_MODULE;"
    echo "daemon off;"
    echo "master_process on;"
    echo "worker_processes $PROXY_THREADS;"
    echo "worker_rlimit_nofile $(ulimit -n);"
    echo "pid $WD/px/nginx.pid;"
    echo "error_log $WD/px/error.log error;"
    echo "events { worker_connections $MAXCONN; }"
    if [ "$kind" = stream ]; then
      echo "stream {"
      echo "  upstream be {"
      [ -n "$balance" ] && echo "    $balance;"
      for i in $(seq "$N"); do echo "    server 127.0.0.1:$(backend_port "$i") $srv_params;"; done
      [ -n "$extra_up" ] && printf '%b\n' "$extra_up"
      echo "  }"
      echo "  server { listen 127.0.0.1:$PROXY_PORT backlog=4096; proxy_pass be; proxy_connect_timeout 2s; }"
      echo "}"
    else
      echo "http {"
      echo "  access_log off;"
      echo "  keepalive_requests 100000000;"
      echo "  keepalive_timeout 65s;"
      for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $WD/px/tmp;"; done
      echo "  upstream be {"
      [ -n "$balance" ] && echo "    $balance;"
      for i in $(seq "$N"); do echo "    server 127.0.0.1:$(backend_port "$i") $srv_params;"; done
      echo "    keepalive 256;"
      echo "    keepalive_requests 100000000;"
      [ -n "$extra_up" ] && printf '%b\n' "$extra_up"
      echo "  }"
      echo "  server {"
      echo "    listen 127.0.0.1:$PROXY_PORT backlog=4096;"
      echo "    location / {"
      echo "      proxy_pass http://be;"
      echo "      proxy_http_version 1.1;"
      echo "      proxy_set_header Connection \"\";"
      echo "      proxy_connect_timeout 2s;"
      [ -n "$extra_loc" ] && printf '%b\n' "$extra_loc"
      echo "    }"
      echo "  }"
      echo "}"
    fi
  } >"$WD/px/nginx.conf"
}

start_haproxy() {
  "$HAPROXY" -c -q -f "$WD/haproxy.cfg" >"$WD/haproxy-check.out" 2>&1 || { cat "$WD/haproxy-check.out" >&2; die "bad haproxy config"; }
  start_group haproxy "$PROXY_CPUS" "$HAPROXY" -db -f "$WD/haproxy.cfg"; PROXY_PG=$STARTED_PID
  wait_port "$PROXY_PORT" "$PROXY_PG" || die "haproxy did not start"
}

start_nginx_proxy() {
  "$NGINX" -t -q -e stderr -p "$WD/px/" -c "$WD/px/nginx.conf" >"$WD/nginx-check.out" 2>&1 || { cat "$WD/nginx-check.out" >&2; die "bad nginx config"; }
  start_group nginx-proxy "$PROXY_CPUS" "$NGINX" -e stderr -p "$WD/px/" -c "$WD/px/nginx.conf"; PROXY_PG=$STARTED_PID
  wait_port "$PROXY_PORT" "$PROXY_PG" || die "nginx proxy did not start"
}

start_candidate() {   # start_candidate [tcp|http] -> LB_MODE for CANDIDATE_CMD
  port_listening "$CANDIDATE_PORT" && die "candidate port $CANDIDATE_PORT already in use"
  LB_MODE=${1:-tcp} LB_BACKENDS=$(backend_list) LB_PORT=$CANDIDATE_PORT LB_THREADS=$PROXY_THREADS \
    start_group candidate "$PROXY_CPUS" bash -c "$CANDIDATE_CMD"
  PROXY_PG=$STARTED_PID
  wait_port "$CANDIDATE_PORT" "$PROXY_PG" 30 || die "candidate did not start (see output above)"
}

# setup_case CASE -> starts the proxy for CASE, sets CASE_PORT (the port to load)
CASE_PORT=""
setup_case() {
  PROXY_PG=""; CASE_PORT=$PROXY_PORT
  case $1 in
    direct)                 CASE_PORT=$(backend_port 1) ;;
    haproxy-tcp)            haproxy_conf tcp roundrobin; start_haproxy ;;
    haproxy-http-rr)        haproxy_conf http roundrobin; start_haproxy ;;
    haproxy-http-leastconn) haproxy_conf http leastconn; start_haproxy ;;
    haproxy-http-source)    haproxy_conf http source; start_haproxy ;;
    haproxy-http-rr-reuse)  haproxy_conf http roundrobin "  http-reuse always"; start_haproxy ;;
    nginx-stream)           nginx_conf stream ""; start_nginx_proxy ;;
    nginx-http-rr)          nginx_conf http ""; start_nginx_proxy ;;
    nginx-http-leastconn)   nginx_conf http least_conn; start_nginx_proxy ;;
    nginx-http-iphash)      nginx_conf http ip_hash; start_nginx_proxy ;;
    candidate|"$CANDIDATE_NAME"|candidate-tcp|candidate-http)
      [ -n "$CANDIDATE_CMD" ] || die "CANDIDATE_CMD not set"
      local cmode=tcp; [ "$1" = candidate-http ] && cmode=http
      start_candidate "$cmode"; CASE_PORT=$CANDIDATE_PORT ;;
    *) die "unknown case $1" ;;
  esac
}

teardown_case() { [ -n "$PROXY_PG" ] && stop_group "$PROXY_PG"; PROXY_PG=""; }

# ---------------------------------------------------------------- accounting

group_ticks() {   # sum utime+stime over all processes of a process group
  local pg=$1 t=0 p s f
  [ -z "$pg" ] && { echo 0; return; }
  for p in $(pgrep -g "$pg" 2>/dev/null); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    read -r -a f <<<"$s"
    t=$((t + f[11] + f[12]))
  done
  echo "$t"
}

self_ticks() {   # this shell + its reaped children (wrk is reaped by us)
  local s f; s=$(cat /proc/$$/stat); s=${s##*) }; read -r -a f <<<"$s"
  echo $((f[11] + f[12] + f[13] + f[14]))
}

sys_ticks() {   # "busy(user+nice+system) steal" from /proc/stat
  awk '/^cpu /{print $2+$3+$4, $9; exit}' /proc/stat
}

our_ticks() {   # proxy + backends + self
  local t=0 g
  for g in "${GROUPS_STARTED[@]}"; do t=$((t + $(group_ticks "$g"))); done
  echo $((t + $(self_ticks)))
}

# quiet_wait: on a shared machine, wait (bounded by QUIET_MAX_WAIT seconds) until
# the CPU use of processes outside this run over a 1 s sample is below QUIET_PCT.
quiet_wait() {
  [ "${QUIET_MAX_WAIT:-0}" -gt 0 ] || return 0
  local deadline=$((SECONDS + QUIET_MAX_WAIT)) b0 b1 s o0 o1 x t0 t1
  while :; do
    t0=$(date +%s%N); read -r b0 s < <(sys_ticks); o0=$(our_ticks); sleep 1
    read -r b1 s < <(sys_ticks); o1=$(our_ticks); t1=$(date +%s%N)
    x=$(( (b1 - b0 - (o1 - o0)) * 100 * 1000000000 / CLK_TCK / (t1 - t0) ))
    [ "$x" -le "${QUIET_PCT:-20}" ] && return 0
    [ "$SECONDS" -ge "$deadline" ] && { log "  (machine still busy: other CPU ${x}% after ${QUIET_MAX_WAIT}s wait; measuring anyway)"; return 0; }
    sleep 2
  done
}

# ---------------------------------------------------------------- wrk

to_ms() {   # wrk latency value (e.g. 123.45us, 1.2ms, 1.1s) -> ms
  awk -v v="$1" 'BEGIN{
    if (v ~ /us$/) { sub(/us$/,"",v); printf "%.3f", v/1000 }
    else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/,"",v); printf "%.3f", v*60000 }
    else if (v ~ /s$/) { sub(/s$/,"",v); printf "%.3f", v*1000 }
    else printf "NA" }'
}

# run_wrk PORT CONNS MODE DURATION OUTFILE  (bounded: wrk -d plus an outer timeout)
run_wrk() {
  local port=$1 c=$2 mode=$3 d=$4 of=$5 t=$WRK_THREADS hdr=()
  [ "$t" -gt "$c" ] && t=$c
  [ "$mode" = close ] && hdr=(-H "Connection: close")
  local cmd=(timeout -k 5 $((d + 30)) "$WRK" -t"$t" -c"$c" -d"${d}s" --timeout 5s --latency "${hdr[@]}" "http://127.0.0.1:$port/")
  [ "$NICE" != 0 ] && cmd=("${NICE_WRAP[@]}" "${cmd[@]}")
  if [ "$PIN" = 1 ]; then cmd=(taskset -c "$WRK_CPUS" "${cmd[@]}"); fi
  setsid "${cmd[@]}" >"$of" 2>&1 </dev/null &
  local pid=$!
  GROUPS_STARTED+=("$pid")
  wait "$pid"
  local rc=$?
  local keep=() g
  for g in "${GROUPS_STARTED[@]}"; do [ "$g" != "$pid" ] && keep+=("$g"); done
  GROUPS_STARTED=("${keep[@]}")
  return $rc
}

# parse_wrk FILE -> "rps p50_ms p99_ms requests non2xx sockerr"
parse_wrk() {
  local f=$1 rps p50 p99 reqs non2xx sockerr
  rps=$(awk '/^Requests\/sec:/{print $2}' "$f")
  p50=$(awk '$1=="50%"{print $2}' "$f"); p99=$(awk '$1=="99%"{print $2}' "$f")
  reqs=$(awk '/requests in/{print $1}' "$f")
  non2xx=$(awk -F': ' '/Non-2xx or 3xx responses/{print $2}' "$f")
  sockerr=$(awk '/Socket errors:/{gsub(",","");print $4+$6+$8+$10}' "$f")
  echo "${rps:-0} $(to_ms "${p50:-NA}") $(to_ms "${p99:-NA}") ${reqs:-0} ${non2xx:-0} ${sockerr:-0}"
}

# ---------------------------------------------------------------- bench

csv_header="run_id,label,case,conns,mode,duration_s,nproc,wrk_threads,proxy_threads,pin,nice,rps,p50_ms,p99_ms,ratio_vs_haproxy_tcp,requests,non2xx,socket_errors,proxy_cpu_pct,req_per_proxy_cpu_s,other_cpu_pct,steal_pct,loadavg1"

bench() {
  command -v "$WRK" >/dev/null || die "wrk not found"
  command -v "$HAPROXY" >/dev/null || die "haproxy not found"
  command -v "$NGINX" >/dev/null || die "nginx not found"
  [ -f "$OUT" ] || echo "$csv_header" >"$OUT"

  log "lb-bench run $RUN_ID  nproc=$NPROC  wrk_threads=$WRK_THREADS proxy_threads=$PROXY_THREADS pin=$PIN nice=$NICE duration=${DURATION}s backends=$N"
  log "versions: $("$HAPROXY" -v | head -1 | awk '{print $1,$2,$3}'); $("$NGINX" -v 2>&1); $("$WRK" -v 2>&1 | head -1 | awk '{print $1,$2}'); kernel $(uname -r)"
  log "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg); fd limit $(ulimit -n), proxy maxconn $MAXCONN"
  start_backends

  declare -A REF=()
  printf '%-24s %6s %-5s %10s %9s %9s %8s %7s %8s %10s %7s\n' case conns mode req/s p50_ms p99_ms vsHAtcp errors pxCPU% req/pxCPUs other%
  local cs c m port of res rps p50 p99 reqs non2xx sockerr ratio pt0 pt1 ot0 ot1 st0 st1 t0 t1 el pxcpu rpc other steal busy0 busy1 stl0 stl1
  for cs in $CASES; do
    setup_case "$cs"; port=$CASE_PORT
    run_wrk "$port" 32 ka 1 "$WD/warmup.txt" || true
    for c in $CONNS; do
      for m in $MODES; do
        of="$WD/wrk-$cs-$c-$m.txt"
        quiet_wait
        read -r busy0 stl0 < <(sys_ticks); ot0=$(our_ticks); pt0=$(group_ticks "$PROXY_PG"); t0=$(date +%s.%N)
        run_wrk "$port" "$c" "$m" "$DURATION" "$of" || log "wrk exited non-zero for $cs/$c/$m"
        t1=$(date +%s.%N); pt1=$(group_ticks "$PROXY_PG"); ot1=$(our_ticks); read -r busy1 stl1 < <(sys_ticks)
        read -r rps p50 p99 reqs non2xx sockerr < <(parse_wrk "$of")
        el=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')
        pxcpu=$(awk -v d=$((pt1 - pt0)) -v e="$el" -v k="$CLK_TCK" 'BEGIN{printf "%.0f", 100*d/k/e}')
        rpc=$(awk -v d=$((pt1 - pt0)) -v r="$reqs" -v k="$CLK_TCK" 'BEGIN{if(d>0) printf "%.0f", r/(d/k); else print "NA"}')
        other=$(awk -v b=$((busy1 - busy0)) -v o=$((ot1 - ot0)) -v e="$el" -v k="$CLK_TCK" 'BEGIN{x=(b-o)/k/e*100; if(x<0)x=0; printf "%.0f", x}')
        steal=$(awk -v s=$((stl1 - stl0)) -v e="$el" -v k="$CLK_TCK" 'BEGIN{printf "%.0f", 100*s/k/e}')
        [ "$cs" = haproxy-tcp ] && REF["$c-$m"]=$rps
        ratio=$(awk -v a="$rps" -v b="${REF["$c-$m"]:-0}" 'BEGIN{if(b>0) printf "%.2f", a/b; else print "NA"}')
        [ "$cs" = direct ] && { pxcpu=NA; rpc=NA; }
        name=$cs; [ "$cs" = candidate ] && name=$CANDIDATE_NAME
        case $cs in candidate-*) name=$CANDIDATE_NAME-${cs#candidate-} ;; esac
        printf '%-24s %6s %-5s %10.0f %9s %9s %8s %7s %8s %10s %7s\n' "$name" "$c" "$m" "$rps" "$p50" "$p99" "$ratio" $((non2xx + sockerr)) "$pxcpu" "$rpc" "$other"
        echo "$RUN_ID,$RUN_LABEL,$name,$c,$m,$DURATION,$NPROC,$WRK_THREADS,$PROXY_THREADS,$PIN,$NICE,$rps,$p50,$p99,$ratio,$reqs,$non2xx,$sockerr,$pxcpu,$rpc,$other,$steal,$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT"
      done
    done
    teardown_case
  done
  log "CSV: $OUT"
}

# ---------------------------------------------------------------- failover

# Variants: name | kind | config arguments
fo_setup() {
  local v=$1
  local chk="check inter 1s fall 2 rise 2"
  case $v in
    ha-http-noretry)         haproxy_conf http roundrobin "  retries 0" ; start_haproxy ;;
    ha-http-retry3)          haproxy_conf http roundrobin "  retries 3" ; start_haproxy ;;
    ha-http-redispatch)      haproxy_conf http roundrobin "  retries 3\n  option redispatch" ; start_haproxy ;;
    ha-http-redispatch-chk)  haproxy_conf http roundrobin "  retries 3\n  option redispatch" "$chk" ; start_haproxy ;;
    ha-http-retryon-chk)     haproxy_conf http roundrobin "  retries 3\n  option redispatch 1\n  retry-on all-retryable-errors" "$chk" ; start_haproxy ;;
    ha-http-retryon-chk-obs) haproxy_conf http roundrobin "  retries 3\n  option redispatch 1\n  retry-on all-retryable-errors" "$chk observe layer4 error-limit 1 on-error mark-down" ; start_haproxy ;;
    ha-tcp-noretry)          haproxy_conf tcp roundrobin "  retries 0" ; start_haproxy ;;
    ha-tcp-redispatch-chk)   haproxy_conf tcp roundrobin "  retries 3\n  option redispatch 1" "$chk" ; start_haproxy ;;
    ha-tcp-redispatch-chk-obs) haproxy_conf tcp roundrobin "  retries 3\n  option redispatch 1" "$chk observe layer4 error-limit 1 on-error mark-down" ; start_haproxy ;;
    ha-http-timeout-retryon-chk) haproxy_conf http roundrobin "  retries 3\n  option redispatch 1\n  retry-on all-retryable-errors\n  timeout server 1s\n  timeout connect 1s" "$chk" ; start_haproxy ;;
    ha-http-timeout-retryon-httpchk) haproxy_conf http roundrobin "  retries 3\n  option redispatch 1\n  retry-on all-retryable-errors\n  timeout server 1s\n  timeout connect 1s\n  option httpchk GET /" "$chk" ; start_haproxy ;;
    nginx-http-default)      nginx_conf http "" ; start_nginx_proxy ;;
    nginx-http-timeout)      nginx_conf http "" "" "" "      proxy_read_timeout 1s;" ; start_nginx_proxy ;;
    nginx-stream-default)    nginx_conf stream "" ; start_nginx_proxy ;;
    candidate-http)          start_candidate http; FO_PORT=$CANDIDATE_PORT ;;
    candidate-tcp)           start_candidate tcp; FO_PORT=$CANDIDATE_PORT ;;
    *) die "unknown failover variant $v" ;;
  esac
}

fo_variants_default="ha-http-noretry ha-http-retry3 ha-http-redispatch ha-http-redispatch-chk ha-http-retryon-chk ha-http-retryon-chk-obs ha-tcp-noretry ha-tcp-redispatch-chk ha-tcp-redispatch-chk-obs nginx-http-default nginx-stream-default"
[ -n "$CANDIDATE_CMD" ] && fo_variants_default="$fo_variants_default candidate-http candidate-tcp"
FO_PORT=""

haproxy_stat() {   # haproxy_stat -> per-server "name status retries redispatches econ eresp" lines
  [ -S "$WD/haproxy.sock" ] || return 0
  python3 - "$WD/haproxy.sock" <<'PY' 2>/dev/null || true
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
data = b""
while True:
    b = s.recv(65536)
    if not b: break
    data += b
lines = data.decode().splitlines()
hdr = lines[0].lstrip("# ").split(",")
out = []
for l in lines[1:]:
    if not l: continue
    r = dict(zip(hdr, l.split(",")))
    if r["pxname"] == "be":
        out.append("%s:%s wretr=%s wredis=%s econ=%s eresp=%s hrsp5xx=%s" % (r["svname"], r["status"], r["wretr"], r["wredis"], r["econ"], r["eresp"], r.get("hrsp_5xx", "")))
print(" ".join(out))
PY
}

failover() {
  local fo_csv=${OUT%.csv}-failover.csv
  [ -f "$fo_csv" ] || echo "run_id,label,variant,signal,mode,conns,duration_s,kill_at_s,requests,rps,non2xx,sock_connect,sock_read,sock_write,sock_timeout,p99_ms,max_ms,haproxy_stats" >"$fo_csv"
  local variants=${FO_CASES:-$fo_variants_default}
  log "failover run $RUN_ID: N=$N conns=$FO_CONNS duration=${FO_DURATION}s, backend 1 gets SIG$FO_SIGNAL at t=${FO_KILL_AT}s, mode=$FO_MODE"
  start_backends
  printf '%-28s %9s %8s %7s %22s %9s %9s  %s\n' variant requests non2xx sockerr "conn/read/write/tmo" p99_ms max_ms haproxy-servers
  local v port of be1 res
  for v in $variants; do
    # make sure backend 1 is up again
    if ! port_listening "$(backend_port 1)"; then
      [ -n "${BACKEND_PIDS[1]:-}" ] && stop_group "${BACKEND_PIDS[1]}"
      start_backend 1
    fi
    FO_PORT=""
    fo_setup "$v"
    port=${FO_PORT:-$PROXY_PORT}
    sleep 1.5   # let health checks see everything UP
    of="$WD/fo-$v.txt"
    be1=${BACKEND_PIDS[1]}
    ( sleep "$FO_KILL_AT"; kill -"$FO_SIGNAL" -- "-$be1" 2>/dev/null ) &
    KILLER_PID=$!
    run_wrk "$port" "$FO_CONNS" "$FO_MODE" "$FO_DURATION" "$of"
    wait "$KILLER_PID" 2>/dev/null; KILLER_PID=""
    local st; st=$(haproxy_stat)
    local reqs rps non2xx sc sr sw stt p99 mx
    reqs=$(awk '/requests in/{print $1}' "$of"); rps=$(awk '/^Requests\/sec:/{print $2}' "$of")
    non2xx=$(awk -F': ' '/Non-2xx or 3xx responses/{print $2}' "$of"); non2xx=${non2xx:-0}
    read -r sc sr sw stt < <(awk '/Socket errors:/{gsub(",","");print $4,$6,$8,$10; f=1} END{if(!f) print 0,0,0,0}' "$of")
    p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$of")"); mx=$(to_ms "$(awk '$1=="Latency"{print $4; exit}' "$of")")
    printf '%-28s %9s %8s %7s %22s %9s %9s  %s\n' "$v" "$reqs" "$non2xx" $((sc + sr + sw + stt)) "$sc/$sr/$sw/$stt" "$p99" "$mx" "$st"
    echo "$RUN_ID,$RUN_LABEL,$v,$FO_SIGNAL,$FO_MODE,$FO_CONNS,$FO_DURATION,$FO_KILL_AT,$reqs,$rps,$non2xx,$sc,$sr,$sw,$stt,$p99,$mx,\"$st\"" >>"$fo_csv"
    teardown_case
    # restore backend 1 (it is either dead or stopped)
    stop_group "$be1"
    start_backend 1
  done
  log "CSV: $fo_csv"
}

# ---------------------------------------------------------------- summarize

# summarize CSV...: median (min-max) of req/s, median p50/p99, median ratio and
# proxy efficiency per (wrk_threads, proxy_threads, pin, case, conns, mode) over all runs.
summarize() {
  [ $# -ge 1 ] || die "usage: lb-bench.sh summarize FILE.csv [FILE.csv...]"
  awk -F, '
    FNR==1 { for (i=1;i<=NF;i++) col[$i]=i; next }
    {
      k = "wrk" $col["wrk_threads"] "/px" $col["proxy_threads"] "/pin" $col["pin"] SUBSEP $col["case"] SUBSEP $col["conns"] SUBSEP $col["mode"]
      if (!(k in n)) order[++nk]=k
      n[k]++; i=n[k]
      rps[k,i]=$col["rps"]; p50[k,i]=$col["p50_ms"]; p99[k,i]=$col["p99_ms"]; rat[k,i]=$col["ratio_vs_haproxy_tcp"]
      eff[k,i]=$col["req_per_proxy_cpu_s"]; oth[k,i]=$col["other_cpu_pct"]
    }
    function med(a,k,m,   i,j,t,v) {
      for (i=1;i<=m;i++) v[i]=a[k,i]+0
      for (i=2;i<=m;i++) { t=v[i]; for (j=i-1;j>=1 && v[j]>t;j--) v[j+1]=v[j]; v[j+1]=t }
      lo=v[1]; hi=v[m]
      return (m%2) ? v[(m+1)/2] : (v[m/2]+v[m/2+1])/2
    }
    END {
      printf "%-16s %-24s %5s %-5s %3s %9s %17s %8s %8s %7s %10s %6s\n", "config","case","conns","mode","n","med_rps","min-max","p50_ms","p99_ms","vsHAtcp","req/pxCPUs","other%"
      for (o=1;o<=nk;o++) {
        k=order[o]; split(k, f, SUBSEP); m=n[k]
        r=med(rps,k,m); rl=lo; rh=hi
        printf "%-16s %-24s %5s %-5s %3d %9.0f %8.0f-%-8.0f %8.3f %8.3f %7.2f %10.0f %6.0f\n", f[1], f[2], f[3], f[4], m, r, rl, rh, med(p50,k,m), med(p99,k,m), med(rat,k,m), med(eff,k,m), med(oth,k,m)
      }
    }' "$@"
}

case $MODE_CMD in
  bench) bench ;;
  summarize) shift; summarize "$@" ;;
  failover) failover ;;
  help|-h|--help) sed -n '2,62p' "$0" ;;
  *) die "unknown command $MODE_CMD (bench|failover|help)" ;;
esac
