#!/usr/bin/env bash
# The gate end to end on the bundled data: pin a baseline from trusted data, then gate a clean
# batch (exit 0), a mildly drifted one (exit 0, warnings allowed) and a drifted one (exit 1).
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin poisongate || exit 2
BIN=${CARGO_TARGET_DIR:-target}/debug/poisongate
out=${DEMO_OUT:-target/demo}
mkdir -p "$out"
run() { echo "\$ poisongate $*"; "$BIN" "$@"; echo "(exit $?)"; echo; }
run profile testdata/trusted/applications.parquet -o "$out/baseline.json" --label defaulted --id application_id
run check --baseline "$out/baseline.json" testdata/clean/batch.parquet
run check --baseline "$out/baseline.json" testdata/mild/batch.parquet
run check --baseline "$out/baseline.json" testdata/drifted/batch.parquet --json "$out/report.json"
echo "JSON report: $out/report.json"
