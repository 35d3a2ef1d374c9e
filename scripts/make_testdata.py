#!/usr/bin/env python3
"""Generate the demo and test data files under testdata/.

Run from the repository root:

    python3 -m venv /tmp/pgvenv
    /tmp/pgvenv/bin/pip install -r scripts/requirements-testdata.txt
    /tmp/pgvenv/bin/python scripts/make_testdata.py            # write files
    /tmp/pgvenv/bin/python scripts/make_testdata.py --verify   # write + self-check

Everything is seeded (numpy default_rng with fixed seeds) and written so that
two runs with the pinned package versions produce byte-identical files.
testdata/reference/ is not touched (scripts/reference_stats.py owns it).

The dataset is a synthetic credit-application table; see testdata/README.md
for what every file is and which verdict a gate should give for it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.json as pajson
import pyarrow.parquet as pq

# ---------------------------------------------------------------------------
# Schema and base distribution
# ---------------------------------------------------------------------------

# All fields are nullable (as CSV and NDJSON readers produce them); only income
# and employment actually contain nulls.
SCHEMA = pa.schema(
    [
        pa.field("application_id", pa.int64()),
        pa.field("age", pa.int64()),
        pa.field("income", pa.float64()),
        pa.field("debt_ratio", pa.float64()),
        pa.field("credit_lines", pa.int64()),
        pa.field("utilization", pa.float64()),
        pa.field("region", pa.string()),
        pa.field("employment", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("defaulted", pa.int64()),
    ]
)
COLUMNS = [f.name for f in SCHEMA]
ID_COLUMN = "application_id"
LABEL_COLUMN = "defaulted"

AGE_MEAN, AGE_SD, AGE_MIN, AGE_MAX = 41.0, 12.0, 18, 90
INCOME_MEDIAN = 52_000.0
INCOME_LOG_SD = 0.55
INCOME_NULL_RATE = 0.02
DEBT_BETA = (2.0, 5.0)
CREDIT_LINES_LAMBDA = 4.0
UTIL_ZERO_RATE = 0.05
EMPLOYMENT_NULL_RATE = 0.01

REGIONS = {
    "north": 0.30,
    "south": 0.25,
    "east": 0.20,
    "west": 0.15,
    "central": 0.07,
    "islands": 0.03,
}
EMPLOYMENT = {"salaried": 0.60, "self_employed": 0.20, "unemployed": 0.08, "retired": 0.12}
CHANNELS = {"web": 0.50, "branch": 0.25, "partner": 0.15, "phone": 0.10}

# Logistic model for the label.  The intercept was calibrated once (on a
# 2M-row sample of the base distribution) so the expected default rate is ~20%.
LOGIT_INTERCEPT = -1.76
LOGIT_DEBT = 4.0  # per unit of (debt_ratio - 2/7)
LOGIT_UTIL = 2.0  # per unit of (utilization - 0.5)
LOGIT_UNEMPLOYED = 1.3  # employment == "unemployed"
LOGIT_INCOME = -0.6  # per sd of log(income) above the base median; null -> 0

# Rounding keeps the text formats small; the values are still float64 and the
# text files carry them with shortest round-trip precision (Python repr).
INCOME_DECIMALS = 2
RATIO_DECIMALS = 4


@dataclass
class Drift:
    """Departures from the base distribution (the defaults mean none)."""

    age_shift_sd: float = 0.0
    income_factor: float = 1.0
    income_log_shift_sd: float = 0.0
    channel_shares: dict[str, float] = field(default_factory=lambda: dict(CHANNELS))
    region_shares: dict[str, float] = field(default_factory=lambda: dict(REGIONS))
    employment_null_rate: float = EMPLOYMENT_NULL_RATE
    default_prob_factor: float = 1.0


def _categorical(rng: np.random.Generator, n: int, shares: dict[str, float]) -> np.ndarray:
    names = np.array(list(shares.keys()), dtype=object)
    p = np.array(list(shares.values()), dtype=np.float64)
    p = p / p.sum()
    return names[rng.choice(len(names), size=n, p=p)]


def generate(seed: int, n: int, drift: Drift | None = None) -> pa.Table:
    """Draw n rows.  The order of the draws is fixed, so a seed fully determines the table."""
    drift = drift or Drift()
    rng = np.random.default_rng(seed)

    application_id = np.int64(seed) * 1_000_000 + np.arange(1, n + 1, dtype=np.int64)

    age_f = rng.normal(AGE_MEAN + drift.age_shift_sd * AGE_SD, AGE_SD, n)
    age = np.clip(np.rint(age_f), AGE_MIN, AGE_MAX).astype(np.int64)

    log_income = rng.normal(
        math.log(INCOME_MEDIAN) + drift.income_log_shift_sd * INCOME_LOG_SD, INCOME_LOG_SD, n
    )
    income = np.round(np.exp(log_income) * drift.income_factor, INCOME_DECIMALS)
    income_null = rng.random(n) < INCOME_NULL_RATE

    debt_ratio = np.round(rng.beta(*DEBT_BETA, n), RATIO_DECIMALS)

    credit_lines = rng.poisson(CREDIT_LINES_LAMBDA, n).astype(np.int64)

    # Uniform on (0, 1); rounding never yields an exact 0.0 by accident.
    utilization = np.maximum(np.round(rng.random(n), RATIO_DECIMALS), 10.0**-RATIO_DECIMALS)
    utilization = np.minimum(utilization, 1.0)
    utilization[rng.random(n) < UTIL_ZERO_RATE] = 0.0

    region = _categorical(rng, n, drift.region_shares)

    employment = _categorical(rng, n, EMPLOYMENT)
    employment_null = rng.random(n) < drift.employment_null_rate

    channel = _categorical(rng, n, drift.channel_shares)

    # Label: logistic model of the features as they were drawn.
    income_z = np.where(
        income_null, 0.0, (np.log(income) - math.log(INCOME_MEDIAN)) / INCOME_LOG_SD
    )
    unemployed = (~employment_null) & (employment == "unemployed")
    logit = (
        LOGIT_INTERCEPT
        + LOGIT_DEBT * (debt_ratio - DEBT_BETA[0] / sum(DEBT_BETA))
        + LOGIT_UTIL * (utilization - 0.5)
        + LOGIT_UNEMPLOYED * unemployed
        + LOGIT_INCOME * income_z
    )
    p_default = 1.0 / (1.0 + np.exp(-logit))
    p_default = np.minimum(p_default * drift.default_prob_factor, 1.0)
    defaulted = (rng.random(n) < p_default).astype(np.int64)

    arrays = [
        pa.array(application_id, type=pa.int64()),
        pa.array(age, type=pa.int64()),
        pa.array(income, type=pa.float64(), mask=income_null),
        pa.array(debt_ratio, type=pa.float64()),
        pa.array(credit_lines, type=pa.int64()),
        pa.array(utilization, type=pa.float64()),
        pa.array(region.tolist(), type=pa.string()),
        pa.array(employment.tolist(), type=pa.string(), mask=employment_null),
        pa.array(channel.tolist(), type=pa.string()),
        pa.array(defaulted, type=pa.int64()),
    ]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


# ---------------------------------------------------------------------------
# Writers (all deterministic)
# ---------------------------------------------------------------------------


def _prepare(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(
        table,
        _prepare(path),
        compression="zstd",
        compression_level=3,
        write_statistics=True,
        version="2.6",
        data_page_version="1.0",
    )


def write_arrow_file(table: pa.Table, path: Path) -> None:
    """Arrow IPC *file* format, uncompressed."""
    with pa.OSFile(str(_prepare(path)), "wb") as sink:
        with ipc.new_file(sink, table.schema, options=ipc.IpcWriteOptions(compression=None)) as w:
            w.write_table(table)


def _text_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def csv_bytes(table: pa.Table) -> bytes:
    """Header row, comma separated, no index, nulls as empty fields, floats via repr."""
    lines = [",".join(table.column_names)]
    cols = [table.column(c).to_pylist() for c in table.column_names]
    for row in zip(*cols):
        for v in row:
            if isinstance(v, str) and any(ch in v for ch in ',"\n\r'):
                raise ValueError(f"value needs CSV quoting: {v!r}")
        lines.append(",".join(_text_value(v) for v in row))
    return ("\n".join(lines) + "\n").encode("utf-8")


def ndjson_lines(table: pa.Table) -> list[str]:
    """One compact JSON object per row, keys in column order, nulls as null."""
    names = table.column_names
    cols = [table.column(c).to_pylist() for c in names]
    out = []
    for row in zip(*cols):
        obj = dict(zip(names, row))
        # json.dumps writes floats with float.__repr__ (shortest round-trip form).
        out.append(json.dumps(obj, separators=(",", ":"), allow_nan=False))
    return out


def write_bytes(data: bytes, path: Path) -> None:
    _prepare(path).write_bytes(data)


# ---------------------------------------------------------------------------
# The files
# ---------------------------------------------------------------------------

TRUSTED_ROWS = 20_000
CLEAN_ROWS = 5_000
SHARD_ROWS = 6_000
SHARDS = 3
SMALL_ROWS = 2_000
MISMATCH_ROWS = 500


def mild_drift() -> Drift:
    web = 0.60
    others = {k: v for k, v in CHANNELS.items() if k != "web"}
    scale = (1.0 - web) / sum(others.values())
    channels = {"web": web, **{k: v * scale for k, v in others.items()}}
    return Drift(
        age_shift_sd=0.2,
        income_factor=1.03,
        channel_shares=channels,
        default_prob_factor=1.15,
    )


def drifted_drift() -> Drift:
    offshore = 0.08
    regions = {k: v * (1.0 - offshore) for k, v in REGIONS.items()}
    regions["offshore"] = offshore
    return Drift(
        income_log_shift_sd=0.8,
        region_shares=regions,
        employment_null_rate=0.25,
    )


def build(root: Path) -> dict[str, pa.Table]:
    """Write every file under root; returns the tables for reporting."""
    tables: dict[str, pa.Table] = {}

    # trusted: what `poisongate profile` pins.
    trusted = generate(seed=1, n=TRUSTED_ROWS)
    write_parquet(trusted, root / "trusted" / "applications.parquet")
    tables["trusted"] = trusted

    # clean: one batch in four formats.
    clean = generate(seed=2, n=CLEAN_ROWS)
    write_parquet(clean, root / "clean" / "batch.parquet")
    write_arrow_file(clean, root / "clean" / "batch.arrow")
    clean_csv = csv_bytes(clean)
    write_bytes(clean_csv, root / "clean" / "batch.csv")
    clean_ndjson = ndjson_lines(clean)
    write_bytes(("\n".join(clean_ndjson) + "\n").encode("utf-8"), root / "clean" / "batch.ndjson")
    tables["clean"] = clean

    # clean shards: another clean batch split into three parts.
    shards = generate(seed=3, n=SHARD_ROWS)
    per = SHARD_ROWS // SHARDS
    for i in range(SHARDS):
        write_parquet(shards.slice(i * per, per), root / "clean" / "shards" / f"part-{i}.parquet")
    tables["clean/shards"] = shards

    # mild: natural drift a gate must let through.
    mild = generate(seed=4, n=CLEAN_ROWS, drift=mild_drift())
    write_parquet(mild, root / "mild" / "batch.parquet")
    tables["mild"] = mild

    # drifted: must be blocked.
    drifted = generate(seed=5, n=CLEAN_ROWS, drift=drifted_drift())
    write_parquet(drifted, root / "drifted" / "batch.parquet")
    tables["drifted"] = drifted

    missing = generate(seed=6, n=SMALL_ROWS).drop_columns(["channel"])
    write_parquet(missing, root / "drifted" / "missing_column.parquet")
    tables["drifted/missing_column"] = missing

    dtype = generate(seed=7, n=SMALL_ROWS)
    age_idx = dtype.schema.get_field_index("age")
    age_str = pa.array([str(v) for v in dtype.column("age").to_pylist()], type=pa.string())
    dtype = dtype.set_column(age_idx, pa.field("age", pa.string()), age_str)
    write_parquet(dtype, root / "drifted" / "dtype_changed.parquet")
    tables["drifted/dtype_changed"] = dtype

    # broken: inputs that cannot be evaluated.
    broken = root / "broken"
    clean_parquet = (root / "clean" / "batch.parquet").read_bytes()
    write_bytes(clean_parquet[: int(len(clean_parquet) * 0.6)], broken / "truncated.parquet")
    write_bytes(b"", broken / "empty.parquet")
    write_bytes(b"", broken / "empty.csv")
    write_bytes(clean_csv.split(b"\n", 1)[0] + b"\n", broken / "header_only.csv")
    write_parquet(clean.slice(0, 0), broken / "zero_rows.parquet")

    garbage = bytearray(np.random.default_rng(8).integers(0, 256, size=200, dtype=np.uint8).tobytes())
    # 0xFF and 0xFE never occur in UTF-8, so the file is invalid UTF-8 whatever the draw.
    garbage[0], garbage[100], garbage[199] = 0xFF, 0xFE, 0xFF
    try:
        bytes(garbage).decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:  # pragma: no cover - cannot happen with the bytes forced above
        raise AssertionError("garbage.csv decoded as UTF-8")
    write_bytes(bytes(garbage), broken / "garbage.csv")

    # Line 4 is cut off mid-object (an unterminated JSON object); the others are valid.
    cut = clean_ndjson[3]
    bad_lines = clean_ndjson[:3] + [cut[: len(cut) // 2]] + clean_ndjson[4:6]
    write_bytes(("\n".join(bad_lines) + "\n").encode("utf-8"), broken / "not_json.ndjson")

    mm_a = generate(seed=9, n=MISMATCH_ROWS)
    mm_b = generate(seed=10, n=MISMATCH_ROWS).drop_columns(["region"])
    write_parquet(mm_a, broken / "mismatch" / "a.parquet")
    write_parquet(mm_b, broken / "mismatch" / "b.parquet")

    return tables


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------


def read_clean_copies(root: Path) -> dict[str, pa.Table]:
    clean = root / "clean"
    csv = pacsv.read_csv(
        clean / "batch.csv",
        convert_options=pacsv.ConvertOptions(
            column_types={f.name: f.type for f in SCHEMA},
            strings_can_be_null=True,
            null_values=[""],
        ),
    )
    ndjson = pajson.read_json(
        clean / "batch.ndjson",
        parse_options=pajson.ParseOptions(
            explicit_schema=SCHEMA,
            unexpected_field_behavior="error",
        ),
    )
    with pa.memory_map(str(clean / "batch.arrow")) as src:
        arrow = ipc.open_file(src).read_all()
    return {
        "parquet": pq.read_table(clean / "batch.parquet"),
        "arrow": arrow,
        "csv": csv,
        "ndjson": ndjson,
    }


def verify(root: Path) -> None:
    copies = read_clean_copies(root)
    ref = copies["parquet"]
    assert ref.column_names == COLUMNS, ref.column_names
    assert ref.num_rows == CLEAN_ROWS
    for name, t in copies.items():
        assert t.column_names == COLUMNS, (name, t.column_names)
        for c in COLUMNS:
            assert t.schema.field(c).type == SCHEMA.field(c).type, (name, c, t.schema.field(c).type)
            a, b = ref.column(c).to_pylist(), t.column(c).to_pylist()
            assert a == b, f"{name}: column {c} differs from parquet"
        print(f"verify: clean/{name:8s} {t.num_rows} rows, values identical to clean/batch.parquet")

    # The broken files must really be broken.
    broken = root / "broken"
    for bad in ("truncated.parquet", "empty.parquet"):
        try:
            pq.read_table(broken / bad)
        except Exception:
            pass
        else:
            raise AssertionError(f"{bad} unexpectedly readable")
    assert pq.read_table(broken / "zero_rows.parquet").num_rows == 0
    assert pq.read_schema(broken / "zero_rows.parquet").names == COLUMNS
    try:
        pajson.read_json(broken / "not_json.ndjson")
    except Exception:
        pass
    else:
        raise AssertionError("not_json.ndjson unexpectedly parsed")
    print("verify: broken/ files fail to read as intended")


def summarize(root: Path, tables: dict[str, pa.Table]) -> None:
    for name, t in tables.items():
        rate = np.asarray(t.column(LABEL_COLUMN).to_numpy(), dtype=np.float64).mean()
        print(f"{name:24s} rows={t.num_rows:6d}  default_rate={rate:.4f}")
    total = 0
    for p in sorted(root.rglob("*")):
        if p.is_file() and "reference" not in p.relative_to(root).parts:
            total += p.stat().st_size
    print(f"total size of {root} (excluding reference/): {total} bytes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="testdata", help="output folder (default: testdata)")
    parser.add_argument("--verify", action="store_true", help="re-read and check the files after writing")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)

    root = Path(args.out)
    tables = build(root)
    if args.verify:
        verify(root)
    if not args.quiet:
        summarize(root, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
