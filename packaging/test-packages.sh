#!/usr/bin/env bash
# The package test (run by tests/run.sh): builds the static binary and the .deb and .rpm,
# proves the binary resolves names without NSS (test-static-dns.sh), checks both packages
# (lintian, contents, modes, conffiles, scripts), then installs the .deb on this machine,
# runs the installed server as user mxisd on free loopback ports, queries it, keeps an
# edited conffile across a reinstall, and purges it.
#
# It changes the machine: it is meant for CI's throwaway machine (as root, or with sudo).
# Installs what it needs when missing: cargo-deb and cargo-generate-rpm (pinned, with
# cargo install --locked) and lintian, rpm, file, curl, python3 (apt).
#
# Environment:
#   CARGO_TARGET_DIR  build directory (default /var/tmp/mxisd-target, shared with the tests)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
started=$(date +%s)
step_started=$started
step() {
  local now
  now=$(date +%s)
  echo "== test-packages.sh: $* (+$((now - step_started)) s, $((now - started)) s in all)"
  step_started=$now
}
fail() {
  echo "test-packages.sh: FAIL: $*" >&2
  exit 1
}

# --- tools -------------------------------------------------------------------------
apt_missing=()
for entry in lintian:lintian rpm:rpm file:file curl:curl python3:python3 setpriv:util-linux \
  runuser:util-linux dpkg-deb:dpkg adduser:adduser; do
  command -v "${entry%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${entry%%:*}" ] || apt_missing+=("${entry#*:}")
done
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "test-packages.sh: installing ${apt_missing[*]}" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_missing[@]}"
fi
install_cargo_tool() {
  local crate=$1 sub=$2 version=$3
  if ! cargo "$sub" --version 2>/dev/null | grep -qF "$version"; then
    echo "test-packages.sh: installing $crate $version" >&2
    cargo install --locked "$crate" --version "$version"
  fi
}
install_cargo_tool cargo-deb deb "$CARGO_DEB_VERSION"
install_cargo_tool cargo-generate-rpm generate-rpm "$CARGO_GENERATE_RPM_VERSION"
step "tools ready"

# --- build ---------------------------------------------------------------------------
mapfile -t packages < <(packaging/build-packages.sh)
deb=${packages[0]}
rpm=${packages[1]}
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/mxisd"
echo "binary: $(stat -c %s "$bin") bytes; $(basename "$deb"); $(basename "$rpm")"
step "static binary and packages built"

packaging/test-static-dns.sh "$bin"
step "static binary resolves names without NSS"

# --- the .deb, unpacked ------------------------------------------------------------
lintian_out=$(lintian --info --display-info --fail-on error,warning "$deb" 2>&1 | grep -Ev '^(running with root privileges|N: *$)') || {
  echo "$lintian_out" >&2
  fail "lintian found errors or warnings that packaging/debian/lintian-overrides does not explain"
}
echo "lintian: ${lintian_out:-no tags}"

contents=$(dpkg-deb -c "$deb")
expect_entry() { # MODE PATH (owned by root: dpkg-deb shows root/root or 0/0)
  grep -Eq "^$1 (root/root|0/0) +[0-9]+ [0-9-]+ [0-9:]+ \./$2\$" <<<"$contents" \
    || fail "the .deb lacks $2 as $1 root; it has:"$'\n'"$contents"
}
expect_entry -rwxr-xr-x usr/bin/mxisd
expect_entry -rw-r----- etc/mxisd/mxisd.yaml
expect_entry -rw-r--r-- usr/lib/systemd/system/mxisd.service
expect_entry -rw-r--r-- usr/share/doc/mxisd/README.md
expect_entry -rw-r--r-- usr/share/doc/mxisd/copyright
expect_entry -rw-r--r-- usr/share/doc/mxisd/changelog.Debian.gz
expect_entry -rw-r--r-- usr/share/doc/mxisd/examples/mxisd.example.yaml
# The Synapse password module's source tree (packaging/synapse).
for f in pyproject.toml README.md mxisd_synapse/__init__.py; do
  expect_entry -rw-r--r-- "usr/share/mxisd/synapse/$f"
done
[ "$(dpkg-deb -I "$deb" conffiles)" = "/etc/mxisd/mxisd.yaml" ] || fail "conffiles is not exactly /etc/mxisd/mxisd.yaml"
dpkg-deb -I "$deb" postinst | grep -q 'adduser --system' || fail "postinst does not create the system user"
dpkg-deb -I "$deb" postinst | grep -q 'deb-systemd-invoke' || fail "postinst does not start the unit"
dpkg-deb -I "$deb" postinst | grep -q 'if \[ -d /run/systemd/system \]' || fail "postinst starts the unit without checking systemd runs"
dpkg-deb -I "$deb" prerm | grep -q 'deb-systemd-invoke stop' || fail "prerm does not stop the unit"
step "the .deb passes lintian and has the expected files, modes, conffile and scripts"

# --- the .rpm, queried ---------------------------------------------------------------
rpm -qip "$rpm"
files=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\n]' "$rpm")
expect_rpm() { # MODE USER GROUP PATH
  grep -qxF -e "$1 $2 $3 $4" <<<"$files" || fail "the .rpm lacks $4 as $1 $2 $3; it has:"$'\n'"$files"
}
expect_rpm -rwxr-xr-x root root /usr/bin/mxisd
expect_rpm -rw-r----- root mxisd /etc/mxisd/mxisd.yaml
expect_rpm -rw-r--r-- root root /usr/lib/systemd/system/mxisd.service
expect_rpm -rw-r--r-- root root /usr/share/doc/mxisd/README.md
expect_rpm -rw-r--r-- root root /usr/share/doc/mxisd/examples/mxisd.example.yaml
for f in pyproject.toml README.md mxisd_synapse/__init__.py; do
  expect_rpm -rw-r--r-- root root "/usr/share/mxisd/synapse/$f"
done
[ "$(rpm -qcp "$rpm")" = "/etc/mxisd/mxisd.yaml" ] || fail "the .rpm's config files are not exactly /etc/mxisd/mxisd.yaml"
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" | grep -qx 'cn /etc/mxisd/mxisd.yaml' \
  || fail "the .rpm's /etc/mxisd/mxisd.yaml is not %config(noreplace)"
scripts=$(rpm -qp --scripts "$rpm")
grep -q 'useradd --system' <<<"$scripts" || fail "the .rpm's %pre does not create the system user"
grep -q 'systemctl enable --now' <<<"$scripts" || fail "the .rpm's %post does not enable the unit"
grep -q 'systemctl disable --now' <<<"$scripts" || fail "the .rpm's %preun does not stop the unit"
step "the .rpm has the expected files, modes, config file and scripts"

# --- install the .deb ------------------------------------------------------------------
cleanup() {
  if [ -n "${server_pid:-}" ]; then $SUDO kill "$server_pid" 2>/dev/null || true; fi
  if dpkg -s mxisd >/dev/null 2>&1; then
    $SUDO env DEBIAN_FRONTEND=noninteractive dpkg --purge mxisd >/dev/null 2>&1 || true
  fi
  if getent passwd mxisd >/dev/null; then $SUDO deluser --system --quiet mxisd >/dev/null 2>&1 || true; fi
  if getent group mxisd >/dev/null; then $SUDO delgroup --system --quiet mxisd >/dev/null 2>&1 || true; fi
}
# A clean start: no package, user or state left from an earlier run.
cleanup
if [ -e /var/lib/mxisd ] || [ -e /etc/mxisd/mxisd.yaml ]; then fail "/var/lib/mxisd or /etc/mxisd/mxisd.yaml exists without the package"; fi
trap cleanup EXIT
$SUDO env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" </dev/null
getent passwd mxisd >/dev/null || fail "installing did not create the user mxisd"
[ "$(stat -c '%a %U %G' /etc/mxisd/mxisd.yaml)" = "640 root mxisd" ] || fail "/etc/mxisd/mxisd.yaml is $(stat -c '%a %U %G' /etc/mxisd/mxisd.yaml)"
[ "$(stat -c '%a %U %G' /var/lib/mxisd)" = "700 mxisd mxisd" ] || fail "/var/lib/mxisd is $(stat -c '%a %U %G' /var/lib/mxisd)"
[ "$(stat -c '%a %U' /usr/bin/mxisd)" = "755 root" ] || fail "/usr/bin/mxisd is $(stat -c '%a %U' /usr/bin/mxisd)"
for f in pyproject.toml README.md mxisd_synapse/__init__.py; do
  [ "$(stat -c '%a %U' "/usr/share/mxisd/synapse/$f")" = "644 root" ] \
    || fail "/usr/share/mxisd/synapse/$f is not installed as 644 root"
done
# The installed Synapse module imports and reads a configuration (-B: no __pycache__
# written under /usr/share, which the purge below would leave behind).
PYTHONPATH=/usr/share/mxisd/synapse python3 -B -c \
  'import mxisd_synapse; mxisd_synapse.MxisdPasswordProvider.parse_config({"endpoint": "http://127.0.0.1:8092"})' \
  || fail "the installed Synapse module (/usr/share/mxisd/synapse) does not import"
if command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze verify /usr/lib/systemd/system/mxisd.service || fail "systemd-analyze verify found problems in the unit"
  echo "systemd-analyze verify: no problems"
else
  echo "test-packages.sh: systemd-analyze is not installed; the unit was not verified" >&2
fi
if [ -d /run/systemd/system ]; then
  # postinst started it: check, then stop it so the manual run below owns the store.
  systemctl is-active --quiet mxisd || fail "systemd runs, but postinst did not start mxisd"
  $SUDO systemctl stop mxisd
fi
step "installed: user, modes, unit, Synapse module"

# --- run the installed server as mxisd --------------------------------------------------
$SUDO runuser -u mxisd -- /usr/bin/mxisd check-config -c /etc/mxisd/mxisd.yaml >/dev/null \
  || fail "mxisd check-config -c /etc/mxisd/mxisd.yaml failed as user mxisd"
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
export MXISD_SERVER_PORT MXISD_SERVER_METRICS_PORT
MXISD_SERVER_PORT=$(free_port)
MXISD_SERVER_METRICS_PORT=$(free_port)
server_log=$(mktemp)
# What the unit's RuntimeDirectory= gives the server: the admin socket's directory.
$SUDO install -d -o mxisd -g mxisd -m 0750 /run/mxisd
# setpriv execs the server, so $server_pid is mxisd itself and gets the SIGTERM.
$SUDO env MXISD_SERVER_PORT="$MXISD_SERVER_PORT" MXISD_SERVER_METRICS_PORT="$MXISD_SERVER_METRICS_PORT" \
  setpriv --reuid=mxisd --regid=mxisd --init-groups -- /usr/bin/mxisd run -c /etc/mxisd/mxisd.yaml >"$server_log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$MXISD_SERVER_PORT"
for _ in $(seq 1 100); do
  curl -fsS "$base/_matrix/identity/v2" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$server_log" >&2; fail "the installed server stopped"; }
  sleep 0.1
done
curl -fsS "$base/_matrix/identity/v2" | grep -q '{}' || { cat "$server_log" >&2; fail "/_matrix/identity/v2 did not answer {}"; }
curl -fsS "$base/status" >/dev/null || fail "/status did not answer"
$SUDO env MXISD_SERVER_PORT="$MXISD_SERVER_PORT" MXISD_SERVER_METRICS_PORT="$MXISD_SERVER_METRICS_PORT" \
  runuser -u mxisd -- /usr/bin/mxisd healthcheck -c /etc/mxisd/mxisd.yaml || fail "mxisd healthcheck failed"
[ "$($SUDO stat -c '%a %U %G' /run/mxisd/admin.sock)" = "660 mxisd mxisd" ] \
  || fail "the admin socket is $($SUDO stat -c '%a %U %G' /run/mxisd/admin.sock)"
$SUDO /usr/bin/mxisd status -c /etc/mxisd/mxisd.yaml >/dev/null || fail "root could not use the admin socket"
if $SUDO runuser -u nobody -- curl -fsS --unix-socket /run/mxisd/admin.sock \
  http://localhost/_mxisd/admin/v1/status >/dev/null 2>&1; then
  fail "user nobody could use the admin socket"
fi
[ "$($SUDO stat -c '%U' /var/lib/mxisd/keys)" = "mxisd" ] || fail "the signing key directory is not mxisd's"
$SUDO kill -TERM "$server_pid"
wait "$server_pid" || { cat "$server_log" >&2; fail "the server did not exit 0 on SIGTERM"; }
server_pid=""
rm -f "$server_log"
step "the installed server ran as mxisd and answered"

# --- conffile kept on reinstall ------------------------------------------------------------
$SUDO sed -i 's/^  domain: example.org$/  domain: edited.example.org/' /etc/mxisd/mxisd.yaml
grep -q '^  domain: edited.example.org$' /etc/mxisd/mxisd.yaml || fail "could not edit the conffile"
$SUDO env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" </dev/null
grep -q '^  domain: edited.example.org$' /etc/mxisd/mxisd.yaml || fail "reinstalling replaced the edited conffile"
[ "$(stat -c '%a %U %G' /etc/mxisd/mxisd.yaml)" = "640 root mxisd" ] || fail "after reinstalling, /etc/mxisd/mxisd.yaml is $(stat -c '%a %U %G' /etc/mxisd/mxisd.yaml)"
[ -d /var/lib/mxisd/keys ] || fail "reinstalling lost /var/lib/mxisd"
step "the edited conffile and the state survived a reinstall"

# --- purge ----------------------------------------------------------------------------------
$SUDO env DEBIAN_FRONTEND=noninteractive dpkg --purge mxisd </dev/null
for gone in /usr/bin/mxisd /etc/mxisd/mxisd.yaml /usr/lib/systemd/system/mxisd.service /var/lib/mxisd \
  /usr/share/mxisd; do
  [ ! -e "$gone" ] || fail "$gone is still there after purge"
done
step "purged"
echo "test-packages.sh: all package checks passed in $(($(date +%s) - started)) s"
