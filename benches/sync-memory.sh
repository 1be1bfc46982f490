#!/usr/bin/env bash
# Memory of a first sync, the issue's target 1: a file source of N users (default
# 100000, a display name and one e-mail address each) synced into a fresh store by a
# release build. For each of RUNS runs (default 3) prints the server's peak RSS (VmHWM,
# over the sync and its index update), the sync's time, and RssAnon / RssFile once
# settled (SETTLE seconds after the index update, default 10). The malloc settings are
# those of the packaged systemd unit unless set in the environment.
#
#   benches/sync-memory.sh
#   RUNS=1 N=20000 benches/sync-memory.sh
#   MXISD_BIN=/path/to/mxisd benches/sync-memory.sh
#   CACHE=4MiB benches/sync-memory.sh      (storage.cacheSize; default: the server's)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100000}"
RUNS="${RUNS:-3}"
SETTLE="${SETTLE:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX-2}"
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_-131072}"
command -v python3 >/dev/null || { echo "python3 is needed to generate the data" >&2; exit 1; }
. benches/lib.sh
bench_binary
work_dir

python3 - "$N" > "$WORK/users.yaml" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f"- username: user{i}\n  displayName: User Number {i}\n  threepids:\n    - {{medium: email, address: user{i}@example.org}}")
PY
status() { awk -v k="$2:" '$1 == k {print int($2 / 1024)}' "/proc/$1/status"; }

echo "== first sync, file source, $N users, one e-mail each ($(nproc) cores)"
for run in $(seq 1 "$RUNS"); do
  rm -rf "$WORK/state" "$WORK/server.log"
  PORT=$(free_port)
  cat > "$WORK/mxisd.yaml" <<YAML
matrix:
  domain: example.org
server:
  port: $PORT
storage:
  path: state
${CACHE:+  cacheSize: $CACHE
}file:
  enabled: true
  path: users.yaml
  sync:
    interval: 24h
YAML
  (cd "$WORK" && RUST_LOG=warn,mxisd::service::sync=debug exec "$BIN" run -c mxisd.yaml 2>"$WORK/server.log") &
  PID=$!
  PIDS+=("$PID")
  # The end: the index update after the apply (bounded: 20 min).
  for _ in $(seq 1 12000); do
    grep -q "directory index updated" "$WORK/server.log" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { echo "the server stopped:" >&2; cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "directory index updated" "$WORK/server.log" || { echo "no sync in 20 min" >&2; exit 1; }
  ms=$(grep -o 'ms=[0-9]*' "$WORK/server.log" | head -1 | cut -d= -f2)
  peak=$(status "$PID" VmHWM)
  sleep "$SETTLE"
  echo "  run $run: peak RSS $peak MB, sync ${ms:-?} ms, once settled RssAnon $(status "$PID" RssAnon) MB, RssFile $(status "$PID" RssFile) MB"
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
done
