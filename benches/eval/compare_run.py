#!/usr/bin/env python3
"""Run `poisongate compare` over the files written by compare_gen.py and tabulate the verdicts.

    python benches/eval/compare_run.py --data /tmp/pg-compare --bin target/release/poisongate
    python benches/eval/compare_run.py --data /tmp/pg-compare --bin target/debug/poisongate \
        --jobs 2 --markdown-out /tmp/pg-compare/results.md --out /tmp/pg-compare/results.json

Two modes, both run by default (--mode plain|noise|both):

  plain  every file is gated on its own:
             poisongate compare FILE ARGS --json R.json
  noise  for each (dataset, model) the retraining noise is pinned first from its clean noise
         pair, and every file of that (dataset, model) is gated against it:
             poisongate compare NOISE ARGS --pin-noise noise.json --json P.json
             poisongate compare FILE ARGS --noise noise.json --json R.json

ARGS is the file's argument list from DIR/manifest.json (--key, --label, --before-col,
--after-col, the score columns and the segments). Reports are kept under DIR/compare-reports/.
For each mode the script prints the share of correct verdicts per scenario (clean: passed; every
attack: blocked) and per dataset x model, the count of runs that exited 2 (could not evaluate,
which must be 0), and how often each finding code fired per scenario. --markdown-out writes the
same tables as markdown.

Exit code: 0 when every run exited 0 or 1 with a consistent report; 1 when any run exited 2,
crashed, timed out, or wrote no report (or a report whose verdict disagrees with the exit
code); 2 when the evaluation could not run (binary missing, manifest unreadable).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

SCENARIOS = ("clean", "flips20", "targeted5", "backdoor", "confident10")
VERDICT_OF_EXIT = {0: "pass", 1: "blocked", 2: "error"}

Run = dict  # one gated file: the manifest entry's identity plus the outcome


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------
# Running the binary
# ---------------------------------------------------------------------------


def invoke(cmd: list[str], report: Path, timeout: float) -> dict:
    """Run one command; read its JSON report; classify the outcome."""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        rc, stderr = -1, f"timed out after {timeout:.0f} s"
    out = {"exit_code": rc, "seconds": round(time.perf_counter() - t0, 3), "problem": None}
    doc = None
    try:
        doc = json.loads(report.read_text())
    except (OSError, ValueError) as e:
        if rc in (0, 1):
            out["problem"] = f"no readable JSON report ({e.__class__.__name__})"
    if rc not in (0, 1, 2):
        out["problem"] = next(iter(stderr.strip().splitlines()), "") or f"exit {rc}"
    elif doc is not None and doc.get("verdict") != VERDICT_OF_EXIT[rc]:
        out["problem"] = f"report verdict {doc.get('verdict')!r} but exit code {rc}"
    if rc == 2:
        first = next(iter(stderr.strip().splitlines()), "")
        out["stderr"] = first[:200] or str((doc or {}).get("error", ""))[:200]
    out["outcome"] = {0: "pass", 1: "blocked", 2: "exit2"}.get(rc, "error")
    if out["problem"] and out["outcome"] != "exit2":
        out["outcome"] = "error"
    out["findings"] = [
        {"code": f.get("code"), "severity": f.get("severity")}
        for f in (doc or {}).get("findings", [])
        if isinstance(f, dict)
    ]
    return out


def gate(binary: Path, data: Path, reports: Path, entry: dict, mode: str,
         noise: Path | None, timeout: float) -> Run:
    report = reports / mode / Path(entry["path"]).with_suffix(".json")
    cmd = [str(binary), "compare", str(data / entry["path"]), *entry["args"],
           "--json", str(report)]
    if noise is not None:
        cmd += ["--noise", str(noise)]
    run: Run = {k: entry[k] for k in ("dataset", "model", "scenario", "seed", "expected", "path")}
    run["mode"] = mode
    run.update(invoke(cmd, report, timeout))
    return run


def pin(binary: Path, data: Path, reports: Path, entry: dict, timeout: float) -> dict:
    stem = reports / "noise" / Path(entry["path"]).with_suffix("")
    pinned = stem.with_name(stem.name + ".pinned.json")
    pinned.parent.mkdir(parents=True, exist_ok=True)
    pinned.unlink(missing_ok=True)
    cmd = [str(binary), "compare", str(data / entry["path"]), *entry["args"],
           "--pin-noise", str(pinned), "--json", str(stem.with_suffix(".json"))]
    res = invoke(cmd, stem.with_suffix(".json"), timeout)
    res.update({"dataset": entry["dataset"], "model": entry["model"], "pinned": str(pinned)})
    if res["exit_code"] not in (0, 1):
        res["ok"] = False
    else:
        try:
            json.loads(pinned.read_text())
            res["ok"] = True
        except (OSError, ValueError) as e:
            res["ok"] = False
            res["problem"] = f"no readable noise file ({e.__class__.__name__})"
    return res


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def share(n: int, d: int) -> str:
    return "-" if d == 0 else f"{100 * n / d:.0f}%"


def correct(r: Run) -> bool:
    return r["outcome"] == ("pass" if r["expected"] == "pass" else "blocked")


def scenario_key(s: str) -> int:
    return SCENARIOS.index(s) if s in SCENARIOS else len(SCENARIOS)


def render(title: str, headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = [f"### {title}", "", "| " + " | ".join(headers) + " |",
                 "| " + " | ".join("---" for _ in headers) + " |"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = [f"== {title}", "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def tables(runs: list[Run], pins: list[dict], mode: str, markdown: bool) -> str:
    out: list[str] = []
    label = {"plain": "plain", "noise": "with --noise (pinned from the noise pair)"}[mode]

    if pins:
        rows = []
        for p in sorted(pins, key=lambda p: (p["dataset"], p["model"])):
            rows.append([p["dataset"], p["model"], str(p["exit_code"]),
                         "yes" if p["ok"] else "NO", p.get("problem") or p.get("stderr") or ""])
        out.append(render(f"{label}: pinning the noise", ["dataset", "model", "exit", "pinned",
                                                          "problem"], rows, markdown))

    by_sc: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_sc[r["scenario"]].append(r)
    rows = []
    for sc in sorted(by_sc, key=scenario_key):
        rs = by_sc[sc]
        exp = rs[0]["expected"]
        rows.append([
            sc, exp, str(len(rs)),
            share(sum(correct(r) for r in rs), len(rs)),
            share(sum(r["outcome"] == "blocked" for r in rs), len(rs)),
            str(sum(r["outcome"] == "exit2" for r in rs)),
            str(sum(r["outcome"] == "error" for r in rs)),
        ])
    rows.append([
        "all", "", str(len(runs)),
        share(sum(correct(r) for r in runs), len(runs)),
        share(sum(r["outcome"] == "blocked" for r in runs), len(runs)),
        str(sum(r["outcome"] == "exit2" for r in runs)),
        str(sum(r["outcome"] == "error" for r in runs)),
    ])
    out.append(render(
        f"{label}: per scenario (correct = passed for clean, blocked for attacks)",
        ["scenario", "expect", "runs", "correct", "blocked", "exit 2", "errors"], rows, markdown,
    ))

    scenarios = sorted({r["scenario"] for r in runs}, key=scenario_key)
    cells: dict[tuple[str, str], dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        cells[(r["dataset"], r["model"])][r["scenario"]].append(r)
    rows = []
    for (ds, model), per in sorted(cells.items()):
        row = [ds, model]
        for sc in scenarios:
            rs = per.get(sc, [])
            row.append(share(sum(correct(r) for r in rs), len(rs)))
        allr = [r for rs in per.values() for r in rs]
        row.append(str(sum(r["outcome"] == "exit2" for r in allr)))
        row.append(str(sum(r["outcome"] == "error" for r in allr)))
        rows.append(row)
    heads = ["dataset", "model", *[f"{sc} {'passed' if sc == 'clean' else 'blocked'}"
                                   for sc in scenarios], "exit 2", "errors"]
    out.append(render(f"{label}: per dataset x model (share correct)", heads, rows, markdown))

    rows = []
    for sc in scenarios:
        rs = by_sc[sc]
        deny = Counter(c for r in rs for c in {f["code"] for f in r["findings"]
                                                if f["severity"] == "deny"})
        warn = Counter(c for r in rs for c in {f["code"] for f in r["findings"]
                                                if f["severity"] == "warn"})
        codes = sorted(set(deny) | set(warn), key=lambda c: (-deny[c], -warn[c], str(c)))
        text = ", ".join(
            f"{c} {deny[c]}" + (f" (+{warn[c]} warn)" if warn[c] else "") if deny[c]
            else f"{c} ({warn[c]} warn)"
            for c in codes
        )
        rows.append([sc, str(len(rs)), text or "(none)"])
    out.append(render(
        f"{label}: finding codes per scenario (runs in which a code fired at deny; warn in "
        "brackets)", ["scenario", "runs", "codes"], rows, markdown,
    ))

    reasons = Counter(r.get("stderr") or "" for r in runs if r["outcome"] == "exit2")
    reasons.update(r["problem"] for r in runs if r["outcome"] == "error")
    if reasons:
        rows = [[str(n), e or "(no message)"] for e, n in reasons.most_common(10)]
        out.append(render(f"{label}: exit 2 and errors (most common first)",
                          ["runs", "message"], rows, markdown))
    return "\n".join(out)


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="directory written by compare_gen.py")
    ap.add_argument("--bin", type=Path, required=True, help="path to the poisongate binary")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    ap.add_argument("--mode", choices=("plain", "noise", "both"), default="both")
    ap.add_argument("--reports", type=Path, help="where reports go (default DATA/compare-reports)")
    ap.add_argument("--markdown-out", type=Path, help="write the tables here as markdown")
    ap.add_argument("--out", type=Path, help="write per-run results here (JSON)")
    ap.add_argument("--datasets", help="comma-separated subset of the manifest's datasets")
    ap.add_argument("--models", help="comma-separated subset of the manifest's models")
    ap.add_argument("--scenarios", help="comma-separated subset of the scenarios")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run (default 600)")
    ap.add_argument(
        "--seeds-from", type=int, default=0,
        help="gate only files of this seed and above (a held-out check of files generated "
        "with more seeds than the thresholds were set on)",
    )
    ap.add_argument(
        "--without",
        default="",
        help="comma-separated inputs to withhold from poisongate: scores, label, segments "
        "(measures what the gate catches with less evidence)",
    )
    args = ap.parse_args()

    binary = args.bin.resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        fail(f"{args.bin} is not an executable file")
    data = args.data.resolve()
    try:
        manifest: list[dict] = json.loads((data / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        fail(f"cannot read {data / 'manifest.json'}: {e}")
    for flag, field in ((args.datasets, "dataset"), (args.models, "model")):
        if flag:
            keep = set(flag.split(","))
            manifest = [e for e in manifest if e[field] in keep]
    gated = [e for e in manifest if e["role"] == "gate" and e["seed"] >= args.seeds_from]
    if args.scenarios:
        keep = set(args.scenarios.split(","))
        gated = [e for e in gated if e["scenario"] in keep]
    drop = {w for w in args.without.split(",") if w}
    if drop - {"scores", "label", "segments"}:
        fail(f"--without: unknown input(s) {sorted(drop - {'scores', 'label', 'segments'})}")
    flags = {"scores": ("--before-score", "--after-score"), "label": ("--label",),
             "segments": ("--segment",)}
    withheld = {f for d in drop for f in flags[d]}
    for e in manifest:
        kept, it = [], iter(e["args"])
        for a in it:
            if a in withheld:
                next(it, None)  # every withheld flag takes one value
                continue
            kept.append(a)
        e["args"] = kept
    noise_entries = {(e["dataset"], e["model"]): e for e in manifest if e["role"] == "noise"}
    if not gated:
        fail("no files selected")
    reports = (args.reports or data / "compare-reports").resolve()
    modes = ["plain", "noise"] if args.mode == "both" else [args.mode]

    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    text_parts, md_parts = [], []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for mode in modes:
            pins: list[dict] = []
            noise_for: dict[tuple[str, str], Path | None] = {}
            if mode == "noise":
                wanted = sorted({(e["dataset"], e["model"]) for e in gated})
                missing = [k for k in wanted if k not in noise_entries]
                if missing:
                    fail(f"no noise file in the manifest for {missing[0]}")
                pins = list(pool.map(
                    lambda k: pin(binary, data, reports, noise_entries[k], args.timeout), wanted
                ))
                for p in pins:
                    noise_for[(p["dataset"], p["model"])] = Path(p["pinned"]) if p["ok"] else None

            def one(e: dict, mode: str = mode) -> Run:
                if mode == "noise":
                    pinned = noise_for[(e["dataset"], e["model"])]
                    if pinned is None:
                        run = {k: e[k] for k in ("dataset", "model", "scenario", "seed",
                                                 "expected", "path")}
                        run.update({"mode": mode, "exit_code": None, "outcome": "error",
                                    "problem": "noise could not be pinned", "findings": [],
                                    "seconds": 0.0})
                        return run
                    return gate(binary, data, reports, e, mode, pinned, args.timeout)
                return gate(binary, data, reports, e, mode, None, args.timeout)

            t1 = time.perf_counter()
            runs = list(pool.map(one, gated))
            runs.sort(key=lambda r: (r["dataset"], r["model"], scenario_key(r["scenario"]),
                                     r["seed"]))
            print(f"{mode}: {len(runs)} runs in {time.perf_counter() - t1:.0f} s",
                  file=sys.stderr)
            results[mode] = {"runs": runs, "pins": pins}
            text_parts.append(tables(runs, pins, mode, markdown=False))
            md_parts.append(tables(runs, pins, mode, markdown=True))

    elapsed = time.perf_counter() - t0
    head = (f"poisongate compare eval: {len(gated)} files x {len(modes)} mode(s) "
            f"with {binary} in {elapsed:.0f} s")
    print(head)
    print()
    print("\n".join(text_parts))
    if args.markdown_out:
        args.markdown_out.parent.mkdir(parents=True, exist_ok=True)
        args.markdown_out.write_text(f"## {head}\n\n" + "\n".join(md_parts))
        print(f"markdown tables: {args.markdown_out}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"binary": str(binary), "data": str(data), "seconds": round(elapsed, 1),
               "modes": results}
        args.out.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n")
        print(f"per-run results: {args.out}")

    bad = [r for res in results.values() for r in res["runs"] if r["outcome"] in ("exit2", "error")]
    bad_pins = [p for res in results.values() for p in res["pins"] if not p["ok"]]
    if bad or bad_pins:
        n2 = sum(r["outcome"] == "exit2" for r in bad) + sum(p["exit_code"] == 2 for p in bad_pins)
        print(f"FAIL: {n2} run(s) exited 2, {len(bad) - sum(r['outcome'] == 'exit2' for r in bad)}"
              f" other error(s), {len(bad_pins)} noise pin(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
