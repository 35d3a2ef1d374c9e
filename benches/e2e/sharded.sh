#!/usr/bin/env bash
# Sharded check against plain check on the same batch: the seeded current file of gen.py split
# into 8 Parquet files (once), then
#   plain:   poisongate check --baseline B part-*.parquet
#   sharded: poisongate plan; 8 x poisongate summarize (2 at a time); poisongate merge; check --summaries
# Reports the wall time and peak RSS of each step and asserts the two JSON reports are
# byte-identical.
#
#   ROWS=10000000 bash benches/e2e/sharded.sh
#   ROWS=100000000 UNIT_ROWS=12500000 bash benches/e2e/sharded.sh   # one file, row-range units
set -euo pipefail
ROWS=${ROWS:-10000000}
SHARDS=${SHARDS:-8}
source "$(dirname "$0")/common.sh"

if [ ! -f "$DIR/baseline.json" ]; then
  "$BIN" profile "$DIR/reference.parquet" -o "$DIR/baseline.json" --label label --seed 1 >&2
fi
parts="$DIR/parts$SHARDS"
plan_args=()
if [ -n "${UNIT_ROWS:-}" ]; then
  # One file, cut by `plan --unit-rows` instead of being split into files.
  parts="$DIR/single"
  mkdir -p "$parts"
  ln -sf ../current.parquet "$parts/part-0.parquet"
  plan_args=(--unit-rows "$UNIT_ROWS")
elif [ ! -f "$parts/part-0.parquet" ]; then
  mkdir -p "$parts"
  "$VENV/bin/python" - "$DIR/current.parquet" "$parts" "$SHARDS" <<'PY'
import sys, polars as pl
df = pl.read_parquet(sys.argv[1]); k = int(sys.argv[3]); n = df.height
for i in range(k):
    df.slice(i * n // k, (i + 1) * n // k - i * n // k).write_parquet(f"{sys.argv[2]}/part-{i}.parquet")
PY
fi
cat "$parts"/*.parquet > /dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
files=$(ls "$parts"/part-*.parquet | sort -V)
timed() { # label, command...
  local label=$1; shift
  set +e
  /usr/bin/time -f "%e %M" -o "$tmp/t" "$@" > /dev/null
  local rc=$?
  set -e
  if [ "$rc" -gt 1 ]; then echo "$label failed with exit $rc" >&2; exit 1; fi
  read -r s kib < <(tail -1 "$tmp/t")
  printf '%-34s %7s s  %6s MiB\n' "$label" "$s" "$((kib / 1024))"
}
# shellcheck disable=SC2086
timed "check (one process)" "$BIN" check --baseline "$DIR/baseline.json" $files --json "$tmp/plain.json"
start=$(date +%s.%N)
# shellcheck disable=SC2086
timed "plan" "$BIN" plan $files "${plan_args[@]}" -o "$tmp/manifest.json"
echo "units: $(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['units']))" "$tmp/manifest.json")"
export BIN DIR tmp SHARDS
seq 0 $((SHARDS - 1)) | xargs -P 2 -I{} bash -c \
  '/usr/bin/time -f "%e %M" -o "$tmp/s{}" "$BIN" summarize --baseline "$DIR/baseline.json" --manifest "$tmp/manifest.json" --shard {}/$SHARDS -o "$tmp/part{}" > /dev/null'
max_rss=0; sum_s=0
for i in $(seq 0 $((SHARDS - 1))); do
  read -r s kib < <(tail -1 "$tmp/s$i")
  sum_s=$(python3 -c "print($sum_s + $s)"); [ "$kib" -gt "$max_rss" ] && max_rss=$kib
done
printf '%-34s %7s s  %6s MiB (largest)\n' "summarize x$SHARDS (CPU-seconds, sum)" "$sum_s" "$((max_rss / 1024))"
timed "merge" "$BIN" merge "$tmp"/part* -o "$tmp/merged"
timed "check --summaries" "$BIN" check --baseline "$DIR/baseline.json" --summaries "$tmp/merged" --json "$tmp/sharded.json"
end=$(date +%s.%N)
printf '%-34s %7.2f s\n' "sharded, wall (2 summarize at a time)" "$(python3 -c "print($end - $start)")"
echo "part sizes: $(du -ch "$tmp"/part[0-9]* | tail -1 | cut -f1) total, merged $(du -h "$tmp/merged" | cut -f1)"
if cmp -s "$tmp/plain.json" "$tmp/sharded.json"; then
  echo "reports: byte-identical"
else
  echo "reports DIFFER" >&2; diff <(python3 -m json.tool "$tmp/plain.json") <(python3 -m json.tool "$tmp/sharded.json") | head -20 >&2; exit 1
fi
