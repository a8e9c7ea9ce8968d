# Sourced by the benchmark scripts: which Flotilla a result was measured on.
#
#   bench_commit ROOT [PATH...]   prints the short commit of ROOT, plus "+ uncommitted changes in PATH..." when
#                                 those paths (default: Sources Package.swift) differ from it

bench_commit() {
    local root="$1" commit
    shift
    [ $# -gt 0 ] || set -- Sources Package.swift
    commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [ -n "$(git -C "$root" status --porcelain -- "$@" 2>/dev/null)" ]; then
        commit="$commit + uncommitted changes in $*"
    fi
    echo "$commit"
}
