#!/usr/bin/env bash
# Password-check benchmark of a release build against a real OpenLDAP on loopback.
#
# N users (default 1000) with passwords; mxisd's check_credentials (internal listener)
# is driven by wrk with right passwords at 1 and 16 connections; then v1 lookups are
# measured idle and during a storm of wrong passwords at 16 connections. Prints
# requests/s, p50 and p99 per line, and the slapd connections mxisd held during the
# storm (password checks open at most 4 at a time).
#
#   benches/auth.sh
#   N=10000 DURATION=10s benches/auth.sh
#
# Needs slapd, ldap-utils, wrk and python3 (installed through apt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000}"
DURATION="${DURATION:-5s}"
THREADS="${THREADS:-2}"
CONNS=16
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"

. benches/lib.sh
missing=()
for entry in slapd:slapd slapadd:slapd python3:python3 curl:curl; do
  command -v "${entry%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${entry%%:*}" ] || missing+=("${entry#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
need_wrk
PATH="$PATH:/usr/sbin"

cargo build --release --locked --quiet
BIN="$CARGO_TARGET_DIR/release/mxisd"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ -f "$WORK/slapd.pid" ] && kill -TERM "$(cat "$WORK/slapd.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

python3 - "$N" > "$WORK/users.ldif" <<'PY'
import sys
n = int(sys.argv[1])
out = sys.stdout
out.write("dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n")
out.write("dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n\n")
out.write("dn: cn=mxisd,dc=example,dc=org\nobjectClass: person\ncn: mxisd\nsn: sync\nuserPassword: syncsecret\n\n")
for i in range(n):
    out.write(f"dn: uid=user{i},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: user{i}\n"
              f"cn: User {i}\nsn: {i}\ndisplayName: User Number {i}\nmail: user{i}@example.org\n"
              f"userPassword: pw{i}\n\n")
PY
slapd_db "$WORK/ldap" "$WORK/users.ldif" "$WORK"
LDAP_PORT=$(free_port)
slapd -F "$WORK/ldap/config" -h "ldap://127.0.0.1:$LDAP_PORT/"
wait_port "$LDAP_PORT"

PORT=$(free_port); INTERNAL=$(free_port)
cat > "$WORK/mxisd.yaml" <<YAML
matrix:
  domain: example.org
server:
  port: $PORT
  internal:
    enabled: true
    port: $INTERNAL
storage:
  path: state
rateLimit:
  loginPerUser: {burst: 4000000000, interval: 1ms}
  loginPerIp: {burst: 4000000000, interval: 1ms}
ldap:
  enabled: true
  filter: (objectClass=inetOrgPerson)
  connection:
    host: 127.0.0.1
    port: $LDAP_PORT
    bindDn: cn=mxisd,dc=example,dc=org
    bindPassword: syncsecret
    baseDNs: ['ou=people,dc=example,dc=org']
  attribute:
    uid: {type: uid, value: uid}
    name: displayName
    threepid:
      email: [mail]
  sync:
    interval: 24h
YAML
(cd "$WORK" && RUST_LOG=error exec "$BIN" run -c mxisd.yaml 2>>"$WORK/server.log") &
PIDS+=($!)
wait_port "$PORT"; wait_port "$INTERNAL"
URL="http://127.0.0.1:$INTERNAL/_matrix-internal/identity/v1/check_credentials"
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$PORT/_matrix/identity/api/v1/lookup?medium=email&address=user1%40example.org" | grep -q mxid && break
  sleep 0.05
done

# One user per request, in turn (wrk's Lua: a counter per thread).
lua() { # password-suffix
  cat <<LUA
local i = 0
request = function()
  i = (i + 7919) % $N
  local body = '{"user":{"id":"@user' .. i .. ':example.org","password":"pw' .. i .. '$1"}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
LUA
}
lua "" > "$WORK/right.lua"
lua "-wrong" > "$WORK/wrong.lua"
ok=$(curl -fsS -H 'Content-Type: application/json' -d '{"user":{"id":"@user1:example.org","password":"pw1"}}' "$URL")
grep -q '"success":true' <<<"$ok" || { echo "a right password was refused: $ok" >&2; cat "$WORK/server.log" >&2; exit 1; }

LOOKUP="http://127.0.0.1:$PORT/_matrix/identity/api/v1/lookup?medium=email&address=user1%40example.org"
echo "== check_credentials against slapd, $N users ($(nproc) cores, $DURATION each)"
run_wrk "right password, 1 connection" "$URL" "$WORK/right.lua" 1
run_wrk "right password, 16 connections" "$URL" "$WORK/right.lua" 16
run_wrk "v1 lookup, idle" "$LOOKUP" "" 4
idle=$LAST_RPS
wrk -t1 -c16 -d"$DURATION" -s "$WORK/wrong.lua" "$URL" > "$WORK/storm.out" &
storm=$!
sleep 0.5
run_wrk "v1 lookup, 16 failing logins" "$LOOKUP" "" 4
busy=$LAST_RPS
conns=$(ss -Htn state established "( dport = :$LDAP_PORT )" | wc -l)
wait "$storm"
echo "  wrong passwords during that: $(awk '/Requests\/sec/ {print $2}' "$WORK/storm.out") req/s; slapd connections from mxisd at the peak of it: $conns"
python3 -c "print(f'  lookups during the storm: {float(\"$busy\") / float(\"$idle\"):.2f}x idle')"
