#!/usr/bin/env bash
# Cold start and memory at scale, on a release build, on loopback.
#
# For each size in SIZES (default 1000000) it fills a fresh server with that many
# directory entries (a `file` source of generated people: a display name and an e-mail
# each, synced) and as many bindings (`mxisd bindings import`, other addresses), waits
# for the sync and the index, then:
#   - serving: 10 s of single lookups and 1-word searches (wrk), then RssAnon and RssFile
#     (the index's and the store's files mapped in memory) and the size on disk;
#   - cold start, index intact (3 times): the server stopped (SIGTERM) and started
#     again; time from exec to the first answered lookup, and to the first search found
#     in the index; after the third, RssAnon and RssFile 20 s after the sync every
#     start runs has ended (a no-change resync: serving after a restart);
#   - cold start, index gone: the index directory removed and the server started; time
#     to the first answered lookup, what a search answers while the index is rebuilt
#     (the stand-in homeserver's user alone, when it is asked), the log line saying so,
#     and the rebuild's time.
#
#   benches/coldstart.sh
#   SIZES=100000 benches/coldstart.sh
#   CACHE=32MiB benches/coldstart.sh                   (storage.cacheSize; default: the server's)
#   MXISD_BIN=/path/to/mxisd benches/coldstart.sh     (that binary, not a fresh build)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES="${SIZES:-1000000}"
. benches/lib.sh
bench_setup

standin_homeserver

for N in $SIZES; do
  DIR="$WORK/n$N"; mkdir -p "$DIR"
  PORT=$(free_port)
  python3 - "$N" "$DIR" <<'PY'
import random, sys
n, out = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(7)
on = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "th"]
vo = ["a", "e", "i", "o", "u", "ai", "ou"]
co = ["", "n", "r", "l", "s", "nd", "rt"]
syl = lambda: rnd.choice(on) + rnd.choice(vo) + rnd.choice(co)
firsts = [(syl() + syl()).capitalize() for _ in range(3000)]
lasts = [(syl() + syl() + syl()).capitalize() for _ in range(60000)]
with open(f"{out}/users.yaml", "w") as f:
    for i in range(n):
        f.write(f"- username: person{i}\n  displayName: {rnd.choice(firsts)} {rnd.choice(lasts)}\n"
                f"  threepids:\n    - {{medium: email, address: person{i}@example.org}}\n")
with open(f"{out}/bindings.tsv", "w") as f:
    for i in range(n):
        f.write(f"email\tbound{i}@example.net\t@bound{i}:localhost\n")
PY
  cat > "$DIR/mxisd.yaml" <<YAML
matrix:
  domain: localhost
  homeserver:
    url: http://127.0.0.1:$HS_PORT
server:
  port: $PORT
storage:
  path: state
$([ -n "${CACHE:-}" ] && echo "  cacheSize: $CACHE")
file:
  enabled: true
  path: users.yaml
  sync:
    interval: 24h
directory:
  searchCache: 0
YAML
  cli() { (cd "$DIR" && "$BIN" "$@" -c mxisd.yaml); }
  start() { (cd "$DIR" && RUST_LOG=info exec "$BIN" run -c mxisd.yaml 2>>"$DIR/server.log") & PID=$!; PIDS+=($PID); }
  stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; }
  jobs_done() {
    for _ in $(seq 1 20000); do
      curl -s --unix-socket "$DIR/state/admin.sock" http://localhost/_mxisd/admin/v1/progress \
        | grep -q '"jobs":\[\]' && return 0
      sleep 0.1
    done
  }

  echo "== $N directory entries and $N bindings ($(nproc) cores, storage.cacheSize ${CACHE:-default})"
  T0=$(date +%s.%N)
  start; wait_port "$PORT"; wait_admin "$DIR/state"
  for _ in $(seq 1 20000); do
    ms=$(cli sync status --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['sources'][0].get('last_success_ms'))" 2>/dev/null || true)
    [ -n "$ms" ] && [ "$ms" != "None" ] && break
    sleep 0.2
  done
  jobs_done
  echo "  first sync + index: $(python3 -c "import time; print(f'{time.time() - $T0:.0f} s')")"
  echo "  import: $(cli bindings import "$DIR/bindings.tsv")"
  stop
  # Serving, after a restart (sled's write path left behind): lookups and searches.
  start; wait_port "$PORT"; wait_admin "$DIR/state"; jobs_done
  cat > "$DIR/lookup.lua" <<LUA
local i = 0
request = function()
  i = (i * 7919 + 13) % $N
  return wrk.format("GET", "/_matrix/identity/api/v1/lookup?medium=email&address=bound" .. i .. "%40example.net")
end
LUA
  python3 - "$DIR" <<'PY'
import json, sys
names = []
for line in open(f"{sys.argv[1]}/users.yaml"):
    if line.startswith("  displayName:"):
        names.append(line.split(":", 1)[1].split()[0])
        if len(names) == 500: break
bodies = [json.dumps({"search_term": t, "limit": 10}) for t in names]
with open(f"{sys.argv[1]}/search.lua", "w") as f:
    f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer bench-token"\n')
    f.write("local bodies = {" + ",".join(json.dumps(b) for b in bodies) + "}\n")
    f.write("local i = 0\nrequest = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n")
PY
  DURATION=10s THREADS=2 CONNS=16
  run_wrk "lookups (v1, a different one each)" "http://127.0.0.1:$PORT" "$DIR/lookup.lua"
  run_wrk "searches, 1 word (+ the stand-in)" "http://127.0.0.1:$PORT/_matrix/client/v3/user_directory/search" "$DIR/search.lua"
  mem() { awk '/^(VmHWM|RssAnon|RssFile):/ {printf "%s %d MB  ", $1, $2/1024}' "/proc/$PID/status"; }
  echo "  serving: $(mem)"
  echo "  on disk: store $(du -sh "$DIR/state/store" | cut -f1), index $(du -sh "$DIR/state/index" | cut -f1)"
  stop

  # exec → first answer, timed by a poller that starts the server itself.
  cold() { # label, whether to look at the search while the index rebuilds, and seconds
    # to wait after the first search before reading the memory (0: not read)
    python3 - "$BIN" "$DIR" "$PORT" "$1" "$2" "${3:-0}" <<'PY'
import http.client, json, os, subprocess, sys, time
binary, d, port, label, rebuilding = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
settle = float(sys.argv[6])
log = open(f"{d}/server.log", "ab")
syncs_before = open(f"{d}/server.log", "rb").read().count(b"sync done")
env = dict(os.environ, RUST_LOG="info")
t0 = time.monotonic()
p = subprocess.Popen([binary, "run", "-c", "mxisd.yaml"], cwd=d, stderr=log, env=env)
def ask(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        headers = {"Authorization": "Bearer bench-token", "Content-Type": "application/json"}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    except OSError:
        return None, b""
    finally:
        c.close()
first_lookup = first_search = during = None
search = json.dumps({"search_term": "person1", "limit": 10})
deadline = t0 + 3600
while time.monotonic() < deadline and p.poll() is None:
    now = time.monotonic() - t0
    if first_lookup is None:
        s, b = ask("GET", "/_matrix/identity/api/v1/lookup?medium=email&address=bound1%40example.net")
        if s == 200 and b"@bound1:localhost" in b:
            first_lookup = now
    if first_lookup is not None:
        s, b = ask("POST", "/_matrix/client/v3/user_directory/search", search)
        if s == 200:
            found = [r["user_id"] for r in json.loads(b)["results"]]
            if "@person1:localhost" in found:
                first_search = now
                break
            if during is None:
                during = (now, found)
    time.sleep(0.005)
out = f"  {label}: first lookup {first_lookup:.3f} s" if first_lookup is not None else f"  {label}: no lookup answered"
if rebuilding and during:
    out += f"; a search at {during[0]:.2f} s answered {during[1]}"
out += f"; first search found in the index {first_search:.2f} s" if first_search is not None else "; the index never answered"
if settle > 0 and p.poll() is None:
    # What serving needs after the sync every start runs (a no-change resync here):
    # its end, then `settle` seconds (the lookup table is built long before).
    ended = time.monotonic() + 600
    while time.monotonic() < ended and open(f"{d}/server.log", "rb").read().count(b"sync done") <= syncs_before:
        time.sleep(0.2)
    time.sleep(settle)
    status = dict(l.split(":", 1) for l in open(f"/proc/{p.pid}/status") if ":" in l)
    mb = lambda k: int(status[k].split()[0]) // 1024
    out += f"; {settle:.0f} s after the start's sync RssAnon {mb('RssAnon')} MB, RssFile {mb('RssFile')} MB"
print(out)
p.terminate(); p.wait()
PY
  }
  for k in 1 2; do cold "cold start, index intact ($k)" 0; done
  cold "cold start, index intact (3)" 0 20
  rm -rf "$DIR/state/index"
  cold "cold start, index removed" 1
  grep -E 'directory index' "$DIR/server.log" | tail -2 | cut -c1-300 | sed 's/^/    log: /'
  echo "  warnings and errors logged over the whole run: $(grep -cE ' (WARN|ERROR) ' "$DIR/server.log" || true)"
  grep -E ' (WARN|ERROR) ' "$DIR/server.log" | cut -d' ' -f2- | cut -c1-200 | sort | uniq -c | head -8 | sed 's/^/  /'
done
