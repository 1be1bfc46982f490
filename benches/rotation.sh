#!/usr/bin/env bash
# Binds while the lookup pepper rotates: a release build on loopback, seeded with N
# bindings (SIZES, default 1000000) by `mxisd bindings import`; then one client binds
# distinct addresses one after the other through the admin TCP listener, first for
# DURATION with nothing else running, then for as long as `mxisd hashing rotate` runs.
# Prints the rotation's time and the binds' p50, p99 and max in both phases.
#
#   benches/rotation.sh
#   SIZES=300000 benches/rotation.sh
#   MXISD_BIN=/path/to/mxisd benches/rotation.sh   # measure that binary
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES="${SIZES:-1000000}"
DURATION="${DURATION:-5}"
. benches/lib.sh
bench_setup


for N in $SIZES; do
  DIR="$WORK/n$N"; mkdir -p "$DIR"
  APORT=$(free_port)
  TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  echo "$TOKEN" > "$DIR/admin.token"; chmod 600 "$DIR/admin.token"
  cat > "$DIR/mxisd.yaml" <<YAML
matrix:
  domain: localhost
server:
  port: 0
  admin:
    port: $APORT
    tokenFile: admin.token
storage:
  path: state
YAML
  PORT=$(free_port)
  (cd "$DIR" && MXISD_SERVER_PORT=$PORT RUST_LOG=warn exec "$BIN" run -c mxisd.yaml 2>>"$DIR/server.log") &
  PIDS+=($!)
  wait_port "$PORT"; wait_port "$APORT"; wait_admin "$DIR/state"
  cli() { (cd "$DIR" && MXISD_SERVER_PORT=$PORT "$BIN" "$@" -c mxisd.yaml); }
  python3 -c "
with open('$DIR/bindings.tsv', 'w') as f:
    for i in range($N):
        f.write(f'email\tuser{i}@example.org\t@user{i}:localhost\n')
"
  echo "== $N bindings ($(nproc) cores)"
  echo "  seed: $(cli bindings import "$DIR/bindings.tsv")"
  echo "  binds, nothing else running:  $(python3 benches/binds.py "$APORT" "$TOKEN" idle "$DURATION")"
  touch "$DIR/rotating"
  t0=$(date +%s.%N)
  ( cli hashing rotate >/dev/null; rm -f "$DIR/rotating" ) &
  ROT=$!
  result=$(python3 benches/binds.py "$APORT" "$TOKEN" during "$DIR/rotating")
  wait "$ROT"
  echo "  rotation: $(python3 -c "import time; print(f'{time.time() - $t0:.1f} s')")"
  echo "  binds during the rotation:    $result"
  kill -TERM "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
done
