#!/usr/bin/env python3
"""Run poisongate over the batches written by gen.py and score its detectors.

    python benches/eval/run.py --data /tmp/pg-eval --bin target/release/poisongate
    python benches/eval/run.py --data /tmp/pg-eval --bin target/debug/poisongate \
        --no-quarantine --jobs 2 --out /tmp/pg-eval/results.json
    python benches/eval/run.py --results after.json --compare-with before.json   # before -> after

For every dataset in DIR/manifest.json it pins DIR/<dataset>/baseline.json from trusted.parquet,
then checks every batch (in parallel, --jobs) and keeps the JSON report and the quarantine CSV
under DIR/reports/. It prints, per family and per dataset x family, the block rate, errors,
row-level quarantine precision / recall / AUROC against the attacked row ids, and for trigger
attacks whether the trigger feature was named; then which deny codes fired per family, which
codes blocked clean and mild batches (per dataset, with an example report), which attacks passed
(and whether a finding warned), the headline rates, and PASS / MISS for each target. Per-run
results go to --out (JSON, sorted keys). --results prints the tables of such a file without
running anything; --compare-with OLD.json prints every table again as OLD -> this one.

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
    recheck: bool = False,
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
        *pin(baseline),
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
    run["recheck_plain"] = run["recheck"] = run["poison_left"] = None
    if recheck and quarantine and run["outcome"] == "blocked" and run["flagged"]:
        drop_and_recheck(binary, baseline, data, entry, run, stem, timeout)
    return run


def pin(baseline: Path) -> list[str]:
    """`--expect-baseline-sha256` from the sidecar `profile` wrote, as a pipeline pins it."""
    sidecar = baseline.with_name(baseline.name + ".sha256")
    try:
        return ["--expect-baseline-sha256", sidecar.read_text().split()[0]]
    except (OSError, IndexError):
        return []


def drop_and_recheck(
    binary: Path,
    baseline: Path,
    data: Path,
    entry: dict,
    run: Run,
    stem: Path,
    timeout: float,
) -> None:
    """Drop the quarantined rows, as the README tells a pipeline it may, and check the rest:
    once on its own (`recheck_plain`) and once with `--after-quarantine` the parent's report
    (`recheck`); `poison_left` is the share of the attacked rows still in the batch."""
    q_path = stem.with_suffix(".quarantine.csv")
    child = stem.with_suffix(".child.parquet")
    with q_path.open(newline="") as fh:
        dropped = {int(rec["row"]) for rec in csv.DictReader(fh)}
    table = pq.read_table(data / entry["path"])
    keep = np.ones(table.num_rows, dtype=bool)
    keep[[r for r in dropped if r < table.num_rows]] = False
    pq.write_table(table.filter(keep), child)
    ids = [str(i) for i in table.column(ID).to_pylist()]
    left = {ids[i] for i in np.flatnonzero(keep)}
    ignore = {str(i) for i in entry["ignore_ids"]}
    attacked = {str(i) for i in entry["attacked_ids"]} - ignore
    run["poison_left"] = len(attacked & left) / len(attacked) if attacked else None
    for key, extra in (
        ("recheck_plain", []),
        ("recheck", ["--after-quarantine", run["report"]]),
    ):
        cmd = [str(binary), "check", "--baseline", str(baseline), *pin(baseline), str(child), *extra]
        try:
            rc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        run[key] = {0: "pass", 1: "blocked"}.get(rc, "error")
    child.unlink(missing_ok=True)


def print_rechecks(runs: list[Run]) -> None:
    """The drop-and-recheck loop: of the blocked attack batches with a quarantine, how many
    pass once it is dropped, alone and with --after-quarantine, and with how much poison."""
    rs = [r for r in runs if r.get("recheck") is not None and r["family"] not in ("clean", "mild")]
    if not rs:
        return
    print("\n== drop the quarantine and check again (blocked attack batches)")
    print(f"{'family':<16} {'runs':>5} {'pass alone':>11} {'  >=half left':>13} "
          f"{'pass --after-q':>15} {'  >=half left':>13} {'poison left':>12}")
    for fam in sorted({r["family"] for r in rs}) + ["all"]:
        sel = rs if fam == "all" else [r for r in rs if r["family"] == fam]
        plain = [r for r in sel if r["recheck_plain"] == "pass"]
        after = [r for r in sel if r["recheck"] == "pass"]
        half = lambda xs: sum((r["poison_left"] or 0) >= 0.5 for r in xs)  # noqa: E731
        print(
            f"{fam:<16} {len(sel):>5} {len(plain):>11} {half(plain):>13} {len(after):>15} "
            f"{half(after):>13} {pct(mean(r['poison_left'] for r in sel)):>12}"
        )


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


def scored(runs: list[Run]) -> list[Run]:
    """Attacked runs with row-level metrics: no error, and a quarantine was asked for."""
    return [r for r in runs if r["recall"] is not None]


def q_count(runs: list[Run]) -> str:
    """Runs with a non-empty quarantine (the precision mean's runs) / attacked runs scored."""
    s = scored(runs)
    return f"{sum(r['precision'] is not None for r in s)}/{len(s)}" if s else "-"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def blocked_cell(runs: list[Run]) -> str:
    return f"{pct(blocked_share(runs))} ({sum(r['outcome'] == 'blocked' for r in runs)})"


def family_key(f: str) -> int:
    return FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER)


# Table columns: name and cell. q-prec is the mean over runs with a non-empty quarantine; q-n
# says how many those were out of the attacked runs scored; q-recall is the mean over all of
# them (an empty quarantine has recall 0).
COLUMNS: list[tuple[str, Callable[[list[Run]], str]]] = [
    ("runs", lambda rs: str(len(rs))),
    ("blocked", blocked_cell),
    ("errors", lambda rs: str(sum(r["outcome"] == "error" for r in rs))),
    ("named", lambda rs: pct(named_share(rs))),
    ("q-prec", lambda rs: num(mean(r["precision"] for r in rs))),
    ("q-n", q_count),
    ("q-recall", lambda rs: num(mean(r["recall"] for r in rs))),
    ("auroc", lambda rs: num(mean(r["auroc"] for r in rs))),
    ("flagged", lambda rs: pct(mean(r["flagged_share"] for r in rs))),
    ("sec", lambda rs: f"{mean(r['seconds'] for r in rs) or 0:.2f}"),
]
COMPARED = ("runs", "blocked", "errors", "named", "q-prec", "q-n", "q-recall", "auroc", "flagged")


def print_rows(title: str | None, cols: list[str], rows: list[list[str]]) -> None:
    """An aligned table under "== title" (no title line when title is None)."""
    if title is not None:
        print(f"\n== {title}")
    if not rows:
        print("(none)")
        return
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def key_cells(key: tuple) -> list[str]:
    return [*map(str, key[:-1]), "hard" if key[-1] else ""]


def print_table(title: str, groups: dict[tuple, list[Run]], key_names: list[str]) -> None:
    rows = [[*key_cells(key), *(cell(runs) for _, cell in COLUMNS)] for key, runs in groups.items()]
    print_rows(title, [*key_names, "hard", *(c for c, _ in COLUMNS)], rows)


def arrow(old: str, new: str) -> str:
    return old if old == new else f"{old} -> {new}"


def print_compare_table(
    title: str, old: dict[tuple, list[Run]], new: dict[tuple, list[Run]], key_names: list[str]
) -> None:
    """The same table with every cell as old -> new (one value where nothing changed)."""
    keys = list(new) + [k for k in old if k not in new]
    cells = [(c, f) for c, f in COLUMNS if c in COMPARED]
    rows = []
    for key in keys:
        o, n = old.get(key, []), new.get(key, [])
        rows.append(
            [
                *key_cells(key),
                *(arrow(f(o) if o else "-", f(n) if n else "-") for _, f in cells),
            ]
        )
    print_rows(title, [*key_names, "hard", *(c for c, _ in cells)], rows)


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


# -- headline numbers and diagnostics ----------------------------------------

QUARANTINE_FAMILIES = ("trigger", "duplicate", "outlier")


def count_share(runs: list[Run], outcome: str) -> tuple[float | None, str]:
    k = sum(r["outcome"] == outcome for r in runs)
    errors = sum(r["outcome"] == "error" for r in runs)
    extra = f", {errors} errors" if errors else ""
    return (k / len(runs) if runs else None), f"{k}/{len(runs)}{extra}"


def headline(runs: list[Run]) -> list[tuple[str, float | None, str]]:
    """(name, value, detail). Pass and block rates count errors as failures."""
    attacks = [r for r in runs if r["expect"] == "block"]
    out = [
        ("clean+mild pass rate", *count_share([r for r in runs if r["expect"] == "pass"], "pass")),
        ("  clean pass rate", *count_share([r for r in runs if r["family"] == "clean"], "pass")),
        ("  mild pass rate", *count_share([r for r in runs if r["family"] == "mild"], "pass")),
        (
            "easy+medium attack block rate",
            *count_share([r for r in attacks if not r["hard"]], "blocked"),
        ),
        ("hard attack block rate", *count_share([r for r in attacks if r["hard"]], "blocked")),
    ]
    fams = [("/".join(QUARANTINE_FAMILIES), QUARANTINE_FAMILIES)]
    fams += [(f, (f,)) for f in QUARANTINE_FAMILIES]
    for label, fs in fams:
        indent = "  " if len(fs) == 1 else ""
        s = scored([r for r in attacks if r["family"] in fs and not r["hard"]])
        with_q = [r for r in s if r["precision"] is not None]
        out.append(
            (
                f"{indent}quarantine precision, {label}",
                mean(r["precision"] for r in with_q),
                f"{len(with_q)}/{len(s)} non-empty",
            )
        )
        out.append(
            (f"{indent}quarantine recall, {label}", mean(r["recall"] for r in s), f"{len(s)} runs")
        )
    return out


def headline_value(name: str, value: float | None) -> str:
    return num(value) if "quarantine" in name else pct(value)


def print_headline(runs: list[Run]) -> None:
    print(
        "\n== headline (errors count as failures; quarantine: non-hard attacks, precision over "
        "the runs with a non-empty quarantine, recall over all)"
    )
    rows = headline(runs)
    width = max(len(n) for n, _, _ in rows)
    for name, value, detail in rows:
        print(f"{name:{width}s}  {headline_value(name, value):>7s}  ({detail})")


def false_alarms(runs: list[Run]) -> dict[tuple[str, str], dict]:
    """(dataset, deny code) -> counts over blocked clean and mild runs, and an example report."""
    out: dict[tuple[str, str], dict] = {}
    for r in runs:
        if r["expect"] != "pass" or r["outcome"] != "blocked":
            continue
        for code in r["deny_codes"] or ["(no deny finding)"]:
            d = out.setdefault(
                (r["dataset"], code),
                {"clean": 0, "mild": 0, "alone": 0, "example": None, "example_alone": False},
            )
            d[r["family"]] += 1
            alone = len(r["deny_codes"]) <= 1
            d["alone"] += alone
            # the example: the first run the code blocked alone, else the first run it fired in
            if d["example"] is None or (alone and not d["example_alone"]):
                d["example"], d["example_alone"] = r["report"], alone
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], -kv[1]["clean"] - kv[1]["mild"])))


def print_false_alarms(runs: list[Run]) -> None:
    print(
        "\n== clean and mild batches blocked: deny codes per dataset (blocked runs in which the "
        "code fired at deny; alone = the only deny code; the example report prefers a run "
        "blocked by the code alone)"
    )
    totals = {
        ds: (
            sum(r["outcome"] == "blocked" for r in rs),
            len(rs),
            Counter(r["family"] for r in rs if r["outcome"] == "blocked"),
        )
        for (ds, _), rs in group([r for r in runs if r["expect"] == "pass"], ["dataset"]).items()
    }
    for ds, (b, n, fam) in totals.items():
        print(
            f"{ds}: {b} of {n} clean/mild runs blocked (clean {fam['clean']}, mild {fam['mild']})"
        )
    rows = [
        [ds, code, str(d["clean"]), str(d["mild"]), str(d["alone"]), str(d["example"])]
        for (ds, code), d in false_alarms(runs).items()
    ]
    if rows:
        print()
    print_rows(None, ["dataset", "code", "clean", "mild", "alone", "example"], rows)


def alarm_only_blocks(runs: list[Run]) -> dict[tuple, tuple[int, int]]:
    """(dataset, family, hard) -> (attack runs blocked only by deny codes that also blocked a
    clean or mild batch of the dataset, blocked runs). Such blocks say little about the attack."""
    alarm: dict[str, set[str]] = defaultdict(set)
    for r in runs:
        if r["expect"] == "pass" and r["outcome"] == "blocked":
            alarm[r["dataset"]].update(r["deny_codes"])
    out = {}
    attacks = [r for r in runs if r["expect"] == "block"]
    for key, rs in group(attacks, ["dataset", "family"]).items():
        blocked = [r for r in rs if r["outcome"] == "blocked"]
        k = sum(set(r["deny_codes"]) <= alarm[r["dataset"]] for r in blocked)
        if k:
            out[key] = (k, len(blocked))
    return out


def print_alarm_only_blocks(runs: list[Run]) -> None:
    rows = [
        [*key_cells(key), f"{k}/{b}"] for key, (k, b) in alarm_only_blocks(runs).items()
    ]
    print_rows(
        "attacks blocked only by codes that also blocked clean/mild batches of the same dataset "
        "(such runs / blocked runs)",
        ["dataset", "family", "hard", "alarm-only"],
        rows,
    )


def passed_attacks(runs: list[Run]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    attacks = [r for r in runs if r["expect"] == "block"]
    for key, rs in group(attacks, ["dataset", "family"]).items():
        passed = [r for r in rs if r["outcome"] == "pass"]
        if not passed:
            continue
        warned = [r for r in passed if r["warn_codes"]]
        out[key] = {
            "runs": len(rs),
            "passed": len(passed),
            "warned": len(warned),
            "codes": Counter(c for r in passed for c in r["warn_codes"]),
            "scenarios": Counter(f"{r['scenario']}/{r['size']}" for r in passed),
        }
    return out


def print_passed_attacks(runs: list[Run]) -> None:
    rows = []
    for key, d in passed_attacks(runs).items():
        codes = ", ".join(f"{c} {n}" for c, n in d["codes"].most_common()) or "-"
        scen = ", ".join(f"{s} {n}" for s, n in sorted(d["scenarios"].items()))
        rows.append(
            [*key_cells(key), f"{d['passed']}/{d['runs']}", str(d["warned"]), codes, scen]
        )
    print_rows(
        "attacks that passed (exit 0): per dataset x family, how many passed runs had a warn "
        "finding, the warn codes (passed runs) and the passed scenario/size (runs)",
        ["dataset", "family", "hard", "passed", "warned", "warn codes", "scenarios"],
        rows,
    )


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


# -- before -> after ----------------------------------------------------------


def run_key(r: Run) -> tuple:
    return (r["dataset"], r["scenario"], r["size"], r["seed"])


def print_compare(old_doc: dict, new_doc: dict, old: list[Run], new: list[Run]) -> None:
    """Every table of a results file, as before -> after, plus the runs whose outcome changed."""
    print(
        f"\n\n######## before -> after\nbefore: {old_doc.get('binary')} ({len(old)} runs, "
        f"{old_doc.get('seconds')} s)\nafter:  {new_doc.get('binary')} ({len(new)} runs, "
        f"{new_doc.get('seconds')} s)"
    )
    old_keys, new_keys = {run_key(r) for r in old}, {run_key(r) for r in new}
    if old_keys != new_keys:
        print(
            f"warning: the run sets differ: {len(old_keys - new_keys)} runs only before, "
            f"{len(new_keys - old_keys)} only after; tables compare whatever each side has"
        )
    print_compare_table("per family", group(old, ["family"]), group(new, ["family"]), ["family"])
    fields = ["dataset", "family"]
    print_compare_table("per dataset x family", group(old, fields), group(new, fields), fields)

    print("\n== headline, before -> after (see the headline above for the definitions)")
    ho, hn = headline(old), headline(new)
    width = max(len(n) for n, _, _ in hn)
    for (name, vo, do), (_, vn, dn) in zip(ho, hn, strict=True):
        print(
            f"{name:{width}s}  {headline_value(name, vo):>7s} -> {headline_value(name, vn):>7s}"
            f"  ({do} -> {dn})"
        )

    fo, fn = false_alarms(old), false_alarms(new)
    rows = []
    for key in sorted(set(fo) | set(fn)):
        a = fo.get(key, {"clean": 0, "mild": 0, "alone": 0})
        b = fn.get(key, {"clean": 0, "mild": 0, "alone": 0})
        rows.append(
            [*key, *(arrow(str(a[c]), str(b[c])) for c in ("clean", "mild", "alone"))]
        )
    print_rows(
        "clean and mild batches blocked: deny codes per dataset, before -> after",
        ["dataset", "code", "clean", "mild", "alone"],
        rows,
    )

    po, pn = passed_attacks(old), passed_attacks(new)
    rows = []
    for key in [k for k in group(old + new, fields) if k in po or k in pn]:
        a, b = po.get(key), pn.get(key)
        rows.append(
            [
                *key_cells(key),
                arrow(
                    f"{a['passed']}/{a['runs']}" if a else "0",
                    f"{b['passed']}/{b['runs']}" if b else "0",
                ),
                arrow(str(a["warned"]) if a else "0", str(b["warned"]) if b else "0"),
            ]
        )
    print_rows(
        "attacks that passed, before -> after",
        ["dataset", "family", "hard", "passed", "warned"],
        rows,
    )

    to = {t["target"]: t for t in evaluate_targets(old, bool(old_doc.get("quarantine", True)))}
    tn = evaluate_targets(new, bool(new_doc.get("quarantine", True)))
    print("\n== targets, before -> after")
    width = max(len(t["target"]) for t in tn)
    for t in tn:
        o = to.get(t["target"], {"status": "-", "value": None})
        is_rate = "AUROC" not in t["target"] and "quarantine" not in t["target"]
        show = pct if is_rate else num
        print(
            f"{arrow(o['status'], t['status']):12s}  {t['target']:{width}s}  "
            f"{show(o['value']):>7s} -> {show(t['value']):>7s}  {t['op']} {show(t['goal'])}"
        )

    by_key = {run_key(r): r for r in old}
    changes: dict[tuple, Counter] = defaultdict(Counter)
    for r in new:
        o = by_key.get(run_key(r))
        if o is not None and o["outcome"] != r["outcome"]:
            changes[(r["dataset"], r["family"], r["hard"])][f"{o['outcome']}->{r['outcome']}"] += 1
    rows = [
        [*key_cells(k), ", ".join(f"{t} {n}" for t, n in sorted(c.items()))]
        for k, c in sorted(changes.items(), key=lambda kv: (kv[0][0], family_key(kv[0][1])))
    ]
    print_rows(
        "runs whose outcome changed (matched by dataset, scenario, size, seed)",
        ["dataset", "family", "hard", "changes"],
        rows,
    )


# ---------------------------------------------------------------------------


def report(runs: list[Run], quarantine: bool, by_scenario: bool) -> list[dict]:
    """Print every table of one evaluation; return the targets."""
    print_table("per family", group(runs, ["family"]), ["family"])
    print_table("per dataset x family", group(runs, ["dataset", "family"]), ["dataset", "family"])
    if by_scenario:
        print_table(
            "per scenario",
            group(runs, ["dataset", "scenario", "size"]),
            ["dataset", "scenario", "size"],
        )
    print_codes(runs)
    print_false_alarms(runs)
    print_alarm_only_blocks(runs)
    print_passed_attacks(runs)
    print_headline(runs)
    print_rechecks(runs)
    results = evaluate_targets(runs, quarantine)
    print_targets(results)
    return results


def load_results(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        fail(f"cannot read results file {path}: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        fail(f"{path} is not a results file written by run.py --out")
    return doc


def select(runs: list[Run], datasets: str | None, families: str | None) -> list[Run]:
    if datasets:
        keep = set(datasets.split(","))
        runs = [r for r in runs if r["dataset"] in keep]
    if families:
        keep = set(families.split(","))
        runs = [r for r in runs if r["family"] in keep]
    return runs


def sort_runs(runs: list[Run]) -> None:
    runs.sort(
        key=lambda r: (r["dataset"], family_key(r["family"]), r["scenario"], r["size"], r["seed"])
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="directory written by gen.py")
    ap.add_argument("--bin", type=Path, help="path to the poisongate binary")
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
    ap.add_argument(
        "--recheck",
        action="store_true",
        help="drop each blocked batch's quarantine and check the rest again (alone and with "
        "--after-quarantine); prints the drop-and-recheck table",
    )
    ap.add_argument(
        "--results",
        type=Path,
        help="print the tables of an earlier --out file instead of running (no --data/--bin)",
    )
    ap.add_argument(
        "--compare-with",
        type=Path,
        metavar="OLD.json",
        help="an earlier --out file: also print every table as OLD -> this run (or --results)",
    )
    args = ap.parse_args()
    old_doc = load_results(args.compare_with) if args.compare_with else None

    if args.results:
        doc = load_results(args.results)
        runs = select(doc["runs"], args.datasets, args.families)
        if not runs:
            fail("no runs selected")
        sort_runs(runs)
        quarantine = bool(doc.get("quarantine", True))
        print(
            f"poisongate eval (from {args.results}): {len(runs)} checks of "
            f"{len({r['dataset'] for r in runs})} dataset(s) with {doc.get('binary')} "
            f"({'with' if quarantine else 'without'} quarantine) in {doc.get('seconds')} s"
        )
        results = report(runs, quarantine, args.by_scenario)
    else:
        if args.data is None or args.bin is None:
            ap.error("--data and --bin are required (unless --results is given)")
        doc, runs, results = evaluate(args)

    if old_doc is not None:
        old_runs = select(old_doc["runs"], args.datasets, args.families)
        sort_runs(old_runs)
        print_compare(old_doc, doc, old_runs, runs)
    missed = any(r["status"] == "MISS" for r in results)
    return 1 if args.strict and missed else 0


def evaluate(args: argparse.Namespace) -> tuple[dict, list[Run], list[dict]]:
    """Pin the baselines, check every batch, print the tables; write --out."""
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
    manifest = select(manifest, args.datasets, args.families)
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
                check,
                binary,
                baselines[e["dataset"]],
                data,
                reports,
                e,
                quarantine,
                args.timeout,
                args.recheck,
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
    sort_runs(runs)
    elapsed = time.perf_counter() - t0

    print(
        f"poisongate eval: {len(runs)} checks of {len(datasets)} dataset(s) with {binary} "
        f"({'with' if quarantine else 'without'} quarantine) in {elapsed:.0f} s"
    )
    results = report(runs, quarantine, args.by_scenario)

    doc = {
        "binary": str(binary),
        "data": str(data),
        "quarantine": quarantine,
        "seconds": round(elapsed, 1),
        "runs": runs,
        "targets": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n")
        print(f"\nper-run results: {args.out}")
    return doc, runs, results


if __name__ == "__main__":
    sys.exit(main())
