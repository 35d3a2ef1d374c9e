#!/usr/bin/env python3
"""The tests of `poisongate compare`, done the way a user would in Python, for timing.

    python compare_peer.py gen --rows 1000000 --out DIR      # writes DIR/scored.parquet
    python compare_peer.py run --data DIR                    # prints RESULT {...}

`gen` writes evaluation rows scored by two models (label, both predictions and positive-class
scores, a 50-value segment column and a numeric one); the retrained model differs on about 8% of
rows, like benches/kernels.rs. `run` reads the file and computes what `compare` computes:
flip rate and transition matrix, sign tests per class, McNemar (statsmodels, exact for small
counts, else chi-square) overall and per class, paired t-tests of log-loss and Brier (scipy),
two-sample KS and decile PSI of the scores, ECE before and after with a 200-replicate paired
bootstrap of 50,000 rows, and per-segment (50 categories, 10 deciles) binomial tests of
accuracy drop and shift toward each class, with Benjamini-Hochberg.
"""
import argparse
import json
import sys
import time

import numpy as np


def gen(rows, out):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import os
    rng = np.random.default_rng(3)
    p = rng.random(rows)
    q = np.clip(p + 0.2 * (rng.random(rows) - 0.5), 0, 1)
    y = (rng.random(rows) < p).astype(np.int64)
    seg = np.array([f"seg{k}" for k in range(50)])[rng.integers(0, 50, rows)]
    os.makedirs(out, exist_ok=True)
    pq.write_table(pa.table({
        "y": y, "pred_before": (p >= 0.5).astype(np.int64), "pred_after": (q >= 0.5).astype(np.int64),
        "score_before": p, "score_after": q, "seg": seg, "x": rng.random(rows),
    }), f"{out}/scored.parquet")


def ece(conf, ok, bins=10):
    b = np.clip(np.ceil(conf * bins).astype(int), 1, bins) - 1
    n = np.bincount(b, minlength=bins)
    c = np.bincount(b, weights=conf, minlength=bins)
    a = np.bincount(b, weights=ok, minlength=bins)
    m = n > 0
    return float(np.sum(np.abs(a[m] - c[m])) / len(conf))


def run(data):
    import pandas as pd
    from scipy import stats
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.multitest import multipletests
    from sklearn.metrics import log_loss, brier_score_loss
    t0 = time.perf_counter()
    df = pd.read_parquet(f"{data}/scored.parquet")
    y, b, a = df["y"].to_numpy(), df["pred_before"].to_numpy(), df["pred_after"].to_numpy()
    sb, sa = df["score_before"].to_numpy(), df["score_after"].to_numpy()
    out = {}
    out["flip_rate"] = float(np.mean(b != a))
    out["transitions"] = pd.crosstab(b, a).to_numpy().tolist()
    for j in (0, 1):
        into, away = int(np.sum((b != j) & (a == j))), int(np.sum((b == j) & (a != j)))
        out[f"sign_p_{j}"] = float(stats.binomtest(into, into + away, 0.5, alternative="greater").pvalue)
    okb, oka = b == y, a == y
    nb, nc = int(np.sum(okb & ~oka)), int(np.sum(~okb & oka))
    out["mcnemar_p"] = float(mcnemar([[0, nb], [nc, 0]], exact=nb + nc < 25).pvalue)
    for j in (0, 1):
        m = y == j
        bj, cj = int(np.sum(okb[m] & ~oka[m])), int(np.sum(~okb[m] & oka[m]))
        out[f"recall_p_{j}"] = float(mcnemar([[0, bj], [cj, 0]], exact=bj + cj < 25).pvalue)
    eps = 1e-15
    llb = -(y * np.log(np.clip(sb, eps, 1)) + (1 - y) * np.log(np.clip(1 - sb, eps, 1)))
    lla = -(y * np.log(np.clip(sa, eps, 1)) + (1 - y) * np.log(np.clip(1 - sa, eps, 1)))
    out["log_loss"] = [log_loss(y, sb), log_loss(y, sa)]
    out["brier"] = [brier_score_loss(y, sb), brier_score_loss(y, sa)]
    out["ll_t"] = float(stats.ttest_rel(lla, llb, alternative="greater").pvalue)
    out["brier_t"] = float(stats.ttest_rel((sa - y) ** 2, (sb - y) ** 2, alternative="greater").pvalue)
    ks = stats.ks_2samp(sb, sa, method="asymp")
    edges = np.unique(np.quantile(sb, np.arange(1, 10) / 10))
    cb = np.bincount(np.searchsorted(edges, sb, side="left"), minlength=len(edges) + 1) / len(sb)
    ca = np.bincount(np.searchsorted(edges, sa, side="left"), minlength=len(edges) + 1) / len(sa)
    cb, ca = np.maximum(cb, 1e-6), np.maximum(ca, 1e-6)
    out["ks"], out["psi"] = float(ks.statistic), float(np.sum((ca - cb) * np.log(ca / cb)))
    confb, confa = np.maximum(sb, 1 - sb), np.maximum(sa, 1 - sa)
    okb2, oka2 = (sb >= 0.5) == y, (sa >= 0.5) == y
    out["ece"] = [ece(confb, okb2), ece(confa, oka2)]
    rng = np.random.default_rng(0)
    reps = []
    for _ in range(200):
        i = rng.integers(0, len(y), 50_000)
        reps.append(ece(confa[i], oka2[i]) - ece(confb[i], okb2[i]))
    out["ece_se"] = float(np.std(reps, ddof=1) * np.sqrt(50_000 / len(y)))
    pvals = []
    xdec = pd.qcut(df["x"], 10, labels=False, duplicates="drop")
    for col in (df["seg"], xdec):
        for g, idx in col.groupby(col).groups.items():
            m = np.zeros(len(y), bool)
            m[df.index.get_indexer(idx)] = True
            r = ~m
            bg, cg = int(np.sum(okb[m] & ~oka[m])), int(np.sum(~okb[m] & oka[m]))
            br, cr = int(np.sum(okb[r] & ~oka[r])), int(np.sum(~okb[r] & oka[r]))
            qr = max((br + 1) / (br + cr + 2), 0.5)
            pvals.append(stats.binomtest(bg, bg + cg, qr, alternative="greater").pvalue if bg + cg else 1.0)
            for j in (0, 1):
                ig, ag = int(np.sum((b[m] != j) & (a[m] == j))), int(np.sum((b[m] == j) & (a[m] != j)))
                ir, ar = int(np.sum((b[r] != j) & (a[r] == j))), int(np.sum((b[r] == j) & (a[r] != j)))
                qr = max((ir + 1) / (ir + ar + 2), 0.5)
                pvals.append(stats.binomtest(ig, ig + ag, qr, alternative="greater").pvalue if ig else 1.0)
    out["segments_rejected"] = int(np.sum(multipletests(pvals, 0.01, method="fdr_bh")[0]))
    out["seconds"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["gen", "run"])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out")
    ap.add_argument("--data")
    args = ap.parse_args()
    if args.mode == "gen":
        gen(args.rows, args.out)
    else:
        run(args.data)


if __name__ == "__main__":
    sys.exit(main())
