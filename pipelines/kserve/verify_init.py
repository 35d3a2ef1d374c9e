"""Runs the verify-before-serving init containers of the InferenceServices here, with the real
binary, on a model directory signed the way the pipeline's promote step signs it (ECDSA P-256
over SHA256SUMS, base64 DER, as `cosign sign-blob` or `openssl dgst -sha256 -sign` write it):
the signed directory passes every step; a changed model file fails `verify-files`; a changed
SHA256SUMS fails `verify-signature`; a signed model whose pickle would run code, or that imports
a callable the trusted model's pin lacks, fails `scan-model`. The server would start only after
all three exit 0. The models are files of the scan's corpus (testdata/models/).

    python verify_init.py --bin BIN   (needs openssl)
"""

import argparse
import base64
import hashlib
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
        if order != ["fetch-model", "verify-signature", "verify-files", "scan-model"]:
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
            sums = "".join(f"{hashlib.sha256((models / f).read_bytes()).hexdigest()}  {f}\n"
                           for f in ("model-settings.json", "model.joblib"))
            (models / "SHA256SUMS").write_text(sums)
            key = Path(tmp, "key.pem")
            subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                            "-out", str(key)], check=True, capture_output=True)
            subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out",
                            str(keys / "model.pub")], check=True, capture_output=True)

            def sign() -> None:
                der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key),
                                      str(models / "SHA256SUMS")], check=True,
                                     capture_output=True).stdout
                (models / "SHA256SUMS.sig").write_text(base64.b64encode(der).decode())

            def step(container: str) -> int:
                args = [a.replace("/mnt/models", str(models))
                        .replace("/etc/model-signing-key", str(keys))
                        .replace("/etc/model-imports", str(pins))
                        for a in inits[container]["args"]]
                return subprocess.run([binary, *args], capture_output=True).returncode

            def resign(model: bytes) -> None:
                (models / "model.joblib").write_bytes(model)
                (models / "SHA256SUMS").write_text(
                    "".join(f"{hashlib.sha256((models / f).read_bytes()).hexdigest()}  {f}\n"
                            for f in ("model-settings.json", "model.joblib")))
                sign()

            sign()
            got = (step("verify-signature"), step("verify-files"), step("scan-model"))
            if got != (0, 0, 0):
                fail(f"{name}: a signed model directory exited {got}")
            # Signed, and still not safe to load: a pickle that would run a command, and a
            # model that imports one callable the trusted one did not.
            for bad in ("hostile/os_system.joblib", "pin/swapped.joblib"):
                resign((MODELS / bad).read_bytes())
                got = (step("verify-signature"), step("verify-files"), step("scan-model"))
                if got != (0, 0, 1):
                    fail(f"{name}: a signed {bad} exited {got}, expected the scan to stop it")
            resign(trusted)
            (models / "model.joblib").write_bytes(b"swapped model\n")
            if step("verify-files") != 1:
                fail(f"{name}: a swapped model file passed verify-files")
            (models / "SHA256SUMS").write_text(
                f"{hashlib.sha256(b'swapped model' + bytes([10])).hexdigest()}  model.joblib\n")
            if step("verify-signature") != 1:
                fail(f"{name}: a rewritten SHA256SUMS passed verify-signature")
        print(f"ok: {name}: a signed model passes the init steps; a swapped file, a rewritten "
              "SHA256SUMS, or a signed model that would run code or import something new stops "
              "the server from starting (exit 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
