#!/usr/bin/env python3
"""Regenerate testdata/reference/fsum.json: correctly rounded sums from CPython's math.fsum,
the reference for src/stats/exact.rs.

Run from the repository root with any CPython 3 (standard library only):

    python3 scripts/reference_fsum.py

Inputs come from random.Random with fixed seeds and span many magnitudes with heavy
cancellation; floats are written with repr (shortest round-tripping form).
"""
import json
import math
import os
import random

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "testdata", "reference", "fsum.json")


def case(seed, n, spread):
    rng = random.Random(seed)
    values = []
    for _ in range(n):
        x = rng.uniform(-1.0, 1.0) * 10.0 ** rng.randint(-spread, spread)
        values.append(x)
        if rng.random() < 0.3:
            values.append(-x * (1 + rng.uniform(-1e-12, 1e-12)))
    rng.shuffle(values)
    return {"values": values, "fsum": math.fsum(values), "naive": sum(values)}


cases = [case(seed, n, spread)
         for seed, (n, spread) in enumerate([(10, 3), (100, 8), (1000, 20), (3000, 60),
                                             (500, 150), (50, 300), (2000, 1)])]
cases.append({"values": [1.0, 2.0 ** -53, 2.0 ** -106], "fsum": math.fsum([1.0, 2.0 ** -53, 2.0 ** -106]), "naive": 1.0})
with open(OUT, "w") as f:
    json.dump({"generator": "scripts/reference_fsum.py", "cases": cases}, f, indent=0)
    f.write("\n")
print(f"wrote {OUT}: {len(cases)} cases")
