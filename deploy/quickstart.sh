#!/usr/bin/env bash
# Flotilla quickstart: builds Flotilla and starts a local cluster on this machine, then shows it answering.
#
#   deploy/quickstart.sh          build, start a local cluster, deploy the demo service; leaves it running
#   deploy/quickstart.sh --down   stop it and remove its state
#
# The local cluster: one controller on 127.0.0.1:7400 and two agents on this machine, joined with the token the
# controller printed; then a `hello` service of 3 replicas and requests to each. When this machine can run
# containers (root, crun or runc, busybox-static, python3), the replicas are OCI containers of the demo image
# (deploy/images/build-demo.sh, built into the state directory), each on its node's container network and
# answering with its task id and node name; otherwise (or with FLOTILLA_QUICKSTART_DRIVER=process) they are
# python3's http.server run by the process driver (deploy/hello.yaml). Every node's load balancer serves the
# published port 8080 in front of all replicas, wherever they run (node-a on 127.0.0.2, node-b on 127.0.0.3,
# since both share this machine); the requests it shows go through both.
#
# --down stops the agents (SIGTERM: they stop their tasks and remove their network namespaces, veths, bridge,
# nftables table and runtime state under /run/flotilla-<node>), then the controller, and removes the state
# directory. Should an agent not exit within 10 s, it is killed and --down removes what it left itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=${FLOTILLA_QUICKSTART_DIR:-/tmp/flotilla-quickstart}
LISTEN=${FLOTILLA_QUICKSTART_LISTEN:-127.0.0.1:7400}
DRIVER=${FLOTILLA_QUICKSTART_DRIVER:-auto}   # oci, process, or auto (oci when containers can run here)

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

# What an agent that had to be killed left behind: its containers, overlay mounts, network and cgroups (named
# after its node id, which its log gives).
remove_agent_leftovers() {
  local log=$1 node prefix state runtime id item
  node=$(grep -o 'node.id=[^ ]*' "$log" 2>/dev/null | head -1 | cut -d= -f2) || true
  [ -n "$node" ] || return 0
  for state in /run/flotilla-"$node"/*; do
    [ -d "$state" ] || continue
    runtime=$(basename "$state")
    for id in $("$runtime" --root "$state" list -q 2>/dev/null); do "$runtime" --root "$state" delete --force "$id" >/dev/null 2>&1 || true; done
  done
  rm -rf "/run/flotilla-$node"
  awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r | while read -r item; do umount -l "$item" || true; done
  prefix=f$(printf '%s' "$node" | sha256sum | cut -c1-6)
  for item in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$prefix-"); do ip netns del "$item" || true; done
  for item in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$prefix"); do ip link del "$item" || true; done
  nft delete table ip "$prefix" 2>/dev/null || true
  for item in /sys/fs/cgroup/*/flotilla-"$node"; do [ -d "$item" ] && { find "$item" -depth -type d -exec rmdir {} + 2>/dev/null || true; }; done
  return 0
}

down() {
  for file in "$STATE"/agent-*.pid; do
    [ -f "$file" ] || continue
    stop_pidfile "$file"
    remove_agent_leftovers "${file%.pid}.log"
  done
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

LB_ADDRESS_node_a=127.0.0.2
LB_ADDRESS_node_b=127.0.0.3
for name in node-a node-b; do
  if [ -f "$STATE/agent-$name.pid" ] && kill -0 "$(cat "$STATE/agent-$name.pid")" 2>/dev/null; then continue; fi
  JOIN=()
  if [ ! -f "$STATE/$name/agent.creds" ]; then
    TOKEN=$(awk '/^  agent: FLTKN-/ {print $2; exit}' "$STATE/controller.log")
    [ -n "$TOKEN" ] || TOKEN=$("$BIN/flotilla" token create --role agent --quiet)
    JOIN=(--controller "$LISTEN" --token "$TOKEN" --name "$name")
  fi
  echo "==> Starting agent $name (data in $STATE/$name, log in $STATE/agent-$name.log)"
  # --stop-tasks-on-exit: --down stops everything (an agent restarted without it leaves its containers running
  # and adopts them when it starts again). --lb-address: both agents share this machine, so each node's load
  # balancer takes published ports on an address of its own (on real nodes: every address, the default).
  lb_var=LB_ADDRESS_${name//-/_}
  nohup "$BIN/flotilla-agent" --data-dir "$STATE/$name" --stop-tasks-on-exit --lb-address "${!lb_var}" "${JOIN[@]}" \
    > "$STATE/agent-$name.log" 2>&1 &
  echo $! > "$STATE/agent-$name.pid"
done
for _ in $(seq 1 100); do
  [ "$("$BIN/flotilla" node ls | grep -c ' ready ')" -ge 2 ] && break
  sleep 0.2
done
echo "==> flotilla node ls"
"$BIN/flotilla" node ls

if [ "$DRIVER" = auto ]; then
  DRIVER=process
  if [ "$(id -u)" = 0 ] && { command -v crun || command -v runc; } >/dev/null && [ -x /bin/busybox ] \
    && grep -q "OCI driver ready" "$STATE"/agent-*.log 2>/dev/null; then
    DRIVER=oci
  fi
fi
if [ "$DRIVER" = oci ]; then
  echo "==> Building the demo image: deploy/images/build-demo.sh $STATE/demo-image 1"
  deploy/images/build-demo.sh "$STATE/demo-image" 1
  SERVICE_FILE=$STATE/hello.yaml
  cat > "$SERVICE_FILE" <<EOT
# The quickstart's demo service: three replicas of the demo image, OCI containers each on its node's container
# network (its own address, port 8080), answering with its task id and node name.
services:
  hello:
    driver: oci
    image: oci:$STATE/demo-image:1
    replicas: 3
    ports: ["8080:8080/http"]
    update: {monitor: 2s}
EOT
else
  if [ "${FLOTILLA_QUICKSTART_DRIVER:-auto}" = auto ]; then
    echo "==> Containers cannot run here (they need root, crun or runc, and busybox-static): the process driver it is"
  fi
  SERVICE_FILE=deploy/hello.yaml
fi
echo "==> Deploying the demo service: flotilla apply -f $SERVICE_FILE"
"$BIN/flotilla" apply -f "$SERVICE_FILE" --timeout 60s
"$BIN/flotilla" service ps hello
echo "==> Through the load balancer: published port 8080 on each node (node-a at 127.0.0.2, node-b at 127.0.0.3)"
for node in 127.0.0.2 127.0.0.3; do
  for _ in 1 2 3; do
    printf '  %s:8080 -> ' "$node"
    python3 -c "
import time, urllib.request
for attempt in range(50):   # the node's balancer gets the ready replicas a moment after they start
    try:
        r = urllib.request.urlopen('http://$node:8080/', timeout=5)
        body = r.read().decode(errors='replace').strip()
        print(body if r.headers.get_content_type() == 'text/plain' else f'{r.status} {r.reason}')
        break
    except Exception as error:
        time.sleep(0.2)
else:
    print('no answer:', error)" 2>/dev/null || echo "no answer"
  done
done

cat <<EOT

Flotilla is running: a controller, two agents and the hello service. Use it with:
  export FLOTILLA_CONTROLLER=$LISTEN FLOTILLA_CREDENTIALS=$FLOTILLA_CREDENTIALS
  $BIN/flotilla service ls
  $BIN/flotilla service scale hello=5
  $BIN/flotilla node ls
  curl http://127.0.0.2:8080/   # node-a's load balancer (node-b's: 127.0.0.3)
Stop it with: deploy/quickstart.sh --down
EOT
