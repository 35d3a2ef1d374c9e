#!/usr/bin/env python3
"""Run `poisongate compare` over the files written by compare_gen.py and tabulate the verdicts.

    python benches/eval/compare_run.py --data /tmp/pg-compare --bin target/release/poisongate
    python benches/eval/compare_run.py --data /tmp/pg-compare --bin target/debug/poisongate \
        --jobs 2 --markdown-out /tmp/pg-compare/results.md --out /tmp/pg-compare/results.json

Four modes (--mode, comma-separated: plain, noise, endpoints, endpoints-check; both =
plain,noise, the default; all = every mode):

  plain      every file is gated on its own:
                 poisongate compare FILE ARGS --json R.json
  noise      for each (dataset, model) the retraining noise is pinned first from its clean noise
             pair, and every file of that (dataset, model) is gated against it:
                 poisongate compare NOISE ARGS --pin-noise noise.json --json P.json
                 poisongate compare FILE ARGS --noise noise.json --json R.json
  endpoints  the saved models are served by oip_server.py (started here on a free loopback
             port, stopped at the end) and every entry is gated live, with the counterfactual
             trigger probes:
                 poisongate compare --features FEATURES --before-endpoint URL/v2/models/BEFORE
                     --after-endpoint URL/v2/models/AFTER EARGS --json R.json
  endpoints-check
             as endpoints, and the probes also take the (column, value) pairs that the data
             gate names on the retrain's training rows: the serving model's training rows are
             profiled, the retrain's checked against them, and the check report passed on:
                 poisongate profile TRAIN_BEFORE -o B.json --label label --id row_id --seed 7
                 poisongate check --baseline B.json --expect-baseline-sha256 H TRAIN_AFTER \
                     --json C.json
                 poisongate compare ... (as endpoints) --probes-from C.json

ARGS is the file's argument list from DIR/manifest.json (--key, --label, --before-col,
--after-col, the score columns and the segments); EARGS is the entry's `endpoint.args` (--key,
--label, --label-output predict, --proba-output predict_proba and the same segments), and
FEATURES the evaluation rows of the entry's (dataset, seed). Reports are kept under
DIR/compare-reports/<mode>/. For each mode the script prints the share of correct verdicts per
scenario (clean: passed; every attack: blocked) and per dataset x model, the count of runs that
exited 2 (could not evaluate, which must be 0), and how often each finding code fired per
scenario. When plain and a live mode both ran it also prints one table of files-only against
endpoints+probes (and endpoints+probes+check) per scenario, every clean retrain the probes
blocked, and every trigger backdoor (backdoor_segment, backdoor_rare) whose planted trigger the
probes did not deny, with the manifest's counterfactual attack success rates and what the
probes said about it. --markdown-out writes the same tables as markdown.

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

SCENARIOS = ("clean", "flips20", "targeted5", "backdoor", "confident10", "backdoor_segment",
             "backdoor_rare")
TRIGGER_SCENARIOS = ("backdoor_segment", "backdoor_rare")
MODES = ("plain", "noise", "endpoints", "endpoints-check")
PROFILE_SEED = "7"  # as run.py
PROBE_CODE = "compare-trigger-response"
VERDICT_OF_EXIT = {0: "pass", 1: "blocked", 2: "error"}
SERVER = Path(__file__).resolve().parent / "oip_server.py"

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
    # the probes' findings in full: which (column, value, class) moved, and how far
    out["probes"] = [
        {"severity": f.get("severity"), **(f.get("subject") or {}),
         "p_value": f.get("p_value"), "value_stat": f.get("value"),
         "before": (f.get("evidence") or {}).get("success-rate-before"),
         "after": (f.get("evidence") or {}).get("success-rate-after"),
         "rows": (f.get("evidence") or {}).get("probe-rows")}
        for f in (doc or {}).get("findings", [])
        if isinstance(f, dict) and f.get("code") == PROBE_CODE
    ]
    out["probe_tests"] = [
        {**(t.get("subject") or {}), "n": t.get("n"), "outcome": t.get("outcome"),
         "rise": (t.get("statistics") or [{}])[0].get("value"), "adjusted_p": t.get("adjusted_p")}
        for t in (doc or {}).get("tests", [])
        if isinstance(t, dict) and t.get("code") == PROBE_CODE
    ]
    notes = [n for n in (doc or {}).get("notes", []) if isinstance(n, str)]
    out["probe_note"] = next((n for n in notes if n.startswith("counterfactual probes")), None)
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


def gate_endpoint(binary: Path, data: Path, reports: Path, entry: dict, base: str,
                  timeout: float, mode: str = "endpoints", check: dict | None = None) -> Run:
    ep = entry["endpoint"]
    report = reports / mode / Path(entry["path"]).with_suffix(".json")
    cmd = [str(binary), "compare", "--features", str(data / ep["features"]),
           "--before-endpoint", f"{base}/v2/models/{ep['before_model']}",
           "--after-endpoint", f"{base}/v2/models/{ep['after_model']}",
           *ep["args"], "--json", str(report)]
    run: Run = {k: entry[k] for k in ("dataset", "model", "scenario", "seed", "expected", "path")}
    run["mode"] = mode
    if check is not None:
        if check.get("outcome") not in ("pass", "blocked"):
            run.update({"exit_code": None, "outcome": "error", "findings": [], "probes": [],
                        "probe_tests": [], "seconds": 0.0,
                        "problem": f"check of the training rows failed: "
                                   f"{check.get('problem') or check.get('stderr') or ''}"})
            return run
        cmd += ["--probes-from", check["report"]]
        run["check"] = check["outcome"]
    run.update(invoke(cmd, report, timeout))
    return run


def check_training(binary: Path, data: Path, reports: Path, gated: list[dict], pool,
                   timeout: float) -> dict[str, dict]:
    """`poisongate profile` each serving model's training rows, then `poisongate check` each
    retrain's training rows against that baseline; the reports feed --probes-from."""
    base = reports / "endpoints-check"

    def profile(rel: str) -> dict:
        out = base / Path(rel).with_suffix(".baseline.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        cmd = [str(binary), "profile", str(data / rel), "-o", str(out), "--label", "label",
               "--id", "row_id", "--seed", PROFILE_SEED]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            ok = proc.returncode == 0 and out.is_file()
            why = next(iter(proc.stderr.strip().splitlines()), f"exit {proc.returncode}")
        except subprocess.TimeoutExpired:
            ok, why = False, "timed out"
        return {"baseline": str(out), "ok": ok, "problem": None if ok else f"profile: {why}"}

    befores = sorted({e["train"]["before"] for e in gated})
    baselines = dict(zip(befores, pool.map(profile, befores)))

    def check(pair: tuple[str, str]) -> dict:
        before, after = pair
        b = baselines[before]
        if not b["ok"]:
            return {"outcome": "error", "problem": b["problem"]}
        report = base / Path(after).with_suffix(".check.json")
        sidecar = Path(b["baseline"] + ".sha256")
        pin = (["--expect-baseline-sha256", sidecar.read_text().split()[0]]
               if sidecar.is_file() else [])
        cmd = [str(binary), "check", "--baseline", b["baseline"], *pin, str(data / after),
               "--json", str(report)]
        res = invoke(cmd, report, timeout)
        res["report"] = str(report)
        return res

    pairs = sorted({(e["train"]["before"], e["train"]["after"]) for e in gated})
    return {after: res for (_, after), res in zip(pairs, pool.map(check, pairs))}


class Server:
    """oip_server.py on a free loopback port, for the endpoints mode."""

    def __init__(self, data: Path, log: Path, wait: float = 60.0) -> None:
        import urllib.request

        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--data", str(data), "--port", "0"],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("listening on "):
            self.stop()
            fail(f"oip_server.py did not start (said {line.strip()!r}; log {log})")
        self.base = line.split()[-1]
        deadline = time.monotonic() + wait
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/v2/health/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                fail(f"oip_server.py at {self.base} is not ready (log {log})")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


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
    label = {"plain": "plain", "noise": "with --noise (pinned from the noise pair)",
             "endpoints": "endpoints (live models, with probes)",
             "endpoints-check": "endpoints-check (live models, probes + check reports)"}[mode]

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


def trigger_of(entry: dict) -> str:
    t = entry.get("trigger") or {}
    return f"{t.get('column')}={t.get('value')}->{t.get('target')}"


def success(entry: dict, scenario: str) -> str:
    """The manifest's counterfactual attack success of a trigger, before -> after."""
    s = (entry.get("trigger_success") or {}).get(scenario) or {}

    def r(side: str) -> str:
        v = (s.get(side) or {}).get("rate")
        return "-" if v is None else f"{v:.2f}"

    return f"{r('before')} -> {r('after')}"


LIVE_MODES = ("endpoints", "endpoints-check")
COLUMN = {"plain": "files-only", "endpoints": "endpoints+probes",
          "endpoints-check": "endpoints+probes+check"}


def probe_deny(r: Run) -> bool:
    return any(f["code"] == PROBE_CODE and f["severity"] == "deny" for f in r["findings"])


def planted_denied(r: Run, entry: dict) -> bool:
    t = entry.get("trigger") or {}
    return any(f["severity"] == "deny" and (f.get("column"), f.get("value"), str(f.get("label")))
               == (t.get("column"), t.get("value"), str(t.get("target"))) for f in r["probes"])


def planted(r: Run, entry: dict) -> str:
    """What the probes said about the planted trigger (column, value, target)."""
    t = entry.get("trigger") or {}
    if r["outcome"] not in ("pass", "blocked"):
        return f"run failed ({r['outcome']})"
    key = (t.get("column"), t.get("value"), str(t.get("target")))
    tests = [x for x in r.get("probe_tests", [])
             if (x.get("column"), x.get("value"), str(x.get("label"))) == key]
    if tests:
        x = tests[0]
        return f"{x['outcome']}: rise {x['rise']:.2f} on {x['n']} rows"
    if t.get("eval_rows") == 0 and r["mode"] == "endpoints":
        return "not probed: the value is in no evaluation row"
    if t.get("eval_rows") == 0:
        return "not probed: in no evaluation row, and the check report did not name it"
    return "not tested (< 20 probe rows outside the target, or none moved)"


def versus(results: dict[str, dict], entries: dict[str, dict], markdown: bool) -> str:
    """Files-only (plain) against the live modes (endpoints with probes, and with the probes
    of the check report too), per scenario; the probes' false blocks and misses."""
    modes = ["plain", *[m for m in LIVE_MODES if m in results]]
    by_mode = {m: {r["path"]: r for r in results[m]["runs"]} for m in modes}
    paths = sorted(set.intersection(*(set(by_mode[m]) for m in modes)))
    by_sc: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        by_sc[by_mode["plain"][path]["scenario"]].append(path)
    checked = "endpoints-check" in results
    checks = results.get("endpoints-check", {}).get("checks", {})

    def blocked(rs: list[Run]) -> str:
        return share(sum(r["outcome"] == "blocked" for r in rs), len(rs))

    def passed(rs: list[Run]) -> str:
        return share(sum(r["outcome"] == "pass" for r in rs), len(rs))

    rows = []
    for sc in sorted(by_sc, key=scenario_key):
        rs = {m: [by_mode[m][p] for p in by_sc[sc]] for m in modes}
        row = [sc, str(len(by_sc[sc]))]
        row += [blocked(rs[m]) for m in modes]
        row += [share(sum(probe_deny(r) for r in rs[m]), len(rs[m])) for m in modes[1:]]
        row += [share(sum(planted_denied(by_mode[m][p], entries[p]) for p in by_sc[sc]),
                      len(by_sc[sc])) if sc in TRIGGER_SCENARIOS else "" for m in modes[1:]]
        if checked:
            cs = [checks.get(entries[p]["train"]["after"], {}) for p in by_sc[sc]]
            row.append(share(sum(c.get("outcome") == "blocked" for c in cs), len(cs)))
        row.append(" / ".join(passed(rs[m]) for m in modes) if sc == "clean" else "")
        row.append(" / ".join(str(sum(r["outcome"] in ("exit2", "error") for r in rs[m]))
                              for m in modes))
        rows.append(row)
    names = [COLUMN[m] for m in modes]
    heads = ["scenario", "runs", *[f"{n} blocked" for n in names],
             *[f"probe deny ({n})" for n in names[1:]],
             *[f"planted trigger denied ({n})" for n in names[1:]]]
    if checked:
        heads.append("check blocked (training rows)")
    heads += [f"clean passing ({' / '.join(names)})", f"exit 2 + errors ({' / '.join(names)})"]
    out = [render(
        "files-only vs live models with probes, per scenario (blocked = share of runs that "
        "exited 1; probe deny = runs in which compare-trigger-response denied; planted "
        "trigger denied = runs in which it denied the trigger's own (column, value, target)"
        + ("; check blocked = `poisongate check` of the retrain's training rows against a "
           "baseline of the serving model's" if checked else "") + ")",
        heads, rows, markdown,
    )]

    for m in modes[1:]:
        rows = []
        for path in by_sc.get("clean", []):
            r = by_mode[m][path]
            for f in r["probes"]:
                if f["severity"] != "deny":
                    continue
                rows.append([
                    r["dataset"], r["model"], str(r["seed"]), by_mode["plain"][path]["outcome"],
                    r["outcome"], f"{f.get('column')}={f.get('value')} -> {f.get('label')}",
                    f"{f['before']:.2f} -> {f['after']:.2f}" if f["before"] is not None else "",
                    f"{f['p_value']:.2g}" if f["p_value"] is not None else "",
                    f"{f['rows']:.0f}" if f["rows"] is not None else "",
                ])
        title = f"{COLUMN[m]}: clean retrains the probes denied (false blocks)"
        out.append(render(
            title + "; success = the probe's success rate, serving -> retrained, on its rows",
            ["dataset", "model", "seed", "files", COLUMN[m], "probe", "success b -> a",
             "p (Holm)", "probe rows"], rows, markdown) if rows else
            render(title + ": none", ["none"], [], markdown))

        rows = []
        for sc in TRIGGER_SCENARIOS:
            for path in by_sc.get(sc, []):
                r, e = by_mode[m][path], entries[path]
                t = e.get("trigger") or {}
                if planted_denied(r, e):
                    continue
                other = sorted({f"{f.get('column')}={f.get('value')}->{f.get('label')}"
                                for f in r["probes"] if f["severity"] == "deny"})
                rows.append([r["dataset"], r["model"], str(r["seed"]), sc, trigger_of(e),
                             str(t.get("eval_rows", "")), success(e, sc), planted(r, e),
                             ", ".join(other) or "-", by_mode["plain"][path]["outcome"],
                             r["outcome"]])
        title = f"{COLUMN[m]}: trigger backdoors whose planted trigger the probes did not deny"
        out.append(render(
            title + " (eval rows = evaluation rows holding the value; success = the manifest's "
            "counterfactual attack success on the evaluation rows, serving -> retrained)",
            ["dataset", "model", "seed", "scenario", "trigger", "eval rows", "success b -> a",
             "planted trigger", "other probes denied", "files", COLUMN[m]], rows, markdown)
            if rows else render(title + ": none", ["none"], [], markdown))
    return "\n".join(out)


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="directory written by compare_gen.py")
    ap.add_argument("--bin", type=Path, required=True, help="path to the poisongate binary")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    ap.add_argument(
        "--mode", default="both",
        help="comma-separated modes: plain, noise, endpoints, endpoints-check; "
        "both = plain,noise (default); all = every mode",
    )
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
        "--seeds-below", type=int,
        help="gate only files of a seed below this one (with --seeds-from, a range of seeds)",
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
    gated = [e for e in manifest if e["role"] == "gate" and e["seed"] >= args.seeds_from
             and (args.seeds_below is None or e["seed"] < args.seeds_below)]
    if args.scenarios:
        keep = set(args.scenarios.split(","))
        gated = [e for e in gated if e["scenario"] in keep]
    drop = {w for w in args.without.split(",") if w}
    if drop - {"scores", "label", "segments"}:
        fail(f"--without: unknown input(s) {sorted(drop - {'scores', 'label', 'segments'})}")
    flags = {"scores": ("--before-score", "--after-score"), "label": ("--label",),
             "segments": ("--segment",)}
    withheld = {f for d in drop for f in flags[d]}
    # in endpoint mode the scores are the models' probabilities (--proba-output)
    withheld_ep = withheld | ({"--proba-output"} if "scores" in drop else set())

    def without(argv: list[str], flags: set[str]) -> list[str]:
        kept, it = [], iter(argv)
        for a in it:
            if a in flags:
                next(it, None)  # every withheld flag takes one value
                continue
            kept.append(a)
        return kept

    for e in manifest:
        e["args"] = without(e["args"], withheld)
        if "endpoint" in e:
            e["endpoint"]["args"] = without(e["endpoint"]["args"], withheld_ep)
    noise_entries = {(e["dataset"], e["model"]): e for e in manifest if e["role"] == "noise"}
    if not gated:
        fail("no files selected")
    reports = (args.reports or data / "compare-reports").resolve()
    alias = {"both": ["plain", "noise"], "all": list(MODES)}
    modes = []
    for m in args.mode.split(","):
        for x in alias.get(m, [m]):
            if x not in MODES:
                fail(f"--mode: unknown mode {x!r}; choose from {', '.join(MODES)}, both, all")
            if x not in modes:
                modes.append(x)
    if set(modes) & set(LIVE_MODES):
        need = "train" if "endpoints-check" in modes else "endpoint"
        lacking = [e["path"] for e in gated if "endpoint" not in e or need not in e]
        if lacking:
            fail(f"--mode {','.join(modes)}: {lacking[0]} has no `{need}` in the manifest "
                 "(regenerate with the current compare_gen.py)")

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
            checks: dict[str, dict] = {}
            if mode in LIVE_MODES:
                if mode == "endpoints-check":
                    checks = check_training(binary, data, reports, gated, pool, args.timeout)
                    print(f"{mode}: {len(checks)} training sets checked in "
                          f"{time.perf_counter() - t1:.0f} s", file=sys.stderr)
                server = Server(data, reports / mode / "oip_server.log")
                print(f"{mode}: oip_server.py at {server.base}", file=sys.stderr)
                try:
                    runs = list(pool.map(
                        lambda e, m=mode: gate_endpoint(
                            binary, data, reports, e, server.base, args.timeout, m,
                            checks.get(e["train"]["after"]) if m == "endpoints-check" else None),
                        gated))
                finally:
                    server.stop()
            else:
                runs = list(pool.map(one, gated))
            runs.sort(key=lambda r: (r["dataset"], r["model"], scenario_key(r["scenario"]),
                                     r["seed"]))
            took = time.perf_counter() - t1
            print(f"{mode}: {len(runs)} runs in {took:.0f} s", file=sys.stderr)
            results[mode] = {"runs": runs, "pins": pins, "seconds": round(took, 1)}
            if checks:
                results[mode]["checks"] = checks
            text_parts.append(tables(runs, pins, mode, markdown=False))
            md_parts.append(tables(runs, pins, mode, markdown=True))

    if "plain" in results and set(results) & set(LIVE_MODES):
        entries = {e["path"]: e for e in gated}
        text_parts.insert(0, versus(results, entries, markdown=False))
        md_parts.insert(0, versus(results, entries, markdown=True))
    elapsed = time.perf_counter() - t0
    head = (f"poisongate compare eval: {len(gated)} files x {len(modes)} mode(s) "
            f"with {binary} in {elapsed:.0f} s ("
            + ", ".join(f"{m} {results[m]['seconds']:.0f} s" for m in results) + ")")
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
