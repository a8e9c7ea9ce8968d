#!/usr/bin/env bash
# Flotilla quickstart: builds Flotilla and starts a local cluster on this machine, then shows it answering.
#
#   deploy/quickstart.sh          build, start a local cluster, deploy the demo service; leaves it running
#   deploy/quickstart.sh --down   stop it and remove its state
#
# The local cluster: one controller on 127.0.0.1:7400 and two agents on this machine, joined with the token the
# controller printed; then a `hello` service (3 replicas of python3's http.server, process driver) and a request
# to each replica. The load balancer, which will put one published port in front of them, lands with its issue
# (see docs/architecture.md); until then each replica answers on its own port.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=${FLOTILLA_QUICKSTART_DIR:-/tmp/flotilla-quickstart}
LISTEN=${FLOTILLA_QUICKSTART_LISTEN:-127.0.0.1:7400}

stop_pidfile() {  # SIGTERM, then SIGKILL after 10 s: agents stop their tasks first, the controller last
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  return 0
}

down() {
  for file in "$STATE"/agent-*.pid; do stop_pidfile "$file"; done
  stop_pidfile "$STATE/controller.pid"
  rm -rf "$STATE"
  echo "Flotilla quickstart stopped; $STATE removed."
}

if [ "${1:-}" = "--down" ]; then down; exit 0; fi

if ! dpkg -s zlib1g-dev >/dev/null 2>&1; then
  echo "==> Installing Debian packages (zlib1g-dev)"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends zlib1g-dev
fi

echo "==> Building Flotilla (release; the first build takes several minutes)"
swift build -c release --product flotilla-controller
swift build -c release --product flotilla-agent
swift build -c release --product flotilla
BIN=$(swift build -c release --show-bin-path)

if [ -f "$STATE/controller.pid" ] && kill -0 "$(cat "$STATE/controller.pid")" 2>/dev/null; then
  echo "==> A quickstart controller is already running (pid $(cat "$STATE/controller.pid"))"
else
  mkdir -p "$STATE"
  INIT=--init
  [ -f "$STATE/data/controller.creds" ] && INIT=
  echo "==> Starting a controller on $LISTEN (data in $STATE/data, log in $STATE/controller.log)"
  nohup "$BIN/flotilla-controller" --data-dir "$STATE/data" --listen "$LISTEN" $INIT \
    > "$STATE/controller.log" 2>&1 &
  echo $! > "$STATE/controller.pid"
  for _ in $(seq 1 100); do
    grep -q "controller serving" "$STATE/controller.log" 2>/dev/null && break
    kill -0 "$(cat "$STATE/controller.pid")" 2>/dev/null || { cat "$STATE/controller.log"; exit 1; }
    sleep 0.1
  done
fi

export FLOTILLA_CONTROLLER=$LISTEN
export FLOTILLA_CREDENTIALS=$STATE/data/admin.creds
echo "==> flotilla status"
"$BIN/flotilla" status

for name in node-a node-b; do
  if [ -f "$STATE/agent-$name.pid" ] && kill -0 "$(cat "$STATE/agent-$name.pid")" 2>/dev/null; then continue; fi
  JOIN=()
  if [ ! -f "$STATE/$name/agent.creds" ]; then
    TOKEN=$(awk '/^  agent: FLTKN-/ {print $2; exit}' "$STATE/controller.log")
    [ -n "$TOKEN" ] || TOKEN=$("$BIN/flotilla" token create --role agent --quiet)
    JOIN=(--controller "$LISTEN" --token "$TOKEN" --name "$name")
  fi
  echo "==> Starting agent $name (data in $STATE/$name, log in $STATE/agent-$name.log)"
  nohup "$BIN/flotilla-agent" --data-dir "$STATE/$name" "${JOIN[@]}" > "$STATE/agent-$name.log" 2>&1 &
  echo $! > "$STATE/agent-$name.pid"
done
for _ in $(seq 1 100); do
  [ "$("$BIN/flotilla" node ls | grep -c ' ready ')" -ge 2 ] && break
  sleep 0.2
done
echo "==> flotilla node ls"
"$BIN/flotilla" node ls

echo "==> Deploying the demo service: flotilla apply -f deploy/hello.yaml"
"$BIN/flotilla" apply -f deploy/hello.yaml --timeout 60s
"$BIN/flotilla" service ps hello
echo "==> Asking each replica (each listens on its own port until the load balancer lands)"
for port in $("$BIN/flotilla" service ps hello | grep -o 'listening on port [0-9]*' | awk '{print $4}'); do
  printf '  127.0.0.1:%s -> ' "$port"
  python3 -c "import urllib.request,sys; r=urllib.request.urlopen('http://127.0.0.1:$port/', timeout=5); print(r.status, r.reason)" \
    || echo "no answer"
done

cat <<EOT

Flotilla is running: a controller, two agents and the hello service. Use it with:
  export FLOTILLA_CONTROLLER=$LISTEN FLOTILLA_CREDENTIALS=$FLOTILLA_CREDENTIALS
  $BIN/flotilla service ls
  $BIN/flotilla service scale hello=5
  $BIN/flotilla node ls
Stop it with: deploy/quickstart.sh --down
EOT
