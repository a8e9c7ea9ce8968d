#!/usr/bin/env bash
# Memory of the load balancer holding many idle client connections: flotilla-agent proxy (release build) and
# HAProxy in the same setting (HTTP mode, one thread, one nginx backend), everything on 127.0.0.1.
# For each proxy: its RSS when started, with CONNS client connections open and silent, and with the same
# connections after one keep-alive request each (idle again, as between requests).
#   bench/lb-idle-rss.sh                  # CONNS=10000 MODE=http
#   CONNS=2000 MODE=tcp bench/lb-idle-rss.sh
# HAProxy reserves two descriptors per connection and refuses to start when the limit is below that: where the
# hard limit is 20,000 (as on the development machine), compare both at CONNS=9000 and flotilla alone at 10000.
# Bounded: every step has a timeout, every process started here is stopped on exit (trap), by pid.
# Needs an open-file limit above CONNS (twice CONNS in TCP mode, and for HAProxy, which reserves two per connection): apt-get install -y haproxy nginx-light
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-10000}
MODE=${MODE:-http}
[ "$MODE" = tcp ] && MODE_TCP=1 || MODE_TCP=0
BASE_PORT=${BASE_PORT:-18500}
PROXIES=${PROXIES:-"flotilla haproxy"}
BACKEND_PORT=$((BASE_PORT + 1))
PROXY_PORT=$((BASE_PORT + 100))
# Each process holds one side of the connections (the proxy, in TCP mode, both client and backend sides).
NOFILE=$(( (MODE_TCP + 1) * CONNS + 500 ))
ulimit -Hn "$NOFILE" 2>/dev/null || true
[ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge "$NOFILE" ] || { echo "the open-file limit is $(ulimit -Hn); $NOFILE are needed: lower CONNS" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
for tool in haproxy nginx python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y haproxy nginx-light python3" >&2; exit 1; }
done
[ -n "${SKIP_BUILD:-}" ] || swift build -c release --product flotilla-agent >&2
AGENT=$PWD/.build/release/flotilla-agent
WD=$(mktemp -d /tmp/lb-idle-rss.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WD"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; return 1
}

mkdir -p "$WD/be/tmp"
cat >"$WD/be/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $WD/be/nginx.pid; error_log $WD/be/error.log error;
events { worker_connections $NOFILE; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  client_body_temp_path $WD/be/tmp; proxy_temp_path $WD/be/tmp; fastcgi_temp_path $WD/be/tmp;
  uwsgi_temp_path $WD/be/tmp; scgi_temp_path $WD/be/tmp;
  server { listen 127.0.0.1:$BACKEND_PORT backlog=4096; location / { return 200 "backend\n"; } } }
EOF
nginx -e stderr -p "$WD/be/" -c "$WD/be/nginx.conf" >"$WD/be.out" 2>&1 </dev/null &
PIDS+=($!)
wait_port "$BACKEND_PORT"

cat >"$WD/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $((CONNS + 100))
defaults
  mode $MODE
  maxconn $((CONNS + 100))
  timeout connect 2s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend fe
  bind 127.0.0.1:$PROXY_PORT backlog 4096
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND_PORT
EOF

# The client: opens the connections, reports the proxy's RSS, sends one request on each, reports again.
cat >"$WD/clients.py" <<'EOF'
import asyncio, sys, time
port, conns, pid, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")

async def settle():
    await asyncio.sleep(2.0)

async def main():
    print(f"started: {rss_mib():.1f} MiB", flush=True)
    streams = []
    sem = asyncio.Semaphore(256)
    async def open_one():
        async with sem:
            streams.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10))
    await asyncio.wait_for(asyncio.gather(*(open_one() for _ in range(conns))), 120)
    await settle()
    print(f"{conns} connections open, nothing sent: {rss_mib():.1f} MiB", flush=True)
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    async def exchange(reader, writer):
        async with sem:
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await asyncio.wait_for(reader.readexactly(length), 10)
    if mode == "http":
        await asyncio.wait_for(asyncio.gather(*(exchange(r, w) for r, w in streams)), 300)
        await settle()
        print(f"{conns} connections idle after one request each: {rss_mib():.1f} MiB", flush=True)
    for _, writer in streams:
        writer.close()

asyncio.run(main())
EOF

for proxy in $PROXIES; do
  case $proxy in
    flotilla) "$AGENT" proxy --listen "127.0.0.1:$PROXY_PORT" --backend "127.0.0.1:$BACKEND_PORT" --mode "$MODE" --workers 1 \
                >"$WD/flotilla.out" 2>&1 </dev/null & ;;
    haproxy) haproxy -db -f "$WD/haproxy.cfg" >"$WD/haproxy.out" 2>&1 </dev/null & ;;
    *) echo "unknown proxy $proxy" >&2; exit 1 ;;
  esac
  pid=$!
  PIDS+=("$pid")
  wait_port "$PROXY_PORT" || { cat "$WD/$proxy.out" >&2; exit 1; }
  echo "== $proxy ($MODE mode, pid $pid)"
  timeout 600 python3 "$WD/clients.py" "$PROXY_PORT" "$CONNS" "$pid" "$MODE"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  sleep 1
done
