#!/usr/bin/env bash
# Runs pipelines/dvc/dvc.yaml for real with `dvc repro`, in temporary git repositories over the
# bundled data, and checks what a pipeline owner relies on:
#   1. a clean batch runs every stage: a model is trained and promoted (exit 0);
#   2. the same repository with a poisoned batch swapped in: `dvc repro` fails at the gate, no
#      later stage runs, and the model and promotion of the earlier run are gone;
#   3. a poisoned batch from the start: `dvc repro` fails, no model;
#   4. a batch swapped after the gate passed (only `train` rerun): training refuses it, because
#      the gate's signed verdict does not name its digest, and no model is left;
#   5. a dvc.yaml with a misspelled field is refused.
#
#   bash pipelines/dvc/run_local.sh [BIN]      (BIN defaults to target/debug/poisongate)
#
# dvc is installed on first use into target/dvc-venv from pipelines/requirements-dvc.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(realpath "${1:-target/debug/poisongate}")
venv=${POISONGATE_DVC_VENV:-target/dvc-venv}
if [ ! -x "$venv/bin/dvc" ]; then
  echo "installing dvc into $venv (pipelines/requirements-dvc.txt)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r pipelines/requirements-dvc.txt
fi
dvc=$(realpath "$venv/bin/dvc")
export DVC_NO_ANALYTICS=1 GIT_AUTHOR_NAME=ci GIT_AUTHOR_EMAIL=ci@example.invalid
export GIT_COMMITTER_NAME=ci GIT_COMMITTER_EMAIL=ci@example.invalid
bindir=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$bindir" "$work"' EXIT
ln -s "$BIN" "$bindir/poisongate"
export PATH="$bindir:$PATH"
root=$PWD

fail() { echo "run_local.sh: $*" >&2; exit 1; }

# A repository laid out as dvc.yaml expects, with BATCH as the batch.
repo() {
  local dir=$1 batch=$2
  mkdir -p "$dir"/{baseline,data,eval,keys}
  cp "$root"/pipelines/dvc/{dvc.yaml,train.py,promote.py} "$dir/"
  cp "$work/gate.pem" "$work/gate.pub" "$dir/keys/"
  cp "$work/baseline.json" "$work/baseline.json.sha256" "$dir/baseline/"
  cp "$root/$batch" "$dir/data/batch.parquet"
  cp "$root/testdata/compare/clean.parquet" "$dir/eval/predictions.parquet"
  (cd "$dir" && git init -q && "$dvc" init -q && "$dvc" config core.analytics false)
}

repro() { (cd "$1" && "$dvc" repro > repro.log 2>&1); }

poisongate profile testdata/trusted/applications.parquet -o "$work/baseline.json" \
  --label defaulted --id application_id > /dev/null
# The gate's signing key (a secret in real use).
openssl ecparam -name prime256v1 -genkey -noout -out "$work/gate.pem"
openssl ec -in "$work/gate.pem" -pubout -out "$work/gate.pub" 2> /dev/null

# 1. Clean: every stage runs.
repo "$work/a" testdata/clean/batch.parquet
repro "$work/a" || { cat "$work/a/repro.log"; fail "a clean batch failed dvc repro"; }
test -f "$work/a/model/model.json" || fail "a clean batch trained no model"
test -f "$work/a/promoted.json" || fail "a clean batch was not promoted"
echo "ok: dvc repro, clean batch: gate passed, model trained and promoted"

# 2. The same repository, poisoned batch swapped in: stops at the gate, nothing stale left.
cp testdata/poison/trigger_channel.parquet "$work/a/data/batch.parquet"
if repro "$work/a"; then fail "a poisoned batch passed dvc repro"; fi
grep -q "failed to reproduce 'gate'" "$work/a/repro.log" || { cat "$work/a/repro.log"; fail "dvc repro did not stop at the gate"; }
test ! -e "$work/a/model" || fail "a model is left after a blocked batch"
test ! -e "$work/a/promoted.json" || fail "a promotion is left after a blocked batch"
grep -q '"verdict": "blocked"' "$work/a/reports/gate.json" || fail "the gate report does not say blocked"
echo "ok: dvc repro, poisoned batch after a clean run: stopped at the gate, earlier model and promotion removed"

# 3. Poisoned from the start.
repo "$work/b" testdata/poison/trigger_channel.parquet
if repro "$work/b"; then fail "a poisoned batch passed dvc repro"; fi
test ! -e "$work/b/model" || fail "a model was trained on a poisoned batch"
echo "ok: dvc repro, poisoned batch: stopped at the gate, no model"

# 4. A clean run, then the batch swapped and only `train` rerun (as if written to between the
#    stages): the signed verdict does not name the new bytes, so training refuses them.
repo "$work/d" testdata/clean/batch.parquet
repro "$work/d" || { cat "$work/d/repro.log"; fail "a clean batch failed dvc repro"; }
cp testdata/poison/trigger_channel.parquet "$work/d/data/batch.parquet"
if (cd "$work/d" && "$dvc" repro --single-item train > repro.log 2>&1); then
  fail "training accepted a batch swapped after the gate"
fi
grep -q "is not a batch the gate passed" "$work/d/repro.log" || { cat "$work/d/repro.log"; fail "train did not refuse the swapped batch"; }
grep -q "FAILED: sha256" "$work/d/repro.log" || { cat "$work/d/repro.log"; fail "verify --attestation did not name the file"; }
test ! -e "$work/d/model/model.json" || fail "a model was trained on a swapped batch"
echo "ok: dvc repro, batch swapped after the gate: training refused it (not in the signed verdict), no model"

# 5. A misspelled field is refused.
repo "$work/c" testdata/clean/batch.parquet
sed -i '0,/    deps:/s//    dep:/' "$work/c/dvc.yaml"
if (cd "$work/c" && "$dvc" stage list > stage.log 2>&1); then fail "dvc accepted a misspelled field"; fi
grep -q "extra keys not allowed" "$work/c/stage.log" || { cat "$work/c/stage.log"; fail "unexpected dvc error"; }
echo "ok: dvc refuses a dvc.yaml with a misspelled field"
