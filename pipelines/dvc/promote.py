"""Stand-in for a promotion step: promotes the candidate only when the comparison passed.

    python3 promote.py MODEL COMPARE_REPORT OUT
"""

import json
import sys


def main() -> int:
    model, compare, out = sys.argv[1:4]
    with open(compare, encoding="utf-8") as f:
        verdict = json.load(f).get("verdict")
    if verdict != "pass":
        sys.exit(f"promote.py: the comparison {compare} is not a pass ({verdict})")
    with open(model, encoding="utf-8") as f:
        trained_on = json.load(f)["trained_on"]
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"model": model, "trained_on": trained_on}, f)
    print(f"promoted {model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
