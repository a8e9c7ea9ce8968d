#!/usr/bin/env bash
# Scans a Flotilla controller's port with sslscan (Debian package `sslscan`) and checks the policy:
# no protocol below TLS 1.2, only forward-secret AEAD ciphers, no renegotiation, no compression.
#
#   deploy/tls-scan.sh HOST:PORT          scan a running controller
#   deploy/tls-scan.sh --local            start a throwaway controller on 127.0.0.1 (release or debug build
#                                         found by `swift build --show-bin-path`), scan it, stop it
#
# Prints the sslscan report, then one line per check and "TLS policy: PASS" (exit 0) or "FAIL" (exit 1).
# A client certificate is optional at the TLS layer on this port (joiners have none), and required by the
# protocol for every method but NodeMembership/Join: Tests/ControllerTests/JoinTests.swift checks that part.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v sslscan >/dev/null || { echo "sslscan not found: apt-get install -y sslscan" >&2; exit 2; }

work=""
pid=""
cleanup() {
    if [ -n "$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = flotilla-contro ]; then kill "$pid" 2>/dev/null || true; fi
    if [ -n "$work" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

target="${1:-}"
if [ "$target" = --local ] || [ -z "$target" ]; then
    bin="${FLOTILLA_BIN_DIR:-$(cd "$root" && swift build --show-bin-path)}"
    work="$(mktemp -d -t flotilla-tls.XXXXXX)"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    "$bin/flotilla-controller" --data-dir "$work/c" --listen "127.0.0.1:$port" --init --log-level warning >"$work/log" 2>&1 &
    pid=$!
    # Under scripts/test.sh, record it so it is ended by PID even if this script is killed.
    if [ -n "${FLOTILLA_TEST_PIDFILE:-}" ]; then echo "$pid" >>"$FLOTILLA_TEST_PIDFILE"; fi
    for _ in $(seq 300); do grep -q "Join tokens" "$work/log" 2>/dev/null && break; sleep 0.1; done
    target="127.0.0.1:$port"
fi

report="$(sslscan --no-colour "$target" 2>&1)"
echo "$report"
echo

status=0
check() {  # check DESCRIPTION COMMAND...
    if "${@:2}"; then echo "ok    $1"; else echo "FAIL  $1"; status=1; fi
}
has() { grep -Eq "$1" <<<"$report"; }
lacks() { ! grep -Eq "$1" <<<"$report"; }
check "SSLv2 disabled" has '^SSLv2 +disabled'
check "SSLv3 disabled" has '^SSLv3 +disabled'
check "TLS 1.0 disabled" has '^TLSv1\.0 +disabled'
check "TLS 1.1 disabled" has '^TLSv1\.1 +disabled'
check "TLS 1.2 enabled" has '^TLSv1\.2 +enabled'
check "TLS 1.3 enabled" has '^TLSv1\.3 +enabled'
check "at least one cipher accepted" has '^(Preferred|Accepted) '
check "no cipher without forward secrecy, AEAD or with a weak primitive" \
    lacks '^(Preferred|Accepted) .*(NULL|RC4|DES|MD5|CBC|SHA1 |EXP|anon|-SHA +|AES(128|256)-SHA|CAMELLIA|ARIA|PSK|SRP)'
check "only ECDHE key exchange in TLS 1.2" lacks '^(Preferred|Accepted) +TLSv1\.2 +[0-9]+ bits +([^ E]|E[^C])'
check "no renegotiation" lacks 'Insecure session renegotiation supported|Secure session renegotiation supported'
check "no heartbleed" lacks 'TLSv[0-9.]+ vulnerable to heartbleed'
check "no TLS compression" lacks 'Compression enabled'
[ $status = 0 ] && echo "TLS policy: PASS" || echo "TLS policy: FAIL"
exit $status
