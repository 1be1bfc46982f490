#!/usr/bin/env bash
# Load test of directory search (POST /_matrix/client/v3/user_directory/search) on a
# release build, on loopback, with wrk.
#
# For each size in SIZES (default "100000 1000000") it starts a fresh server with a
# `file` source of that many generated people (first, sometimes middle, and last names
# from syllable lists, so names repeat as real ones do; one e-mail each), waits for the
# sync and the index, times a reindex, and prints the index size on disk. A stand-in
# homeserver on 127.0.0.1 answers whoami (the server caches it) and the homeserver half
# of a search. Then wrk runs for DURATION on:
#   - GET /_matrix/identity/v2 (the reference rate)
#   - search with 1-, 2- and 3-word terms, from the index alone
#     (directory.exclude.homeserver: true), cycling through 500 terms of each kind:
#     with the result cache (directory.searchCache, default 10000: after the first
#     round every term is a hit) and without it (searchCache: 0, every request a real
#     search)
#   - 2-word search merged with the stand-in homeserver's results (100k only; the
#     stand-in is a one-thread Python server, so this line measures it too)
# and prints requests/s, p50/p99 and the server's RSS.
#
#   benches/search.sh
#   SIZES=100000 DURATION=5s benches/search.sh
#   MXISD_BIN=/path/to/mxisd benches/search.sh     (that binary, not a fresh build)
#
# On a 2-core machine wrk and the server share the cores: compare runs on the same box.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES="${SIZES:-100000 1000000}"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-32}"
THREADS="${THREADS:-2}"
. benches/lib.sh
bench_setup

standin_homeserver

for N in $SIZES; do
  DIR="$WORK/n$N"; mkdir -p "$DIR"
  # People and the search terms (1, 2 and 3 words) drawn from the same names.
  python3 - "$N" "$DIR" <<'PY'
import json, random, sys
n, out = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(7)
on = ["b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "ch", "sh", "th", ""]
vo = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y"]
co = ["", "n", "r", "l", "s", "th", "nd", "rt", "m", "x"]
def syl():
    return rnd.choice(on) + rnd.choice(vo) + rnd.choice(co)
firsts = sorted({(syl() + syl()).capitalize() for _ in range(6000)})
lasts = sorted({(syl() + syl() + syl()).capitalize() for _ in range(80000)})
def pick(names):
    # Common names more often: a skewed index.
    return names[int(len(names) * rnd.random() ** 2.5)]
people = []
with open(f"{out}/users.yaml", "w") as f:
    for i in range(n):
        first, last = pick(firsts), pick(lasts)
        middle = pick(firsts) if i % 3 == 0 else None
        name = " ".join(x for x in (first, middle, last) if x)
        local = f"{first}.{last}{i}".lower()
        people.append((first, middle, last))
        f.write(f"- username: {local}\n  displayName: {name}\n  threepids:\n    - {{medium: email, address: {first.lower()}.{last.lower()}.{i}@example.org}}\n")
def terms(kind):
    out = []
    while len(out) < 500:
        first, middle, last = people[rnd.randrange(n)]
        if kind == 1:
            out.append(rnd.choice([first, last, last[:4]]))
        elif kind == 2:
            out.append(f"{first} {last[:rnd.randrange(3, len(last) + 1)]}")
        elif middle:
            out.append(f"{first} {middle} {last[:4]}")
    return out
for kind in (1, 2, 3):
    with open(f"{out}/search{kind}.lua", "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        f.write('wrk.headers["Authorization"] = "Bearer bench-token"\n')
        bodies = [json.dumps({"search_term": t, "limit": 10}) for t in terms(kind)]
        f.write("local bodies = {" + ",".join(json.dumps(b) for b in bodies) + "}\n")
        f.write("local i = 0\nrequest = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n")
PY
  for mode in cached uncached merged; do
    [ "$mode" = merged ] && [ "$N" -gt 100000 ] && continue
    merged=false; [ "$mode" = merged ] && merged=true
    cache=10000; [ "$mode" = uncached ] && cache=0
    PORT=$(free_port)
    cat > "$DIR/mxisd.yaml" <<YAML
matrix:
  domain: localhost
  homeserver:
    url: http://127.0.0.1:$HS_PORT
server:
  port: $PORT
storage:
  path: state-$mode
file:
  enabled: true
  path: users.yaml
  sync:
    interval: 24h
directory:
  searchCache: $cache
  exclude:
    homeserver: $([ "$merged" = true ] && echo false || echo true)
YAML
    cli() { (cd "$DIR" && "$BIN" "$@" --json -c mxisd.yaml); }
    (cd "$DIR" && RUST_LOG=warn exec "$BIN" run -c mxisd.yaml 2>>"$DIR/server.log") &
    PID=$!; PIDS+=($PID)
    wait_port "$PORT"; wait_admin "$DIR/state-$mode"
    field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d['sources'][0].get('$1'))"; }
    T0=$(date +%s.%N)
    for _ in $(seq 1 6000); do
      done_ms=$(cli sync status 2>/dev/null | field last_success_ms 2>/dev/null || true)
      [ -n "$done_ms" ] && [ "$done_ms" != "None" ] && break
      sleep 0.2
    done
    # The run ends with the index (built, then merged into one segment): wait until
    # no job is left, so the runs below measure a settled server.
    for _ in $(seq 1 3000); do
      curl -s --unix-socket "$DIR/state-$mode/admin.sock" http://localhost/_mxisd/admin/v1/progress \
        | grep -q '"jobs":\[\]' && break
      sleep 0.1
    done
    # Then until it answers.
    for _ in $(seq 1 3000); do
      [ "$(cli search "$(head -c 200 "$DIR/users.yaml" | awk '/displayName/ {print $2; exit}')" 2>/dev/null | grep -c '@')" -gt 0 ] && break
      sleep 0.1
    done
    if [ "$mode" = cached ]; then
      echo "== $N people ($(nproc) cores, $CONNS connections, $DURATION per run)"
      echo "  sync + index: $(python3 -c "import time; print(f'{time.time() - $T0:.1f} s')")"
      R0=$(date +%s.%N); cli reindex >/dev/null; R1=$(date +%s.%N)
      echo "  reindex: $(python3 -c "print(f'{$R1 - $R0:.2f} s')"), index on disk: $(du -sh "$DIR/state-$mode/index" | cut -f1)"
      run_wrk "GET /v2" "http://127.0.0.1:$PORT/_matrix/identity/v2"
      BASE=$LAST_RPS
    fi
    if [ "$mode" != merged ]; then
      for kind in 1 2 3; do
        run_wrk "search, $kind-word terms, $mode" "http://127.0.0.1:$PORT/_matrix/client/v3/user_directory/search" "$DIR/search$kind.lua"
        echo "    = $(python3 -c "print(f'{$LAST_RPS / $BASE:.2f}')")x the GET /v2 rate"
      done
    else
      run_wrk "search, 2 words + homeserver" "http://127.0.0.1:$PORT/_matrix/client/v3/user_directory/search" "$DIR/search2.lua"
    fi
    echo "  server RSS: $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$PID/status")"
    kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
  done
done
