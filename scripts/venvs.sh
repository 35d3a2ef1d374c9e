#!/usr/bin/env bash
# Installs every Python environment the full test suite uses, each from its pinned
# requirements file, into the same directory (and under the same override variable) as the
# script that uses it. Each of those scripts still installs its own on first use; this one
# lets scripts/test.sh install them all while `cargo test` compiles, instead of one by one
# after it. A venv whose requirements file is unchanged since it was installed is skipped.
#
#   bash scripts/venvs.sh            (every environment, one after another)
set -euo pipefail
cd "$(dirname "$0")/.."

# directory | requirements file
envs=(
  "${POISONGATE_MOTO_VENV:-target/moto-venv}|scripts/requirements-s3.txt"
  "${POISONGATE_OIP_VENV:-target/oip-venv}|scripts/oip/requirements.txt"
  "${POISONGATE_SPARK_VENV:-target/spark-venv}|python/poisongate_spark/requirements-test.txt"
  "${POISONGATE_VALIDATORS_VENV:-target/validators-venv}|pipelines/requirements.txt"
  "${POISONGATE_KFP_VENV:-target/kfp-venv}|pipelines/requirements-kfp.txt"
  "${POISONGATE_DVC_VENV:-target/dvc-venv}|pipelines/requirements-dvc.txt"
  "${POISONGATE_MODELSIGN_VENV:-target/modelsign-venv}|scripts/requirements-modelsign.txt"
)
mkdir -p target
for entry in "${envs[@]}"; do
  dir=${entry%%|*} reqs=${entry#*|}
  stamp="$dir/.poisongate-requirements.sha256"
  want=$(sha256sum "$reqs" | cut -d' ' -f1)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    continue
  fi
  start=$(date +%s)
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$reqs"
  echo "$want" > "$stamp"
  echo "venv: $dir from $reqs in $(( $(date +%s) - start )) s"
done
