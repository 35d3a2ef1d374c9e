# Shared set-up of the end-to-end benchmarks (sourced, not run): a venv with the generator's and
# the peers' packages, the seeded data of ../shared/bench/peers/gen.py at $ROWS rows in $DIR, and
# a release build of poisongate in $BIN.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DATA=${BENCH_DATA:-/tmp/poisongate-bench}
VENV=${BENCH_VENV:-/tmp/poisongate-bench-venv}
PEERS=${PEERS_DIR:-$ROOT/../shared/bench/peers}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy==2.4.6 pyarrow==26.0.1 polars==2.1.0 scipy==1.17.1
fi
DIR="$DATA/n$ROWS"
if [ ! -f "$DIR/current.parquet" ]; then
  if [ "$ROWS" -gt 10000000 ]; then
    # gen.py holds whole tables in memory (100M rows would not fit): above 10M rows the
    # current file is written 10M rows at a time by big.py, and the 10M reference is reused.
    if [ $((ROWS % 10000000)) -ne 0 ]; then echo "ROWS above 10M must be a multiple of 10M" >&2; exit 2; fi
    [ -f "$DATA/n10000000/reference.parquet" ] || "$VENV/bin/python" "$PEERS/gen.py" --rows 10000000 --out "$DATA" >&2
    mkdir -p "$DIR"
    ln -sf ../n10000000/reference.parquet "$DIR/reference.parquet"
    "$VENV/bin/python" "$ROOT/benches/e2e/big.py" --peers "$PEERS" --chunks $((ROWS / 10000000)) --out "$DIR/current.parquet" >&2
  else
    "$VENV/bin/python" "$PEERS/gen.py" --rows "$ROWS" --out "$DATA" >&2
  fi
fi
(cd "$ROOT" && cargo build --release --quiet --bin poisongate)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/poisongate"
