#!/usr/bin/env python3
"""Run `poisongate verify --scan` and the peer scanners over testdata/models/ side by side.

From the repository root, with the peer venv (benches/scan/requirements-peers.txt):

    python3 -m venv target/scan-peers-venv
    target/scan-peers-venv/bin/pip install -r benches/scan/requirements-peers.txt
    target/scan-peers-venv/bin/python benches/scan/peers.py --bin target/debug/poisongate \
        [--corpus testdata/models] [--out benches/scan/results.md]

Every file listed in truth.json is given to every tool, one process per file and tool
(the way a user or a CI step would call it), with a timeout. Each run is classified as

    flagged   the tool reports an issue (unsafe / dangerous global / nonzero severity)
    clean     the tool ran and reported nothing
    error     the tool crashed, timed out, could not parse the file, or does not
              support the format ("unsupported" is an error, also counted separately)

How each tool's output is read:

    poisongate   `verify --scan FILE`: exit 0 clean, 1 flagged, 2 error; the callables
                 named on `  integrity-model-unsafe: module.name (...)` lines are compared
                 with truth.json
    picklescan   `picklescan --path FILE`: flagged if the summary's "Dangerous globals" is
                 nonzero (whatever the exit code: it exits 2 when a file also fails to
                 parse, even after finding dangerous globals); else exit 0 clean, anything
                 else error. "Suspicious globals" do not fail a default run. Also run with
                 --strict (unknown globals promoted to dangerous) as a second row.
    modelscan    `modelscan -p FILE -r json -o REPORT` in an empty directory (so no
                 ./modelscan-settings.toml is picked up): flagged if total_issues > 0;
                 else error if the report lists errors, or nothing was scanned (exit 3:
                 no supported file, counted as unsupported); else clean. Exit codes, from
                 modelscan/cli.py: 0 no issues, 1 issues, 2 errors (takes precedence over
                 1), 3 nothing scanned, 4 usage error.
    fickling     pickle and joblib files: `fickling --check-safety --json-output REPORT
                 FILE`: exit 1 flagged (severity above LIKELY_SAFE), 0 clean, 2 parse
                 error; an uncaught Python traceback is an error whatever the exit code
                 (Python exits 1 on one, the same code as "unsafe"). PyTorch zips: its
                 Python API `fickling.scan_zip_archive(FILE, graceful=True)` (what its
                 --huggingface mode does for .pt): flagged if a member's severity is above
                 LIKELY_SAFE without a parse error, error if a member failed to parse or no
                 member is a pickle. Every other format is unsupported (fickling reads
                 only pickles). A second row counts as flagged only severities of
                 LIKELY_OVERTLY_MALICIOUS and above, read from the same runs.

The Markdown written to --out (and printed) is sorted and carries no timings, so it is
the same from run to run with the same tools and corpus. If --out already exists, only
the part between the `peers.py` markers is replaced; the rest is kept.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- peers.py:begin (generated; edit outside these markers) -->"
END = "<!-- peers.py:end -->"
EXPECT_OUTCOME = {"safe": "clean", "unsafe": "flagged", "error": "error"}
PICKLE_EXTS = {".pkl", ".pickle", ".joblib"}
ZIP_PICKLE_EXTS = {".pt", ".pth"}
FICKLING_SEVERITIES = ["LIKELY_SAFE", "POSSIBLY_UNSAFE", "SUSPICIOUS", "LIKELY_UNSAFE",
                       "LIKELY_OVERTLY_MALICIOUS", "OVERTLY_MALICIOUS"]
UNSAFE_LINE = re.compile(r"^\s+integrity-model-unsafe: (\S+) \(")


class Outcome:
    __slots__ = ("kind", "detail", "unsupported", "extra")

    def __init__(self, kind, detail="", unsupported=False, extra=None):
        assert kind in ("flagged", "clean", "error")
        self.kind, self.detail, self.unsupported, self.extra = kind, detail, unsupported, extra or {}


def run(cmd, timeout, cwd=None):
    """(returncode or None on timeout, stdout, stderr)."""
    env = dict(os.environ)
    env.update({"PYTHONHASHSEED": "0", "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200",
                "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=cwd, env=env)
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b"").decode("utf-8", "replace"), (e.stderr or b"").decode("utf-8", "replace")
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:160]
    return ""


# ---------------------------------------------------------------------------
# the tools
# ---------------------------------------------------------------------------


def poisongate(binary, path: Path, timeout) -> Outcome:
    rc, out, err = run([binary, "verify", "--scan", str(path)], timeout)
    callables = sorted({m.group(1) for m in map(UNSAFE_LINE.match, out.splitlines()) if m})
    if rc is None:
        return Outcome("error", "timeout")
    if rc == 0:
        return Outcome("clean", extra={"callables": callables})
    if rc == 1:
        return Outcome("flagged", ", ".join(callables), extra={"callables": callables})
    return Outcome("error", f"exit {rc}: {first_line(err) or first_line(out)}", extra={"callables": callables})


def picklescan(peer_bin: Path, path: Path, timeout, strict=False) -> Outcome:
    cmd = [str(peer_bin / "picklescan"), "--path", str(path)] + (["--strict"] if strict else [])
    rc, out, err = run(cmd, timeout)
    if rc is None:
        return Outcome("error", "timeout")
    m = re.search(r"^Dangerous globals: (\d+)$", out, re.M)
    dangerous = int(m.group(1)) if m else 0
    if dangerous > 0:
        found = sorted(set(re.findall(r"dangerous import '([^']+)' FOUND", out)))
        return Outcome("flagged", f"exit {rc}: " + ", ".join(g.replace(" ", ".") for g in found))
    if rc == 0:
        warn = re.search(r"^WARNING: could not parse .*$", out, re.M)
        return Outcome("clean", "not parsed as pickle, reported clean" if warn else "")
    text = "\n".join(line for line in (out + "\n" + err).splitlines()
                     if line.startswith(("ERROR", "WARNING", "Traceback")) or "Error" in line)
    return Outcome("error", f"exit {rc}: {first_line(text)}")


def modelscan(peer_bin: Path, path: Path, timeout) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="pg-modelscan-") as tmp:
        report = Path(tmp) / "report.json"
        rc, out, err = run([str(peer_bin / "modelscan"), "-p", str(path.resolve()), "-r", "json",
                            "-o", str(report)], timeout, cwd=tmp)
        if rc is None:
            return Outcome("error", "timeout")
        try:
            rep = json.loads(report.read_text())
        except (OSError, ValueError):
            return Outcome("error", f"exit {rc}, no report: {first_line(err) or first_line(out)}")
    issues = rep.get("issues") or []
    errors = rep.get("errors") or []
    scanned = rep["summary"]["scanned"]["total_scanned"]
    if rep["summary"]["total_issues"] > 0:
        ops = sorted({f"{i.get('module')}.{i.get('operator')}" for i in issues})
        return Outcome("flagged", f"exit {rc}: " + ", ".join(ops))
    if errors:
        cats = sorted({e.get("category", "?") for e in errors})
        unsupported = all(c == "DEPENDENCY" for c in cats)
        return Outcome("error", f"exit {rc}: {', '.join(cats)}: {first_line(errors[0].get('description', ''))}",
                       unsupported=unsupported)
    if scanned == 0:
        return Outcome("error", f"exit {rc}: nothing scanned (format not supported)", unsupported=True)
    if rc != 0:
        return Outcome("error", f"exit {rc}")
    return Outcome("clean")


def _fickling_max(severities):
    return max(severities, key=FICKLING_SEVERITIES.index) if severities else "LIKELY_SAFE"


def fickling(peer_bin: Path, path: Path, timeout) -> Outcome:
    ext = path.suffix.lower()
    if ext in ZIP_PICKLE_EXTS:
        rc, out, err = run([sys.executable, str(Path(__file__).resolve()), "--fickling-zip", str(path)], timeout)
        if rc is None:
            return Outcome("error", "timeout")
        if rc != 0:
            return Outcome("error", f"scan_zip_archive crashed: {first_line(err.splitlines()[-1] if err else out)}")
        members = json.loads(out)
        if not members:
            return Outcome("error", "no pickle member in the zip", unsupported=True)
        ok = {k: v for k, v in members.items() if not v["errors"]}
        sev = _fickling_max([v["severity"] for v in ok.values()])
        if sev != "LIKELY_SAFE":
            return Outcome("flagged", f"scan_zip_archive: {sev}", extra={"severity": sev})
        if len(ok) < len(members):
            bad = sorted(k for k in members if k not in ok)
            return Outcome("error", f"scan_zip_archive: parse error in {', '.join(bad)}")
        return Outcome("clean", extra={"severity": sev})
    if ext not in PICKLE_EXTS:
        return Outcome("error", "unsupported format (not a pickle)", unsupported=True)
    with tempfile.TemporaryDirectory(prefix="pg-fickling-") as tmp:
        report = Path(tmp) / "safety.json"
        rc, out, err = run([str(peer_bin / "fickling"), "--check-safety", "--json-output", str(report),
                            str(path.resolve())], timeout, cwd=tmp)
        severities = []
        if report.exists():
            text, dec, pos = report.read_text(), json.JSONDecoder(), 0
            while True:  # one JSON object appended per stacked pickle
                while pos < len(text) and text[pos].isspace():
                    pos += 1
                if pos >= len(text):
                    break
                obj, pos = dec.raw_decode(text, pos)
                severities.append(obj["severity"])
    if rc is None:
        return Outcome("error", "timeout")
    if "Traceback (most recent call last)" in err:
        return Outcome("error", f"exit {rc}, crashed: {first_line(err.strip().splitlines()[-1])}")
    sev = _fickling_max(severities)
    if rc == 1:
        return Outcome("flagged", f"check-safety: {sev}", extra={"severity": sev})
    if rc == 0:
        return Outcome("clean", extra={"severity": sev})
    return Outcome("error", f"exit {rc}: {first_line(err)}")


def fickling_zip_helper(path: str) -> int:
    """Child process for fickling's zip API (run under the timeout like the CLIs)."""
    import fickling as fk

    res = fk.scan_zip_archive(path, graceful=True)
    print(json.dumps({k: {"severity": v.severity.name, "errors": list(v.errors)} for k, v in sorted(res.items())}))
    return 0


def fickling_overt(o: Outcome) -> Outcome:
    """The same fickling run, flagged only at LIKELY_OVERTLY_MALICIOUS and above."""
    if o.kind != "flagged":
        return o
    sev = o.extra.get("severity", "OVERTLY_MALICIOUS")
    if FICKLING_SEVERITIES.index(sev) >= FICKLING_SEVERITIES.index("LIKELY_OVERTLY_MALICIOUS"):
        return o
    return Outcome("clean", f"below threshold: {sev}")


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------


def version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def score(truth, results):
    s = collections.Counter()
    for rel, t in truth.items():
        o = results[rel]
        s[(t["expect"], o.kind)] += 1
        if o.unsupported:
            s[(t["expect"], "unsupported")] += 1
    return s


def render(truth, tools, results, pg_disagree, meta):
    n = collections.Counter(t["expect"] for t in truth.values())
    L = [BEGIN, "", "## Side by side on testdata/models", ""]
    L.append(f"{len(truth)} files from `testdata/models/truth.json`: {n['unsafe']} hostile (expect unsafe), "
             f"{n['safe']} safe ({sum(1 for r in truth if r.startswith('benign/'))} benign + "
             f"{sum(1 for r in truth if r.startswith('pin/'))} pin, scanned without a pin), "
             f"{n['error']} malformed (expect error). Generated by `benches/scan/peers.py`; one process per file "
             "and tool; outcomes are flagged / clean / error (crash, parse failure, timeout, unsupported "
             "format). \"unsupported\" is the part of error where the tool does not handle the format at all.")
    L.append("")
    L.append("Tools: " + "; ".join(meta) + ".")
    L.append("")
    L.append("| tool | hostile flagged | hostile error | hostile blocked (flagged+error) | hostile passed clean "
             "| safe flagged | safe error | false positives (flagged+error) | malformed flagged | malformed error "
             "| malformed passed clean | unsupported (hostile/safe/malformed) |")
    L.append("| --- |" + " ---: |" * 11)
    for name in tools:
        s = score(truth, results[name])
        L.append(
            f"| {name} | {s[('unsafe', 'flagged')]}/{n['unsafe']} | {s[('unsafe', 'error')]} "
            f"| {s[('unsafe', 'flagged')] + s[('unsafe', 'error')]}/{n['unsafe']} | {s[('unsafe', 'clean')]} "
            f"| {s[('safe', 'flagged')]} | {s[('safe', 'error')]} "
            f"| {s[('safe', 'flagged')] + s[('safe', 'error')]}/{n['safe']} "
            f"| {s[('error', 'flagged')]} | {s[('error', 'error')]} | {s[('error', 'clean')]}/{n['error']} "
            f"| {s[('unsafe', 'unsupported')]}/{s[('safe', 'unsupported')]}/{s[('error', 'unsupported')]} |")
    L.append("")
    L.append("### Hostile files passed as clean (misses), by technique")
    L.append("")
    for name in tools:
        misses = sorted((truth[r]["technique"], r) for r in truth
                        if truth[r]["expect"] == "unsafe" and results[name][r].kind == "clean")
        L.append(f"**{name}**: {len(misses)}" + ("" if misses else " (none)"))
        if misses:
            L.append("")
            by = collections.defaultdict(list)
            for tech, r in misses:
                by[tech].append(r)
            for tech in sorted(by):
                files = ", ".join(f"`{r}`" + (f" ({results[name][r].detail})" if results[name][r].detail else "")
                                  for r in by[tech])
                L.append(f"- {tech}: {files}")
        L.append("")
    L.append("### Malformed files passed as clean")
    L.append("")
    for name in tools:
        passed = sorted(r for r in truth if truth[r]["expect"] == "error" and results[name][r].kind == "clean")
        L.append(f"- **{name}**: " + (", ".join(f"`{r}`" for r in passed) if passed else "none"))
    L.append("")
    if pg_disagree is not None:
        L.append("### poisongate against truth.json")
        L.append("")
        if pg_disagree:
            L.append("Files where the verdict or the named callables differ from truth.json:")
            L.append("")
            for rel, why in pg_disagree:
                L.append(f"- `{rel}`: {why}")
        else:
            L.append("Every verdict matches truth.json, and for every hostile file the callables named on "
                     "`integrity-model-unsafe` lines are exactly its `callables`.")
        L.append("")
    L.append("### Per file")
    L.append("")
    L.append("F flagged, C clean, E error, U unsupported (an error); `*` marks an outcome other than the "
             "expected one (unsafe: F, safe: C, malformed: E).")
    L.append("")
    L.append("| file | expect | technique | " + " | ".join(tools) + " |")
    L.append("| --- | --- | --- |" + " :---: |" * len(tools))
    for rel in sorted(truth):
        t = truth[rel]
        cells = []
        for name in tools:
            o = results[name][rel]
            c = "U" if o.unsupported else o.kind[0].upper()
            if o.kind != EXPECT_OUTCOME[t["expect"]]:
                c += "*"
            cells.append(c)
        L.append(f"| `{rel}` | {t['expect']} | {t['technique']} | " + " | ".join(cells) + " |")
    L.append("")
    L.append(END)
    return "\n".join(L) + "\n"


def write_out(out: Path, section: str):
    if out.exists():
        old = out.read_text()
        if BEGIN in old and END in old:
            head, rest = old.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            out.write_text(head + section.rstrip("\n") + tail)
            return
    out.write_text("# verify --scan and the peer scanners\n\n" + section)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="poisongate binary (omit to run the peers only)")
    ap.add_argument("--corpus", type=Path, default=ROOT / "testdata/models")
    ap.add_argument("--out", type=Path, default=ROOT / "benches/scan/results.md")
    ap.add_argument("--peer-bin", type=Path, default=Path(sys.executable).parent,
                    help="directory holding the picklescan, modelscan and fickling commands "
                         "(default: this interpreter's bin/)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per file and tool")
    ap.add_argument("--only", metavar="REGEX", help="only the truth.json entries matching REGEX")
    ap.add_argument("--details", type=Path, metavar="F", help="also write every outcome with its detail as JSON")
    ap.add_argument("--fickling-zip", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fickling_zip:
        return fickling_zip_helper(args.fickling_zip)

    truth = json.loads((args.corpus / "truth.json").read_text())
    if args.only:
        truth = {k: v for k, v in truth.items() if re.search(args.only, k)}
    runners = collections.OrderedDict()
    meta = []
    if args.bin:
        binary = str(Path(args.bin).resolve())
        runners["poisongate"] = lambda p: poisongate(binary, p, args.timeout)
        rc, out, _ = run([binary, "--version"], 30)
        meta.append(f"poisongate {out.split()[-1] if rc == 0 and out.split() else '?'} (`verify --scan FILE`)")
    for exe in ("picklescan", "modelscan", "fickling"):
        if not (args.peer_bin / exe).exists():
            sys.exit(f"peers.py: {args.peer_bin / exe} not found (see benches/scan/requirements-peers.txt)")
    runners["picklescan"] = lambda p: picklescan(args.peer_bin, p, args.timeout)
    runners["picklescan --strict"] = lambda p: picklescan(args.peer_bin, p, args.timeout, strict=True)
    runners["modelscan"] = lambda p: modelscan(args.peer_bin, p, args.timeout)
    runners["fickling"] = lambda p: fickling(args.peer_bin, p, args.timeout)
    meta += [f"picklescan {version('picklescan')} (`picklescan --path FILE`; second row `--strict`)",
             f"modelscan {version('modelscan')} (`modelscan -p FILE -r json`, no tensorflow/h5py extras)",
             f"fickling {version('fickling')} (`fickling --check-safety FILE` for .pkl/.joblib, "
             "`fickling.scan_zip_archive` for .pt; second row: flagged only at LIKELY_OVERTLY_MALICIOUS or above)"]

    results = {name: {} for name in runners}
    for i, rel in enumerate(sorted(truth)):
        path = args.corpus / rel
        for name, fn in runners.items():
            results[name][rel] = fn(path)
        print(f"[{i + 1}/{len(truth)}] {rel}: " + " ".join(f"{k}={v.kind}" for k, v in
                                                           ((k, results[k][rel]) for k in runners)),
              file=sys.stderr)
    tools = list(runners)
    results["fickling (overt only)"] = {r: fickling_overt(o) for r, o in results["fickling"].items()}
    tools.append("fickling (overt only)")

    pg_disagree = None
    if "poisongate" in results:
        pg_disagree = []
        for rel in sorted(truth):
            t, o = truth[rel], results["poisongate"][rel]
            want = EXPECT_OUTCOME[t["expect"]]
            if o.kind != want:
                pg_disagree.append((rel, f"expected {want}, got {o.kind}" + (f" ({o.detail})" if o.detail else "")))
            elif t["expect"] == "unsafe" and o.extra.get("callables") != sorted(t["callables"]):
                pg_disagree.append((rel, f"named {o.extra.get('callables')}, truth.json has {sorted(t['callables'])}"))

    if args.details:
        args.details.write_text(json.dumps({name: {r: [o.kind, o.detail, o.unsupported] for r, o in sorted(res.items())}
                                           for name, res in results.items()}, indent=1, sort_keys=True) + "\n")

    section = render(truth, tools, results, pg_disagree, meta)
    write_out(args.out, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
