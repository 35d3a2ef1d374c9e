"""Prints the slowest compilation units of a `cargo --timings` report.

    python3 scripts/ci/slowest_units.py target/cargo-timings/cargo-timing.html [N]

The report embeds its data as `const UNIT_DATA = [...];` (JSON). Prints the total wall time,
then the N units (default 12) with the longest duration: seconds, start offset, crate, target.
"""

import json
import sys


def main() -> int:
    path = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    text = open(path, encoding="utf-8").read()
    start = text.index("UNIT_DATA = ") + len("UNIT_DATA = ")
    units, _ = json.JSONDecoder().raw_decode(text[start:])
    if not units:
        print("no units: the build was fresh")
        return 0
    end = max(u["start"] + u["duration"] for u in units)
    cpu = sum(u["duration"] for u in units)
    print(f"{len(units)} units, {end / 60:.1f} min wall, {cpu / 60:.1f} min summed")
    for u in sorted(units, key=lambda u: -u["duration"])[:n]:
        print(f"{u['duration']:8.1f} s  at {u['start'] / 60:5.1f} min  {u['name']} {u['version']}{u['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
