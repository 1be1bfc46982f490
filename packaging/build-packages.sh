#!/usr/bin/env bash
# Builds the static binary (packaging/build-static.sh) and from it the Debian and RPM
# packages, with cargo-deb and cargo-generate-rpm (`cargo install --locked cargo-deb
# cargo-generate-rpm`; packaging/test-packages.sh installs the pinned versions).
# Prints the paths of the .deb and the .rpm, one a line.
#
# Environment:
#   CARGO_TARGET_DIR  build directory (default /var/tmp/mxisd-target)
#   PACKAGE_DIR       where the packages go (default $CARGO_TARGET_DIR/packages)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
PACKAGE_DIR="${PACKAGE_DIR:-$CARGO_TARGET_DIR/packages}"

for sub in deb generate-rpm; do
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    echo "build-packages.sh: cargo $sub is missing (cargo install --locked cargo-$sub)" >&2
    exit 1
  fi
done

packaging/build-static.sh >/dev/null
rm -rf "$PACKAGE_DIR"
mkdir -p "$PACKAGE_DIR"
# Both take the binary that build-static.sh made (their `target/release/` asset paths
# mean $CARGO_TARGET_DIR/$TARGET/release/ with --target).
cargo deb --locked --no-build --target "$TARGET" --output "$PACKAGE_DIR/" >&2
cargo generate-rpm --target "$TARGET" --output "$PACKAGE_DIR/" >&2
deb=$(find "$PACKAGE_DIR" -maxdepth 1 -name '*.deb' | head -n 1)
rpm=$(find "$PACKAGE_DIR" -maxdepth 1 -name '*.rpm' | head -n 1)
if [ -z "$deb" ] || [ -z "$rpm" ]; then
  echo "build-packages.sh: a package is missing in $PACKAGE_DIR" >&2
  exit 1
fi
echo "$deb"
echo "$rpm"
