#!/usr/bin/env bash
# Fuzzes kilnd's API from its own OpenAPI document with schemathesis (PyPI:
# `pip install schemathesis`), through kilnd's TCP listener, inside a network
# namespace made for the run (traffic stays on its loopback). Fails on any
# 5xx, or any answer that breaks the document.
# Usage: manager/tests/schemathesis.sh [KILND] [extra `st run` args...]
#   KILND defaults to $CARGO_TARGET_DIR/debug/kilnd (or target/debug/kilnd).
set -euo pipefail
if [ -z "${KILN_IN_NETNS:-}" ]; then
    exec unshare -n env KILN_IN_NETNS=1 "$0" "$@"
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
kilnd=${1:-${CARGO_TARGET_DIR:-$root/target}/debug/kilnd}
shift || true
st=$(command -v st || command -v schemathesis || true)
[ -n "$st" ] || { echo "schemathesis is not installed: pip install schemathesis" >&2; exit 1; }
ip link set lo up
dir=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$token" > "$dir/token"
# A file to register (in $dir, the only directory kilnd may import from;
# not a kernel, so a kernel registration of it is a 400); the VMM binary is
# absent so servers go ERROR.
echo fake > "$dir/vmlinux"
cat > "$dir/kilnd.toml" <<CONF
[images]
import_dirs = ["$dir"]
[tcp]
listen = "127.0.0.1:18775"
token_file = "$dir/token"
[vmm]
binary = "/nonexistent/kiln-vmm"
CONF
"$kilnd" --config "$dir/kilnd.toml" --state-dir "$dir/state" --socket "$dir/kiln.sock" \
    > "$dir/kilnd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$dir/kiln.sock" ] && break; sleep 0.1; done
"$st" run "http://127.0.0.1:18775/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples 50 --workers 1 "$@"
