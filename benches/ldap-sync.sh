#!/usr/bin/env bash
# LDAP sync benchmark of a release build against a real OpenLDAP on loopback.
#
# Generates N users (default 100000: inetOrgPerson with mail, telephoneNumber,
# displayName and title), loads them with slapadd, and measures:
#   - the initial sync, a resync with no change, a resync with 1 % of the users changed
#     (mail rewritten with ldapmodify), a resync with every user changed;
#   - the server's peak RSS;
#   - hashed lookups (wrk, 1 hash per request) while a no-change and an all-changed
#     resync run (wrk runs for as long as the same resync took before), each against an
#     idle run of the same length just before it;
#   - the CPU time slapd, the sync thread and the rest of mxisd used in each resync.
#
#   benches/ldap-sync.sh
#   N=20000 benches/ldap-sync.sh
#   MXISD_BIN=/path/to/mxisd benches/ldap-sync.sh
#
# Needs slapd, ldap-utils, wrk and python3 (installed through apt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100000}"
CONNS="${CONNS:-32}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX-2}"
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_-131072}"

missing=()
for entry in slapd:slapd slapadd:slapd ldapmodify:ldap-utils wrk:wrk python3:python3 curl:curl; do
  command -v "${entry%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${entry%%:*}" ] || missing+=("${entry#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
PATH="$PATH:/usr/sbin"

# (lib.sh first: it defines a cleanup of its own, which this script's replaces.)
. benches/lib.sh
# MXISD_BIN: measure that binary instead of building one.
bench_binary
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ -f "$WORK/slapd.pid" ] && kill -TERM "$(cat "$WORK/slapd.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the directory: two versions of the same N people (B: every mail changed) ---
gen_ldif() { # variant
  python3 - "$N" "$1" <<'PY'
import sys
n, variant = int(sys.argv[1]), sys.argv[2]
out = sys.stdout
out.write("dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n")
out.write("dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n\n")
out.write("dn: cn=mxisd,dc=example,dc=org\nobjectClass: person\ncn: mxisd\nsn: sync\nuserPassword: syncsecret\n\n")
tag = "" if variant == "a" else ".b"
for i in range(n):
    out.write(f"dn: uid=user{i},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: user{i}\n"
              f"cn: User {i}\nsn: {i}\ndisplayName: User Number {i}\ntitle: Engineer\n"
              f"mail: user{i}{tag}@example.org\ntelephoneNumber: +1 202 {i // 10000:03d} {i % 10000:04d}\n\n")
PY
}
LDAP_PORT=$(free_port)
make_db() { # variant
  gen_ldif "$1" > "$WORK/users-$1.ldif"
  slapd_db "$WORK/ldap-$1" "$WORK/users-$1.ldif" "$WORK"
}
start_slapd() { # variant
  slapd -F "$WORK/ldap-$1/config" -h "ldap://127.0.0.1:$LDAP_PORT/"
  wait_port "$LDAP_PORT"
}
stop_slapd() {
  local pid; pid=$(cat "$WORK/slapd.pid")
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}
t0=$(date +%s.%N)
make_db a
make_db b
echo "== LDAP source, $N users, $((2 * N)) bindings ($(nproc) cores; slapadd of both directories took $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s)"
start_slapd a

# --- a stand-in homeserver for the lookup token ---
HS_PORT=$(free_port)
python3 - "$HS_PORT" >/dev/null 2>&1 <<'PY' &
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"sub": "@bench:example.org"}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
PIDS+=($!)
wait_port "$HS_PORT"

PORT=$(free_port)
cat > "$WORK/mxisd.yaml" <<YAML
matrix:
  domain: example.org
server:
  port: $PORT
storage:
  path: state
rateLimit:
  lookupPerToken:
    burst: 4000000000
    interval: 1ms
dns:
  overwrite:
    homeserver:
      federation:
        - name: example.org
          value: http://127.0.0.1:$HS_PORT
ldap:
  enabled: true
  filter: (objectClass=inetOrgPerson)
  connection:
    host: 127.0.0.1
    port: $LDAP_PORT
    bindDn: cn=mxisd,dc=example,dc=org
    bindPassword: syncsecret
    baseDNs: ['ou=people,dc=example,dc=org']
    pageSize: 1000
  attribute:
    uid: {type: uid, value: uid}
    name: displayName
    threepid:
      email: [mail]
      msisdn: [telephoneNumber]
  directory:
    attribute:
      other: [title]
  sync:
    interval: 24h
YAML
cli() { (cd "$WORK" && "$BIN" "$@" --json -c mxisd.yaml); }
(cd "$WORK" && RUST_LOG=warn exec "$BIN" run -c mxisd.yaml 2>>"$WORK/server.log") &
PID=$!; PIDS+=($PID)
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d['sources'][0].get('$1'))"; }
for _ in $(seq 1 1200); do
  done_ms=$(cli sync status 2>/dev/null | field last_success_ms 2>/dev/null || true)
  [ -n "$done_ms" ] && [ "$done_ms" != "None" ] && break
  err=$(cli sync status 2>/dev/null | field last_error || true)
  [ -n "$err" ] && [ "$err" != "None" ] && { echo "sync failed: $err" >&2; exit 1; }
  sleep 0.1
done
echo "  initial sync:          $(cli sync status | field duration_ms) ms ($(cli sync status | field users) users, $(cli sync status | field bindings) bindings)"
t=$(date +%s.%N)
n=$(cli reindex | python3 -c "import json,sys; print(json.load(sys.stdin)['entries'])")
echo "  reindex from the store: $(python3 -c "print(round($(date +%s.%N) - $t, 2))") s ($n entries; also done after every run that changed something)"
echo "  server RSS after it:   peak $(awk '/VmHWM/ {print $2 " " $3}' "/proc/$PID/status"), now $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$PID/status")"

# --- lookups: one hash of a bound address per request ---
TOKEN=$(curl -s -X POST "http://127.0.0.1:$PORT/_matrix/identity/v2/account/register" \
  -H 'Content-Type: application/json' \
  -d '{"access_token":"x","token_type":"Bearer","matrix_server_name":"example.org","expires_in":3600}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
PEPPER=$(curl -s "http://127.0.0.1:$PORT/_matrix/identity/v2/hash_details" -H "Authorization: Bearer $TOKEN" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["lookup_pepper"])')
python3 - "$PEPPER" "$TOKEN" > "$WORK/lookup.lua" <<'PY'
import base64, hashlib, json, sys
pepper, token = sys.argv[1], sys.argv[2]
# user7's telephone number: the same in both versions of the directory.
h = base64.urlsafe_b64encode(hashlib.sha256(f"12020000007 msisdn {pepper}".encode()).digest()).decode().rstrip("=")
print('wrk.method = "POST"')
print('wrk.headers["Content-Type"] = "application/json"')
print(f'wrk.headers["Authorization"] = "Bearer {token}"')
print(f'wrk.body = {json.dumps(json.dumps({"algorithm": "sha256", "pepper": pepper, "addresses": [h]}))}')
PY
found=$(curl -s -X POST "http://127.0.0.1:$PORT/_matrix/identity/v2/lookup" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d "$(sed -n 's/^wrk.body = //p' "$WORK/lookup.lua" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read()))')")
case "$found" in *@user7:example.org*) ;; *) echo "the benchmark's lookup does not find user7: $found" >&2; exit 1;; esac
URL="http://127.0.0.1:$PORT/_matrix/identity/v2/lookup"
wrk_rps() { # seconds
  wrk -t1 -c"$CONNS" -d"$1"s -s "$WORK/lookup.lua" "$URL" | awk '/Requests\/sec/ {print $2}'
}
wrk -t1 -c"$CONNS" -d2s -s "$WORK/lookup.lua" "$URL" >/dev/null
echo "  lookups, idle:         $(wrk_rps 10) req/s"

# --- resyncs ---
# CPU seconds used so far: "slapd sync-thread rest-of-mxisd".
ticks() { awk '{print $14 + $15}' "$1" 2>/dev/null || echo 0; }
cpu_now() {
  local hz slapd sync=0 all t
  hz=$(getconf CLK_TCK)
  slapd=$(ticks "/proc/$(cat "$WORK/slapd.pid")/stat")
  all=$(ticks "/proc/$PID/stat")
  for t in /proc/"$PID"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = "mxisd-sync" ] && sync=$((sync + $(ticks "$t/stat")))
  done
  echo "$slapd $sync $all $hz"
}
cpu_used() { # before after
  python3 -c "
b, a = '$1'.split(), '$2'.split()
hz = int(a[3])
d = [(int(a[i]) - int(b[i])) / hz for i in range(3)]
print(f'CPU: slapd {d[0]:.1f} s, sync thread {d[1]:.1f} s, rest of mxisd {d[2] - d[1]:.1f} s')"
}
ms_to_s() { python3 -c "import math; print(max(2, math.floor($1 / 1000)))"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
# Lookups while a resync runs, for about as long as one took before (ms): the machine's
# speed drifts, so the figure is paired with an idle run of the same length just before.
during_resync() { # label previous-duration-ms
  local secs idle c0 rps sync
  secs=$(ms_to_s "$2")
  idle=$(wrk_rps "$secs")
  c0=$(cpu_now)
  cli sync --source ldap >"$WORK/sync.out" &
  sync=$!
  rps=$(wrk_rps "$secs")
  wait $sync
  echo "  $1 $rps req/s against $idle idle just before ($(ratio "$rps" "$idle")×; that resync: $(field duration_ms <"$WORK/sync.out") ms; $(cpu_used "$c0" "$(cpu_now)"))"
}
d=$(cli sync --source ldap | field duration_ms)
echo "  resync, no change:     $d ms"
c0=$(cpu_now)
cli sync --source ldap >/dev/null
echo "  no-change resync idle: $(cpu_used "$c0" "$(cpu_now)")"
during_resync "lookups during it:    " "$d"

python3 - "$N" > "$WORK/change.ldif" <<'PY'
import sys
n = int(sys.argv[1])
for i in range(0, n, 100):
    print(f"dn: uid=user{i},ou=people,dc=example,dc=org\nchangetype: modify\nreplace: mail\nmail: user{i}.changed@example.org\n")
PY
ldapmodify -x -H "ldap://127.0.0.1:$LDAP_PORT" -D cn=admin,dc=example,dc=org -w rootsecret -f "$WORK/change.ldif" >/dev/null
cli sync --source ldap >"$WORK/sync.out"
echo "  resync, 1 % changed:   $(field duration_ms <"$WORK/sync.out") ms ($(field added <"$WORK/sync.out") added, $(field removed <"$WORK/sync.out") removed)"

# Every user changed: the same people with new mail addresses (directory B), then A.
stop_slapd; start_slapd b
c0=$(cpu_now)
cli sync --source ldap >"$WORK/sync.out"
d=$(field duration_ms <"$WORK/sync.out")
echo "  resync, all changed:   $d ms ($(field added <"$WORK/sync.out") added, $(field removed <"$WORK/sync.out") removed; $(cpu_used "$c0" "$(cpu_now)"))"
stop_slapd; start_slapd a
during_resync "lookups during one:   " "$d"
echo "  server RSS:            peak $(awk '/VmHWM/ {print $2 " " $3}' "/proc/$PID/status"), now $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$PID/status")"
