"""Runs the verify-before-serving init containers of the InferenceServices here, with the real
binary, on a model directory signed the way the pipeline's promote step signs it (OpenSSF model
signing, `poisongate sign --model DIR --key K`, ECDSA P-256): the signed directory passes every
step; a changed, added or removed model file and an edited bundle fail `verify-model`; a signed
model whose pickle would run code, or that imports a callable the trusted model's pin lacks,
fails `scan-model`. The server would start only after both exit 0. The models are files of the
scan's corpus (testdata/models/).

    python verify_init.py --bin BIN   (needs openssl)
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent.parent / "testdata" / "models"


def fail(msg: str) -> None:
    sys.exit(f"verify_init.py: {msg}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    binary = str(Path(ap.parse_args().bin).resolve())
    for name in ("inferenceservice-serving.yaml", "inferenceservice-candidate.yaml"):
        isvc = yaml.safe_load((HERE / name).read_text())
        inits = {c["name"]: c for c in isvc["spec"]["predictor"]["initContainers"]}
        order = [c["name"] for c in isvc["spec"]["predictor"]["initContainers"]]
        if order != ["fetch-model", "verify-model", "scan-model"]:
            fail(f"{name}: init containers in the order {order}")
        if "storageUri" in isvc["spec"]["predictor"]["model"]:
            fail(f"{name}: a storageUri would let KServe fetch the model outside this order")
        with tempfile.TemporaryDirectory() as tmp:
            models, keys, pins = Path(tmp, "models"), Path(tmp, "keys"), Path(tmp, "pins")
            models.mkdir()
            keys.mkdir()
            pins.mkdir()
            trusted = (MODELS / "pin" / "trusted.joblib").read_bytes()
            (models / "model.joblib").write_bytes(trusted)
            # The pin the promotion step writes from the trusted model (the ConfigMap).
            subprocess.run([binary, "verify", "--scan", "--pin-imports", str(pins / "imports.json"),
                            str(models / "model.joblib")], check=True, capture_output=True)
            (models / "model-settings.json").write_text('{"name": "credit"}\n')
            key = Path(tmp, "key.pem")
            subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                            "-out", str(key)], check=True, capture_output=True)
            subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out",
                            str(keys / "model.pub")], check=True, capture_output=True)

            def sign() -> None:
                subprocess.run([binary, "sign", "--model", str(models), "--key", str(key)],
                               check=True, capture_output=True)

            def step(container: str) -> int:
                args = [a.replace("/mnt/models", str(models))
                        .replace("/etc/model-signing-key", str(keys))
                        .replace("/etc/model-imports", str(pins))
                        for a in inits[container]["args"]]
                return subprocess.run([binary, *args], capture_output=True).returncode

            def resign(model: bytes) -> None:
                (models / "model.joblib").write_bytes(model)
                sign()

            sign()
            got = (step("verify-model"), step("scan-model"))
            if got != (0, 0):
                fail(f"{name}: a signed model directory exited {got}")
            # Signed, and still not safe to load: a pickle that would run a command, and a
            # model that imports one callable the trusted one did not.
            for bad in ("hostile/os_system.joblib", "pin/swapped.joblib"):
                resign((MODELS / bad).read_bytes())
                got = (step("verify-model"), step("scan-model"))
                if got != (0, 1):
                    fail(f"{name}: a signed {bad} exited {got}, expected the scan to stop it")
            resign(trusted)
            (models / "model.joblib").write_bytes(b"swapped model\n")
            if step("verify-model") != 1:
                fail(f"{name}: a swapped model file passed verify-model")
            resign(trusted)
            (models / "extra.pkl").write_bytes(b"added beside the signed files\n")
            if step("verify-model") != 1:
                fail(f"{name}: a file added to the signed directory passed verify-model")
            (models / "extra.pkl").unlink()
            (models / "model-settings.json").unlink()
            if step("verify-model") != 1:
                fail(f"{name}: a removed file passed verify-model")
            resign(trusted)
            (models / "model.sig").write_text(
                (models / "model.sig").read_text().replace('"sig":"M', '"sig":"N', 1))
            if step("verify-model") != 1:
                fail(f"{name}: an edited bundle passed verify-model")
        print(f"ok: {name}: a signed model passes the init steps; a swapped, added or removed "
              "file, an edited bundle, or a signed model that would run code or import something "
              "new stops the server from starting (exit 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
