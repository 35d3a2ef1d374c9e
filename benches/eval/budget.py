#!/usr/bin/env python3
"""Measure each attack family's evasion budget: the largest poisoned share that still passes.

    python benches/eval/budget.py --bin target/release/poisongate --quick
    python benches/eval/budget.py --bin target/release/poisongate --harm --out budget.json
    python benches/eval/budget.py --results budget.json           # the tables again, no runs

An adaptive attacker: for every dataset of the default suite, attack family, batch size and
seed it bisects the attack rate over [0.25%, 50%] (geometric midpoints, 7 probes by default)
for the largest rate whose batch `poisongate check` passes (exit 0) under the default policy.
Every probe is a batch drawn exactly as gen.py draws one (the same datasets, trusted sets,
builders, row permutation and Parquet layout), written to a temporary directory, checked
against a baseline pinned once per dataset (`profile --seed 7`, checked with
`--expect-baseline-sha256`) and deleted again. The budget is the attacked share of the largest
passing probe; the deny codes of the smallest blocked probe above it say which detector stops
the family.

Besides gen.py's builders, the attacker picks its own rows with what it may know: the trusted
data's summaries and a logistic regression it fits on the trusted data itself (gen.py's
`Context.model`), never the gate's own reference model:

- `uncertain-flip`: flip the labels of the rows that model is least sure about (the smallest
  margin between its two most probable classes);
- `near-cut-outlier`: outliers placed just past the trusted range (0.05-0.5 sd beyond the
  trusted minimum or maximum) instead of 6-10 sd out.

--harm then trains a HistGradientBoostingClassifier on trusted + the passing batch at each
(dataset, family, size)'s median budget, and on trusted + a clean batch of the same size, and
compares them on a fresh held-out draw: the attack success rate of the backdoor families and
the accuracy (overall, and in the targeted region for targeted-flip) of the others.

Exit code: 0 when every search ran; 2 when the evaluation could not run (the binary exited 2 or
wrote no readable report, a profile failed, bad arguments). See README.md, "Evasion budgets".
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

# gen.py, beside this file: the datasets, trusted sets, attack builders and the Parquet layout
sys.path.insert(0, str(Path(__file__).resolve().parent))
gen = importlib.import_module("gen")
CAT, FLOAT, INT, LABEL = gen.CAT, gen.FLOAT, gen.INT, gen.LABEL
Batch, Context = gen.Batch, gen.Context
if TYPE_CHECKING:
    from gen import Dataset, Frame, Rng

DEFAULT_FLOOR = 0.0025
RATE_MIN, RATE_MAX = DEFAULT_FLOOR, 0.5  # the range the attack rate is bisected over
PROBES = 7  # per search: the two ends, then 5 geometric midpoints (a factor of 1.18 at the end)
PROFILE_SEED = "7"  # as run.py pins the baselines
SCENARIO_BASE = 50  # budget batches take scenario indexes 50+ in gen.batch_ids (ids unused)
QUICK_DATASETS = ("wine", "synthetic")  # three classes and integers; categories and mixed types
HELD_OUT_ROWS = 5_000
BACKDOOR_FAMILIES = ("trigger", "clean-label", "common-trigger")
NOT_BUILT = "(not built)"  # the stop code of a search whose smallest probe could not be built

Record = dict  # one probe, one search or one harm measurement, as written to --out


# ---------------------------------------------------------------------------
# The attacker's own row choices
# ---------------------------------------------------------------------------


def build_uncertain_flip(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    """Flip the rows the attacker's model is least sure of (smallest top-two margin) to the
    most probable class other than their own label."""
    k = round(rate * n)
    if k == 0:
        return None
    f = ctx.ds.draw(rng, n)
    y = f[LABEL]
    proba = ctx.model.predict_proba(gen.to_pandas(f, ctx.ds))  # type: ignore[attr-defined]
    top = np.sort(proba, axis=1)
    margin = np.round(top[:, -1] - top[:, -2], 9)  # rounded: ties broken by row, not float noise
    order = np.lexsort((np.arange(n), margin))
    idx = np.sort(order[:k])
    others = proba[idx].copy()
    others[np.arange(len(idx)), y[idx]] = -1.0
    y[idx] = np.argmax(others, axis=1)
    return Batch(f, gen.mask(n, idx), detail=f"max margin flipped {margin[idx].max():.4f}")


def build_near_cut_outlier(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    """1-3 numeric values per attacked row set just past the trusted range: 0.05-0.5 sd above
    the trusted maximum or below the minimum (only above for non-negative columns); integer
    columns get the nearest integer beyond the range."""
    f = ctx.ds.draw(rng, n)
    numeric = ctx.ds.cols(FLOAT, INT)
    lo = {c: float(ctx.trusted[c].min()) for c in numeric}
    hi = {c: float(ctx.trusted[c].max()) for c in numeric}
    idx = gen.pick(rng, np.ones(n, dtype=bool), round(rate * n))
    for c in numeric:
        f[c] = f[c].copy()
    for i in idx:
        for c in rng.choice(numeric, min(len(numeric), int(rng.integers(1, 4))), replace=False):
            up = lo[c] >= 0 or rng.random() < 0.5
            step = rng.uniform(0.05, 0.5) * ctx.sd[c]
            if ctx.ds.kinds[c] == INT:
                f[c][i] = math.floor(hi[c] + step) + 1 if up else math.ceil(lo[c] - step) - 1
            else:
                f[c][i] = hi[c] + step if up else lo[c] - step
    return Batch(f, gen.mask(n, idx), detail=f"{len(idx)} rows with 1-3 values just past range")


ATTACKER_BUILDERS: dict[str, Callable[[Context, Rng, int, float], Batch | None]] = {
    "uncertain-flip": build_uncertain_flip,
    "near-cut-outlier": build_near_cut_outlier,
}
BUILDERS = {**gen.BUILDERS, **ATTACKER_BUILDERS}


def all_families() -> list[str]:
    """gen.py's attack families in its order (no clean or mild), each attacker variant after
    the family it varies."""
    after = {"confident-flip": "uncertain-flip", "outlier": "near-cut-outlier"}
    out: list[str] = []
    for name in gen.BUILDERS:
        if name == "clean" or name.startswith("mild-"):
            continue
        out.append(name)
        if name in after:
            out.append(after[name])
    return out


FAMILIES = all_families()


# ---------------------------------------------------------------------------
# Datasets and baselines
# ---------------------------------------------------------------------------


class HarnessError(Exception):
    """The evaluation itself cannot go on (exit 2 from the binary, no report, a failed pin)."""


@dataclass
class Pinned:
    """A dataset, its trusted statistics (and the attacker's model) and its pinned baseline."""

    ds: Dataset
    ctx: Context
    baseline: Path
    sha256: str
    reused: bool  # the baseline came from --data


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reusable(baseline: Path, trusted_sha: str) -> str | None:
    """The baseline's digest if it can stand in for a fresh pin: its sidecar matches the file,
    and it was profiled from these trusted bytes with the label, id and seed run.py uses."""
    sidecar = baseline.with_name(baseline.name + ".sha256")
    try:
        digest = sidecar.read_text().split()[0]
        if digest != file_sha256(baseline):
            return None
        doc = json.loads(baseline.read_text())
    except (OSError, IndexError, ValueError):
        return None
    same = (
        [i.get("sha256") for i in doc.get("inputs", [])] == [trusted_sha]
        and str(doc.get("seed")) == PROFILE_SEED
        and doc.get("label") == LABEL
        and doc.get("id") == gen.ID
        and not doc.get("ignored")
    )
    return digest if same else None


def prepare(name: str, binary: Path, work: Path, data: Path | None) -> Pinned:
    """Draw the trusted set as gen.py does, fit the attacker's model, and pin (or reuse) the
    baseline."""
    ds = gen.LOADERS[name]()
    trusted = ds.draw(gen.rng_for(name, "trusted", 0, 0), ds.trusted_rows)
    ctx = Context.build(ds, trusted)
    _ = ctx.model  # fitted once here; the search threads share it
    path = work / name / "trusted.parquet"
    gen.write(path, gen.table(ds, trusted, np.arange(1, ds.trusted_rows + 1, dtype=np.int64)))
    trusted_sha = file_sha256(path)
    if data is not None:
        baseline = data / name / "baseline.json"
        digest = reusable(baseline, trusted_sha)
        if digest is not None:
            return Pinned(ds, ctx, baseline, digest, True)
        print(
            f"{name}: {baseline} does not match the trusted set; pinning a new one", file=sys.stderr
        )
    baseline = work / name / "baseline.json"
    cmd = [
        str(binary),
        "profile",
        str(path),
        "-o",
        str(baseline),
        "--label",
        LABEL,
        "--id",
        gen.ID,
        "--seed",
        PROFILE_SEED,
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HarnessError(
            f"profile of {name} exited {proc.returncode}: {' '.join(cmd)}\n{proc.stderr.strip()}"
        )
    digest = baseline.with_name(baseline.name + ".sha256").read_text().split()[0]
    return Pinned(ds, ctx, baseline, digest, False)


# ---------------------------------------------------------------------------
# Probes and the bisection
# ---------------------------------------------------------------------------


def nominal_rows(family: str, n: int, rate: float) -> int:
    """The attacked rows a builder aims for: round(rate * n), whole pairs for swap."""
    return 2 * round(rate * n / 2) if family == "swap" else round(rate * n)


def floor_rate(family: str, n: int) -> float:
    """Where a search starts: 0.25%, or the smallest rate that attacks one row (one pair for
    swap) where 0.25% of the batch rounds to none (a swap of 0.25% of 300 rows)."""
    if nominal_rows(family, n, RATE_MIN) > 0:
        return RATE_MIN
    return (2 if family == "swap" else 1) / n


def build(
    p: Pinned, family: str, size: int, seed: int, rate: float
) -> tuple[Batch, np.ndarray] | None:
    """One probe batch as gen.py builds one: the builder on rng_for(dataset, family, size,
    seed), then the row permutation. None when the attack cannot be built at this rate (the
    builder says so, or not one row would be attacked)."""
    if nominal_rows(family, size, rate) == 0:
        return None
    rng = gen.rng_for(p.ds.name, family, size, seed)
    b = BUILDERS[family](p.ctx, rng, size, rate)
    if b is None or not b.attacked.any():
        return None
    perm = rng.permutation(gen.n_rows(b.frame))
    return b, perm


def probe_table(
    p: Pinned,
    family: str,
    size: int,
    seed: int,
    built: tuple[Batch, np.ndarray],
    sizes: tuple[int, ...],
) -> pa.Table:
    """The batch as gen.py writes it: permuted rows, ids from a block no other file uses."""
    b, perm = built
    n = gen.n_rows(b.frame)
    ids = gen.batch_ids(SCENARIO_BASE + FAMILIES.index(family), size, seed, n, sizes)
    return gen.table(p.ds, gen.take(b.frame, perm), ids)


def table_sha256(table: pa.Table) -> str:
    """Hex SHA-256 of a table's Arrow IPC stream: equal tables, equal digests."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


@dataclass
class Runner:
    """What every probe needs: the binary, the work directory, the abort flag."""

    binary: Path
    work: Path
    sizes: tuple[int, ...]  # gen.SIZES plus any other --sizes, for the row ids
    timeout: float
    probes: int
    abort: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    error: HarnessError | None = None  # the first failure; the others only report "aborted"

    def check(self, p: Pinned, table: pa.Table, tag: str) -> tuple[int, list[str], list[str]]:
        """Write the batch, gate it, delete it: (exit code, deny codes, warn codes)."""
        with tempfile.TemporaryDirectory(dir=self.work, prefix="probe-") as tmp:
            batch, report = Path(tmp) / "batch.parquet", Path(tmp) / "report.json"
            gen.write(batch, table)
            cmd = [
                str(self.binary),
                "check",
                "--baseline",
                str(p.baseline),
                "--expect-baseline-sha256",
                p.sha256,
                str(batch),
                "--json",
                str(report),
            ]
            try:
                proc = subprocess.run(
                    cmd, check=False, capture_output=True, text=True, timeout=self.timeout
                )
            except subprocess.TimeoutExpired as e:
                raise HarnessError(f"{tag}: check timed out after {self.timeout:.0f} s") from e
            doc = None
            try:
                doc = json.loads(report.read_text())
            except (OSError, ValueError):
                pass
            if (
                proc.returncode not in (0, 1)
                or doc is None
                or doc.get("exit_code") != proc.returncode
            ):
                with self.lock:  # only the first failure keeps its batch and is reported
                    first = not self.abort.is_set()
                    self.abort.set()
                if not first:
                    raise HarnessError("aborted")
                kept = self.work / f"failed-{tag.replace('/', '_')}.parquet"
                batch.replace(kept)
                cmd[cmd.index(str(batch))] = str(kept)
                why = (doc or {}).get("error") if doc else "no readable JSON report"
                self.error = HarnessError(
                    f"{tag}: check exited {proc.returncode} ({why}); the batch is kept\n"
                    f"command: {' '.join(cmd)}\nstderr:\n{proc.stderr.strip()}"
                )
                raise self.error
            findings = doc.get("findings", [])
            deny = sorted({f["code"] for f in findings if f.get("severity") == "deny"})
            warn = sorted({f["code"] for f in findings if f.get("severity") == "warn"})
            return proc.returncode, deny, warn

    def search(self, p: Pinned, family: str, size: int, seed: int) -> tuple[list[Record], Record]:
        """Bisect the rate for the largest passing one; every probe is recorded."""
        probes: list[Record] = []
        seen: dict[str, tuple[int, list[str], list[str]]] = {}  # batch sha -> outcome

        def probe(rate: float) -> Record:
            if self.abort.is_set():
                raise HarnessError("aborted")
            tag = f"{p.ds.name}/{family}/{size}/{seed}/{rate:g}"
            rec: Record = {
                "dataset": p.ds.name,
                "family": family,
                "size": size,
                "seed": seed,
                "step": len(probes),
                "rate": rate,
                "built": False,
                "exit_code": None,
                "codes": [],
                "warn_codes": [],
                "attacked": 0,
                "rows": 0,
                "reused": False,
            }
            built = build(p, family, size, seed, rate)
            if built is not None:
                b, _ = built
                table = probe_table(p, family, size, seed, built, self.sizes)
                # a rate that rounds to the row count of an earlier probe builds the same bytes
                key = table_sha256(table)
                if key in seen:
                    rc, deny, warn = seen[key]
                    rec["reused"] = True
                else:
                    rc, deny, warn = self.check(p, table, tag)
                    seen[key] = (rc, deny, warn)
                rec.update(
                    built=True,
                    exit_code=rc,
                    codes=deny,
                    warn_codes=warn,
                    attacked=int(b.attacked.sum()),
                    rows=gen.n_rows(b.frame),
                )
            probes.append(rec)
            return rec

        def passed(rec: Record) -> bool:
            return rec["exit_code"] == 0

        best: Record | None = None  # the largest passing probe
        stop: Record | None = None  # the smallest blocked (or unbuildable) probe above it
        floor = floor_rate(family, size)
        low = probe(floor)
        if not passed(low):
            stop = low
        else:
            best = low
            high = probe(RATE_MAX)
            if passed(high):
                best = high
            else:
                stop = high
                lo, hi = floor, RATE_MAX
                for _ in range(self.probes - 2):
                    mid = float(f"{math.sqrt(lo * hi):.4g}")
                    if not lo < mid < hi:
                        break
                    rec = probe(mid)
                    if passed(rec):
                        lo, best = mid, rec
                    else:
                        hi, stop = mid, rec
        result: Record = {
            "dataset": p.ds.name,
            "family": family,
            "size": size,
            "seed": seed,
            "probes": len(probes),
            "floor": floor,
            "budget": round(best["attacked"] / best["rows"], 6) if best else 0.0,
            "budget_rate": best["rate"] if best else None,
            "budget_rows": best["attacked"] if best else 0,
            "below_min": best is None,
            "saturated": best is not None and best["rate"] == RATE_MAX,
            "stop_rate": stop["rate"] if stop else None,
            "stop_codes": (stop["codes"] if stop["built"] else [NOT_BUILT]) if stop else [],
        }
        return probes, result


# ---------------------------------------------------------------------------
# Harm at the budget
# ---------------------------------------------------------------------------


def fit(ds: Dataset, frame: Frame) -> object:
    """A HistGradientBoostingClassifier(random_state=0) on the attacker model's features
    (standardized numerics, one-hot categories)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ds.cols(FLOAT, INT)),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ds.cols(CAT)),
        ],
        sparse_threshold=0.0,
    )
    model = make_pipeline(prep, HistGradientBoostingClassifier(random_state=0))
    model.fit(gen.to_pandas(frame, ds), frame[LABEL])
    return model


def predict(model: object, ds: Dataset, frame: Frame) -> np.ndarray:
    """Predicted classes of a frame's rows."""
    return np.asarray(model.predict(gen.to_pandas(frame, ds)))  # type: ignore[attr-defined]


TARGETED = re.compile(r"^(?P<col>\S+) > \S+ \(q(?P<q>\d+)\): class (?P<a>\d+) -> (?P<b>\d+)$")
DECILE = re.compile(r"\(decile (?P<d>\d+)\)")


def backdoor_rows(p: Pinned, family: str, b: Batch, held: Frame) -> tuple[Frame, int] | None:
    """The held-out rows an attack should turn into its target class, with the trigger applied
    as the builder applies it, and the target. Trigger and clean-label: rows of other classes
    with the trigger values stamped on; common-trigger: rows of other classes in the segment."""
    att = np.flatnonzero(b.attacked)
    target = int(b.frame[LABEL][att[0]])
    other = held[LABEL] != target
    if family in ("trigger", "clean-label"):
        rows = gen.take(held, np.flatnonzero(other))
        for c in b.trigger_features:
            rows[c] = np.full(len(rows[LABEL]), b.frame[c][att[0]], dtype=held[c].dtype)
        return rows, target
    col = b.trigger_features[0]
    if p.ds.kinds[col] == CAT:
        seg = held[col] == b.frame[col][att[0]]
    else:
        m = DECILE.search(b.detail)
        if m is None:
            return None
        d = int(m["d"])
        lo, hi = p.ctx.quantile(col, (d - 1) / 10), p.ctx.quantile(col, d / 10)
        seg = (held[col] > lo) & (held[col] <= hi)
    return gen.take(held, np.flatnonzero(seg & other)), target


def harm(pinned: dict[str, Pinned], searches: list[Record]) -> list[Record]:
    """For every (dataset, family, size): train on trusted + the passing batch at the median
    budget and on trusted + a clean batch, and compare them on a fresh held-out draw."""
    out: list[Record] = []
    clean_models: dict[tuple[str, int, int], object] = {}
    groups: dict[tuple[str, str, int], list[Record]] = defaultdict(list)
    for s in searches:
        groups[(s["dataset"], s["family"], s["size"])].append(s)
    t0 = time.perf_counter()
    for i, ((name, family, size), group) in enumerate(groups.items(), 1):
        if i % 10 == 0:
            print(f"  harm: {i}/{len(groups)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        p = pinned[name]
        med = median_search(group)
        seed = med["seed"]
        base: Record = {
            "dataset": name,
            "family": family,
            "size": size,
            "seed": seed,
            "budget": med["budget"],
            "budget_rate": med["budget_rate"],
            "below_min": med["below_min"],
            "floor": med["floor"],
            "saturated": med["saturated"],
        }
        held = p.ds.draw(gen.rng_for(name, "budget-held-out", size, seed), HELD_OUT_ROWS)
        key = (name, size, seed)
        if key not in clean_models:
            clean = p.ds.draw(gen.rng_for(name, "budget-clean", size, seed), size)
            clean_models[key] = fit(p.ds, gen.concat([p.ctx.trusted, clean]))
        m_clean = clean_models[key]
        built = build(p, family, size, seed, med["budget_rate"]) if med["budget_rate"] else None
        if built is None:
            metric = "attack success" if family in BACKDOOR_FAMILIES else "accuracy"
            out.append({**base, "metric": metric, "clean": None, "poisoned": None, "rows": 0})
            continue
        b, _ = built
        m_pois = fit(p.ds, gen.concat([p.ctx.trusted, b.frame]))
        sets: list[tuple[str, Frame, int | None]] = []  # (metric, rows, target class or None)
        if family in BACKDOOR_FAMILIES:
            found = backdoor_rows(p, family, b, held)
            if found is not None:
                sets.append(("attack success", *found))
        else:
            sets.append(("accuracy", held, None))
            m = TARGETED.match(b.detail) if family == "targeted-flip" else None
            if m is not None:
                thr = p.ctx.quantile(m["col"], int(m["q"]) / 100)
                sets.append(
                    (
                        "accuracy (region)",
                        gen.take(held, np.flatnonzero(held[m["col"]] > thr)),
                        None,
                    )
                )
        for metric, rows, target in sets:
            if not len(rows[LABEL]):
                continue
            vals = []
            for model in (m_clean, m_pois):
                pred = predict(model, p.ds, rows)
                hit = pred == target if target is not None else pred == rows[LABEL]
                vals.append(round(float(hit.mean()), 6))
            out.append(
                {
                    **base,
                    "metric": metric,
                    "clean": vals[0],
                    "poisoned": vals[1],
                    "rows": len(rows[LABEL]),
                }
            )
    return out


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def median_search(group: list[Record]) -> Record:
    """The lower median search by budget: an actual search, so its flags and seed carry."""
    ordered = sorted(group, key=lambda s: (s["budget"], s["saturated"], s.get("seed", 0)))
    return ordered[(len(ordered) - 1) // 2]


def budget_cell(s: Record) -> str:
    """A budget as a percentage; `< 0.25%` when even the smallest rate (the search's floor)
    blocked, `≥ x%` when the largest rate passed."""
    if s["below_min"]:
        return f"< {100 * s.get('floor', RATE_MIN):.2g}%"
    x = 100 * s["budget"]
    text = f"{x:.2f}%" if x < 1 else f"{x:.1f}%" if x < 10 else f"{x:.0f}%"
    return f"≥ {text}" if s["saturated"] else text


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal; `-` for none."""
    return "-" if x is None else f"{100 * x:.1f}%"


def markdown(cols: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; the header's alignment row right-aligns nothing (plain `---`)."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def codes_cell(searches: Iterable[Record], top: int = 3) -> str:
    """The most frequent stop codes over searches, with the count of searches each stopped."""
    c = Counter(code for s in searches for code in s["stop_codes"])
    if not c:
        return "-"
    return ", ".join(
        f"{code} ({n})" for code, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    )


def print_budgets(doc: dict) -> None:
    """Per size: family x dataset median budgets, the median over datasets, the stop codes."""
    datasets = [d for d in doc["datasets"] if any(s["dataset"] == d for s in doc["searches"])]
    families = [f for f in FAMILIES if any(s["family"] == f for s in doc["searches"])]
    for size in doc["sizes"]:
        runs = [s for s in doc["searches"] if s["size"] == size]
        if not runs:
            continue
        print(
            f"\n### Evasion budget, {size}-row batches (median over {doc['seeds']} seed(s); "
            f"largest attacked share that passes)\n"
        )
        rows = []
        for fam in families:
            cells, medians = [], []
            for d in datasets:
                group = [s for s in runs if s["family"] == fam and s["dataset"] == d]
                if group:
                    med = median_search(group)
                    medians.append(med)
                    cells.append(budget_cell(med))
                else:
                    cells.append("-")
            stopped = codes_cell(s for s in runs if s["family"] == fam)
            overall = budget_cell(median_search(medians)) if medians else "-"
            rows.append([fam, *cells, overall, stopped])
        print(markdown(["family", *datasets, "median", "stopped by (searches)"], rows))


def print_harm(doc: dict) -> None:
    """The harm table: clean vs poisoned model at each median budget."""
    harm_rows = doc.get("harm") or []
    if not harm_rows:
        return
    order = {f: i for i, f in enumerate(FAMILIES)}
    ds_order = {d: i for i, d in enumerate(doc["datasets"])}
    harm_rows = sorted(
        harm_rows,
        key=lambda h: (
            h["size"],
            order.get(h["family"], 99),
            ds_order.get(h["dataset"], 99),
            h["metric"],
        ),
    )
    print(
        "\n### Harm at the median budget (HistGradientBoostingClassifier on trusted + batch; "
        f"held-out draw of {HELD_OUT_ROWS:,} rows)\n"
    )
    rows = []
    for h in harm_rows:
        budget = budget_cell(h)
        delta = "-"
        if h["poisoned"] is not None:
            delta = f"{round(100 * (h['poisoned'] - h['clean']), 1) + 0.0:+.1f}"  # no "-0.0"
        rows.append(
            [
                h["family"],
                h["dataset"],
                str(h["size"]),
                budget,
                h["metric"],
                str(h["rows"]),
                pct(h["clean"]),
                pct(h["poisoned"]),
                delta,
            ]
        )
    print(
        markdown(
            [
                "family",
                "dataset",
                "size",
                "budget",
                "metric",
                "rows",
                "clean model",
                "poisoned model",
                "Δ pts",
            ],
            rows,
        )
    )


# ---------------------------------------------------------------------------


def parse_list(value: str | None, allowed: list[str], what: str) -> list[str]:
    """A comma-separated subset of allowed, in allowed's order; exits 2 on an unknown name."""
    if not value:
        return list(allowed)
    names = [v for v in value.split(",") if v]
    unknown = [v for v in names if v not in allowed]
    if unknown:
        print(
            f"error: unknown {what} {','.join(unknown)}; choose from {','.join(allowed)}",
            file=sys.stderr,
        )
        sys.exit(2)
    return [a for a in allowed if a in names]


def run(args: argparse.Namespace) -> dict:
    """Pin the baselines, run every search (in parallel), optionally measure the harm."""
    binary = args.bin.resolve()
    datasets = parse_list(
        args.datasets or (",".join(QUICK_DATASETS) if args.quick else None),
        list(gen.LOADERS),
        "dataset",
    )
    families = parse_list(args.families, FAMILIES, "family")
    sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    seeds = 1 if args.quick and args.seeds is None else (args.seeds or 3)
    id_sizes = tuple(gen.SIZES) + tuple(s for s in sizes if s not in gen.SIZES)
    args.work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    pinned = {d: prepare(d, binary, args.work, args.data) for d in datasets}
    for d, p in pinned.items():
        how = f"reused {p.baseline}" if p.reused else f"pinned {p.baseline}"
        print(f"{d}: {how} ({p.sha256[:12]})", file=sys.stderr)
    runner = Runner(binary, args.work, id_sizes, args.timeout, args.probes)
    tasks = [
        (d, f, size, seed)
        for d in datasets
        for f in families
        for size in sizes
        for seed in range(seeds)
    ]
    print(
        f"{len(tasks)} searches ({len(datasets)} datasets x {len(families)} families x "
        f"{len(sizes)} size(s) x {seeds} seed(s)), up to {args.probes} probes each, "
        f"{args.jobs} job(s)",
        file=sys.stderr,
    )
    probes: list[Record] = []
    searches: list[Record] = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {
            pool.submit(runner.search, pinned[d], f, size, seed): (d, f, size, seed)
            for d, f, size, seed in tasks
        }
        pending = set(futures)
        step = max(1, len(tasks) // 20)
        done_count = 0
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                err = fut.exception()
                if err is not None:
                    runner.abort.set()
                    for other in pending:
                        other.cancel()
                    pool.shutdown(wait=True)  # the searches still running stop at their next probe
                    raise runner.error or err
                ps, s = fut.result()
                probes += ps
                searches.append(s)
                done_count += 1
                if done_count % step == 0 or done_count == len(tasks):
                    print(
                        f"  {done_count}/{len(tasks)} searches, {len(probes)} probes "
                        f"({time.perf_counter() - t0:.0f} s)",
                        file=sys.stderr,
                    )
    fam_key = {f: i for i, f in enumerate(FAMILIES)}
    ds_key = {d: i for i, d in enumerate(datasets)}

    def order(r: Record) -> tuple:
        return (ds_key[r["dataset"]], fam_key[r["family"]], r["size"], r["seed"], r.get("step", 0))

    probes.sort(key=order)
    searches.sort(key=order)
    search_seconds = time.perf_counter() - t0
    harm_rows: list[Record] = []
    if args.harm:
        t1 = time.perf_counter()
        # One OpenMP thread: on 2 busy cores HistGradientBoosting's threads spin and a fit
        # takes 5-7x longer; the fitted models are identical. (threadpoolctl is a dependency
        # of scikit-learn.)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            harm_rows = harm(pinned, searches)
        print(
            f"harm: {len(harm_rows)} measurements ({time.perf_counter() - t1:.0f} s)",
            file=sys.stderr,
        )
    print(
        f"{len(searches)} searches, {len(probes)} probes "
        f"({sum(not p['reused'] and p['built'] for p in probes)} checks) "
        f"in {search_seconds:.0f} s; "
        f"total {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    return {
        "binary": str(binary),
        "baselines": {
            d: {"path": str(p.baseline), "sha256": p.sha256, "reused": p.reused}
            for d, p in pinned.items()
        },
        "datasets": datasets,
        "families": families,
        "sizes": sizes,
        "seeds": seeds,
        "rate_range": [RATE_MIN, RATE_MAX],
        "probes_per_search": args.probes,
        "probes": probes,
        "searches": searches,
        "harm": harm_rows,
    }


def main() -> int:
    """Parse the arguments; run the searches or reprint an earlier --out file."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", type=Path, help="the poisongate binary")
    ap.add_argument("--data", type=Path, help="a gen.py directory whose baselines may be reused")
    ap.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "pg-budget-work",
        help="trusted sets, baselines and the probes' temporary files "
        "(default: TMP/pg-budget-work)",
    )
    ap.add_argument("--datasets", help=f"comma-separated subset of {','.join(gen.LOADERS)}")
    ap.add_argument("--families", help=f"comma-separated subset of {','.join(FAMILIES)}")
    ap.add_argument("--sizes", default="2000", help="comma-separated batch sizes (default 2000)")
    ap.add_argument(
        "--seeds", type=int, default=None, help="seeds 0..N-1 (default 3; 1 with --quick)"
    )
    ap.add_argument(
        "--probes", type=int, default=PROBES, help=f"probes per search (default {PROBES})"
    )
    ap.add_argument(
        "--jobs", type=int, default=2, help="searches (so probes) in parallel (default 2)"
    )
    ap.add_argument("--timeout", type=float, default=600, help="seconds per check (default 600)")
    ap.add_argument(
        "--quick", action="store_true", help=f"1 seed, datasets {','.join(QUICK_DATASETS)}"
    )
    ap.add_argument(
        "--floor",
        type=float,
        default=DEFAULT_FLOOR,
        help=f"smallest attack rate probed (default {DEFAULT_FLOOR}; below it a cell reads '< floor')",
    )
    ap.add_argument("--harm", action="store_true", help="train models at the median budgets")
    ap.add_argument(
        "--out", type=Path, help="write every probe and search here (JSON, sorted keys)"
    )
    ap.add_argument(
        "--results", type=Path, help="print the tables of an earlier --out file; run nothing"
    )
    args = ap.parse_args()

    if args.results:
        try:
            doc = json.loads(args.results.read_text())
        except (OSError, ValueError) as e:
            print(f"error: cannot read {args.results}: {e}", file=sys.stderr)
            return 2
        print_budgets(doc)
        print_harm(doc)
        return 0
    if args.bin is None:
        ap.error("--bin is required (unless --results is given)")
    if not args.bin.is_file():
        print(f"error: {args.bin} is not a file", file=sys.stderr)
        return 2
    if args.probes < 2:
        ap.error("--probes must be at least 2")
    if not 0 < args.floor < RATE_MAX:
        ap.error(f"--floor must lie in (0, {RATE_MAX})")
    global RATE_MIN  # one setting for every search of this run
    RATE_MIN = args.floor
    try:
        doc = run(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n")
        print(f"results: {args.out}", file=sys.stderr)
    print_budgets(doc)
    print_harm(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
