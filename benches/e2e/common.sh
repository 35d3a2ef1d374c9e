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
  "$VENV/bin/python" "$PEERS/gen.py" --rows "$ROWS" --out "$DATA" >&2
fi
(cd "$ROOT" && cargo build --release --quiet --bin poisongate)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/poisongate"
