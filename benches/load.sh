#!/usr/bin/env bash
# Load test of a release build on loopback with wrk.
#
# For each size in SIZES (default "100000 1000000") it starts a fresh server on free
# ports in a temp directory, seeds that many bindings with `mxisd bindings import`
# (timed), registers an account through a stand-in homeserver on 127.0.0.1, then runs
# wrk for DURATION on:
#   - a bare warp server answering {} (benches/bare_warp.rs: the HTTP stack's own rate)
#   - GET /_matrix/identity/v2
#   - POST /_matrix/identity/v2/lookup with 1 hash, with 100 hashes, with 1000 hashes,
#     a different random set of addresses in every request (as homeservers send them:
#     nine in ten bound), drawn from a pool of up to 100k hashes
# and prints requests/s, p50/p99 latency, the CPU the server (or bare warp) spent per
# request, and the server's RSS, then stops the server.
# The batch of 1000 on one connection is measured twice: right after the bulk import
# (no restart) and after a restart.
#
#   benches/load.sh
#   SIZES=100000 DURATION=5s benches/load.sh
#   LOG=info benches/load.sh        # with the per-request log on (written to a file)
#
# On a 2-core machine wrk and the server share the cores: compare runs on the same box.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES="${SIZES:-100000 1000000}"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
CACHE="${CACHE:-8MiB}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
# The allocator settings packaging/mxisd.service ships (set them empty to drop them).
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX-2}"
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_-131072}"

. benches/lib.sh
need_wrk
command -v python3 >/dev/null || { echo "python3 is needed to generate the data" >&2; exit 1; }
# MXISD_BIN: measure that binary instead of building one.
bench_binary
# In the release profile, so it reuses the release build of the library (the bench
# profile would build it again).
BARE=$(cargo build --release --locked --bench bare_warp --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "bare_warp" and m.get("executable"):
        print(m["executable"])')
[ -x "$BARE" ] || { echo "cannot build benches/bare_warp.rs" >&2; exit 1; }

work_dir

# A stand-in homeserver: answers OpenID userinfo for any token.
HS_PORT=$(free_port)
python3 - "$HS_PORT" >/dev/null 2>&1 <<'PY' &
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"sub": "@bench:localhost"}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
PIDS+=($!)
wait_port "$HS_PORT"

for N in $SIZES; do
  DIR="$WORK/n$N"; mkdir -p "$DIR"
  cat > "$DIR/mxisd.yaml" <<YAML
matrix:
  domain: localhost
server:
  port: 0
storage:
  path: state
  cacheSize: $CACHE
accountConfig:
  allowOnlyTrustDomains: true
# One token sends every request here: keep the per-token lookup limit in the path, but
# out of reach.
rateLimit:
  lookupPerToken:
    burst: 4000000000
    interval: 1ms
dns:
  overwrite:
    homeserver:
      federation:
        - name: localhost
          value: http://127.0.0.1:$HS_PORT
YAML
  PORT=$(free_port)
  start_server() {
    (cd "$DIR" && MXISD_SERVER_PORT=$PORT RUST_LOG="${LOG:-warn}" \
       exec "$BIN" run -c mxisd.yaml 2>>"$DIR/server.log") &
    PID=$!; PIDS+=($PID)
    wait_port "$PORT"; wait_admin "$DIR/state"
  }
  cli() { (cd "$DIR" && MXISD_SERVER_PORT=$PORT "$BIN" "$@" -c mxisd.yaml); }
  # Lookups read the store until the in-memory lookup table is built (at start): wait
  # for it, and say how long that took.
  wait_table() {
    local t0=$SECONDS
    for _ in $(seq 1 1200); do
      if cli status --json 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin)["store"]; sys.exit(s.get("lookup_table_state") == "building")' 2>/dev/null; then
        echo "  lookup table ready within $((SECONDS - t0)) s of the admin socket"
        return 0
      fi
      sleep 0.1
    done
    echo "  the lookup table was not built in 120 s" >&2
  }
  start_server

  python3 -c "
import sys
with open('$DIR/bindings.tsv', 'w') as f:
    for i in range($N):
        f.write(f'email\tuser{i}@example.org\t@user{i}:localhost\n')
"
  echo "== $N bindings ($(nproc) cores, $CONNS connections, $DURATION per run, cache $CACHE, MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-unset}, MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-unset})"
  echo "  seed: $(cli bindings import "$DIR/bindings.tsv")"
  echo "  RSS right after the import: $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$PID/status") (sled's write path; a restart returns it)"

  identity_account "$PORT"

  # A pool of hashes (nine in ten bound), from which every request draws its own set.
  python3 - "$N" "$PEPPER" > "$DIR/pool.lua" <<'PY'
import base64, hashlib, random, sys
n, pepper = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(7)
size = min(n, 100000)
addrs = [f"user{rnd.randrange(n)}@example.org" if i % 10 != 9 else f"stranger{i}@example.net" for i in range(size)]
print("pool = {")
for a in addrs:
    h = base64.urlsafe_b64encode(hashlib.sha256(f"{a} email {pepper}".encode()).digest()).decode().rstrip("=")
    print(f'"{h}",')
print("}")
PY
  for k in 1 100 1000; do
    cat > "$DIR/lookup$k.lua" <<LUA
dofile("$DIR/pool.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
local threads = 0
setup = function(thread) threads = threads + 1; thread:set("id", threads) end
init = function(args) math.randomseed(os.time() * 1000 + (id or 0)) end
request = function()
  local picked = {}
  for i = 1, $k do picked[i] = pool[math.random(#pool)] end
  local body = '{"algorithm":"sha256","pepper":"$PEPPER","addresses":["' .. table.concat(picked, '","') .. '"]}'
  return wrk.format(nil, nil, nil, body)
end
LUA
  done
  # Right after the bulk import, without a restart: sled's write path still warm.
  run_wrk "1000 hashes, 1 connection, right after the import" "http://127.0.0.1:$PORT/_matrix/identity/v2/lookup" "$DIR/lookup1000.lua" 1
  echo "  RSS then: $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$PID/status"), RssAnon $(awk '/RssAnon/ {print $2 " " $3}' "/proc/$PID/status")"
  # Measure a serving server: restart after the bulk import, then warm the cache the
  # way a running server is warm.
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
  start_server
  wait_table
  wrk -t1 -c8 -d2s -s "$DIR/lookup1000.lua" "http://127.0.0.1:$PORT/_matrix/identity/v2/lookup" >/dev/null
  BARE_PORT=$(free_port)
  BARE_WARP_PORT=$BARE_PORT "$BARE" & BARE_PID=$!; PIDS+=($BARE_PID)
  wait_port "$BARE_PORT"
  CPU_PID=$BARE_PID run_wrk "bare warp, {}" "http://127.0.0.1:$BARE_PORT/"
  kill "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true
  # From here on, each line also says what the server's CPU spent per request.
  CPU_PID=$PID
  run_wrk "GET /v2" "http://127.0.0.1:$PORT/_matrix/identity/v2"
  run_wrk "lookup, 1 hash" "http://127.0.0.1:$PORT/_matrix/identity/v2/lookup" "$DIR/lookup1.lua"
  run_wrk "lookup, 100 hashes" "http://127.0.0.1:$PORT/_matrix/identity/v2/lookup" "$DIR/lookup100.lua"
  run_wrk "lookup, 1000 hashes" "http://127.0.0.1:$PORT/_matrix/identity/v2/lookup" "$DIR/lookup1000.lua"
  # Latency of one request on its own: one connection, no queueing behind others.
  run_wrk "100 hashes, 1 connection" "http://127.0.0.1:$PORT/_matrix/identity/v2/lookup" "$DIR/lookup100.lua" 1
  run_wrk "1000 hashes, 1 connection" "http://127.0.0.1:$PORT/_matrix/identity/v2/lookup" "$DIR/lookup1000.lua" 1
  CPU_PID=
  echo "  server RSS after the runs: $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$PID/status"), RssAnon $(awk '/RssAnon/ {print $2 " " $3}' "/proc/$PID/status")"
  echo "  server RSS: $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$PID/status"), store on disk: $(du -sh "$DIR/state/store" | cut -f1)"
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
done
