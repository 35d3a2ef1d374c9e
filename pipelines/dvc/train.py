"""Stand-in for a training step, with the check a real one should make first: it copies the
batch into a private directory, has `poisongate verify --attestation` check that copy against
the gate's signed verdict, and trains on that copy only. A batch swapped after the gate ran, or
while this step runs, is refused: the bytes verified are the bytes trained on.

    python3 train.py BATCH VERDICT GATE_PUBLIC_KEY MODEL_OUT

POISONGATE names the binary (default: poisongate on PATH).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile


def main() -> int:
    batch, verdict, public_key, out = sys.argv[1:5]
    poisongate = os.environ.get("POISONGATE", "poisongate")
    # A fresh directory only this process can write to (mode 0700).
    with tempfile.TemporaryDirectory() as private:
        copy = os.path.join(private, os.path.basename(batch))
        shutil.copyfile(batch, copy)
        code = subprocess.run([poisongate, "verify", "--attestation", verdict,
                               "--public-key", public_key, copy], check=False).returncode
        if code != 0:
            sys.exit(f"train.py: {batch} is not a batch the gate passed "
                     f"(poisongate verify --attestation exited {code})")
        with open(copy, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"trained_on": digest}, f)
    print(f"trained on {batch} ({digest[:12]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
