#!/usr/bin/env bash
# Load test of a release build on loopback with wrk: GET /_matrix/identity/v2.
# Starts its own server on free ports in a temp directory, runs wrk for a bounded time,
# prints requests/s, latency percentiles and the server's RSS, then stops the server.
#
#   benches/load.sh                 # 10 s, 64 connections, 2 wrk threads
#   DURATION=30s CONNS=128 benches/load.sh
#   LOG=info benches/load.sh        # with the per-request log on (written to stderr)
#
# On a 2-core machine wrk and the server share the cores: compare runs on the same box.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
fi
cargo build --release --locked --quiet
BIN="$CARGO_TARGET_DIR/release/mxisd"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
ADMIN=$(free_port)
WORK=$(mktemp -d)
trap 'kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

(cd "$WORK" && MXISD_SERVER_PORT=$PORT MXISD_SERVER_ADMIN_PORT=$ADMIN RUST_LOG="${LOG:-warn}" exec "$BIN" run) &
PID=$!
for _ in $(seq 1 200); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.05
done

URL="http://127.0.0.1:$PORT/_matrix/identity/v2"
echo "== GET /_matrix/identity/v2  ($DURATION, $CONNS connections, $THREADS wrk threads, $(nproc) cores)"
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$URL" | sed -n '/Latency Distribution/,/Transfer/p'
echo "server RSS: $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$PID/status")"
