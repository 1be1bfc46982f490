#!/usr/bin/env bash
# Memory of a first sync, the issue's target 1: N users (default 100000) from a file
# source or a real slapd (SOURCE=file|ldap), synced into a fresh store by a release
# build. Each user has a display name and one e-mail address, or with SHAPE=full what
# benches/ldap-sync.sh gives them (an e-mail, a telephone number and a title, indexed as
# an extra directory attribute). For each of RUNS runs (default 3) prints the server's
# peak RSS (VmHWM, over the sync and its index update), the sync's time, and RssAnon /
# RssFile once settled (SETTLE seconds after the index update, default 10). The malloc
# settings are those of the packaged systemd unit unless set in the environment.
#
#   benches/sync-memory.sh
#   SOURCE=ldap SHAPE=full benches/sync-memory.sh
#   RUNS=1 N=20000 benches/sync-memory.sh
#   MXISD_BIN=/path/to/mxisd benches/sync-memory.sh
#   CACHE=4MiB benches/sync-memory.sh      (storage.cacheSize; default: the server's)
#
# SOURCE=ldap needs slapd and python3 (slapd is installed through apt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100000}"
RUNS="${RUNS:-3}"
SETTLE="${SETTLE:-10}"
SOURCE="${SOURCE:-file}"
SHAPE="${SHAPE:-one}"
case "$SOURCE:$SHAPE" in file:one | file:full | ldap:one | ldap:full) ;;
  *) echo "SOURCE is file or ldap, SHAPE one or full" >&2; exit 2;; esac
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX-2}"
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_-131072}"
command -v python3 >/dev/null || { echo "python3 is needed to generate the data" >&2; exit 1; }
if [ "$SOURCE" = ldap ] && ! command -v slapd >/dev/null && [ ! -x /usr/sbin/slapd ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slapd >/dev/null
fi
PATH="$PATH:/usr/sbin"
. benches/lib.sh
bench_binary
work_dir
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ -f "$WORK/slapd.pid" ] && kill -TERM "$(cat "$WORK/slapd.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

# The users, as the source lists them (the same people either way).
python3 - "$N" "$SOURCE" "$SHAPE" > "$WORK/users.$SOURCE" <<'PY'
import sys
n, source, shape = int(sys.argv[1]), sys.argv[2], sys.argv[3]
full = shape == "full"
out = sys.stdout
if source == "ldap":
    out.write("dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n")
    out.write("dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n\n")
    out.write("dn: cn=mxisd,dc=example,dc=org\nobjectClass: person\ncn: mxisd\nsn: sync\nuserPassword: syncsecret\n\n")
for i in range(n):
    phone = f"+1 202 {i // 10000:03d} {i % 10000:04d}"
    if source == "ldap":
        out.write(f"dn: uid=user{i},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: user{i}\n"
                  f"cn: User {i}\nsn: {i}\ndisplayName: User Number {i}\nmail: user{i}@example.org\n")
        if full:
            out.write(f"title: Engineer\ntelephoneNumber: {phone}\n")
        out.write("\n")
    else:
        out.write(f"- username: user{i}\n  displayName: User Number {i}\n  threepids:\n    - {{medium: email, address: user{i}@example.org}}\n")
        if full:
            out.write(f"    - {{medium: msisdn, address: '{phone}'}}\n  attributes: {{title: [Engineer]}}\n")
PY
if [ "$SOURCE" = ldap ]; then
  slapd_db "$WORK/ldap" "$WORK/users.ldap" "$WORK"
  LDAP_PORT=$(free_port)
  slapd -F "$WORK/ldap/config" -h "ldap://127.0.0.1:$LDAP_PORT/"
  wait_port "$LDAP_PORT"
  extra=""
  [ "$SHAPE" = full ] && extra="
      msisdn: [telephoneNumber]
  directory:
    attribute:
      other: [title]"
  source_config="ldap:
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
      email: [mail]$extra
  sync:
    interval: 24h"
else
  mv "$WORK/users.file" "$WORK/users.yaml"
  source_config="file:
  enabled: true
  path: users.yaml
  sync:
    interval: 24h"
fi
status() { awk -v k="$2:" '$1 == k {print int($2 / 1024)}' "/proc/$1/status"; }

echo "== first sync, $SOURCE source, $N users, $([ "$SHAPE" = full ] && echo "an e-mail, a phone and a title" || echo "one e-mail") each ($(nproc) cores)"
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
}$source_config
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
  bindings=$(grep -o 'bindings=[0-9]*' "$WORK/server.log" | head -1 | cut -d= -f2)
  peak=$(status "$PID" VmHWM)
  sleep "$SETTLE"
  echo "  run $run: peak RSS $peak MB, sync ${ms:-?} ms (${bindings:-?} bindings), once settled RssAnon $(status "$PID" RssAnon) MB, RssFile $(status "$PID" RssFile) MB"
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
done
