#!/usr/bin/env bash
# Runs mxisd's whole test suite on a fresh Debian machine.
#
# Installs what the tests need through apt when it is missing (the test servers they
# start themselves: slapd and ldap-utils, postgresql, procps, caddy and nginx for the
# README's reverse-proxy examples, python3 for the Synapse module), then runs every unit
# and integration test, then the Synapse module's Python tests (packaging/synapse/tests,
# standard library only), then the package test (packaging/test-packages.sh: builds the
# static binary, the .deb and the .rpm, installs the .deb on this machine, runs it and
# purges it; it installs its own tools).
# Needs a Rust toolchain (rustup) and a C compiler for ring; run it as root or with sudo
# available so apt can install.
#
# Environment:
#   CARGO_TARGET_DIR     build directory (default /var/tmp/mxisd-target, reused between runs)
#   MXISD_TEST_PACKAGES  0 skips the package test (it changes the machine; it is said so)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, as "command:package" (the LDAP and SQL tests start
# their own throwaway slapd and PostgreSQL; the system services are never used).
NEEDED=(
  "kill:procps"
  "cc:gcc"
  "slapd:slapd"
  "slapadd:slapd"
  "ldapsearch:ldap-utils"
  "ldapmodify:ldap-utils"
  "runuser:util-linux"
  "setpriv:util-linux"
  "caddy:caddy"
  "nginx:nginx"
  "python3:python3"
)

missing=()
for entry in "${NEEDED[@]}"; do
  cmd=${entry%%:*}
  pkg=${entry#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
done
# PostgreSQL's server binaries are not on PATH.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=("postgresql")
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "tests/run.sh: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --all-targets "$@" 2>&1 | tee "$log" || status=$?

# The Synapse password module (packaging/synapse): Python's unittest, no Synapse needed.
# Each test counts in the closing line.
py_passed=0
py_failed=0
if ! command -v python3 >/dev/null 2>&1; then
  echo "tests/run.sh: python3 not found; install python3 (apt-get install python3) to run the Synapse module's tests" >&2
  py_failed=1
  status=1
else
  py_log=$(mktemp)
  py_status=0
  python3 -B -m unittest discover -s packaging/synapse/tests -v 2>&1 | tee "$py_log" || py_status=$?
  py_passed=$(grep -cE ' \.\.\. ok$' "$py_log" || true)
  py_failed=$(grep -cE '^(FAIL|ERROR): ' "$py_log" || true)
  rm -f "$py_log"
  if [ "$py_status" -ne 0 ]; then
    echo "tests/run.sh: the Synapse module's tests FAILED" >&2
    [ "$py_failed" -gt 0 ] || py_failed=1
    status=1
  fi
fi

# The package test counts as one test in the closing line, with the Python tests.
extra_passed=$py_passed
extra_failed=$py_failed
if [ "${MXISD_TEST_PACKAGES:-1}" = "0" ]; then
  echo "tests/run.sh: package test SKIPPED (MXISD_TEST_PACKAGES=0)" >&2
elif packaging/test-packages.sh; then
  extra_passed=$((extra_passed + 1))
else
  echo "tests/run.sh: the package test FAILED" >&2
  extra_failed=$((extra_failed + 1))
  status=1
fi

# One closing line for the whole run, summed over every test binary.
awk -v p="$extra_passed" -v f="$extra_failed" \
  '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "mxisd: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
