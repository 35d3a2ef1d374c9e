#!/usr/bin/env bash
# `poisongate compare` beside the same tests written with statsmodels, scipy, scikit-learn and
# pandas (compare_peer.py), on one seeded file of ROWS scored rows: wall time and peak RSS.
#
#   ROWS=1000000 bash benches/e2e/compare.sh
#
# Needs a venv with benches/eval/requirements.txt (BENCH_EVAL_VENV, default /tmp/pgvenv).
set -euo pipefail
ROWS=${ROWS:-1000000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${BENCH_EVAL_VENV:-/tmp/pgvenv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$ROOT/benches/eval/requirements.txt"
fi
DIR=${BENCH_DATA:-/tmp/poisongate-bench}/compare-n$ROWS
[ -f "$DIR/scored.parquet" ] || "$VENV/bin/python" "$ROOT/benches/e2e/compare_peer.py" gen --rows "$ROWS" --out "$DIR"
(cd "$ROOT" && cargo build --release --quiet --bin poisongate)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/poisongate"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat "$DIR/scored.parquet" > /dev/null
set +e
/usr/bin/time -f "%e %M" -o "$tmp/pg.time" "$BIN" compare "$DIR/scored.parquet" \
  --label y --before-col pred_before --after-col pred_after --before-score score_before \
  --after-score score_after --segment seg --segment x --json "$tmp/report.json" > /dev/null
echo "poisongate exit $?"
set -e
/usr/bin/time -f "%e %M" -o "$tmp/py.time" "$VENV/bin/python" "$ROOT/benches/e2e/compare_peer.py" run --data "$DIR" > "$tmp/py.out"
read -r pt pk < <(tail -1 "$tmp/pg.time")
read -r st sk < <(tail -1 "$tmp/py.time")
echo "rows=$ROWS"
printf 'poisongate compare:           %6.2f s  %7.0f MiB\n' "$pt" "$((pk / 1024))"
printf 'statsmodels/scipy/sklearn:    %6.2f s  %7.0f MiB\n' "$st" "$((sk / 1024))"
python3 -c "print(f'ratio: {float($st)/float($pt):.1f}x faster, {$sk/$pk:.1f}x less memory')"
