"""Stand-in for a training step, with the check a real one should make first: it trains only on
the exact bytes a passing `poisongate check` report names (same SHA-256), so a batch swapped
after the gate ran is refused.

    python3 train.py BATCH GATE_REPORT MODEL_OUT
"""

import hashlib
import json
import os
import sys


def main() -> int:
    batch, report_path, out = sys.argv[1:4]
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    with open(batch, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if report.get("verdict") != "pass":
        sys.exit(f"train.py: the gate report {report_path} is not a pass")
    if digest not in {i.get("sha256") for i in report.get("inputs", [])}:
        sys.exit(f"train.py: {batch} (sha256 {digest}) is not the batch the gate passed")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"trained_on": digest, "rows": report.get("rows")}, f)
    print(f"trained on {batch} ({digest[:12]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
