#!/usr/bin/env bash
# Mixed load on a release build, on loopback, for DURATION seconds (default 60), all at
# once against one server with a `file` source of N people (default 100000, one e-mail
# each, bound by the sync):
#   - hashed lookups: wrk, 1 thread, 8 connections, one random address per request
#     (nine in ten bound)
#   - directory search: wrk, 1 thread, 4 connections, 1-word terms, result cache off
#   - binds: one client binding distinct addresses one after the other (admin TCP)
#   - syncs: back-to-back runs of the source, each after 1 % of the people changed name
# Prints per kind: requests, errors, p50 and p99; the syncs completed; and the server's
# RssAnon every 10 s (flat is the goal).
#
#   benches/mixed.sh
#   N=20000 DURATION=20 benches/mixed.sh
#   MXISD_BIN=/path/to/mxisd benches/mixed.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-100000}"
DURATION="${DURATION:-60}"
. benches/lib.sh
bench_setup
standin_homeserver

DIR="$WORK/mixed"; mkdir -p "$DIR"
# users.py N DIR ROUND: the source's file; round r renames the people whose number is r
# modulo 100 (1 %), round 0 is the first list.
cat > "$DIR/users.py" <<'PY'
import os, sys
n, out, round_ = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
firsts = ["Ada", "Bob", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivo", "June"]
with open(f"{out}/users.yaml.new", "w") as f:
    for i in range(n):
        suffix = f" R{round_}" if round_ and i % 100 == round_ % 100 else ""
        f.write(f"- username: user{i}\n  displayName: {firsts[i % 10]} Name{i}{suffix}\n  threepids:\n    - {{medium: email, address: user{i}@example.org}}\n")
os.replace(f"{out}/users.yaml.new", f"{out}/users.yaml")
PY
python3 "$DIR/users.py" "$N" "$DIR" 0

PORT=$(free_port); APORT=$(free_port)
ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
echo "$ADMIN_TOKEN" > "$DIR/admin.token"; chmod 600 "$DIR/admin.token"
cat > "$DIR/mxisd.yaml" <<YAML
matrix:
  domain: localhost
  homeserver:
    url: http://127.0.0.1:$HS_PORT
server:
  port: $PORT
  admin:
    port: $APORT
    tokenFile: admin.token
storage:
  path: state
file:
  enabled: true
  path: users.yaml
  sync:
    interval: 24h
directory:
  searchCache: 0
  exclude:
    homeserver: true
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
cli() { (cd "$DIR" && "$BIN" "$@" --json -c mxisd.yaml); }
(cd "$DIR" && RUST_LOG=warn exec "$BIN" run -c mxisd.yaml 2>>"$DIR/server.log") &
PID=$!; PIDS+=($PID)
wait_port "$PORT"; wait_admin "$DIR/state"
# The first sync and its index, then no job left.
for _ in $(seq 1 6000); do
  done_ms=$(cli sync status 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['sources'][0].get('last_success_ms'))" 2>/dev/null || true)
  [ -n "$done_ms" ] && [ "$done_ms" != "None" ] && break
  sleep 0.2
done
for _ in $(seq 1 3000); do
  curl -s --unix-socket "$DIR/state/admin.sock" http://localhost/_mxisd/admin/v1/progress | grep -q '"jobs":\[\]' && break
  sleep 0.1
done

identity_account "$PORT"
python3 - "$N" "$PEPPER" "$TOKEN" "$DIR" <<'PY'
import base64, hashlib, json, random, sys
n, pepper, token, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
rnd = random.Random(7)
addrs = [f"user{rnd.randrange(n)}@example.org" if i % 10 else f"stranger{i}@example.net" for i in range(20000)]
hashes = [base64.urlsafe_b64encode(hashlib.sha256(f"{a} email {pepper}".encode()).digest()).decode().rstrip("=") for a in addrs]
bodies = [json.dumps({"algorithm": "sha256", "pepper": pepper, "addresses": [h]}) for h in hashes]
head = f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer {token}"\n'
cycle = "local i = 0\nrequest = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n"
with open(f"{out}/lookup.lua", "w") as f:
    f.write(head + "local bodies = {" + ",".join(json.dumps(b) for b in bodies) + "}\n" + cycle)
firsts = ["Ada", "Bob", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivo", "June"]
terms = [rnd.choice([rnd.choice(firsts), f"Name{rnd.randrange(n)}"]) for _ in range(500)]
bodies = [json.dumps({"search_term": t, "limit": 10}) for t in terms]
with open(f"{out}/search.lua", "w") as f:
    f.write(head + "local bodies = {" + ",".join(json.dumps(b) for b in bodies) + "}\n" + cycle)
PY


echo "== mixed load: $N people, ${DURATION} s ($(nproc) cores)"
echo "  RssAnon before: $(awk '/RssAnon/ {print $2 " " $3}' "/proc/$PID/status")"
wrk_line() {
  local name=$1; shift
  local out; out=$(wrk "$@" --latency)
  printf '  %-9s %s requests (%s/s), errors %s, p50 %s, p99 %s\n' "$name:" \
    "$(awk '/requests in/ {print $1}' <<<"$out")" "$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")" \
    "$(awk '/Non-2xx/ {print $5}' <<<"$out" | grep . || echo 0)" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")"
}
wrk_line lookups -t1 -c8 -d"${DURATION}s" -s "$DIR/lookup.lua" "http://127.0.0.1:$PORT/_matrix/identity/v2/lookup" > "$DIR/lookups.out" &
W1=$!
wrk_line search -t1 -c4 -d"${DURATION}s" -s "$DIR/search.lua" "http://127.0.0.1:$PORT/_matrix/client/v3/user_directory/search" > "$DIR/search.out" &
W2=$!
echo "  binds:    $(python3 benches/binds.py "$APORT" "$ADMIN_TOKEN" mixed "$DURATION")" > "$DIR/binds.out" &
W3=$!
(
  end=$((SECONDS + DURATION)); round=1; ok=0; failed=0
  while [ "$SECONDS" -lt "$end" ]; do
    python3 "$DIR/users.py" "$N" "$DIR" "$round"
    if cli sync file >/dev/null 2>&1; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
    round=$((round + 1))
  done
  echo "  syncs:    $ok completed (1 % of the people renamed before each), $failed failed"
) > "$DIR/syncs.out" &
W4=$!
for t in $(seq 10 10 "$DURATION"); do
  sleep 10
  echo "  RssAnon at ${t} s: $(awk '/RssAnon/ {print $2 " " $3}' "/proc/$PID/status")"
done
wait "$W1" "$W2" "$W3" "$W4"
cat "$DIR/lookups.out" "$DIR/search.out" "$DIR/binds.out" "$DIR/syncs.out"
echo "  RssAnon at the end: $(awk '/RssAnon/ {print $2 " " $3}' "/proc/$PID/status")"
sleep 10
echo "  RssAnon 10 s later: $(awk '/RssAnon/ {print $2 " " $3}' "/proc/$PID/status")"
echo "  errors and warnings in the server log (distinct):"
grep -E ' (ERROR|WARN) ' "$DIR/server.log" | sed -E 's/^[^ ]+ +//' | cut -c1-160 | sort | uniq -c | sed 's/^/   /' || true
