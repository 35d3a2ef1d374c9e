#!/usr/bin/env bash
# The gate end to end on the bundled data: pin a baseline from trusted data, then gate a clean
# batch (exit 0), a mildly drifted one (exit 0, warnings allowed), a drifted one (exit 1) and a
# poisoned one: 1% of rows carry a backdoor trigger value with a fixed label (exit 1, quarantine).
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin poisongate || exit 2
BIN=${CARGO_TARGET_DIR:-target}/debug/poisongate
out=${DEMO_OUT:-target/demo}
mkdir -p "$out"
run() { echo "\$ poisongate $*"; "$BIN" "$@"; echo "(exit $?)"; echo; }
run profile testdata/trusted/applications.parquet -o "$out/baseline.json" --label defaulted --id application_id
# Pin the baseline by the digest `profile` wrote beside it: an unpinned baseline is a warning.
pin=(--baseline "$out/baseline.json" --expect-baseline-sha256 "$(cut -d' ' -f1 "$out/baseline.json.sha256")")
run check "${pin[@]}" testdata/clean/batch.parquet
run check "${pin[@]}" testdata/mild/batch.parquet
run check "${pin[@]}" testdata/drifted/batch.parquet --json "$out/report.json"
run check "${pin[@]}" testdata/poison/trigger_channel.parquet --quarantine "$out/quarantine.csv"
# A retrained model against the serving one, on the same evaluation rows: a clean retrain
# passes; a retrain whose training data carried a backdoor on channel == "partner" is blocked.
cmp=(--key application_id --label defaulted --before-col pred_before --after-col pred_after
     --before-score score_before --after-score score_after --segment channel --segment region)
run compare testdata/compare/clean.parquet "${cmp[@]}"
run compare testdata/compare/backdoor.parquet "${cmp[@]}" --json "$out/compare.json"
echo "JSON report: $out/report.json"
echo "compare report: $out/compare.json"
echo "quarantine:  $out/quarantine.csv ($(($(wc -l < "$out/quarantine.csv") - 1)) rows)"
