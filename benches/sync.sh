#!/usr/bin/env bash
# Sync benchmark of a release build: a file source of N users (default 100000, two 3PIDs
# each). Prints the initial sync, a resync with no change, a resync with 1 % of the
# users changed, the server's peak RSS and its RssAnon once settled; then the same 1 %
# resync with a busy loop on every core (started here), and the rate of v1 lookups (a
# random user each, wrk, 8 connections) idle, during back-to-back unchanged resyncs and
# during a resync that changes every user.
#
#   benches/sync.sh
#   N=20000 benches/sync.sh
#   MXISD_BIN=/path/to/mxisd BUSY=0 benches/sync.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX-2}"
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_-131072}"
command -v python3 >/dev/null || { echo "python3 is needed to generate the data" >&2; exit 1; }
# (lib.sh first: it defines a cleanup of its own, which this script's replaces.)
. benches/lib.sh
# MXISD_BIN: measure that binary instead of building one.
bench_binary
WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

gen() { # seed [phone-prefix]: with a seed every hundredth user has a new e-mail address
  python3 - "$N" "$1" "${2:-1202}" > "$WORK/users.yaml.tmp" <<'PY'
import sys
n, seed, phone = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for i in range(n):
    tag = f"-{seed}" if seed and i % 100 == 0 else ""
    print(f"- username: user{i}\n  threepids:\n    - {{medium: email, address: user{i}{tag}@example.org}}\n    - {{medium: msisdn, address: '+{phone}{i:07d}'}}")
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
  done_ms=$(cli sync status 2>/dev/null | field last_success_ms 2>/dev/null || true)
  [ -n "$done_ms" ] && [ "$done_ms" != "None" ] && break
  sleep 0.1
done
echo "== file source, $N users, $((2 * N)) bindings ($(nproc) cores)"
echo "  initial sync:        $(cli sync status | field duration_ms) ms"
echo "  resync, no change:   $(cli sync --source file | field duration_ms) ms"
gen 1
IDLE_MS=$(cli sync --source file | field duration_ms)
echo "  resync, 1 % changed: $IDLE_MS ms ($(cli sync status | field added) added, $(cli sync status | field removed) removed)"
echo "  server RSS: peak $(awk '/VmHWM/ {print $2 " " $3}' "/proc/$PID/status"), now $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$PID/status")"
sleep 5
echo "  RssAnon once settled: $(awk '/RssAnon/ {print $2 " " $3}' "/proc/$PID/status"), RssFile $(awk '/RssFile/ {print $2 " " $3}' "/proc/$PID/status")"

# The same 1 % resync with every core kept busy by another process (BUSY=0 skips it:
# a build whose sync thread runs in SCHED_IDLE took over 600 s here).
if [ "${BUSY:-1}" = 1 ]; then
LOOPS=()
for _ in $(seq 1 "$(nproc)"); do (while :; do :; done) & LOOPS+=($!); done
gen 2
BUSY_MS=$(cli sync --source file | field duration_ms)
kill "${LOOPS[@]}" 2>/dev/null; wait "${LOOPS[@]}" 2>/dev/null || true
echo "  resync, 1 % changed, every core busy: $BUSY_MS ms ($(python3 -c "print(f'{$BUSY_MS / max($IDLE_MS, 1):.2f}')")× idle)"
fi

# Lookups during resyncs (v1, unauthenticated: a random synced e-mail each request).
need_wrk
cat > "$WORK/lookup.lua" <<LUA
math.randomseed(42)
request = function()
  return wrk.format("GET", "/_matrix/identity/api/v1/lookup?medium=email&address=user" .. math.random(1, $N - 1) .. "@example.org")
end
LUA
rate() { wrk -t1 -c8 -d"${1:-5s}" -s "$WORK/lookup.lua" "http://127.0.0.1:$PORT" | awk '/Requests\/sec/ {print int($2)}'; }
IDLE=$(rate)
echo "  lookups idle: $IDLE req/s"
( end=$((SECONDS + 6)); while [ $SECONDS -lt $end ]; do cli sync --source file >/dev/null; done ) &
LOOP=$!
DURING=$(rate)
wait "$LOOP" || true
echo "  lookups during unchanged resyncs: $DURING req/s ($(python3 -c "print(f'{$DURING / $IDLE:.2f}')")×)"
# Every user changes (a new phone number each; the e-mail addresses looked up stay).
gen 2 1303
T0=$(date +%s%N)
cli sync --source file > "$WORK/all.json" &
SYNC=$!
DURING=$(rate 5s)
wait "$SYNC"
echo "  lookups during a resync changing every user: $DURING req/s ($(python3 -c "print(f'{$DURING / $IDLE:.2f}')")×); that resync: $(field duration_ms < "$WORK/all.json") ms, $(field added < "$WORK/all.json") added, $(field removed < "$WORK/all.json") removed ($(( ($(date +%s%N) - T0) / 1000000 )) ms with its index update)"
sleep 5
echo "  server RSS at the end (settled): peak $(awk '/VmHWM/ {print $2 " " $3}' "/proc/$PID/status"), RssAnon $(awk '/RssAnon/ {print $2 " " $3}' "/proc/$PID/status")"
