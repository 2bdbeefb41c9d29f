#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20) over its corpus in fuzz/corpus. New inputs go
# to a scratch directory, never into the repository; a crash fails the run and its input is in
# fuzz/artifacts/<target>/. For long runs: tests/fuzz.sh 3600 (then `cargo fuzz cmin` to fold
# what was found back into fuzz/corpus).
#
# Short runs (up to 60 s a target, the CI smoke run) build unoptimised and without a sanitizer
# (Rust code, `unsafe_code = "forbid"`: a fuzz failure is a panic, which libFuzzer reports
# either way) to keep the build to a few minutes; longer runs build optimised. Set
# FUZZ_SANITIZER=address for AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-20}
if [ "$seconds" -le 60 ]; then
  profile=--dev
  sanitizer=${FUZZ_SANITIZER:-none}
else
  profile=--release
  sanitizer=${FUZZ_SANITIZER:-address}
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cargo +nightly fuzz build "$profile" --sanitizer "$sanitizer" >/dev/null
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$scratch/$target"
  echo "--> $target (${seconds}s)"
  log="$scratch/$target.log"
  if ! cargo +nightly fuzz run "$profile" --sanitizer "$sanitizer" "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed: see fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^stat::number_of_executed_units" "$log" || true
done
