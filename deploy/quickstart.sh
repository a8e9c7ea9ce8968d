#!/usr/bin/env bash
# Flotilla quickstart: builds Flotilla and starts a local cluster on this machine, then shows it answering.
#
#   deploy/quickstart.sh          build, start, show `flotilla status`; leaves the cluster running
#   deploy/quickstart.sh --down   stop it and remove its state
#
# At this stage of the project the local cluster is one controller on 127.0.0.1:7400; agents, services and
# the load balancer join it as they land (see docs/architecture.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=${FLOTILLA_QUICKSTART_DIR:-/tmp/flotilla-quickstart}
LISTEN=${FLOTILLA_QUICKSTART_LISTEN:-127.0.0.1:7400}

down() {
  if [ -f "$STATE/controller.pid" ]; then
    pid=$(cat "$STATE/controller.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
  fi
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

cat <<EOT

Flotilla is running. Use it with:
  export FLOTILLA_CONTROLLER=$LISTEN FLOTILLA_CREDENTIALS=$FLOTILLA_CREDENTIALS
  $BIN/flotilla status
Stop it with: deploy/quickstart.sh --down
EOT
