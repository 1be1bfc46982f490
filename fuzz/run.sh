#!/usr/bin/env bash
# Runs each fuzz target (libFuzzer, through cargo-fuzz) for a bounded time; not in CI.
#
#   fuzz/run.sh                      every target, 600 s each
#   SECONDS_EACH=60 fuzz/run.sh x_matrix config
#   JOBS=2 fuzz/run.sh               two targets at a time
#
# Needs the nightly toolchain (rustup toolchain install nightly) and cargo-fuzz
# (cargo +nightly install cargo-fuzz). Prints, per target, the runs done and whether it
# found a crash; a crash's input is left in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${SECONDS_EACH:-600}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/mxisd-fuzz-target}"
command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz not found: cargo +nightly install cargo-fuzz" >&2; exit 1; }
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
# One build of every target; the runs below reuse it.
cargo +nightly fuzz build
# JOBS targets at a time (default 1; each libFuzzer run uses one core).
JOBS="${JOBS:-1}"
results=$(mktemp -d)
run_one() {
  local t=$1 log="$results/$1.log" verdict
  mkdir -p "corpus/$t"
  if cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -print_final_stats=1 >"$log" 2>&1; then
    verdict="no crash"
  else
    verdict="CRASH (see fuzz/artifacts/$t)"
  fi
  runs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log" | tail -1)
  printf '  %-16s %12s runs in %s s   %s\n' "$t" "${runs:-?}" "$SECONDS_EACH" "$verdict" > "$results/$t.line"
  [ "$verdict" = "no crash" ] || tail -30 "$log" >> "$results/$t.line"
}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
  run_one "$t" &
done
wait
status=0
for t in "${targets[@]}"; do
  cat "$results/$t.line"
  grep -q "no crash" "$results/$t.line" || status=1
done
rm -rf "$results"
exit "$status"
