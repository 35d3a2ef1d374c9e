"""Checks pipelines/kubeflow/pipeline.py with the kfp SDK and runs it on kfp.local.

1. Compiles it and parses the result back as a PipelineSpec protobuf (an unknown field fails),
   and shows both checks refusing a mistake: a misspelled field in the compiled spec, and a
   component called with a misspelled argument.
2. Runs it with kfp.local's subprocess runner (the components call the real binary): a clean
   batch runs every task and is promoted; a poisoned batch fails the run at the gate, and the
   training task never starts; a batch swapped after the gate passed (the gate reads one file,
   training another) fails at training, because the gate's signed verdict does not name it.

    python run_local.py --bin BIN   (from the repository root, in target/kfp-venv)
"""

import argparse
import copy
import hashlib
import os
import subprocess
import sys
import tempfile

import yaml
from google.protobuf import json_format
from kfp import compiler, dsl, local
from kfp.pipeline_spec import pipeline_spec_pb2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline  # noqa: E402


def fail(msg: str) -> None:
    sys.exit(f"run_local.py: {msg}")


def parse(doc: dict) -> None:
    json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())


def compiled(tmp: str) -> None:
    out = os.path.join(tmp, "gated-training.yaml")
    compiler.Compiler().compile(pipeline.gated_training, out)
    with open(out, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    parse(doc)
    tasks = doc["root"]["dag"]["tasks"]
    order = ["verify-baseline", "gate", "train", "compare", "promote"]
    if sorted(tasks) != sorted(order):
        fail(f"compiled tasks {sorted(tasks)}")
    print(f"ok: kfp compiles pipelines/kubeflow/pipeline.py ({len(tasks)} tasks) and the spec parses")
    bad = copy.deepcopy(doc)
    bad["root"]["dag"]["tasks"]["gate"]["componentReff"] = bad["root"]["dag"]["tasks"]["gate"].pop("componentRef")
    try:
        parse(bad)
        fail("a misspelled field in the compiled spec parsed")
    except json_format.ParseError as e:
        if "componentReff" not in str(e):
            fail(f"unexpected parse error: {e}")
    print("ok: the PipelineSpec parse refuses a misspelled field (componentReff)")
    try:

        @dsl.pipeline(name="misspelled")
        def misspelled(batch: str):
            pipeline.train(bacth=batch)  # the mistake

        compiler.Compiler().compile(misspelled, os.path.join(tmp, "misspelled.yaml"))
        fail("a component called with a misspelled argument compiled")
    except TypeError as e:
        if "bacth" not in str(e):
            fail(f"unexpected error: {e}")
    print("ok: kfp refuses a component called with a misspelled argument (bacth)")


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@dsl.pipeline(name="swapped")
def swapped(poisongate: str, baseline: str, baseline_sha256: str, batch: str, trained_batch: str,
            gate_key: str, gate_public_key: str):
    """The gate passes `batch`; training is handed `trained_batch` (written in between)."""
    checked = pipeline.gate(poisongate=poisongate, baseline=baseline,
                            baseline_sha256=baseline_sha256, batch=batch, gate_key=gate_key)
    pipeline.train(poisongate=poisongate, batch=trained_batch,
                   verdict=checked.outputs["verdict"], gate_public_key=gate_public_key)


def run(tmp: str, name: str, binary: str, batch: str, trained_batch: str = "") -> tuple:
    root = os.path.join(tmp, name)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root,
               raise_on_error=True)
    baseline = os.path.join(tmp, "baseline.json")
    promoted = os.path.join(tmp, f"promoted-{name}.json")
    keys = {"gate_key": os.path.join(tmp, "gate.pem"),
            "gate_public_key": os.path.join(tmp, "gate.pub")}
    try:
        if trained_batch:
            swapped(poisongate=binary, baseline=baseline, baseline_sha256=sha256_of(baseline),
                    batch=batch, trained_batch=trained_batch, **keys)
        else:
            pipeline.gated_training(
                poisongate=binary, baseline=baseline, checksums=baseline + ".sha256",
                batch=batch, predictions=os.path.abspath("testdata/compare/clean.parquet"),
                promoted=promoted, **keys)
        error = None
    except RuntimeError as e:
        error = str(e)
    ran = {d for _, dirs, _ in os.walk(root) for d in dirs}
    return error, ran, os.path.exists(promoted)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the poisongate binary")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    with tempfile.TemporaryDirectory() as tmp:
        compiled(tmp)
        subprocess.run([binary, "profile", "testdata/trusted/applications.parquet", "-o",
                        os.path.join(tmp, "baseline.json"), "--label", "defaulted", "--id",
                        "application_id"], check=True, stdout=subprocess.DEVNULL)
        # The gate's signing key (a Kubernetes Secret in real use).
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                        os.path.join(tmp, "gate.pem")], check=True)
        subprocess.run(["openssl", "ec", "-in", os.path.join(tmp, "gate.pem"), "-pubout", "-out",
                        os.path.join(tmp, "gate.pub")], check=True, stderr=subprocess.DEVNULL)
        error, ran, promoted = run(tmp, "clean", binary,
                                   os.path.abspath("testdata/clean/batch.parquet"))
        if error or not promoted or "train" not in ran:
            fail(f"a clean batch: error {error!r}, promoted {promoted}, tasks {sorted(ran)}")
        print("ok: kfp.local, clean batch: every task ran, the model was promoted")
        error, ran, promoted = run(tmp, "poisoned", binary,
                                   os.path.abspath("testdata/poison/trigger_channel.parquet"))
        if not error or "gate" not in error:
            fail(f"a poisoned batch did not fail at the gate: {error!r}")
        if "train" in ran or promoted:
            fail(f"a poisoned batch reached training: tasks {sorted(ran)}, promoted {promoted}")
        print("ok: kfp.local, poisoned batch: the run failed at the gate, training never started")
        error, ran, _ = run(tmp, "swapped", binary,
                            os.path.abspath("testdata/clean/batch.parquet"),
                            os.path.abspath("testdata/poison/trigger_channel.parquet"))
        if not error or "train" not in error or "gate" not in ran:
            fail(f"a batch swapped after the gate did not fail at training: {error!r}, {sorted(ran)}")
        if "model" in {f for _, _, files in os.walk(os.path.join(tmp, "swapped")) for f in files}:
            fail("a model was written for a swapped batch")
        print("ok: kfp.local, batch swapped after the gate: training refused it (not in the signed verdict)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
