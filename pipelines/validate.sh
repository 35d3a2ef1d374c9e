#!/usr/bin/env bash
# Validates pipelines/ offline and runs its sharded check and profile definitions with the real
# binary.
#
#   bash pipelines/validate.sh [BIN]      (BIN defaults to target/debug/poisongate)
#
# - Kubernetes kinds: kubernetes-validate --strict (bundled schemas; unknown fields fail).
# - Argo WorkflowTemplates: check-jsonschema against ../shared/crd-schemas (or
#   $POISONGATE_CRD_SCHEMAS), whose schemas reject unknown fields.
# - The image's Containerfile: hadolint.
# - GitHub Actions, GitLab CI: check-jsonschema's built-in schemas, actionlint, yamllint; DVC and
#   Kubeflow: run for real (pipelines/dvc/run_local.sh, pipelines/kubeflow/run_local.py). Each
#   validator also refuses one misspelled field.
# - pipelines/run_local.py: every container's args, expanded as the engine would, run in the
#   engine's order on a clean and an attacked batch; the reports must equal plain `check`'s,
#   and the sharded profile's baseline plain `profile`'s.
# The validators are installed on first use into target/validators-venv from
# pipelines/requirements.txt (PyPI only).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/poisongate}
venv=${POISONGATE_VALIDATORS_VENV:-target/validators-venv}
schemas=${POISONGATE_CRD_SCHEMAS:-../shared/crd-schemas}
if [ ! -x "$venv/bin/check-jsonschema" ] || [ ! -x "$venv/bin/kubernetes-validate" ] \
  || [ ! -x "$venv/bin/yamllint" ] || [ ! -x "$venv/bin/actionlint" ] || [ ! -x "$venv/bin/hadolint" ]; then
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
for f in pipelines/kserve/*-job.yaml pipelines/kserve/networkpolicy.yaml pipelines/kserve/rbac.yaml; do
  "$venv/bin/kubernetes-validate" --strict --quiet "$f"
  echo "ok: kubernetes-validate --strict $f"
done
for f in pipelines/kserve/inferenceservice-*.yaml; do
  "$venv/bin/check-jsonschema" --schemafile "$schemas/serving.kserve.io/inferenceservice_v1beta1.json" "$f"
done
"$venv/bin/check-jsonschema" --schemafile "$schemas/security.istio.io/requestauthentication_v1.json" \
  pipelines/kserve/requestauthentication.yaml
for f in pipelines/kserve/authorizationpolicy*.yaml; do
  "$venv/bin/check-jsonschema" --schemafile "$schemas/security.istio.io/authorizationpolicy_v1.json" "$f"
done
# The model bucket's policy: JSON, and every statement a Deny with a condition.
"$venv/bin/python" - pipelines/kserve/bucket-policy.json <<'PY'
import json, sys
statements = json.load(open(sys.argv[1]))["Statement"]
assert {s["Sid"] for s in statements} == {"DenyUnencryptedModelUploads", "DenyUploadsUnderAnotherKey", "DenyInsecureTransport"}
assert all(s["Effect"] == "Deny" and s["Condition"] for s in statements)
print(f"ok: {sys.argv[1]}: {len(statements)} deny statements")
PY
for f in pipelines/argo/*.yaml; do
  "$venv/bin/check-jsonschema" --schemafile "$schemas/argoproj.io/workflowtemplate_v1alpha1.json" "$f"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# CI systems: GitHub Actions (workflow and the gate's composite action) and GitLab CI, each
# with its schema and, for GitHub, actionlint (expressions, job graph, local action inputs).
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows pipelines/github/gated-training.yml
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-actions pipelines/github/action.yml
"$venv/bin/actionlint" pipelines/github/gated-training.yml
echo "ok: actionlint pipelines/github/gated-training.yml"
"$venv/bin/check-jsonschema" --builtin-schema vendor.gitlab-ci --data-transform gitlab-ci \
  pipelines/gitlab/gated-training.gitlab-ci.yml
# Tekton: no schema in ../shared/crd-schemas; the strict schemas are made from the vendored
# upstream CRDs (pipelines/tekton/crds) the way the shared ones were.
"$venv/bin/python" pipelines/tekton/crd2schema.py pipelines/tekton/crds/300-task.yaml v1 "$tmp/task.json"
"$venv/bin/python" pipelines/tekton/crd2schema.py pipelines/tekton/crds/300-pipeline.yaml v1 "$tmp/pipeline.json"
for f in pipelines/tekton/task-*.yaml; do
  "$venv/bin/check-jsonschema" --schemafile "$tmp/task.json" "$f"
done
"$venv/bin/check-jsonschema" --schemafile "$tmp/pipeline.json" pipelines/tekton/pipeline.yaml

# Every YAML file of pipelines/ but the vendored CRDs (long lines allowed for the in-cluster
# URLs of kserve/).
yamllint=(-s -d '{extends: default, ignore: [pipelines/tekton/crds/], rules: {document-start: disable, truthy: {check-keys: false}, line-length: {max: 130}}}')
"$venv/bin/yamllint" "${yamllint[@]}" pipelines
echo "ok: yamllint pipelines/"

# The image's Containerfile (pipelines/image/build.sh builds and runs it; .ci/run calls that).
# hadolint's default threshold fails on any finding, info included.
"$venv/bin/hadolint" --no-color pipelines/image/Containerfile
echo "ok: hadolint pipelines/image/Containerfile"

# One misspelled field per validator must fail it, for that reason: `refuses WHAT REASON CMD...`
# runs CMD, which must fail with REASON in its output.
refuses() {
  local what=$1 reason=$2; shift 2
  if "$@" > "$tmp/negative.log" 2>&1; then
    echo "validate.sh: $what accepted a misspelled field"; exit 1
  fi
  grep -qF "$reason" "$tmp/negative.log" || {
    cat "$tmp/negative.log"; echo "validate.sh: $what failed without saying: $reason"; exit 1
  }
  echo "ok: $what refuses it: $reason"
}
sed '0,/    runs-on:/s//    run-on:/' pipelines/github/gated-training.yml > "$tmp/gh.yml"
refuses "check-jsonschema (github-workflows)" "is not valid under any of the given schemas" \
  "$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows "$tmp/gh.yml"
refuses actionlint '"runs-on" section is missing' "$venv/bin/actionlint" "$tmp/gh.yml"
sed 's/inputs.batch }}/inputs.bach }}/' \
  pipelines/github/gated-training.yml > "$tmp/gh-expr.yml"
refuses "actionlint (expression)" 'property "bach" is not defined' \
  "$venv/bin/actionlint" "$tmp/gh-expr.yml"
sed 's/^runs:/run:/' pipelines/github/action.yml > "$tmp/action.yml"
refuses "check-jsonschema (github-actions)" "'run' was unexpected" \
  "$venv/bin/check-jsonschema" --builtin-schema vendor.github-actions "$tmp/action.yml"
sed '0,/  script:/s//  scripts:/' pipelines/gitlab/gated-training.gitlab-ci.yml > "$tmp/gl.yml"
refuses "check-jsonschema (gitlab-ci)" "'scripts' was unexpected" \
  "$venv/bin/check-jsonschema" --builtin-schema \
  vendor.gitlab-ci --data-transform gitlab-ci "$tmp/gl.yml"
printf 'stages:\n  gate:\n    cmd: true\n  gate:\n    cmd: false\n' > "$tmp/dup.yaml"
refuses yamllint "duplication of key" "$venv/bin/yamllint" "${yamllint[@]}" "$tmp/dup.yaml"
sed '0,/      restartPolicy:/s//      restartPolicyy:/' pipelines/kubernetes/sharded-check.yaml > "$tmp/k8s.yaml"
refuses "kubernetes-validate --strict" "'restartPolicyy' was unexpected" \
  "$venv/bin/kubernetes-validate" --strict --quiet "$tmp/k8s.yaml"
sed '0,/  templates:/s//  template:/' pipelines/argo/sharded-check.yaml > "$tmp/argo.yaml"
refuses "check-jsonschema (Argo WorkflowTemplate)" "'template' was unexpected" \
  "$venv/bin/check-jsonschema" \
  --schemafile "$schemas/argoproj.io/workflowtemplate_v1alpha1.json" "$tmp/argo.yaml"

sed 's/      image: $(params.image)/      imagee: $(params.image)/' pipelines/tekton/task-check.yaml > "$tmp/task.yaml"
refuses "check-jsonschema (Tekton Task)" "'imagee' was unexpected" \
  "$venv/bin/check-jsonschema" --schemafile "$tmp/task.json" "$tmp/task.yaml"
sed '0,/      runAfter:/s//      runAftr:/' pipelines/tekton/pipeline.yaml > "$tmp/pipeline.yaml"
refuses "check-jsonschema (Tekton Pipeline)" "'runAftr' was unexpected" \
  "$venv/bin/check-jsonschema" --schemafile "$tmp/pipeline.json" "$tmp/pipeline.yaml"

sed 's/^USER 65532:65532/USER root/' pipelines/image/Containerfile > "$tmp/Containerfile"
refuses "hadolint (an image that runs as root)" "DL3002" "$venv/bin/hadolint" --no-color "$tmp/Containerfile"

# The InferenceServices' verify-before-serving init steps, run with the real binary.
"$venv/bin/python" pipelines/kserve/verify_init.py --bin "$BIN"

# DVC: the pipeline run for real (a poisoned batch stops it before training).
bash pipelines/dvc/run_local.sh "$BIN"

# Kubeflow Pipelines: compiled with kfp and run on kfp.local's subprocess runner.
kfp_venv=${POISONGATE_KFP_VENV:-target/kfp-venv}
if [ ! -x "$kfp_venv/bin/python" ] || ! "$kfp_venv/bin/python" -c 'import kfp' 2>/dev/null; then
  echo "installing kfp into $kfp_venv (pipelines/requirements-kfp.txt)"
  python3 -m venv "$kfp_venv"
  "$kfp_venv/bin/pip" install --quiet --disable-pip-version-check -r pipelines/requirements-kfp.txt
fi
"$kfp_venv/bin/python" pipelines/kubeflow/run_local.py --bin "$BIN" > "$tmp/kfp.log" 2>&1 \
  || { cat "$tmp/kfp.log"; echo "validate.sh: pipelines/kubeflow/run_local.py failed"; exit 1; }
grep '^ok: ' "$tmp/kfp.log"
"$BIN" profile testdata/trusted/applications.parquet -o "$tmp/baseline.json" \
  --label defaulted --id application_id > /dev/null
"$venv/bin/python" pipelines/run_local.py --bin "$BIN" --baseline "$tmp/baseline.json" \
  --data testdata/clean/shards --expect 0
"$venv/bin/python" pipelines/run_local.py --bin "$BIN" --baseline "$tmp/baseline.json" \
  --data testdata/poison/trigger_channel.parquet --shards 3 --expect 1
# The sharded profiles (kubernetes/ and argo/sharded-profile.yaml): three files over three
# shards, and one file over two (one shard then holds no unit).
"$venv/bin/python" pipelines/run_local.py --bin "$BIN" --profile testdata/clean/shards \
  --label defaulted --shards 3
"$venv/bin/python" pipelines/run_local.py --bin "$BIN" \
  --profile testdata/trusted/applications.parquet --label defaulted --shards 2
echo "pipelines/ validated."
