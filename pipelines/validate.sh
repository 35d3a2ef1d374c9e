#!/usr/bin/env bash
# Validates pipelines/ offline and runs its sharded-check definitions with the real binary.
#
#   bash pipelines/validate.sh [BIN]      (BIN defaults to target/debug/poisongate)
#
# - Kubernetes kinds: kubernetes-validate --strict (bundled schemas; unknown fields fail).
# - Argo WorkflowTemplates: check-jsonschema against ../shared/crd-schemas (or
#   $POISONGATE_CRD_SCHEMAS), whose schemas reject unknown fields.
# - pipelines/run_local.py: every container's args, expanded as the engine would, run in the
#   engine's order on a clean and an attacked batch; the reports must equal plain `check`'s.
# The validators are installed on first use into target/validators-venv from
# pipelines/requirements.txt (PyPI only).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/poisongate}
venv=${POISONGATE_VALIDATORS_VENV:-target/validators-venv}
schemas=${POISONGATE_CRD_SCHEMAS:-../shared/crd-schemas}
if [ ! -x "$venv/bin/check-jsonschema" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "installing the validators into $venv (pipelines/requirements.txt)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r pipelines/requirements.txt
fi
test -d "$schemas" || { echo "validate.sh: no CRD schemas at $schemas (set POISONGATE_CRD_SCHEMAS)"; exit 2; }

shopt -s nullglob
for f in pipelines/kubernetes/*.yaml; do
  "$venv/bin/kubernetes-validate" --strict --quiet "$f"
  echo "ok: kubernetes-validate --strict $f"
done
# KServe InferenceServices and the Istio JWT check in front of them (compare --before-endpoint).
for f in pipelines/kserve/*-job.yaml; do
  "$venv/bin/kubernetes-validate" --strict --quiet "$f"
  echo "ok: kubernetes-validate --strict $f"
done
for f in pipelines/kserve/inferenceservice-*.yaml; do
  "$venv/bin/check-jsonschema" --schemafile "$schemas/serving.kserve.io/inferenceservice_v1beta1.json" "$f"
done
"$venv/bin/check-jsonschema" --schemafile "$schemas/security.istio.io/requestauthentication_v1.json" \
  pipelines/kserve/requestauthentication.yaml
"$venv/bin/check-jsonschema" --schemafile "$schemas/security.istio.io/authorizationpolicy_v1.json" \
  pipelines/kserve/authorizationpolicy.yaml
for f in pipelines/argo/*.yaml; do
  "$venv/bin/check-jsonschema" --schemafile "$schemas/argoproj.io/workflowtemplate_v1alpha1.json" "$f"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" profile testdata/trusted/applications.parquet -o "$tmp/baseline.json" \
  --label defaulted --id application_id > /dev/null
"$venv/bin/python" pipelines/run_local.py --bin "$BIN" --baseline "$tmp/baseline.json" \
  --data testdata/clean/shards --expect 0
"$venv/bin/python" pipelines/run_local.py --bin "$BIN" --baseline "$tmp/baseline.json" \
  --data testdata/poison/trigger_channel.parquet --shards 3 --expect 1
echo "pipelines/ validated."
