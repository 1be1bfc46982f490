# Shared by the load scripts (sourced, not run): free loopback ports, waiting for a
# listener, installing wrk, and one-line wrk summaries.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 400); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on $1" >&2; return 1
}
# Waits for a server's admin socket (the CLI's way in): wait_admin STATE_DIR
wait_admin() {
  for _ in $(seq 1 400); do
    [ -S "$1/admin.sock" ] && return 0
    sleep 0.05
  done
  echo "no admin socket in $1" >&2; return 1
}

# work_dir: a temp directory $WORK and a list $PIDS of background processes, both
# gone when the script exits.
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
work_dir() {
  WORK=$(mktemp -d)
  PIDS=()
  trap cleanup EXIT
}

need_wrk() {
  command -v wrk >/dev/null 2>&1 && return 0
  echo "installing wrk" >&2
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; }
}

# cpu_ticks PID: the CPU time a process has used so far (user + system), in clock ticks.
cpu_ticks() {
  # The fields after the command name, which is in parentheses and may hold spaces.
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# run_wrk NAME URL [LUA] [CONNECTIONS]: wrk for $DURATION with $THREADS threads and
# $CONNS connections; prints requests/s, p50, p99 (and non-2xx answers) on one line
# and leaves the rate in LAST_RPS. With CPU_PID set, also the CPU time that process
# spent per request: steadier than the rate on a machine whose speed drifts, and what
# a server costs whoever shares the cores with it.
run_wrk() {
  local name=$1 url=$2 script=${3:-} conns=${4:-$CONNS}
  local threads=$THREADS out before=""
  [ "$conns" -ge "$threads" ] || threads=$conns
  [ -z "${CPU_PID:-}" ] || before=$(cpu_ticks "$CPU_PID")
  if [ -n "$script" ]; then
    out=$(wrk -t"$threads" -c"$conns" -d"$DURATION" --latency -s "$script" "$url")
  else
    out=$(wrk -t"$threads" -c"$conns" -d"$DURATION" --latency "$url")
  fi
  local rps p50 p99 errors cpu=""
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  if [ -n "$before" ]; then
    cpu=$(awk -v t="$(( $(cpu_ticks "$CPU_PID") - before ))" -v hz="$(getconf CLK_TCK)" \
      -v n="$(awk '/requests in/ {print $1}' <<<"$out")" \
      'BEGIN { if (n > 0) printf "   cpu/req %6.1f us", t * 1e6 / hz / n }')
  fi
  printf '  %-32s %10s req/s   p50 %8s   p99 %8s%s%s\n' "$name" "$rps" "$p50" "$p99" "$cpu" "${errors:+   NON-2XX: $errors}"
  LAST_RPS=$rps
}

# slapd_db DIR LDIF RUNDIR: an OpenLDAP database for dc=example,dc=org in DIR (config
# and data), loaded offline with LDIF; slapd writes its pid to RUNDIR/slapd.pid. The sync
# account cn=mxisd may read everything unpaged; passwords may only be used to bind.
slapd_db() {
  local d=$1 ldif=$2 WORK=$3
  mkdir -p "$d/config" "$d/data"
  cat > "$d/config.ldif" <<LDIF
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: $WORK/slapd.pid
olcArgsFile: $WORK/slapd.args

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/nis.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by * none

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: dc=example,dc=org
olcDbDirectory: $d/data
olcDbMaxSize: 4294967296
olcDbNoSync: TRUE
olcRootDN: cn=admin,dc=example,dc=org
olcRootPW: rootsecret
olcLimits: dn.exact="cn=mxisd,dc=example,dc=org" size.prtotal=unlimited
olcDbIndex: objectClass eq
olcDbIndex: uid,mail eq
olcAccess: {0}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {1}to * by * read
LDIF
  slapadd -n 0 -F "$d/config" -l "$d/config.ldif" >/dev/null
  slapadd -q -n 1 -F "$d/config" -l "$ldif"
}

# bench_binary: BIN is $MXISD_BIN when set (measure that binary), else a fresh release
# build.
bench_binary() {
  if [ -n "${MXISD_BIN:-}" ]; then BIN=$MXISD_BIN; else
    cargo build --release --locked --quiet
    BIN="$CARGO_TARGET_DIR/release/mxisd"
  fi
}

# standin_homeserver: a stand-in homeserver's client-server API on 127.0.0.1:$HS_PORT
# (after work_dir): any token is @bench:localhost (whoami, and OpenID userinfo over
# federation when `dns.overwrite` points there); its user directory holds
# @matrix-only:localhost, whatever the term.
standin_homeserver() {
  HS_PORT=$(free_port)
  python3 - "$HS_PORT" >/dev/null 2>&1 <<'PY' &
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_GET(self):
        self.reply({"user_id": "@bench:localhost", "sub": "@bench:localhost"})
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.reply({"limited": False, "results": [{"user_id": "@matrix-only:localhost", "display_name": "Matrix Only"}]})
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  PIDS+=($!)
  wait_port "$HS_PORT"
}

# identity_account PORT: registers an account on the server at PORT (through the
# stand-in homeserver its dns.overwrite names) and sets TOKEN and PEPPER (hash_details).
identity_account() {
  TOKEN=$(curl -s -X POST "http://127.0.0.1:$1/_matrix/identity/v2/account/register" \
    -H 'Content-Type: application/json' \
    -d '{"access_token":"x","token_type":"Bearer","matrix_server_name":"localhost","expires_in":3600}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  PEPPER=$(curl -s "http://127.0.0.1:$1/_matrix/identity/v2/hash_details" -H "Authorization: Bearer $TOKEN" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["lookup_pepper"])')
}

# bench_setup: what the wrk scripts share: the target directory, the unit's malloc
# settings (set them empty to drop them), wrk, python3 and curl, the binary (BIN, see
# bench_binary) and a work directory (WORK, see work_dir).
bench_setup() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
  export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX-2}"
  export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_-131072}"
  need_wrk
  command -v python3 >/dev/null || { echo "python3 is needed to generate the data" >&2; exit 1; }
  command -v curl >/dev/null || { echo "curl is needed (apt-get install curl)" >&2; exit 1; }
  bench_binary
  work_dir
}
