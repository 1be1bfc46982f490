#!/usr/bin/env bash
# Builds the statically linked x86_64 Linux binary of mxisd and checks it:
#   - nothing in the dependency tree links OpenSSL (TLS is rustls everywhere);
#   - `file` and `ldd` see a static executable (no dynamic loader, no libc.so).
# glibc is linked statically (-C target-feature=+crt-static); the binary never calls
# getaddrinfo (names are resolved by hickory, see src/dns.rs), so it loads no NSS modules.
#
# Output: $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/mxisd (its path is the last
# line printed). Needs the Rust toolchain, gcc (ring and SQLite's C code), libc6-dev
# (static glibc) and `file`.
#
# Environment:
#   CARGO_TARGET_DIR  build directory (default /var/tmp/mxisd-target, shared with the tests)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

fail() {
  echo "build-static.sh: $*" >&2
  exit 1
}

for tool in cargo file ldd; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing"
done

# No OpenSSL anywhere in what the binary is built from.
tree=$(cargo tree --locked --target "$TARGET" --edges normal,build --prefix none)
if grep -Eiq '^(openssl|openssl-sys|native-tls) ' <<<"$tree"; then
  grep -Ei '^(openssl|openssl-sys|native-tls) ' <<<"$tree" | sort -u >&2
  fail "a dependency pulls in OpenSSL or native-tls"
fi

# RUSTFLAGS applies to the target's crates only (build scripts and proc macros stay
# dynamic host programs), because --target is given.
started=$(date +%s)
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --locked --release --target "$TARGET" --bin mxisd
bin="$CARGO_TARGET_DIR/$TARGET/release/mxisd"
[ -x "$bin" ] || fail "$bin was not built"

what=$(file -b "$bin")
case "$what" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) fail "$bin is not static: $what" ;;
esac
# ldd exits non-zero for a static executable; its message differs between versions.
if ldd_out=$(ldd "$bin" 2>&1); then
  if ! grep -Eq 'statically linked|not a dynamic executable' <<<"$ldd_out"; then
    fail "ldd lists shared libraries for $bin: $ldd_out"
  fi
fi
if grep -Eq '=>' <<<"$ldd_out"; then
  fail "ldd lists shared libraries for $bin: $ldd_out"
fi
"$bin" --version >/dev/null || fail "$bin does not run"

size=$(stat -c %s "$bin")
echo "build-static.sh: $what" >&2
echo "build-static.sh: $((size / 1024)) KiB, built in $(($(date +%s) - started)) s" >&2
echo "$bin"
