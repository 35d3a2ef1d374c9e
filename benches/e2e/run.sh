#!/usr/bin/env bash
# End-to-end benchmark: `poisongate check` on a seeded ROWS x 20-column Parquet batch, timed
# side by side with polars reading the same file, plus peak RSS of both. `check` is timed twice:
# with every detector (the defaults) and with schema and drift checks only (a policy that
# allows every row-level code, which skips the row pass).
#
#   ROWS=10000000 bash benches/e2e/run.sh      # default 10M rows; REPEAT=3 runs each
#   ROWS=100000000 REPEAT=1 SKIP_READ=1 bash benches/e2e/run.sh   # scaling: 100M rows, no polars read
#
# Data: ../shared/bench/peers/gen.py (14 numeric columns with ~1% nulls, 6 categorical of
# cardinality 2-1000, an int label; seeded). The baseline is pinned from reference.parquet (and
# that `profile` is timed too) and current.parquet is checked. The page cache is warmed first so
# both sides read from memory.
set -euo pipefail
ROWS=${ROWS:-10000000}
REPEAT=${REPEAT:-3}
source "$(dirname "$0")/common.sh"

# The baseline is pinned by the binary under test, timed once (reference.parquet has as many
# rows as current.parquet up to 10M; above, the 10M reference is reused).
cat "$DIR/reference.parquet" > /dev/null
prof=$(mktemp)
/usr/bin/time -f "%e %M" -o "$prof" \
  "$BIN" profile "$DIR/reference.parquet" -o "$DIR/baseline.json" --label label --seed 1 > /dev/null
profile_s=$(cut -d' ' -f1 "$prof"); profile_rss=$(cut -d' ' -f2 "$prof"); rm -f "$prof"
cat "$DIR/current.parquet" > /dev/null

read_py='import sys, time, polars as pl
t = time.perf_counter(); df = pl.read_parquet(sys.argv[1]); dt = time.perf_counter() - t
print(f"{dt:.3f} {df.height} {df.width}")'

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Every row-level code, from the registry (`explain --list`), so that a new detector is not
# left running in the "schema + drift only" timing.
for code in drift-class-conditional $("$BIN" explain --list | awk '$1 ~ /^poison-/ {print $1}'); do
  printf '[checks.%s]\nlevel = "allow"\n' "$code"
done > "$tmp/drift-only.toml"
grep -q poison-stitched-rows "$tmp/drift-only.toml" || { echo "explain --list lists no row-level codes" >&2; exit 1; }
read_s=(); read_rss=(); check_s=(); check_rss=(); drift_s=(); drift_rss=()
for i in $(seq "$REPEAT"); do
  if [ "${SKIP_READ:-0}" = 1 ]; then
    # At 100M rows polars' in-memory read needs about 17 GiB; the scaling run skips it.
    read_s+=(nan); read_rss+=(1)
  else
    /usr/bin/time -f "%M" -o "$tmp/rss" "$VENV/bin/python" -c "$read_py" "$DIR/current.parquet" > "$tmp/read"
    read_s+=("$(cut -d' ' -f1 "$tmp/read")"); read_rss+=("$(cat "$tmp/rss")")
  fi
  set +e
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$BIN" check --baseline "$DIR/baseline.json" \
    "$DIR/current.parquet" --json "$tmp/report.json" > /dev/null
  rc=$?
  set -e
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then echo "check failed with exit $rc" >&2; exit 1; fi
  check_s+=("$(tail -1 "$tmp/time" | cut -d' ' -f1)"); check_rss+=("$(tail -1 "$tmp/time" | cut -d' ' -f2)")
  set +e
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$BIN" check --baseline "$DIR/baseline.json" \
    "$DIR/current.parquet" --policy "$tmp/drift-only.toml" > /dev/null
  rc=$?
  set -e
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then echo "drift-only check failed with exit $rc" >&2; exit 1; fi
  drift_s+=("$(tail -1 "$tmp/time" | cut -d' ' -f1)"); drift_rss+=("$(tail -1 "$tmp/time" | cut -d' ' -f2)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
r=$(median "${read_s[@]}"); c=$(median "${check_s[@]}")
rr=$(median "${read_rss[@]}"); cr=$(median "${check_rss[@]}")
verdict=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['verdict'], ','.join(sorted({f['subject'].get('column','') for f in r['findings'] if f['severity']=='deny'})))" "$tmp/report.json")
echo "rows=$ROWS file=$(du -h "$DIR/current.parquet" | cut -f1) repeat=$REPEAT"
# The read swings from run to run on this kind of machine (page cache, CPU contention): its
# range is printed so that a ratio is read against it.
rmin=$(printf '%s\n' "${read_s[@]}" | sort -g | head -1); rmax=$(printf '%s\n' "${read_s[@]}" | sort -g | tail -1)
echo "polars read (in-process, median): ${r} s (range ${rmin}-${rmax} s), peak RSS $((rr / 1024)) MiB"
d=$(median "${drift_s[@]}"); dr=$(median "${drift_rss[@]}")
echo "poisongate check, every detector (whole process, median): ${c} s, peak RSS $((cr / 1024)) MiB"
echo "poisongate check, schema + drift only (median): ${d} s, peak RSS $((dr / 1024)) MiB"
python3 -c "print(f'every detector / read = {float(\"$c\") / float(\"$r\"):.2f}x (target 2.5x), RSS ratio = {$cr / $rr:.2f}x')"
python3 -c "print(f'every detector / schema + drift = {float(\"$c\") / float(\"$d\"):.2f}x (target 1.7x)')"
python3 -c "print(f'schema + drift / read = {float(\"$d\") / float(\"$r\"):.2f}x (target 1.5x), RSS ratio = {$dr / $rr:.2f}x')"
echo "poisongate profile of reference.parquet, with the reference model (one run): ${profile_s} s, peak RSS $((profile_rss / 1024)) MiB"
python3 -c "print(f'profile / read = {float(\"$profile_s\") / float(\"$r\"):.2f}x (target 4x)')" 2>/dev/null || true
echo "verdict: $verdict"
