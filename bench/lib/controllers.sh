# Sourced by the benchmark scripts: three flotilla-controller processes on 127.0.0.1, as a user starts them.
#
#   controllers_setup WORK CONTROLLER   free ports, $WORK/start.sh; sets $addresses and $ports
#   controllers_start_three BENCH       founder with --init, two joiners with its controller token; waits until
#                                       `BENCH wait-ready` says the cluster is settled
#   controllers_stop                    stops every controller started here, by PID (TERM, then KILL after 5 s)
#
# Each controller N logs to $WORK/cN.log (LOG_LEVEL, default warning), keeps its data in $WORK/cN and its PID in
# $WORK/ctlN.pid.
# Needs `say` (the script's progress printer).

controllers_setup() {
    work="$1"
    local controller="$2"
    read -r -a ports <<< "$(python3 - <<'PY'
import socket
socks = []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)"
    addresses="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
    # $work/start.sh N [extra flags]: (re)starts controller N on its data dir and port.
    cat > "$work/start.sh" <<SH
#!/usr/bin/env bash
set -eu
i="\$1"; shift
ports=(${ports[*]})
setsid "$controller" --data-dir "$work/c\$i" --listen "127.0.0.1:\${ports[\$((i - 1))]}" --log-level ${LOG_LEVEL:-warning} "\$@" \
    >>"$work/c\$i.log" 2>&1 </dev/null &
echo \$! > "$work/ctl\$i.pid"
SH
    chmod +x "$work/start.sh"
}

controllers_start_three() {
    local bench="$1"
    "$work/start.sh" 1 --init
    local t=0
    while [ ! -f "$work/c1/admin.creds" ] && [ $t -lt 600 ]; do sleep 0.1; t=$((t + 1)); done
    [ -f "$work/c1/admin.creds" ] || { say "controller 1 did not initialize; log:"; tail -20 "$work/c1.log" >&2; return 1; }
    # The founder prints its first join tokens once it leads; controllers join with the controller token.
    t=0
    while ! grep -q '^  controller: FLTKN-' "$work/c1.log" 2>/dev/null && [ $t -lt 300 ]; do sleep 0.1; t=$((t + 1)); done
    local token
    token="$(awk '/^  controller: FLTKN-/ {print $2; exit}' "$work/c1.log")"
    [ -n "$token" ] || { say "controller 1 printed no join token; log:"; tail -20 "$work/c1.log" >&2; return 1; }
    "$work/start.sh" 2 --join "127.0.0.1:${ports[0]}" --token "$token"
    "$work/start.sh" 3 --join "127.0.0.1:${ports[0]}" --token "$token"
    "$bench" wait-ready --addresses "$addresses" --credentials "$work/c1/admin.creds" --timeout 120 >/dev/null
}

controllers_stop() {
    local f pid
    for f in "$work"/ctl*.pid; do
        [ -f "$f" ] || continue
        pid="$(cat "$f")"
        # only a live flotilla-controller (comm is cut at 15 characters)
        if [ -n "$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = flotilla-contro ]; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for f in "$work"/ctl*.pid; do
        [ -f "$f" ] || continue
        pid="$(cat "$f")"
        local t=0
        while [ $t -lt 50 ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = flotilla-contro ] \
              && [ "$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)" != Z ]; do sleep 0.1; t=$((t + 1)); done
        if [ "$(cat /proc/$pid/comm 2>/dev/null)" = flotilla-contro ]; then kill -KILL "$pid" 2>/dev/null || true; fi
        rm -f "$f"
    done
}
