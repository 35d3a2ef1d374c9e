#!/usr/bin/env python3
"""The calibration suite at scale: clean splits of large files must pass, attacks must block.

For every generator and file size, one seeded file of SIZE rows is shuffled and split into two
halves. `poisongate profile` pins the first half (the trusted half); `poisongate check` then gates
the second half (the clean half) and the trusted half itself against that baseline. Both must
pass: the rows are exchangeable, so any block is a false block. With `--attacks`, three attacks
are written over the clean half of the largest size and must block:

- `targeted-flip-2pct`: 2% of the batch's rows, all inside one segment (one common value of a
  categorical column) and all of class 0, relabelled 1;
- `trigger-1pct`: 1% of the rows get a rare value of a high-cardinality column and label 1;
- `random-flip-5pct`: 5% of the rows, drawn at random, get the other label.

Generators (all seeded, every column drawn independently of the others except the label):

- `peers`: the reference table of `shared/bench/peers/gen.py` (14 numeric columns, categorical
  columns of 3 to 1,000 Zipf-distributed values); its label depends on two numeric columns only.
- `zipf-indep`: a Zipf 1,000-value and a Zipf 2,000-value column, a uniform 20-value column, a
  numeric column with steps (numeric segments) and four continuous columns; the label depends
  on the continuous and step columns, not on the categorical ones.
- `zipf-dep`: the same columns, and the label also depends on the Zipf 1,000-value column (a
  random effect per value) and on the 20-value column.

Usage:
    python benches/eval/scale.py --bin target/release/poisongate --work /tmp/pg-scale \\
        --sizes 100000,1000000,5000000,10000000 --attacks --out /tmp/pg-scale/results.json
    python benches/eval/scale.py --results /tmp/pg-scale/results.json \\
        [--compare-with /tmp/pg-scale/before.json]

Files are kept under --work between runs (keyed by generator, size and seed), so a second binary
is measured on the same files. Each command's wall time and peak RSS are recorded.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
PEERS_GEN = ROOT.parent / "shared" / "bench" / "peers" / "gen.py"
CHUNK = 1_000_000


def zipf_probs(k: int, a: float) -> np.ndarray:
    p = 1.0 / np.arange(1, k + 1) ** a
    return p / p.sum()


def zipf_table(n: int, seed: int, dependent: bool, offset: int) -> pa.Table:
    """Rows offset..offset+n of the zipf generator (chunks are seeded by their offset)."""
    ss = np.random.SeedSequence([seed, offset])
    rng = [np.random.default_rng(s) for s in ss.spawn(12)]
    z1 = rng[0].choice(1000, size=n, p=zipf_probs(1000, 1.0))
    z2 = rng[1].choice(2000, size=n, p=zipf_probs(2000, 1.1))
    c20 = rng[2].integers(0, 20, n)
    steps = rng[3].integers(0, 8, n) * 10.0 + rng[3].normal(0, 1, n)
    x = [rng[4 + i].normal(0, 1, n) for i in range(3)]
    amount = rng[7].lognormal(3.0, 1.0, n)
    logit = -0.7 + 0.9 * x[0] - 0.6 * x[1] + 0.08 * (steps - 35.0) / 10.0 * 3.0
    if dependent:
        # A fixed random effect per value of z1000 (seeded apart from the rows) and a shift for
        # five of the 20 values of c20: the label depends on the categorical columns.
        effect = np.random.default_rng([seed, 7]).normal(0.0, 0.6, 1000)
        logit = logit + effect[z1] + 0.7 * (c20 < 5)
    label = (rng[8].random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    cat = lambda prefix, codes, k: pa.DictionaryArray.from_arrays(  # noqa: E731
        pa.array(codes.astype(np.int32)),
        pa.array([f"{prefix}_{i:04d}" for i in range(k)], pa.string()),
    ).cast(pa.string())
    return pa.table(
        {
            "z1000": cat("z1000", z1, 1000),
            "z2000": cat("z2000", z2, 2000),
            "c20": cat("c20", c20, 20),
            "steps": steps,
            "x0": x[0],
            "x1": x[1],
            "x2": x[2],
            "amount": amount,
            "label": label,
        }
    )


def peers_table(n: int, seed: int) -> pa.Table:
    spec = importlib.util.spec_from_file_location("peers_gen", PEERS_GEN)
    if spec is None or spec.loader is None:
        sys.exit(f"error: cannot load {PEERS_GEN}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_table(n, seed, False)


GENERATORS = {
    "peers": {"segment": ("c10", "c10_02"), "trigger": ("c1000", "c1000_0900")},
    "zipf-indep": {"segment": ("c20", "c20_0003"), "trigger": ("z2000", "z2000_1500")},
    "zipf-dep": {"segment": ("c20", "c20_0012"), "trigger": ("z2000", "z2000_1500")},
}


def write_split(gen: str, size: int, seed: int, d: Path) -> None:
    """Writes d/trusted.parquet and d/clean.parquet: the two halves of a shuffled file."""
    if (d / "clean.parquet").exists():
        return
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if gen == "peers":
        table = peers_table(size, seed)
    else:
        parts = [
            zipf_table(min(CHUNK, size - o), seed, gen == "zipf-dep", o)
            for o in range(0, size, CHUNK)
        ]
        table = pa.concat_tables(parts).combine_chunks()
    perm = np.random.default_rng([seed, 99]).permutation(size)
    half = size // 2
    for name, idx in (("trusted", perm[:half]), ("clean", perm[half:])):
        tmp = d / f".{name}.parquet"
        pq.write_table(table.take(pa.array(np.sort(idx))), tmp, row_group_size=CHUNK)
        tmp.rename(d / f"{name}.parquet")
    print(f"  wrote {d} in {time.time() - t0:.0f} s", file=sys.stderr)


def write_attacks(gen: str, seed: int, d: Path) -> list[str]:
    """Writes the three attacks over d/clean.parquet; returns their names."""
    names = ["targeted-flip-2pct", "trigger-1pct", "random-flip-5pct"]
    if all((d / f"{a}.parquet").exists() for a in names):
        return names
    t = pq.read_table(d / "clean.parquet")
    n = t.num_rows
    y = t.column("label").to_numpy()
    rng = np.random.default_rng([seed, 1234])
    seg_col, seg_value = GENERATORS[gen]["segment"]
    seg = (t.column(seg_col).to_numpy(zero_copy_only=False) == seg_value) & (y == 0)
    cand = np.flatnonzero(seg)
    k = int(0.02 * n)
    if len(cand) < k:
        sys.exit(f"error: segment {seg_col}={seg_value} has {len(cand)} class-0 rows, < {k}")
    flip = rng.choice(cand, k, replace=False)
    y2 = y.copy()
    y2[flip] = 1
    out = {"targeted-flip-2pct": t.set_column(t.schema.get_field_index("label"), "label", pa.array(y2))}
    trig_col, trig_value = GENERATORS[gen]["trigger"]
    rows = rng.choice(n, int(0.01 * n), replace=False)
    col = t.column(trig_col).to_numpy(zero_copy_only=False).astype(object)
    col[rows] = trig_value
    y3 = y.copy()
    y3[rows] = 1
    t3 = t.set_column(t.schema.get_field_index(trig_col), trig_col, pa.array(col, pa.string()))
    out["trigger-1pct"] = t3.set_column(t3.schema.get_field_index("label"), "label", pa.array(y3))
    rows = rng.choice(n, int(0.05 * n), replace=False)
    y4 = y.copy()
    y4[rows] = 1 - y4[rows]
    out["random-flip-5pct"] = t.set_column(t.schema.get_field_index("label"), "label", pa.array(y4))
    for name, table in out.items():
        tmp = d / f".{name}.parquet"
        pq.write_table(table, tmp, row_group_size=CHUNK)
        tmp.rename(d / f"{name}.parquet")
    return names


def run(cmd: list[str], log: Path) -> dict:
    """Runs cmd; returns exit code, wall seconds and peak RSS (MiB) of the process.

    The peak RSS comes from /usr/bin/time: a child forked from this process would report at
    least this process's own RSS at the fork (Linux carries the high-water mark across fork and
    exec), which after writing a 10M-row table is about 3 GiB whatever the command used.
    """
    t0 = time.time()
    rss = log.with_name(log.name + ".rss")
    with open(log, "w") as f:
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(rss), *cmd],
                             stdout=f, stderr=subprocess.STDOUT)
        status = p.wait()
    try:
        kib = float(rss.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        kib = float("nan")
    return {
        "exit": status,
        "seconds": round(time.time() - t0, 2),
        "rss_mib": round(kib / 1024.0, 1),
    }


def findings(report: Path) -> dict:
    try:
        r = json.loads(report.read_text())
    except (OSError, ValueError):
        return {"deny": [], "warn": []}
    out: dict[str, list[str]] = {"deny": [], "warn": []}
    for f in r.get("findings", []):
        sev = f.get("severity")
        if sev in out:
            subject = f.get("subject") or {}
            what = "/".join(str(subject[k]) for k in ("column", "value") if subject.get(k))
            out[sev].append(f"{f['code']}" + (f" [{what}]" if what else ""))
    return out


def evaluate(args: argparse.Namespace) -> list[dict]:
    results = []
    sizes = [int(s) for s in args.sizes.split(",")]
    profile_seeds = [int(s) for s in args.profile_seeds.split(",")] if args.profile_seeds else [args.seed]
    for gen, size, pseed in itertools.product(args.generators.split(","), sizes, profile_seeds):
        d = Path(args.work) / f"{gen}-n{size}-s{args.seed}"
        write_split(gen, size, args.seed, d)
        out = Path(args.work) / "runs" / args.tag / d.name / f"profile-seed-{pseed}"
        out.mkdir(parents=True, exist_ok=True)
        base = out / "baseline.json"
        prof = run(
            [args.bin, "profile", str(d / "trusted.parquet"), "-o", str(base), "--label", "label",
             "--seed", str(pseed)],
            out / "profile.log",
        )
        row = {"generator": gen, "size": size, "profile_seed": pseed, "profile": prof}
        if prof["exit"] != 0:
            print(f"{gen} {size}: profile exit {prof['exit']} (see {out}/profile.log)", file=sys.stderr)
            results.append(row)
            continue
        batches = ["clean", "trusted"]
        if args.attacks and size == max(sizes) and pseed == profile_seeds[0]:
            batches += write_attacks(gen, args.seed, d)
        for b in batches:
            rep = out / f"{b}.json"
            res = run(
                [args.bin, "check", "--baseline", str(base), str(d / f"{b}.parquet"), "--json", str(rep)],
                out / f"{b}.log",
            )
            res.update(findings(rep))
            row[b] = res
            print(
                f"{gen:>10} {size:>9} seed {pseed:>8} {b:>19}: exit {res['exit']} {res['seconds']:>6.1f} s "
                f"{res['rss_mib']:>7.0f} MiB deny={res['deny']}",
                file=sys.stderr,
            )
        results.append(row)
    return results


def table(results: list[dict], before: list[dict] | None) -> str:
    def key(r: dict) -> tuple:
        return (r["generator"], r["size"], r.get("profile_seed"))

    old = {key(r): r for r in (before or [])}

    def cell(r: dict | None, b: str) -> str:
        if r is None or b not in r:
            return "–"
        x = r[b]
        want = 0 if b in ("clean", "trusted") else 1
        mark = "ok" if x["exit"] == want else "**WRONG**"
        codes = sorted({c.split(" [")[0] for c in x["deny"]})
        out = f"exit {x['exit']} {mark}" + (f" ({', '.join(codes)})" if codes else "")
        if b in ("clean", "trusted") and x["warn"]:
            out += f", {len(x['warn'])} warn"
        return out

    kinds = ["clean", "trusted", "targeted-flip-2pct", "trigger-1pct", "random-flip-5pct"]
    lines = ["| generator | file rows | batch rows | profile seed | profile s / MiB | " + " | ".join(kinds) + " |",
             "|" + " --- |" * (5 + len(kinds))]
    for r in results:
        p = r["profile"]
        cells = []
        for b in kinds:
            now = cell(r, b)
            then = cell(old.get(key(r)), b) if before is not None else None
            cells.append(now if then in (None, now, "–") else f"{then} → {now}")
        lines.append(
            f"| {r['generator']} | {r['size']:,} | {r['size'] // 2:,} | {r.get('profile_seed', '')} | "
            f"{p['seconds']:.0f} / {p['rss_mib']:.0f} | "
            + " | ".join(cells) + " |"
        )
    false_blocks = sum(r.get(b, {}).get("exit") != 0 for r in results for b in ("clean", "trusted") if b in r)
    missed = sum(r[b]["exit"] != 1 for r in results for b in kinds[2:] if b in r)
    warned = sum(len(r[b]["warn"]) > 0 for r in results for b in ("clean", "trusted") if b in r)
    checked = sum(b in r for r in results for b in ("clean", "trusted"))
    by_code: dict[str, int] = {}
    for r in results:
        for b in ("clean", "trusted"):
            for c in r.get(b, {}).get("deny", []):
                by_code[c.split(" [")[0]] = by_code.get(c.split(" [")[0], 0) + 1
    lines.append("")
    lines.append(
        f"clean and trusted halves checked: {checked}; false blocks: {false_blocks}"
        + (f" ({', '.join(f'{c} {n}' for c, n in sorted(by_code.items()))})" if by_code else "")
        + f"; with warnings: {warned}; attacks not blocked: {missed}"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="poisongate binary")
    ap.add_argument("--work", default="/tmp/pg-scale", help="data and reports (kept between runs)")
    ap.add_argument("--sizes", default="100000,1000000,5000000,10000000", help="file rows, comma-separated")
    ap.add_argument("--generators", default=",".join(GENERATORS))
    ap.add_argument("--seed", type=int, default=20240601, help="seed of the files (and of profile)")
    ap.add_argument("--profile-seeds", help="comma-separated profile --seed values (default: --seed); "
                    "each pins its own baseline, with its own sample for the reference model")
    ap.add_argument("--attacks", action="store_true", help="attacks over the largest size's clean half")
    ap.add_argument("--tag", default="run", help="subdirectory of WORK/runs for this binary's reports")
    ap.add_argument("--out", help="write the results as JSON")
    ap.add_argument("--results", help="print the tables of an earlier --out file instead of running")
    ap.add_argument("--compare-with", help="an earlier --out file, shown as before → after")
    a = ap.parse_args()
    if a.results:
        results = json.loads(Path(a.results).read_text())
    else:
        if not a.bin:
            sys.exit("error: --bin is required unless --results is given")
        results = evaluate(a)
        if a.out:
            Path(a.out).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    before = json.loads(Path(a.compare_with).read_text()) if a.compare_with else None
    print(table(results, before))
    bad = sum(r.get(b, {}).get("exit") != 0 for r in results for b in ("clean", "trusted") if b in r)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
