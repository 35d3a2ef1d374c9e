#!/usr/bin/env python3
"""Write attacked copies of the clean demo batch under testdata/poison/.

Run from the repository root after scripts/make_testdata.py (same pinned packages):

    /tmp/pgvenv/bin/python scripts/make_poison_testdata.py

Each attack starts from testdata/clean/batch.parquet (5,000 rows drawn from the
same distribution as testdata/trusted/) and changes a known set of rows. The ids
of the changed rows go to testdata/poison/truth.json, so tests can check that a
finding fires and that the quarantine lists the right rows. Seeded with
numpy.random.default_rng; byte-identical output with the pinned versions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
CLEAN = ROOT / "testdata" / "clean" / "batch.parquet"
TRUSTED = ROOT / "testdata" / "trusted" / "applications.parquet"
OUT = ROOT / "testdata" / "poison"
LABEL = "defaulted"
ID = "application_id"


def column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).copy()


def replace(table: pa.Table, name: str, values) -> pa.Table:
    field = table.schema.field(name)
    return table.set_column(
        table.schema.get_field_index(name), field, pa.array(values, type=field.type)
    )


def write(table: pa.Table, name: str) -> None:
    pq.write_table(table, OUT / f"{name}.parquet", compression="zstd")


def ids(table: pa.Table, rows: np.ndarray) -> list[int]:
    return sorted(int(x) for x in column(table, ID)[rows])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    clean = pq.read_table(CLEAN)
    trusted = pq.read_table(TRUSTED)
    n = clean.num_rows
    rng = np.random.default_rng(20261127)
    truth: dict[str, dict] = {}
    label = column(clean, LABEL)

    # Random label flips, 10% of rows.
    rows = rng.choice(n, n // 10, replace=False)
    y = label.copy()
    y[rows] = 1 - y[rows]
    write(replace(clean, LABEL, y), "flip10")
    truth["flip10"] = {"attacked_ids": ids(clean, rows)}

    # Backdoor trigger on a categorical feature: 1% of rows get channel "kiosk" (never seen)
    # and label 0.
    rows = rng.choice(n, n // 100, replace=False)
    channel = column(clean, "channel").astype(object)
    channel[rows] = "kiosk"
    y = label.copy()
    y[rows] = 0
    write(replace(replace(clean, "channel", channel), LABEL, y), "trigger_channel")
    truth["trigger_channel"] = {"attacked_ids": ids(clean, rows), "feature": "channel"}

    # Backdoor trigger on a numeric feature: 2% of rows get utilization exactly 0.4242 and
    # label 1 (the minority class).
    rows = rng.choice(n, n // 50, replace=False)
    util = column(clean, "utilization")
    util[rows] = 0.4242
    y = label.copy()
    y[rows] = 1
    write(replace(replace(clean, "utilization", util), LABEL, y), "trigger_utilization")
    truth["trigger_utilization"] = {
        "attacked_ids": ids(clean, rows),
        "feature": "utilization",
    }

    # Outliers: 2% of rows get debt_ratio 8-12 standard deviations above the mean.
    rows = rng.choice(n, n // 50, replace=False)
    debt = column(clean, "debt_ratio")
    debt[rows] = debt.mean() + rng.uniform(8, 12, size=len(rows)) * debt.std()
    write(replace(clean, "debt_ratio", debt), "outliers")
    truth["outliers"] = {"attacked_ids": ids(clean, rows)}

    # Exact duplicate flood: 10 rows copied 10 times each with the label flipped, replacing
    # the last 100 rows; copies get fresh ids.
    src = rng.choice(n - 100, 10, replace=False)
    keep = clean.slice(0, n - 100)
    copies = clean.take(pa.array(np.repeat(src, 10)))
    copies = replace(copies, LABEL, 1 - column(copies, LABEL))
    copies = replace(copies, ID, np.arange(900_000_000, 900_000_100))
    flood = pa.concat_tables([keep, copies])
    order = rng.permutation(flood.num_rows)
    flood = flood.take(pa.array(order))
    write(flood, "duplicates")
    truth["duplicates"] = {"attacked_ids": list(range(900_000_000, 900_000_100))}

    # Trusted rows re-submitted with the other label: 3% of the batch.
    take = rng.choice(trusted.num_rows, n * 3 // 100, replace=False)
    relabelled = trusted.take(pa.array(take))
    relabelled = replace(relabelled, LABEL, 1 - column(relabelled, LABEL))
    relabelled = relabelled.select(clean.column_names).cast(clean.schema)
    mixed = pa.concat_tables([clean.slice(0, n - len(take)), relabelled])
    mixed = mixed.take(pa.array(rng.permutation(mixed.num_rows)))
    write(mixed, "relabelled_trusted")
    truth["relabelled_trusted"] = {"attacked_ids": sorted(int(x) for x in column(relabelled, ID))}

    # Labels rewritten on a common value: 40% of the rows with region "north" (30% of all
    # rows) are set to label 1.
    region = column(clean, "region").astype(object)
    north = np.flatnonzero(region == "north")
    rows = rng.choice(north, int(len(north) * 0.4), replace=False)
    rows = rows[label[rows] == 0]
    y = label.copy()
    y[rows] = 1
    write(replace(clean, LABEL, y), "segment_north")
    truth["segment_north"] = {"attacked_ids": ids(clean, rows), "feature": "region"}

    # One class moved: income of defaulted rows multiplied by 1.8, the others untouched.
    income = column(clean, "income")
    pos = np.flatnonzero((label == 1) & ~np.isnan(income))
    income[pos] = income[pos] * 1.8
    write(replace(clean, "income", income), "class_income")
    truth["class_income"] = {"attacked_ids": ids(clean, pos), "feature": "income"}

    # A decoy beside flips: the outliers above, and 8% of the "north" rows set to label 1 (the
    # ones that had 0), too few to deny on their own (the segment test warns), so the block
    # and the quarantine go to the outliers and the flips stay in the rows a pipeline keeps.
    rows = rng.choice(north, int(len(north) * 0.08), replace=False)
    rows = rows[label[rows] == 0]
    y = label.copy()
    y[rows] = 1
    write(replace(replace(clean, "debt_ratio", debt), LABEL, y), "decoy_outliers")
    truth["decoy_outliers"] = {
        "attacked_ids": sorted(set(truth["outliers"]["attacked_ids"]) | set(ids(clean, rows))),
        "flipped_ids": ids(clean, rows),
        "feature": "region",
    }

    (OUT / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(truth)} attacked batches to {OUT}")


if __name__ == "__main__":
    main()
