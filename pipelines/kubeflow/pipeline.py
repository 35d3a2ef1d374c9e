"""Gated retraining as a Kubeflow Pipelines (v2) pipeline: verify the baseline, gate the batch,
train, compare the retrained model's predictions with the serving model's, promote.

Each step is a Python component that runs the `poisongate` binary of its image and raises when
it exits non-zero, so a blocked batch (exit 1) or one the gate could not evaluate (exit 2)
fails the gate task and Kubeflow never starts the tasks after it. The reports are the tasks'
output artifacts. `train` and `promote` are stand-ins for your own steps; `train` shows the
check a real one should make first: the gate signs its verdict over the digests of what it read
(`--attest`, with the gate's key from a Kubernetes Secret), and training copies the batch into a
private directory, has `poisongate verify --attestation` check that copy with the gate's public
key, and trains on that copy only, so a batch swapped after the gate is refused.

Compile: python pipeline.py OUT.yaml (or `kfp dsl compile --py pipeline.py --function
gated_training --output OUT.yaml`).
"""

import sys

from kfp import compiler, dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

# An image with Python and the poisongate binary (the release image has no shell or Python).
IMAGE = "registry.example.com/ml/poisongate-python:0.1.0"


@dsl.component(base_image=IMAGE)
def verify_baseline(poisongate: str, baseline: str, checksums: str) -> str:
    """Checks the baseline against its sha256sum file; returns its digest for the gate."""
    import subprocess

    code = subprocess.run([poisongate, "verify", "--sha256-file", checksums], check=False)
    if code.returncode != 0:
        raise RuntimeError(f"poisongate verify exited {code.returncode}")
    with open(checksums, encoding="utf-8") as f:
        return f.read().split()[0]


@dsl.component(base_image=IMAGE)
def gate(poisongate: str, baseline: str, baseline_sha256: str, batch: str, gate_key: str,
         report: Output[Artifact], summary: Output[Markdown], verdict: Output[Artifact]):
    """poisongate check: exit 0 lets training start, 1 and 2 fail the task. The Markdown report
    is a Markdown artifact, which the Kubeflow UI renders; the verdict, signed with the key at
    `gate_key` (mount it from a Secret), is what training checks."""
    import subprocess

    argv = [poisongate, "check", "--baseline", baseline, "--expect-baseline-sha256",
            baseline_sha256, batch, "--json", report.path, "--markdown", summary.path,
            "--attest", gate_key, "--attestation", verdict.path]
    code = subprocess.run(argv, check=False).returncode
    if code != 0:
        what = {1: "blocked", 2: "could not evaluate"}.get(code, "failed")
        raise RuntimeError(f"poisongate check exited {code} ({what}); see {report.path}")


@dsl.component(base_image=IMAGE)
def train(poisongate: str, batch: str, verdict: Input[Artifact], gate_public_key: str,
          model: Output[Model]):
    """Stand-in training step: only on a private copy of the batch that the gate's signed
    verdict names."""
    import hashlib
    import json
    import os
    import shutil
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as private:
        copy = os.path.join(private, os.path.basename(batch))
        shutil.copyfile(batch, copy)
        code = subprocess.run([poisongate, "verify", "--attestation", verdict.path,
                               "--public-key", gate_public_key, copy], check=False).returncode
        if code != 0:
            raise RuntimeError(f"{batch} is not a batch the gate passed "
                               f"(poisongate verify --attestation exited {code})")
        with open(copy, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    with open(model.path, "w", encoding="utf-8") as f:
        json.dump({"trained_on": digest}, f)


@dsl.component(base_image=IMAGE)
def compare(poisongate: str, predictions: str, model: Input[Model], report: Output[Artifact],
            summary: Output[Markdown]):
    """poisongate compare of the serving and retrained models' predictions."""
    import subprocess

    argv = [poisongate, "compare", predictions, "--key", "application_id",
            "--label", "defaulted", "--before-col", "pred_before", "--after-col", "pred_after",
            "--before-score", "score_before", "--after-score", "score_after",
            "--segment", "channel", "--segment", "region", "--json", report.path,
            "--markdown", summary.path]
    code = subprocess.run(argv, check=False).returncode
    if code != 0:
        raise RuntimeError(f"poisongate compare exited {code}; see {report.path}")


@dsl.component(base_image=IMAGE)
def promote(model: Input[Model], compare_report: Input[Artifact], promoted: str):
    """Stand-in promotion: records the model that passed the comparison."""
    import json

    with open(compare_report.path, encoding="utf-8") as f:
        if json.load(f).get("verdict") != "pass":
            raise RuntimeError("the comparison did not pass")
    with open(model.path, encoding="utf-8") as f, open(promoted, "w", encoding="utf-8") as out:
        out.write(f.read())


@dsl.pipeline(name="gated-training")
def gated_training(poisongate: str, baseline: str, checksums: str, batch: str,
                   gate_key: str, gate_public_key: str, predictions: str, promoted: str):
    verified = verify_baseline(poisongate=poisongate, baseline=baseline, checksums=checksums)
    checked = gate(poisongate=poisongate, baseline=baseline, baseline_sha256=verified.output,
                   batch=batch, gate_key=gate_key)
    trained = train(poisongate=poisongate, batch=batch, verdict=checked.outputs["verdict"],
                    gate_public_key=gate_public_key)
    compared = compare(poisongate=poisongate, predictions=predictions,
                       model=trained.outputs["model"])
    promote(model=trained.outputs["model"], compare_report=compared.outputs["report"],
            promoted=promoted)


if __name__ == "__main__":
    compiler.Compiler().compile(gated_training, sys.argv[1] if len(sys.argv) > 1 else "gated-training.yaml")
