#!/usr/bin/env bash
# Recursive lookups (federation) of a release build, all on loopback.
#
# Server B (b.test) holds N bindings (default 100000, rK@b.test, loaded with `mxisd
# bindings import`, then restarted); servers A (a.test) recurse to B as their forward
# server (`forward.servers: [b]`, no DNS), with nothing of B's bound locally. Measured:
#   1. single v1 lookups at 1 connection, every request a different address (so A's
#      answer cache never hits): p50/p99 at B directly, a local hit at A, and a
#      recursive hit at A through B's v1 (`lookup.recursive.v1`, no access token) and
#      through B's v2 (`accessToken` set: an OpenID token of a stand-in homeserver for
#      A opens an account at B, hashed lookups). Added latency = A recursive - B direct.
#   2. one v1 bulk_lookup of 1,000 addresses known only at B, on a freshly started A
#      (cold: the API probe and, for v2, the account are part of it) and again with
#      another 1,000 (warm): wall time, mappings returned, and the HTTP requests B
#      received for it (from B's /metrics).
#   3. wrk (THREADS threads, CONNS connections, DURATION) on lookups of addresses bound
#      locally at A: recursion off, then recursion on with the forward server a dead
#      loopback port (target: >= 0.9x); and of addresses bound nowhere, the same two
#      ways (with the dead remote's breaker open after its first failures).
# Prints a table at the end. wrk, the servers and the stand-in homeserver share the
# machine's cores: compare figures within one run.
#
#   benches/recursion.sh
#   N=20000 DURATION=10s benches/recursion.sh
#
# Needs wrk (installed through apt when missing), python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100000}"
DURATION="${DURATION:-5s}"
THREADS="${THREADS:-2}"
CONNS="${CONNS:-16}"
LOG="${LOG:-warn}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
[ "$N" -ge 10000 ] || { echo "N must be at least 10000" >&2; exit 1; }

. benches/lib.sh
need_wrk
for c in python3 curl; do
  command -v "$c" >/dev/null || { echo "$c is needed" >&2; exit 1; }
done
cargo build --release --locked --quiet
BIN="$CARGO_TARGET_DIR/release/mxisd"
T0=$(date +%s)

work_dir

# --- helpers ------------------------------------------------------------------------

# A stand-in homeserver for a.test: the service account's token `svc-token` is
# @lookup:a.test, which gets OpenID token `oidc-1`, which B checks here (userinfo).
HS_PORT=$(free_port)
python3 - "$HS_PORT" >"$WORK/hs.log" 2>&1 <<'PY' &
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith("/_matrix/client/v3/account/whoami"):
            if self.headers.get("Authorization") == "Bearer svc-token":
                return self.reply(200, {"user_id": "@lookup:a.test"})
            return self.reply(401, {"errcode": "M_UNKNOWN_TOKEN", "error": "no"})
        if self.path.startswith("/_matrix/federation/v1/openid/userinfo"):
            if "access_token=oidc-1" in self.path:
                return self.reply(200, {"sub": "@lookup:a.test"})
            return self.reply(401, {"errcode": "M_UNKNOWN_TOKEN", "error": "no"})
        self.reply(404, {"errcode": "M_UNRECOGNIZED", "error": self.path})
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "/openid/request_token" in self.path:
            return self.reply(200, {"access_token": "oidc-1", "token_type": "Bearer",
                                    "matrix_server_name": "a.test", "expires_in": 3600})
        self.reply(404, {"errcode": "M_UNRECOGNIZED", "error": self.path})
    def log_message(self, fmt, *args):
        sys.stderr.write((fmt % args) + "\n")
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
PIDS+=($!)
wait_port "$HS_PORT"

# start NAME YAML-BODY: a server in $WORK/NAME on free ports (public PORT_<NAME>, metrics
# MET_<NAME>); its pid in PID_<NAME>. Bindings through the CLI: cli NAME ARGS...
start() {
  local name=$1 body=$2 dir="$WORK/$1" port metrics
  mkdir -p "$dir"
  port=$(free_port); metrics=$(free_port)
  printf 'server:\n  port: %s\n  metrics:\n    port: %s\nstorage:\n  path: %s/state\n%s' \
    "$port" "$metrics" "$dir" "$body" > "$dir/mxisd.yaml"
  printf -v "PORT_$name" '%s' "$port"; printf -v "MET_$name" '%s' "$metrics"
  launch "$name"
}
launch() {
  local name=$1 dir="$WORK/$1" port="PORT_$1" metrics="MET_$1"
  (cd "$dir" && RUST_LOG="$LOG" exec "$BIN" run -c mxisd.yaml 2>>"$dir/server.log") &
  PIDS+=($!)
  printf -v "PID_$name" '%s' "$!"
  wait_port "${!port}" || { cat "$dir/server.log" >&2; exit 1; }
  wait_port "${!metrics}"
  wait_admin "$dir/state"
}
stop() { local pid="PID_$1"; kill -TERM "${!pid}" 2>/dev/null || true; wait "${!pid}" 2>/dev/null || true; }
cli() { local name=$1; shift; "$BIN" "$@" -c "$WORK/$name/mxisd.yaml"; }
url() { local p="PORT_$1"; echo "http://127.0.0.1:${!p}"; }
scrape() { local m="MET_$1"; curl -fsS "http://127.0.0.1:${!m}/metrics"; }
# requests a server answered on its public listener so far, by route (route<TAB>count)
requests() {
  scrape "$1" | python3 -c '
import re, sys, collections
c = collections.Counter()
for line in sys.stdin:
    m = re.match(r"mxisd_http_requests_total\{listener=\"public\",route=\"([^\"]*)\",status=\"(\w+)\"\} (\d+)", line)
    if m: c[m.group(1) + " " + m.group(2)] += int(m.group(3))
for k, v in sorted(c.items()): print(f"{k}\t{v}")'
}
# diff of two `requests` outputs: "total (route status: n, ...)"
requests_delta() {
  python3 - "$1" "$2" <<'PY'
import sys
def read(p):
    return {k: int(v) for k, v in (l.rstrip("\n").split("\t") for l in open(p) if l.strip())}
a, b = read(sys.argv[1]), read(sys.argv[2])
d = {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0)}
print(sum(d.values()), "(" + ", ".join(f"{k.split('/_matrix/identity/')[-1]}: {v}" for k, v in sorted(d.items())) + ")")
PY
}
metric() { scrape "$1" | awk -v k="$2" '$1==k {print $2; f=1} END {if (!f) print 0}'; }

# lua FILE PREFIX DOMAIN FIRST COUNT: v1 lookups of PREFIX<FIRST+k>@DOMAIN, k counting up
# per request (each thread starting COUNT/4 further on), modulo COUNT.
lua() {
  cat > "$1" <<LUA
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
local k = -1
function request()
  k = k + 1
  local n = $4 + (tid * math.floor($5 / 4) + k) % $5
  return wrk.format(nil, "/_matrix/identity/api/v1/lookup?medium=email&address=$2" .. string.format("%d", n) .. "%40$3")
end
LUA
}
us() { # wrk latency (412.00us, 1.23ms, 2.00s) -> microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) f = 1; else if (v ~ /ms$/) f = 1000; else if (v ~ /s$/) f = 1e6; else f = 60e6; printf "%.0f", n * f }'
}
# lat KEY NAME URL LUA: one connection for DURATION; L_<KEY>=p50us, P_<KEY>=p99us,
# C_<KEY>=requests; prints one line.
lat() {
  local key=$1 name=$2 url=$3 script=$4 out p50 p99 count rps errors
  out=$(wrk -t1 -c1 -d"$DURATION" --latency -s "$script" "$url")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  count=$(awk '/requests in/ {print $1}' <<<"$out"); rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  printf -v "L_$key" '%s' "$(us "$p50")"; printf -v "P_$key" '%s' "$(us "$p99")"; printf -v "C_$key" '%s' "$count"
  printf '  %-40s p50 %9s   p99 %9s   %7s requests%s\n' "$name" "$p50" "$p99" "$count" "${errors:+   NON-2XX: $errors}"
}
check_found() { # URL ADDRESS: the lookup finds a Matrix ID
  local r; r=$(curl -fsS "$1/_matrix/identity/api/v1/lookup?medium=email&address=${2/@/%40}")
  grep -q '"mxid"' <<<"$r" || { echo "lookup of $2 at $1 found nothing: $r" >&2; tail -20 "$WORK"/*/server.log >&2; exit 1; }
}

# Address ranges at B (no range is asked of the same A twice, so A's cache never hits):
# single recursive lookups through v1 use [0, N/2-4000), through v2 [N/2, N-4000); the
# bulk lookups 1000 each of the last 4000 (v1 cold, v1 warm, v2 cold, v2 warm: each
# batch is new to B too).
HALF=$((N / 2 - 4000))

# --- B ------------------------------------------------------------------------------
start b "matrix:
  domain: b.test
accountConfig:
  allowOnlyTrustDomains: false
rateLimit:
  lookupPerToken: {burst: 4000000000, interval: 1ms}
dns:
  overwrite:
    homeserver:
      federation:
        - name: a.test
          value: http://127.0.0.1:$HS_PORT
"
python3 -c "
with open('$WORK/b.tsv', 'w') as f:
    for i in range($N):
        f.write(f'email\tr{i}@b.test\t@r{i}:b.test\n')"
t=$(date +%s.%N)
cli b bindings import "$WORK/b.tsv" >/dev/null
IMPORT_S=$(python3 -c "print(f'{$(date +%s.%N) - $t:.1f}')")
# After a bulk import sled keeps rewriting its file in the background (~2 MB/s, for
# minutes) until the next start: measure a restarted B, as benches/load.sh does.
stop b; launch b
check_found "$(url b)" "r$((N - 1))@b.test"

DEAD_PORT=$(free_port)
A_COMMON="matrix:
  domain: a.test
  homeserver:
    url: http://127.0.0.1:$HS_PORT
  identity:
    servers:
      b: ['$(url b)']
      dead: ['http://127.0.0.1:$DEAD_PORT']
outbound:
  allowedCidr: [127.0.0.1/32]
"
RECURSE="lookup:
  recursive:
    enabled: true
    allowedCidr: [127.0.0.0/8]
    v1: true
    dns: {enabled: false}
"
python3 -c "
with open('$WORK/a.tsv', 'w') as f:
    for i in range(1000):
        f.write(f'email\tl{i}@a.test\t@l{i}:a.test\n')"
# 1000 addresses of B from FIRST as a bulk_lookup body
bulk_body() { python3 -c "
import json; print(json.dumps({'threepids': [['email', f'r{i}@b.test'] for i in range($1, $1 + 1000)]}))" > "$WORK/bulk.json"; }
# bulk KEY A FIRST: one bulk_lookup of 1000 of B's addresses at A; T_<KEY> ms,
# F_<KEY> mappings, R_<KEY> requests at B.
bulk() {
  local key=$1 a=$2 first=$3 secs found reqs
  bulk_body "$first"
  requests b > "$WORK/before"
  secs=$(curl -fsS -o "$WORK/bulk.out" -w '%{time_total}' -H 'Content-Type: application/json' \
    --data-binary @"$WORK/bulk.json" "$(url "$a")/_matrix/identity/api/v1/bulk_lookup")
  requests b > "$WORK/after"
  found=$(python3 -c "import json; print(len(json.load(open('$WORK/bulk.out'))['threepids']))")
  reqs=$(requests_delta "$WORK/before" "$WORK/after")
  printf -v "T_$key" '%s' "$(python3 -c "print(f'{$secs * 1000:.1f}')")"; printf -v "F_$key" '%s' "$found"
  printf -v "R_$key" '%s' "$reqs"
  local tk="T_$key"
  printf '  %-40s %8s ms   %4s of 1000 found   B received %s\n' "$key" "${!tk}" "$found" "$reqs"
}

echo "== recursive lookups, B with $N bindings (import: $IMPORT_S s), $(nproc) cores, $DURATION per wrk run"
echo "-- 2. bulk_lookup of 1000 addresses known only at B, on a freshly started A"
start a1 "$A_COMMON$RECURSE
forward:
  servers: [b]
"
cli a1 bindings import "$WORK/a.tsv" >/dev/null
bulk v1_cold a1 $((N - 4000))
bulk v1_warm a1 $((N - 3000))
start a2 "$A_COMMON$RECURSE    accessToken: svc-token
forward:
  servers: [b]
"
bulk v2_cold a2 $((N - 2000))
bulk v2_warm a2 $((N - 1000))

echo "-- 1. single v1 lookups, 1 connection, a different address each request"
lua "$WORK/b-direct.lua" r b.test 0 "$N"
lua "$WORK/a-local.lua" l a.test 0 1000
lua "$WORK/a-v1.lua" r b.test 0 "$HALF"
lua "$WORK/a-v2.lua" r b.test $((N / 2)) "$HALF"
check_found "$(url a1)" "l1@a.test"
check_found "$(url a1)" "r$((N / 2 - 2))@b.test"
check_found "$(url a2)" "r$((N / 2 - 1))@b.test"
lat bdirect "B direct (v1 lookup, local hit at B)" "$(url b)" "$WORK/b-direct.lua"
lat alocal "A local hit (recursion on)" "$(url a1)" "$WORK/a-local.lua"
hits0=$(metric a1 'mxisd_lookup_entries_total{kind="recursive",result="hit"}')
requests b > "$WORK/before"
lat av1 "A recursive through B, v1" "$(url a1)" "$WORK/a-v1.lua"
requests b > "$WORK/after"
hits1=$(metric a1 'mxisd_lookup_entries_total{kind="recursive",result="hit"}')
echo "     A's recursive hits: $((hits1 - hits0)) for $C_av1 requests; B received $(requests_delta "$WORK/before" "$WORK/after")"
[ "$C_av1" -lt "$HALF" ] || echo "     WARNING: more requests than addresses in the range: some were answered from A's cache"
hits0=$(metric a2 'mxisd_lookup_entries_total{kind="recursive",result="hit"}')
requests b > "$WORK/before"
lat av2 "A recursive through B, v2" "$(url a2)" "$WORK/a-v2.lua"
requests b > "$WORK/after"
hits1=$(metric a2 'mxisd_lookup_entries_total{kind="recursive",result="hit"}')
echo "     A's recursive hits: $((hits1 - hits0)) for $C_av2 requests; B received $(requests_delta "$WORK/before" "$WORK/after")"
[ "$C_av2" -lt "$HALF" ] || echo "     WARNING: more requests than addresses in the range: some were answered from A's cache"
stop a1; stop a2

echo "-- 3. $THREADS threads, $CONNS connections: lookups at A with every remote down"
start off "$A_COMMON"
cli off bindings import "$WORK/a.tsv" >/dev/null
start dead "$A_COMMON$RECURSE
forward:
  servers: [dead]
"
cli dead bindings import "$WORK/a.tsv" >/dev/null
lua "$WORK/local.lua" l a.test 0 1000
lua "$WORK/nowhere.lua" n nowhere.test 0 1000000000
stop b
if (exec 3<>"/dev/tcp/127.0.0.1/$DEAD_PORT") 2>/dev/null; then echo "something listens on the dead port $DEAD_PORT" >&2; exit 1; fi
check_found "$(url off)" "l1@a.test"; check_found "$(url dead)" "l1@a.test"
# Warm both the same way (a short run each), then measure one after the other.
wrk -t1 -c4 -d1s -s "$WORK/local.lua" "$(url off)" >/dev/null
wrk -t1 -c4 -d1s -s "$WORK/local.lua" "$(url dead)" >/dev/null
run_wrk "local hit, recursion off" "$(url off)" "$WORK/local.lua"; R_off=$LAST_RPS
run_wrk "local hit, recursion on, remote dead" "$(url dead)" "$WORK/local.lua"; R_dead=$LAST_RPS
run_wrk "not found, recursion off" "$(url off)" "$WORK/nowhere.lua"; N_off=$LAST_RPS
t=$(date +%s.%N)
for i in 1 2 3; do curl -fsS "$(url dead)/_matrix/identity/api/v1/lookup?medium=email&address=first$i%40nowhere.test" >/dev/null; done
FIRST_MS=$(python3 -c "print(f'{($(date +%s.%N) - $t) * 1000 / 3:.1f}')")
BREAKER=$(cli dead status --json | python3 -c 'import json,sys; print(",".join(r["breaker"] for r in json.load(sys.stdin).get("recursion", [])))')
echo "  first 3 lookups against the dead remote: $FIRST_MS ms each; breaker now: $BREAKER"
run_wrk "not found, recursion on, remote dead" "$(url dead)" "$WORK/nowhere.lua"; N_dead=$LAST_RPS
SKIPPED=$(scrape dead | awk '/mxisd_recursive_remote_total/ && /outcome="(skipped|error)"/ {printf "%s%s", sep, $0; sep="; "}')
echo "  dead remote's outcomes: $SKIPPED"
stop off; stop dead

# --- table --------------------------------------------------------------------------
ms() { awk -v u="$1" 'BEGIN {printf "%.3f", u / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
echo "== summary (N=$N, $(nproc) cores, wrk $DURATION per run, $(( $(date +%s) - T0 )) s in all)"
printf '%-52s %12s %12s\n' "single v1 lookup, 1 connection" "p50 ms" "p99 ms"
printf '%-52s %12s %12s\n' "B direct" "$(ms "$L_bdirect")" "$(ms "$P_bdirect")"
printf '%-52s %12s %12s\n' "A local hit" "$(ms "$L_alocal")" "$(ms "$P_alocal")"
printf '%-52s %12s %12s\n' "A recursive through B (v1)" "$(ms "$L_av1")" "$(ms "$P_av1")"
printf '%-52s %12s %12s\n' "A recursive through B (v2)" "$(ms "$L_av2")" "$(ms "$P_av2")"
printf '%-52s %12s\n' "added (p50): A recursive v1 - B direct" "$(ms $((L_av1 - L_bdirect)))"
printf '%-52s %12s\n' "added (p50): A recursive v2 - B direct" "$(ms $((L_av2 - L_bdirect)))"
printf '%-52s %12s\n' "added (p50): A recursive v1 - A local hit" "$(ms $((L_av1 - L_alocal)))"
printf '%-52s %12s\n' "added (p50): A recursive v2 - A local hit" "$(ms $((L_av2 - L_alocal)))"
echo
printf '%-34s %10s %7s  %s\n' "bulk_lookup, 1000 remote addresses" "wall ms" "found" "requests at B"
for k in v1_cold v1_warm v2_cold v2_warm; do
  tk="T_$k"; fk="F_$k"; rk="R_$k"
  printf '%-34s %10s %7s  %s\n' "$k" "${!tk}" "${!fk}" "${!rk}"
done
echo
printf '%-52s %12s\n' "$THREADS threads, $CONNS connections" "req/s"
printf '%-52s %12s\n' "local hit, recursion off" "$R_off"
printf '%-52s %12s\n' "local hit, recursion on, remote dead" "$R_dead"
printf '%-52s %12s\n' "  ratio (target >= 0.9)" "$(ratio "$R_dead" "$R_off")"
printf '%-52s %12s\n' "not found, recursion off" "$N_off"
printf '%-52s %12s\n' "not found, recursion on, remote dead (breaker open)" "$N_dead"
printf '%-52s %12s\n' "  ratio" "$(ratio "$N_dead" "$N_off")"
