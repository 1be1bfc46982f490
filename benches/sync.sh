#!/usr/bin/env bash
# Sync benchmark of a release build: a file source of N users (default 100000, two 3PIDs
# each). Prints the initial sync, a resync with no change, a resync with 1 % of the
# users changed, and the server's peak and current RSS.
#
#   benches/sync.sh
#   N=20000 benches/sync.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX-2}"
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_-131072}"
command -v python3 >/dev/null || { echo "python3 is needed to generate the data" >&2; exit 1; }
cargo build --release --locked --quiet
BIN="$CARGO_TARGET_DIR/release/mxisd"
WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
. benches/lib.sh

gen() { # changed-fraction-seed
  python3 - "$N" "$1" > "$WORK/users.yaml.tmp" <<'PY'
import sys
n, seed = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    # With a seed, every hundredth user has a new address.
    tag = f"-{seed}" if seed and i % 100 == 0 else ""
    print(f"- username: user{i}\n  threepids:\n    - {{medium: email, address: user{i}{tag}@example.org}}\n    - {{medium: msisdn, address: '+1202{i:07d}'}}")
PY
  mv "$WORK/users.yaml.tmp" "$WORK/users.yaml"
}
gen 0
PORT=$(free_port)
cat > "$WORK/mxisd.yaml" <<YAML
matrix:
  domain: example.org
server:
  port: $PORT
storage:
  path: state
file:
  enabled: true
  path: users.yaml
  sync:
    interval: 24h
YAML
cli() { (cd "$WORK" && "$BIN" "$@" --json -c mxisd.yaml); }
(cd "$WORK" && RUST_LOG=warn exec "$BIN" run -c mxisd.yaml 2>>"$WORK/server.log") &
PID=$!
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d['sources'][0].get('$1'))"; }
for _ in $(seq 1 1200); do
  done_ms=$(cli sync status 2>/dev/null | field last_success_ms || true)
  [ -n "$done_ms" ] && [ "$done_ms" != "None" ] && break
  sleep 0.1
done
echo "== file source, $N users, $((2 * N)) bindings ($(nproc) cores)"
echo "  initial sync:        $(cli sync status | field duration_ms) ms"
echo "  resync, no change:   $(cli sync --source file | field duration_ms) ms"
gen 1
echo "  resync, 1 % changed: $(cli sync --source file | field duration_ms) ms ($(cli sync status | field added) added, $(cli sync status | field removed) removed)"
echo "  server RSS: peak $(awk '/VmHWM/ {print $2 " " $3}' "/proc/$PID/status"), now $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$PID/status")"
