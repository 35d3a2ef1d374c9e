#!/usr/bin/env bash
# Builds the fuzz targets and runs each under libFuzzer for a bounded time.
#
#   bash fuzz/run.sh [SECONDS-PER-TARGET] [TARGET...]     (default: 60 s, every target)
#
# Coverage-guided on stable Rust: the targets link libFuzzer through `libfuzzer-sys`, and
# fuzz/sancov-rustc adds the SanitizerCoverage flags of `cargo fuzz build --sanitizer none`
# to poisongate and the targets (no nightly toolchain, no AddressSanitizer: the library
# forbids unsafe code). The decoders (polars) are not instrumented: their inputs are explored
# through the coverage of poisongate's own code and through the seeds' structure.
#
# One binary holds every target (poisongate::fuzzing::TARGETS); FUZZ_TARGET picks one. Each
# target starts from fuzz/seeds/TARGET (read-only) and keeps what it learns in
# target/fuzz/corpus/TARGET. An input that crashes, times out (-timeout, 20 s) or uses more
# than 2 GiB (-rss_limit_mb) lands in target/fuzz/crashes/TARGET/ and the script fails;
# copy it into fuzz/regressions/TARGET/ once fixed, where `cargo test` replays it.
#
# POISONGATE_FUZZ_SEED (default 1) fixes libFuzzer's mutation sequence: with the same code,
# seed and corpus a run is reproducible, and a run that executes fewer inputs explores a prefix
# of one that executes more, so a failure in CI reproduces with its seed and a longer local
# run covers CI's. Set it to 0 for a random seed when hunting. POISONGATE_FUZZ_WORK (default target/fuzz) holds the
# corpora, crashes and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for t in fuzz/seeds/*/; do targets+=("$(basename "$t")"); done
fi
T=${CARGO_TARGET_DIR:-target}
W=${POISONGATE_FUZZ_WORK:-$T/fuzz}
seed=${POISONGATE_FUZZ_SEED:-1}
RUSTC_WRAPPER="$PWD/fuzz/sancov-rustc" cargo build --locked -p poisongate-fuzz --bins
# Each target process keeps one scratch directory for the files it writes, in a static that
# is never dropped: point TMPDIR at a directory of this run and remove it at the end.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/poisongate-fuzz-run.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# The targets run POISONGATE_FUZZ_JOBS at a time (default: one per core); each is one
# single-threaded process with its own seed, corpus and log, so a target's run is the same
# whether it runs alone or beside another. The summary is printed in target order.
jobs=${POISONGATE_FUZZ_JOBS:-$(nproc)}
run_target() {
  local t=$1 corpus="$W/corpus/$1" crashes="$W/crashes/$1"
  mkdir -p "$corpus" "$crashes"
  rm -f "$W/$t.rc"
  set +e
  TMPDIR=$scratch FUZZ_TARGET=$t "$T/debug/poisongate-fuzz" "$corpus" "fuzz/seeds/$t" -max_total_time="$seconds" -seed="$seed" -timeout=20 \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -artifact_prefix="$crashes/" \
    -print_final_stats=1 > "$W/$t.log" 2>&1
  echo $? > "$W/$t.rc"
}
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$t" &
  running=$((running + 1))
done
wait
failed=()
for t in "${targets[@]}"; do
  log="$W/$t.log" corpus="$W/corpus/$t"
  rc=$(cat "$W/$t.rc" 2>/dev/null || echo "none")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  printf '%-14s %4ss %10s runs  %-12s corpus %5s  exit %s\n' "$t" "$seconds" "${runs:-?}" \
    "${cov:-cov: ?}" "$(find "$corpus" -type f | wc -l)" "$rc"
  if [ "$rc" != 0 ]; then
    failed+=("$t")
    grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" | head -5 || true
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAIL: ${failed[*]} (inputs in $W/crashes/, logs in $W/*.log; seed $seed)"
  exit 1
fi
