#!/usr/bin/env bash
# Fault injection under mixed load, on a release build, on loopback: slapd, PostgreSQL,
# an SMTP sink, an SMS gateway and a homeserver (the last three stand-ins) are each in
# turn stopped, slowed past their timeouts and made to answer garbage while lookups,
# search, binds, validation mails and SMS, invites with onbind, registrations and LDAP
# and SQL syncs run. See benches/faults.py for what is printed.
#
#   benches/faults.sh                 # about 5 minutes of faults after the set-up
#   N=20000 PHASE=4 benches/faults.sh
#   MXISD_BIN=/path/to/mxisd benches/faults.sh
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for entry in slapd:slapd slapadd:slapd ldapsearch:ldap-utils runuser:util-linux python3:python3 curl:curl; do
  command -v "${entry%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${entry%%:*}" ] || missing+=("${entry#*:}")
done
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=("postgresql")
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
PATH="$PATH:/usr/sbin"
. benches/lib.sh
bench_setup
USERS=2000

# slapd: luser0..luser1999 with luserN@example.org.
python3 - "$USERS" > "$WORK/users.ldif" <<'PY'
import sys
n = int(sys.argv[1])
print("dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n")
print("dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n")
print("dn: cn=mxisd,dc=example,dc=org\nobjectClass: person\ncn: mxisd\nsn: sync\nuserPassword: syncsecret\n")
for i in range(n):
    print(f"dn: uid=luser{i},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: luser{i}\n"
          f"cn: L {i}\nsn: {i}\ndisplayName: Ldap Person {i}\nmail: luser{i}@example.org\n")
PY
slapd_db "$WORK/ldap" "$WORK/users.ldif" "$WORK" >/dev/null
LDAP_PORT=$(free_port)
slapd -F "$WORK/ldap/config" -h "ldap://127.0.0.1:$LDAP_PORT/"
wait_port "$LDAP_PORT"
stop_slapd() { [ -f "$WORK/slapd.pid" ] && kill -TERM "$(cat "$WORK/slapd.pid")" 2>/dev/null || true; }

# PostgreSQL (as its own user: it refuses root): database hr, table people, suser0..1999.
PG_BIN=$(dirname "$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -1)")
PG_DIR="$WORK/pg"; mkdir -p "$PG_DIR"; chown postgres:postgres "$PG_DIR"; chmod 700 "$PG_DIR"
chmod 755 "$WORK"
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
PG_PORT=$(free_port)
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
  -o "-p $PG_PORT -k $PG_DIR -h 127.0.0.1 -c fsync=off" start >/dev/null
stop_pg() { as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true; }
trap 'stop_slapd; stop_pg; cleanup' EXIT
psql_hr() { "$PG_BIN/psql" -v ON_ERROR_STOP=1 -q -X -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
psql_hr -d postgres -c "CREATE DATABASE hr"
psql_hr -d hr -c "CREATE TABLE people (uid text PRIMARY KEY, name text, mail text);
  INSERT INTO people SELECT 'suser' || i, 'Sql Person ' || i, 'suser' || i || '@example.org'
  FROM generate_series(0, $((USERS - 1))) AS i"

BIN="$BIN" WORK="$WORK" LDAP_PORT="$LDAP_PORT" PG_PORT="$PG_PORT" USERS="$USERS" python3 -u benches/faults.py
