#!/usr/bin/env bash
# Proves that the static binary resolves host names without glibc's NSS, on every
# outbound path: it runs in a chroot that holds only the binary, /etc/hosts,
# /etc/resolv.conf (a name server on loopback that does not answer) and an
# /etc/nsswitch.conf naming a service that does not exist, so any getaddrinfo call would
# fail (a static C program checks that first). Each target is a name from /etc/hosts on
# its own loopback address (or `localhost`), served by packaging/testing/fake_servers.py:
#   LDAP sync, SQL sync, REST sync, SMTP (a validation e-mail), federation through an
#   override (OpenID userinfo), federation through the outbound guard (allowed range
#   reached, other loopback address refused), the listeners on `localhost`, and
#   `mxisd healthcheck --url http://localhost:...`.
# All traffic stays on 127.0.0.0/8. Needs root (chroot) or unprivileged user namespaces,
# python3 and curl.
#
# Usage: packaging/test-static-dns.sh /path/to/static/mxisd
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: test-static-dns.sh /path/to/static/mxisd}"

fail() {
  echo "test-static-dns.sh: FAIL: $*" >&2
  exit 1
}
for tool in python3 curl chroot; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing"
done
# The chroot has the devices every system has: /dev/null, /dev/random and /dev/urandom
# (the static binary's getrandom crate falls back to them: glibc's getrandom() cannot be
# looked up at run time in a static binary).
if [ "$(id -u)" -eq 0 ]; then
  make_devices() {
    mknod -m 666 "$root/dev/null" c 1 3
    mknod -m 666 "$root/dev/random" c 1 8
    mknod -m 666 "$root/dev/urandom" c 1 9
  }
  in_root() { chroot "$root" "$@"; }
  # For `in_root_exec ... &`: the background job becomes the program itself (its pid is
  # $!), so it gets the signal.
  in_root_exec() { exec chroot "$root" "$@"; }
else
  make_devices() { touch "$root/dev/null" "$root/dev/random" "$root/dev/urandom"; }
  in_root() {
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare --map-root-user --mount sh -c \
      'for d in null random urandom; do mount --bind "/dev/$d" "$0/dev/$d" || exit 1; done; exec chroot "$0" "$@"' \
      "$root" "$@"
  }
  in_root_exec() {
    # shellcheck disable=SC2016 # expanded by the inner shell
    exec unshare --map-root-user --mount sh -c \
      'for d in null random urandom; do mount --bind "/dev/$d" "$0/dev/$d" || exit 1; done; exec chroot "$0" "$@"' \
      "$root" "$@"
  }
fi

work=$(mktemp -d)
root="$work/root"
fakes_pid=""
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  if [ -n "$fakes_pid" ]; then kill "$fakes_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$root/etc/mxisd" "$root/var/lib/mxisd" "$root/tmp" "$root/dev"
make_devices
cp "$bin" "$root/mxisd"
# The CA certificates (package ca-certificates), which TLS clients load at start.
mkdir -p "$root/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1 localhost
127.0.0.11 ldap.mxisd.test
127.0.0.12 smtp.mxisd.test
127.0.0.13 sql.mxisd.test
127.0.0.14 rest.mxisd.test
127.0.0.15 hs.mxisd.test
127.0.0.16 fed.mxisd.test
127.0.0.17 blocked.mxisd.test
EOF
echo "nameserver 127.0.0.1" >"$root/etc/resolv.conf"
echo "hosts: mxisd-no-such-service" >"$root/etc/nsswitch.conf"
if [ -e "$root/lib" ] || [ -e "$root/usr" ]; then fail "the chroot must hold no libraries"; fi

# Control: in this chroot, a static program that uses getaddrinfo cannot resolve.
if command -v gcc >/dev/null 2>&1; then
  cat >"$work/gai.c" <<'EOF'
#include <netdb.h>
#include <string.h>
int main(int argc, char **argv) {
  struct addrinfo hints, *res;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  (void)argc;
  return getaddrinfo(argv[1], "80", &hints, &res) == 0 ? 0 : 1;
}
EOF
  gcc -static -o "$root/gai" "$work/gai.c" 2>/dev/null
  if in_root /gai ldap.mxisd.test; then
    fail "control: getaddrinfo resolved in the chroot, so this test would prove nothing"
  fi
  rm -f "$root/gai"
  echo "control: getaddrinfo cannot resolve ldap.mxisd.test in the chroot (as intended)"
fi

log="$work/connections.log"
: >"$log"
python3 "$here/testing/fake_servers.py" "$log" \
  ldap=record@127.0.0.11 smtp=smtp@127.0.0.12 sql=record@127.0.0.13 \
  rest=http@127.0.0.14 hs=http@127.0.0.15 fed=record@127.0.0.16 \
  blocked=record@127.0.0.17 ldap-localhost=record@127.0.0.1 >"$work/fakes.out" &
fakes_pid=$!
for _ in $(seq 1 50); do
  grep -q '^ready$' "$work/fakes.out" && break
  sleep 0.1
done
grep -q '^ready$' "$work/fakes.out" || fail "the fake servers did not start"
port() { awk -v n="$1" '$1 == n { print $2 }' "$work/fakes.out"; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
http_port=$(free_port)
metrics_port=$(free_port)

cat >"$root/etc/mxisd/mxisd.yaml" <<EOF
matrix:
  domain: hs.mxisd.test
server:
  hostname: localhost
  port: $http_port
  publicUrl: http://localhost:$http_port
  metrics:
    hostname: localhost
    port: $metrics_port
storage:
  path: /var/lib/mxisd
accountConfig:
  # Register asks any homeserver, so the guarded federation calls below are made.
  allowOnlyTrustDomains: false
dns:
  overwrite:
    homeserver:
      federation:
        - name: hs.mxisd.test
          value: http://hs.mxisd.test:$(port hs)
outbound:
  allowedCidr: ['127.0.0.16/32']
  timeout: 5s
threepid:
  medium:
    email:
      identity:
        from: mxisd@mxisd.test
      connectors:
        smtp:
          host: smtp.mxisd.test
          port: $(port smtp)
          tls: 0
          timeout: 5s
ldap:
  enabled: true
  connection:
    host: ldap.mxisd.test
    port: $(port ldap)
    baseDNs: ['dc=mxisd,dc=test']
    timeout: 3s
  sync:
    interval: 1h
sql:
  enabled: true
  type: postgresql
  connection: //sql.mxisd.test:$(port sql)/directory?user=mxisd&password=secret
  sync:
    query: SELECT 1
    interval: 1h
    timeout: 3s
rest:
  enabled: true
  sync:
    url: http://rest.mxisd.test:$(port rest)/users
    interval: 1h
    timeout: 3s
EOF

in_root /mxisd check-config -c /etc/mxisd/mxisd.yaml >/dev/null || fail "check-config refused the test configuration"
in_root_exec /mxisd run -c /etc/mxisd/mxisd.yaml >"$work/server.log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$http_port"
for _ in $(seq 1 100); do
  curl -fsS "$base/_matrix/identity/v2" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; fail "the server stopped"; }
  sleep 0.1
done
curl -fsS "$base/_matrix/identity/v2" >/dev/null || { cat "$work/server.log" >&2; fail "the server on localhost:$http_port does not answer"; }
echo "ok: listeners bound on localhost"

in_root /mxisd healthcheck --url "http://localhost:$http_port/status" >/dev/null \
  || fail "healthcheck --url http://localhost:... failed"
echo "ok: healthcheck reached http://localhost:$http_port"
# Read whole first: `curl | grep -q` fails under pipefail once the page outgrows the
# pipe and grep stops reading at its match.
metrics_page=$(curl -fsS "http://127.0.0.1:$metrics_port/metrics" || true)
grep -q '^mxisd_uptime_seconds' <<<"$metrics_page" \
  || fail "the metrics listener on localhost:$metrics_port does not answer"
echo "ok: metrics listener bound on localhost"

# Federation through an override: the name is resolved, the homeserver vouches for alice.
reg=$(curl -sS -X POST -H 'Content-Type: application/json' "$base/_matrix/identity/v2/account/register" \
  -d '{"access_token":"openid","token_type":"Bearer","matrix_server_name":"hs.mxisd.test","expires_in":3600}')
token=$(python3 -c 'import json, sys; print(json.load(sys.stdin).get("token", ""))' <<<"$reg")
[ -n "$token" ] || { cat "$work/server.log" >&2; fail "register through hs.mxisd.test failed: $reg"; }
echo "ok: federation override hs.mxisd.test (OpenID userinfo) answered"

# SMTP: a validation e-mail to smtp.mxisd.test.
mail=$(curl -sS -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $token" \
  "$base/_matrix/identity/v2/validate/email/requestToken" \
  -d '{"client_secret":"s3cretS3cret","email":"alice@mxisd.test","send_attempt":1}')
grep -q '"sid"' <<<"$mail" || { cat "$work/server.log" >&2; fail "requestToken (SMTP to smtp.mxisd.test) failed: $mail"; }
echo "ok: e-mail accepted by smtp.mxisd.test"

# Guarded federation: the allowed range is reached (TLS then fails: the fake does not
# speak it), the other loopback address is refused before any connection.
curl -sS -X POST -H 'Content-Type: application/json' "$base/_matrix/identity/v2/account/register" \
  -d "{\"access_token\":\"x\",\"token_type\":\"Bearer\",\"matrix_server_name\":\"fed.mxisd.test:$(port fed)\",\"expires_in\":3600}" >/dev/null
blocked=$(curl -sS -X POST -H 'Content-Type: application/json' "$base/_matrix/identity/v2/account/register" \
  -d "{\"access_token\":\"x\",\"token_type\":\"Bearer\",\"matrix_server_name\":\"blocked.mxisd.test:$(port blocked)\",\"expires_in\":3600}")
grep -q '"token"' <<<"$blocked" && fail "register through blocked.mxisd.test succeeded: $blocked"

# The sources ran at start: the REST one completed (alice is bound), LDAP and SQL were reached.
for _ in $(seq 1 50); do
  found=$(curl -sS "$base/_matrix/identity/api/v1/lookup?medium=email&address=alice@mxisd.test")
  grep -q '@alice:hs.mxisd.test' <<<"$found" && break
  sleep 0.2
done
grep -q '@alice:hs.mxisd.test' <<<"$found" || { cat "$work/server.log" >&2; fail "the REST source on rest.mxisd.test was not synced: $found"; }
echo "ok: REST source rest.mxisd.test synced"

kill "$server_pid"
wait "$server_pid" || { cat "$work/server.log" >&2; fail "the server did not stop cleanly"; }
server_pid=""

# LDAP by `localhost`: the server again, its LDAP source pointed there (the fake does not
# speak LDAP, so the run fails after connecting).
MXISD_LDAP_CONNECTION_HOST=localhost MXISD_LDAP_CONNECTION_PORT="$(port ldap-localhost)" \
  in_root_exec /mxisd run -c /etc/mxisd/mxisd.yaml >"$work/server2.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q 'source="ldap"' "$work/server2.log" && break
  sleep 0.1
done
kill "$server_pid"
wait "$server_pid" || { cat "$work/server2.log" >&2; fail "the second server did not stop cleanly"; }
server_pid=""

echo "connections the fake servers saw:"
sort "$log" | uniq -c
for name in ldap ldap-localhost sql rest hs smtp smtp:message fed; do
  grep -q "^$name " "$log" || {
    cat "$work/server.log" "$work/server2.log" >&2
    fail "nothing reached $name: its name was not resolved"
  }
done
if grep -q '^blocked ' "$log"; then
  fail "the outbound guard let a call reach blocked.mxisd.test (127.0.0.17)"
fi
echo "ok: the outbound guard let fed.mxisd.test (allowed range) through and refused blocked.mxisd.test"
grep -q 'loopback' <<<"$blocked$(cat "$work/server.log")" || echo "note: the guard's refusal did not name the range" >&2
echo "test-static-dns.sh: the static binary resolved every name without NSS"
