#!/usr/bin/env python3
"""Run poisongate over the batches written by gen.py and score its detectors.

    python benches/eval/run.py --data /tmp/pg-eval --bin target/release/poisongate
    python benches/eval/run.py --data /tmp/pg-eval --bin target/debug/poisongate \
        --no-quarantine --jobs 2 --out /tmp/pg-eval/results.json

For every dataset in DIR/manifest.json it pins DIR/<dataset>/baseline.json from trusted.parquet,
then checks every batch (in parallel, --jobs) and keeps the JSON report and the quarantine CSV
under DIR/reports/. It prints, per family and per dataset x family, the block rate, errors,
row-level quarantine precision / recall / AUROC against the attacked row ids, and for trigger
attacks whether the trigger feature was named; then which deny codes fired per family, and
PASS / MISS for each target. Per-run results go to --out (JSON, sorted keys).

Exit code: 0 when the evaluation ran (targets may be missed; --strict makes a MISS exit 1),
2 when it could not run (binary missing, profile failed, bad manifest).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import pyarrow.parquet as pq

ID = "row_id"
LABEL = "label"
PROFILE_SEED = "7"
# Which finding codes "name" the attacked feature: a stamped trigger should be reported as a
# trigger; a relabelled common segment has no trigger value and shows as a segment label shift.
NAMING_CODES = {"common-trigger": ("poison-segment-label-shift", "poison-trigger")}
DEFAULT_NAMING = ("poison-trigger", "poison-point-mass")
FAMILY_ORDER = (
    "clean",
    "mild",
    "random-flip",
    "targeted-flip",
    "confident-flip",
    "swap",
    "trigger",
    "clean-label",
    "common-trigger",
    "outlier",
    "mixed-row",
    "duplicate",
    "near-duplicate",
)

Run = dict  # one checked batch: the manifest entry's keys plus the outcome and metrics


# ---------------------------------------------------------------------------
# Running the binary
# ---------------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    """The evaluation cannot run: say why and exit 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def supports_quarantine(binary: Path) -> bool:
    out = subprocess.run([str(binary), "check", "--help"], capture_output=True, text=True)
    return "--quarantine" in out.stdout


def profile(binary: Path, data: Path, dataset: str) -> Path:
    baseline = data / dataset / "baseline.json"
    cmd = [
        str(binary),
        "profile",
        str(data / dataset / "trusted.parquet"),
        "-o",
        str(baseline),
        "--label",
        LABEL,
        "--id",
        ID,
        "--seed",
        PROFILE_SEED,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(
            f"profile of {dataset} exited {proc.returncode}:\n{proc.stderr.strip()}\n"
            f"command: {' '.join(cmd)}"
        )
    return baseline


def check(
    binary: Path,
    baseline: Path,
    data: Path,
    reports: Path,
    entry: dict,
    quarantine: bool,
    timeout: float,
) -> Run:
    stem = reports / Path(entry["path"]).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    report_path = stem.with_suffix(".json")
    q_path = stem.with_suffix(".quarantine.csv")
    s_path = stem.with_suffix(".scores.csv")
    for p in (report_path, q_path, s_path):
        p.unlink(missing_ok=True)
    cmd = [
        str(binary),
        "check",
        "--baseline",
        str(baseline),
        str(data / entry["path"]),
        "--json",
        str(report_path),
    ]
    if quarantine:
        cmd += ["--quarantine", str(q_path), "--row-scores", str(s_path)]
    run: Run = {k: v for k, v in entry.items() if k not in ("attacked_ids", "ignore_ids")}
    run["attacked"] = len(entry["attacked_ids"])
    run["report"] = str(report_path)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        rc, stderr = -1, f"timed out after {timeout:.0f} s"
    run["seconds"] = round(time.perf_counter() - t0, 4)
    run["exit_code"] = rc
    run["error"] = None
    report = None
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as e:
        run["error"] = f"no readable JSON report ({e.__class__.__name__})"
    if rc not in (0, 1):
        first_line = next(iter(stderr.strip().splitlines()), "")
        run["error"] = (report or {}).get("error") or first_line or f"exit {rc}"
    elif report is not None and report.get("exit_code") != rc:
        run["error"] = f"report says exit_code {report.get('exit_code')}, process exited {rc}"
    run["outcome"] = "error" if run["error"] else ("blocked" if rc == 1 else "pass")
    run["findings"] = [
        {"code": f.get("code"), "severity": f.get("severity"), "subject": f.get("subject") or {}}
        for f in (report or {}).get("findings", [])
    ]
    score(run, entry, data, q_path if quarantine else None)
    if quarantine:
        s_path.unlink(missing_ok=True)
    return run


# ---------------------------------------------------------------------------
# Per-run metrics
# ---------------------------------------------------------------------------


def named(findings: list[dict], features: list[str], family: str) -> bool:
    """Some naming finding's subject column (a pair reads "f1 & f2") is a trigger feature."""
    want = set(features)
    codes = NAMING_CODES.get(family, DEFAULT_NAMING)
    for f in findings:
        if f["code"] in codes:
            cols = {c.strip() for c in str(f["subject"].get("column", "")).split(" & ")}
            if cols & want:
                return True
    return False


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve; ties count one half (average ranks)."""
    if labels.all() or not labels.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def score(run: Run, entry: dict, data: Path, q_path: Path | None) -> None:
    fs = run["findings"]
    run["deny_codes"] = sorted({f["code"] for f in fs if f["severity"] == "deny"})
    run["warn_codes"] = sorted({f["code"] for f in fs if f["severity"] == "warn"})
    run["named"] = (
        named(fs, entry["trigger_features"], entry["family"]) if entry["trigger_features"] else None
    )
    for k in ("precision", "recall", "auroc", "flagged", "flagged_share", "quarantine_problem"):
        run[k] = None
    if q_path is None or run["outcome"] == "error":
        return
    ids = [str(i) for i in pq.read_table(data / entry["path"], columns=[ID])[ID].to_pylist()]
    flagged: dict[str, float] = {}
    problems: list[str] = []
    if q_path.exists():
        with q_path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"row", "id", "codes", "score"} <= set(
                reader.fieldnames
            ):
                problems.append(f"header {reader.fieldnames}, expected row,id,codes,score")
            else:
                for rec in reader:
                    try:
                        row, rid, value = int(rec["row"]), rec["id"], float(rec["score"])
                    except (TypeError, ValueError):
                        problems.append(f"unreadable line {reader.line_num}")
                        continue
                    if not 0 <= row < len(ids) or ids[row] != rid:
                        problems.append(f"row {row} does not hold id {rid}")
                    flagged[rid] = value
    else:
        problems.append("no quarantine file written")
    run["quarantine_problem"] = "; ".join(problems[:3]) or None
    ignore = {str(i) for i in entry["ignore_ids"]}
    attacked = {str(i) for i in entry["attacked_ids"]} - ignore
    universe = [i for i in ids if i not in ignore]
    hits = [i for i in flagged if i not in ignore]
    tp = sum(i in attacked for i in hits)
    run["flagged"] = len(hits)
    run["flagged_share"] = len(hits) / len(universe) if universe else None
    if attacked:
        run["precision"] = tp / len(hits) if hits else None
        run["recall"] = tp / len(attacked)
        # AUROC over every row's score (--row-scores) when written; otherwise rows outside
        # the quarantine score 0.
        scores = flagged
        s_path = q_path.with_name(q_path.name.replace(".quarantine.csv", ".scores.csv"))
        if s_path.exists():
            with s_path.open(newline="") as fh:
                scores = {rec["id"]: float(rec["score"]) for rec in csv.DictReader(fh)}
        y = np.array([i in attacked for i in universe])
        s = np.array([scores.get(i, 0.0) for i in universe])
        run["auroc"] = auroc(y, s)


# ---------------------------------------------------------------------------
# Aggregation and printing
# ---------------------------------------------------------------------------


def mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(vals) / len(vals) if vals else None


def blocked_share(runs: list[Run]) -> float | None:
    return sum(r["outcome"] == "blocked" for r in runs) / len(runs) if runs else None


def not_passed_share(runs: list[Run]) -> float | None:
    return sum(r["outcome"] != "pass" for r in runs) / len(runs) if runs else None


def named_share(runs: list[Run]) -> float | None:
    """Among blocked runs of a trigger attack: how many named a trigger feature."""
    b = [r for r in runs if r["named"] is not None and r["outcome"] == "blocked"]
    return sum(bool(r["named"]) for r in b) / len(b) if b else None


def blocked_named_share(runs: list[Run]) -> float | None:
    return (
        sum(r["outcome"] == "blocked" and bool(r["named"]) for r in runs) / len(runs)
        if runs
        else None
    )


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def family_key(f: str) -> int:
    return FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER)


def print_table(title: str, groups: dict[tuple, list[Run]], key_names: list[str]) -> None:
    cols = [
        *key_names,
        "hard",
        "runs",
        "blocked",
        "errors",
        "named",
        "q-prec",
        "q-recall",
        "auroc",
        "flagged",
        "sec",
    ]
    rows = []
    for key, runs in groups.items():
        rows.append(
            [
                *map(str, key[:-1]),
                "hard" if key[-1] else "",
                str(len(runs)),
                pct(blocked_share(runs)),
                str(sum(r["outcome"] == "error" for r in runs)),
                pct(named_share(runs)),
                num(mean(r["precision"] for r in runs)),
                num(mean(r["recall"] for r in runs)),
                num(mean(r["auroc"] for r in runs)),
                pct(mean(r["flagged_share"] for r in runs)),
                f"{mean(r['seconds'] for r in runs) or 0:.2f}",
            ]
        )
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print(f"\n== {title}")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def group(runs: list[Run], fields: list[str]) -> dict[tuple, list[Run]]:
    out: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        out[(*(r[f] for f in fields), r["hard"])].append(r)

    def order(k: tuple) -> tuple:
        return tuple(
            family_key(v) if f == "family" else v for f, v in zip([*fields, "hard"], k, strict=True)
        )

    return dict(sorted(out.items(), key=lambda kv: order(kv[0])))


def print_codes(runs: list[Run]) -> None:
    print("\n== deny codes per family (runs in which each code fired at deny / runs)")
    for (family, hard), rs in group(runs, ["family"]).items():
        counts = Counter(c for r in rs for c in r["deny_codes"])
        label = f"{family}{' (hard)' if hard else ''}"
        fired = ", ".join(f"{c} {n}" for c, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        print(f"{label:26s} {len(rs):5d}  {fired or '(none)'}")
    errors = Counter(str(r["error"]) for r in runs if r["outcome"] == "error")
    if errors:
        print("\n== errors")
        for e, n in errors.most_common(10):
            print(f"{n:5d}  {e}")
    problems = Counter(str(r["quarantine_problem"]) for r in runs if r["quarantine_problem"])
    if problems:
        print("\n== quarantine file problems")
        for e, n in problems.most_common(10):
            print(f"{n:5d}  {e}")


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    families: tuple[str, ...]
    hard: bool | None  # None: hard and non-hard runs alike
    metric: Callable[[list[Run]], float | None]
    at_most: bool  # True: value <= goal passes; False: value >= goal passes
    goal: float
    needs_quarantine: bool = False

    def select(self, runs: list[Run]) -> list[Run]:
        return [
            r
            for r in runs
            if (not self.families or r["family"] in self.families)
            and (self.hard is None or r["hard"] == self.hard)
        ]


def mean_of(field: str) -> Callable[[list[Run]], float | None]:
    return lambda runs: mean(r[field] for r in runs)


def targets() -> list[Target]:
    t = [
        Target("clean batches blocked or errored", ("clean",), None, not_passed_share, True, 0.01),
        Target("mild drift blocked or errored", ("mild",), None, not_passed_share, True, 0.05),
        Target("random flips >= 5% blocked", ("random-flip",), False, blocked_share, False, 0.95),
        Target(
            "targeted flips >= 5% blocked", ("targeted-flip",), False, blocked_share, False, 0.90
        ),
        Target(
            "triggers >= 1% blocked with a trigger feature named",
            ("trigger",),
            False,
            blocked_named_share,
            False,
            0.95,
        ),
        Target("outliers >= 2% blocked", ("outlier",), False, blocked_share, False, 0.95),
        Target("duplicate floods >= 2% blocked", ("duplicate",), False, blocked_share, False, 0.95),
        Target(
            "near-duplicate floods >= 2% blocked",
            ("near-duplicate",),
            False,
            blocked_share,
            False,
            0.95,
        ),
    ]
    for fam in ("trigger", "duplicate", "near-duplicate", "outlier"):
        for field in ("precision", "recall"):
            t.append(
                Target(
                    f"quarantine {field} on {fam}",
                    (fam,),
                    False,
                    mean_of(field),
                    False,
                    0.8,
                    needs_quarantine=True,
                )
            )
    for fam in ("random-flip", "targeted-flip", "confident-flip", "swap", "trigger"):
        t.append(
            Target(
                f"row AUROC on {fam}",
                (fam,),
                False,
                mean_of("auroc"),
                False,
                0.9,
                needs_quarantine=True,
            )
        )
    t.append(Target("hard attacks blocked", (), True, blocked_share, False, 0.5))
    return t


def evaluate_targets(runs: list[Run], quarantine: bool) -> list[dict]:
    results = []
    for tg in targets():
        sel = tg.select(runs)
        value = tg.metric(sel) if sel else None
        if tg.needs_quarantine and not quarantine:
            status = "SKIP"
        elif value is None:
            status = "N/A"
        else:
            status = "PASS" if (value <= tg.goal if tg.at_most else value >= tg.goal) else "MISS"
        results.append(
            {
                "target": tg.name,
                "value": value,
                "goal": tg.goal,
                "op": "<=" if tg.at_most else ">=",
                "runs": len(sel),
                "status": status,
            }
        )
    return results


def print_targets(results: list[dict]) -> None:
    print("\n== targets")
    width = max(len(r["target"]) for r in results)
    for r in results:
        is_rate = "AUROC" not in r["target"] and "quarantine" not in r["target"]
        show = pct if is_rate else num
        print(
            f"{r['status']:4s}  {r['target']:{width}s}  {show(r['value']):>7s}  "
            f"{r['op']} {show(r['goal']):>6s}  ({r['runs']} runs)"
        )
    c = Counter(r["status"] for r in results)
    print(f"\n{c['PASS']} passed, {c['MISS']} missed, {c['SKIP']} skipped, {c['N/A']} without runs")


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="directory written by gen.py")
    ap.add_argument("--bin", type=Path, required=True, help="path to the poisongate binary")
    ap.add_argument("--jobs", type=int, default=2, help="checks run in parallel (default 2)")
    ap.add_argument("--out", type=Path, help="write per-run results here (JSON)")
    ap.add_argument("--reports", type=Path, help="where reports go (default DATA/reports)")
    ap.add_argument(
        "--no-quarantine",
        action="store_true",
        help="do not pass --quarantine; row-level metrics are skipped",
    )
    ap.add_argument("--datasets", help="comma-separated subset of the manifest's datasets")
    ap.add_argument("--families", help="comma-separated subset of scenario families")
    ap.add_argument("--by-scenario", action="store_true", help="also print a per-scenario table")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per check (default 600)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()

    binary = args.bin.resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        fail(f"{args.bin} is not an executable file")
    quarantine = not args.no_quarantine
    if quarantine and not supports_quarantine(binary):
        fail(
            f"{binary} check has no --quarantine flag; pass --no-quarantine to "
            "evaluate verdicts only"
        )
    data = args.data.resolve()
    try:
        manifest: list[dict] = json.loads((data / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        fail(f"cannot read {data / 'manifest.json'}: {e}")
    if args.datasets:
        keep = set(args.datasets.split(","))
        manifest = [e for e in manifest if e["dataset"] in keep]
    if args.families:
        keep = set(args.families.split(","))
        manifest = [e for e in manifest if e["family"] in keep]
    if not manifest:
        fail("no batches selected")
    reports = (args.reports or data / "reports").resolve()

    t0 = time.perf_counter()
    datasets = sorted({e["dataset"] for e in manifest})
    baselines = {ds: profile(binary, data, ds) for ds in datasets}
    print(
        f"pinned {len(baselines)} baseline(s) in {time.perf_counter() - t0:.1f} s; checking "
        f"{len(manifest)} batches with {args.jobs} job(s)",
        file=sys.stderr,
    )

    runs: list[Run] = []
    step = max(1, len(manifest) // 10)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(
                check, binary, baselines[e["dataset"]], data, reports, e, quarantine, args.timeout
            )
            for e in manifest
        ]
        for n, fut in enumerate(as_completed(futures), 1):
            runs.append(fut.result())
            if n % step == 0 or n == len(futures):
                print(
                    f"  {n}/{len(futures)} checked ({time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                )
    runs.sort(
        key=lambda r: (r["dataset"], family_key(r["family"]), r["scenario"], r["size"], r["seed"])
    )
    elapsed = time.perf_counter() - t0

    print(
        f"poisongate eval: {len(runs)} checks of {len(datasets)} dataset(s) with {binary} "
        f"({'with' if quarantine else 'without'} quarantine) in {elapsed:.0f} s"
    )
    print_table("per family", group(runs, ["family"]), ["family"])
    print_table("per dataset x family", group(runs, ["dataset", "family"]), ["dataset", "family"])
    if args.by_scenario:
        print_table(
            "per scenario",
            group(runs, ["dataset", "scenario", "size"]),
            ["dataset", "scenario", "size"],
        )
    print_codes(runs)
    results = evaluate_targets(runs, quarantine)
    print_targets(results)

    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "binary": str(binary),
            "data": str(data),
            "quarantine": quarantine,
            "seconds": round(elapsed, 1),
            "runs": runs,
            "targets": results,
        }
        args.out.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n")
        print(f"\nper-run results: {args.out}")
    missed = any(r["status"] == "MISS" for r in results)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
