#!/usr/bin/env python3
"""Regenerate testdata/reference/stats.json: reference values for the Rust statistics tests.

Run from the repository root:

    python3 -m venv /tmp/pgvenv && /tmp/pgvenv/bin/pip install -r scripts/requirements.txt
    /tmp/pgvenv/bin/python scripts/reference_stats.py

Everything is drawn from numpy.random.default_rng with fixed seeds, so the output is
reproducible for the pinned numpy/scipy versions (see scripts/requirements.txt).
Sample inputs are rounded to 6 decimals *before* scipy sees them, so the JSON holds
exactly the values the reference numbers were computed from.  Floats are written with
Python's repr (shortest string that round-trips to the same IEEE-754 double).
See testdata/reference/README.md for what each section holds.
"""
import json
import math
import os
import sys
import warnings

import numpy as np
import scipy
import scipy.optimize
import scipy.special
import scipy.stats
import statsmodels
from scipy.spatial.distance import jensenshannon

# Any scipy warning (e.g. "exact calculation unsuccessful, switching to asymp") is an error.
warnings.simplefilter("error")

SEED = 20240611
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_PATH = os.path.join(REPO_ROOT, "testdata", "reference", "stats.json")
MAX_ATTEMPTS = 5000


def rng_for(section, case, attempt=0):
    """Independent, reproducible stream per (section, case, attempt)."""
    return np.random.default_rng([SEED, section, case, attempt])


def r6(x):
    return np.round(np.asarray(x, dtype=np.float64), 6)


def floats(x):
    return [float(v) for v in np.asarray(x, dtype=np.float64).ravel()]


def ints(x):
    return [int(v) for v in np.asarray(x).ravel()]


def draw_pair(rng, n1, n2, dist_a, dist_b):
    """Two samples rounded to 6 decimals with no value shared anywhere (no ties).

    dist_* = (family, loc, scale); family "normal" or "lognormal" (loc/scale of log).
    A value that duplicates an earlier one is redrawn from the same distribution.
    """
    def one(dist):
        fam, loc, scale = dist
        if fam == "normal":
            return float(r6(rng.normal(loc, scale)))
        if fam == "lognormal":
            return float(r6(rng.lognormal(loc, scale)))
        raise ValueError(fam)

    def draw(n, dist):
        fam, loc, scale = dist
        if fam == "normal":
            return r6(rng.normal(loc, scale, n))
        return r6(rng.lognormal(loc, scale, n))

    a, b = draw(n1, dist_a), draw(n2, dist_b)
    seen = set()
    for arr, dist in ((a, dist_a), (b, dist_b)):
        for i in range(len(arr)):
            v = float(arr[i])
            while v in seen:
                v = one(dist)
            arr[i] = v
            seen.add(v)
    assert len(np.unique(np.concatenate([a, b]))) == n1 + n2
    return a, b


# --------------------------------------------------------------------------- KS exact
def ks_exact_section():
    # (n1, n2, dist_a, dist_b, accepted p-value range); the first attempt whose exact
    # p-value lands in the range is kept, so the cases span p ~ 1e-6 .. 0.99.
    N = ("normal", 0.0, 1.0)
    specs = [
        (20, 20, N, N, (0.5, 0.999)),
        (20, 20, N, ("normal", 1.5, 1.0), (1e-6, 1e-4)),
        (50, 50, N, ("normal", 0.5, 1.0), (1e-3, 3e-2)),
        (7, 13, N, N, (0.97, 0.9999)),
        (30, 45, N, ("normal", 1.0, 1.0), (1e-6, 1e-4)),
        (100, 80, N, ("normal", 0.0, 2.0), (0.01, 0.2)),
        (150, 200, N, ("normal", 0.6, 1.0), (3e-7, 3e-6)),
        (150, 200, N, N, (0.3, 0.9)),
    ]
    cases = []
    for ci, (n1, n2, da, db, (lo, hi)) in enumerate(specs):
        for attempt in range(MAX_ATTEMPTS):
            a, b = draw_pair(rng_for(1, ci, attempt), n1, n2, da, db)
            res = scipy.stats.ks_2samp(a, b, method="exact")
            if lo <= res.pvalue <= hi:
                break
        else:
            raise RuntimeError(f"ks exact case {ci}: no draw with p in [{lo}, {hi}]")
        cases.append({"a": floats(a), "b": floats(b),
                      "statistic": float(res.statistic), "pvalue": float(res.pvalue)})
    return cases


# --------------------------------------------------------------------------- KS asymptotic
def ks_asymp_section():
    N = ("normal", 0.0, 1.0)
    specs = [
        (2000, 3000, N, N),
        (1500, 4000, N, ("normal", 0.1, 1.0)),
        (2000, 2000, N, ("normal", 0.05, 1.0)),
    ]
    cases = []
    for ci, (n1, n2, da, db) in enumerate(specs):
        a, b = draw_pair(rng_for(2, ci), n1, n2, da, db)
        res = scipy.stats.ks_2samp(a, b, method="asymp")
        d = float(res.statistic)
        en = n1 * n2 / (n1 + n2)
        ksf = float(scipy.special.kolmogorov(np.sqrt(en) * d))
        # kolmogorov(x) is the survival function of the Kolmogorov limiting distribution
        assert math.isclose(ksf, float(scipy.stats.kstwobign.sf(np.sqrt(en) * d)), rel_tol=1e-12)
        cases.append({"a": floats(a), "b": floats(b), "statistic": d, "en": float(en),
                      "kolmogorov_sf": ksf, "scipy_asymp_pvalue": float(res.pvalue)})
    return cases


# --------------------------------------------------------------------------- Kolmogorov distribution
def kolmogorov_sections():
    sf = []
    for x in [0.2, 0.3, 0.5, 0.8, 1.0, 1.2, 1.36, 1.63, 2.0, 3.0, 4.0, 6.0]:
        v = float(scipy.special.kolmogorov(x))
        if v > 0.0:  # drop values that underflow
            sf.append({"x": x, "sf": v})
    isf = [{"p": p, "x": float(scipy.stats.kstwobign.isf(p))}
           for p in [0.5, 0.1, 0.05, 0.01, 0.001, 1e-4, 1e-6]]
    return sf, isf


# --------------------------------------------------------------------------- chi-square goodness of fit
def chisquare_section():
    # (categories, baseline total, observed total, drift in log-probability space)
    specs = [(3, 300, 60, 0.0), (6, 1200, 600, 0.15), (10, 5000, 800, 0.5), (20, 100000, 40000, 0.05)]
    cases = []
    for ci, (k, nbase, nobs, drift) in enumerate(specs):
        rng = rng_for(3, ci)
        probs = rng.dirichlet(np.full(k, 5.0))
        base = rng.multinomial(nbase, probs)
        while (base == 0).any():
            base = rng.multinomial(nbase, probs)
        shifted = probs * np.exp(drift * rng.normal(size=k))
        obs = rng.multinomial(nobs, shifted / shifted.sum())
        # expected = baseline frequencies rescaled to the observed total
        expected = base / base.sum() * obs.sum()
        res = scipy.stats.chisquare(obs, expected)
        cases.append({"observed": ints(obs), "expected": floats(expected),
                      "statistic": float(res.statistic), "pvalue": float(res.pvalue)})
    return cases


# --------------------------------------------------------------------------- chi-square contingency (2 x K)
def contingency_section():
    # (K, row totals, drift, accepted p range)
    specs = [
        (2, (17, 22), 0.8, (1e-3, 0.2)),
        (5, (400, 350), 0.0, (0.2, 0.95)),
        (10, (2000, 2500), 0.5, (1e-32, 1e-28)),
        (30, (3000, 1800), 0.1, (1e-6, 0.5)),
        (8, (1_000_000, 1_200_000), 0.005, (1e-12, 1e-2)),
    ]
    cases = []
    for ci, (k, (r1, r2), drift, (lo, hi)) in enumerate(specs):
        for attempt in range(MAX_ATTEMPTS):
            rng = rng_for(4, ci, attempt)
            probs = rng.dirichlet(np.full(k, 4.0))
            q = probs * np.exp(drift * rng.normal(size=k))
            table = np.array([rng.multinomial(r1, probs), rng.multinomial(r2, q / q.sum())])
            if (table.sum(axis=0) == 0).any():
                continue
            res = scipy.stats.chi2_contingency(table, correction=False)
            if lo <= res.pvalue <= hi:
                break
        else:
            raise RuntimeError(f"contingency case {ci}: no draw with p in [{lo}, {hi}]")
        assert (res.expected_freq > 0).all()
        cases.append({"table": [ints(row) for row in table], "statistic": float(res.statistic),
                      "pvalue": float(res.pvalue), "dof": int(res.dof)})
    return cases


# --------------------------------------------------------------------------- chi-square distribution
def chi2_dist_sections():
    sf = []
    for df in [1, 2, 3, 5, 10, 29, 50, 99, 200]:
        for x in [0.001, 0.5, 1.0, 3.84, 7.5, 15.0, 30.0, 60.0, 100.0, 150.0, 250.0, 400.0]:
            v = float(scipy.stats.chi2.sf(x, df))
            if 0.0 < v < 1.0:  # drop underflows and values that round to exactly 1
                sf.append({"x": x, "df": df, "sf": v})
    isf = []
    for df in [1, 2, 5, 10, 29, 100, 200]:
        for p in [0.5, 0.1, 0.05, 0.01, 0.001, 1e-6]:
            isf.append({"p": p, "df": df, "x": float(scipy.stats.chi2.isf(p, df))})
    return sf, isf


# --------------------------------------------------------------------------- Jensen-Shannon distance
def jensenshannon_section():
    rng = rng_for(5, 0)
    k50 = rng.dirichlet(np.full(50, 3.0))
    pairs = [
        ([10, 20, 30, 40], [40, 30, 20, 10]),
        (rng.multinomial(1000, np.full(10, 0.1)), rng.multinomial(700, rng.dirichlet(np.full(10, 2.0)))),
        # zero cells in one vector only (p has zeros where q does not)
        ([0, 12, 30, 0, 8, 1], [4, 10, 25, 6, 9, 2]),
        (rng.multinomial(50000, k50), rng.multinomial(20000, k50)),
        ([1, 0], [0, 1]),  # disjoint supports: distance = sqrt(ln 2)
    ]
    cases = []
    for p, q in pairs:
        p, q = np.asarray(p, dtype=np.int64), np.asarray(q, dtype=np.int64)
        d = float(jensenshannon(p.astype(np.float64), q.astype(np.float64)))  # base e
        cases.append({"p": ints(p), "q": ints(q), "distance": d})
    return cases


# --------------------------------------------------------------------------- PSI
def psi(expected, actual, eps):
    """Population Stability Index on binned counts.

    p_i = expected_i / sum(expected),  q_i = actual_i / sum(actual)
    p_i <- max(p_i, eps),  q_i <- max(q_i, eps)     (clip below at eps, no renormalisation)
    PSI = sum_i (q_i - p_i) * ln(q_i / p_i)

    This is the symmetrised Kullback-Leibler (Jeffreys) divergence between the two binned
    distributions; see B. Yurdakul (2018), "Statistical Properties of Population Stability
    Index", PhD dissertation, Western Michigan University, and N. Siddiqi (2006),
    "Credit Risk Scorecards: Developing and Implementing Intelligent Credit Scoring", Wiley.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    p = np.maximum(e / e.sum(), eps)
    q = np.maximum(a / a.sum(), eps)
    return float(np.sum((q - p) * np.log(q / p)))


# Bin counts of the four columns in the peer benchmark's oracle
# (bench/peers/reference_values.json: 10 reference-quantile bins, proportions floored at 1e-6;
# counts = proportion * non-null count, which are exact integers there).
PEER_PSI_CASES = [
    ([9901, 9900, 9900, 9900, 9900, 9901, 9900, 9900, 9900, 9901],
     [5453, 7006, 7712, 8523, 9011, 9537, 10745, 11752, 13028, 16233], 0.0896954351675585),
    ([9902] * 10,
     [9528, 7694, 7662, 7815, 7771, 8196, 8951, 9838, 11553, 19995], 0.10021907711443523),
    ([9902, 9901, 9901, 9902, 9901, 9901, 9902, 9901, 9901, 9902],
     [9915, 9817, 9960, 9900, 10030, 9974, 9726, 9753, 9812, 10141], 0.00015327051204700305),
    ([9163, 14634, 19231, 19454, 15397, 10325, 10811],
     [3907, 8428, 13875, 17299, 17376, 14474, 23647], 0.21808984766708656),
]


def psi_section():
    rng = rng_for(6, 0)
    eps = 1e-4
    base10 = rng.dirichlet(np.full(10, 8.0))
    drift10 = base10 * np.exp(0.6 * rng.normal(size=10))
    base100 = np.full(100, 0.01)
    pairs = [
        (rng.multinomial(20000, base10), rng.multinomial(5000, base10)),
        (rng.multinomial(20000, base10), rng.multinomial(5000, drift10 / drift10.sum())),
        # zero cells in actual: clipped at eps
        ([500, 1200, 2500, 3000, 1800, 700, 300], [0, 40, 300, 520, 100, 0, 40]),
        # zero cells in expected: clipped at eps
        ([0, 100, 400, 400, 100, 0], [3, 90, 380, 410, 110, 7]),
        (rng.multinomial(100000, base100), rng.multinomial(5000, base100)),
    ]
    cases = [{"expected": ints(e), "actual": ints(a), "eps": eps, "psi": psi(e, a, eps)}
             for e, a in pairs]
    for e, a, peer_value in PEER_PSI_CASES:
        v = psi(e, a, 1e-6)
        assert math.isclose(v, peer_value, rel_tol=1e-12), (v, peer_value)
        cases.append({"expected": ints(e), "actual": ints(a), "eps": 1e-6, "psi": v})
    return cases


# --------------------------------------------------------------------------- Wasserstein-1
def wasserstein_section():
    N = ("normal", 0.0, 1.0)
    specs = [
        (10, 10, N, ("normal", 0.5, 1.0)),
        (10, 25, N, ("normal", 0.0, 2.0)),
        (100, 100, N, N),
        (250, 400, ("lognormal", 0.0, 0.5), ("lognormal", 0.2, 0.5)),
        (2000, 300, N, ("normal", 0.1, 1.0)),
    ]
    cases = []
    for ci, (n1, n2, da, db) in enumerate(specs):
        u, v = draw_pair(rng_for(7, ci), n1, n2, da, db)
        cases.append({"u": floats(u), "v": floats(v),
                      "distance": float(scipy.stats.wasserstein_distance(u, v))})
    return cases


# --------------------------------------------------------------------------- binned approximations
def binned_section():
    # baseline 20000, batch 5000; batch shifted by 0 / 0.1 / 0.5 standard deviations
    # (lognormal: shift of the underlying normal, whose sd is 1).
    specs = [("normal", 0.0), ("normal", 0.1), ("lognormal", 0.5)]
    levels = np.round(np.arange(1, 100) / 100.0, 2)  # 0.01 .. 0.99
    cases = []
    for ci, (fam, shift) in enumerate(specs):
        rng = rng_for(8, ci)
        if fam == "normal":
            base, batch = rng.normal(0.0, 1.0, 20000), rng.normal(shift, 1.0, 5000)
        else:
            base, batch = rng.lognormal(0.0, 1.0, 20000), rng.lognormal(shift, 1.0, 5000)
        edges = np.unique(np.quantile(base, levels))  # default method "linear"
        nb = len(edges) + 1
        # bins (-inf, e0], (e0, e1], ..., (e_last, inf)
        bc = np.bincount(np.searchsorted(edges, base, side="left"), minlength=nb)
        tc = np.bincount(np.searchsorted(edges, batch, side="left"), minlength=nb)
        assert len(bc) == nb and len(tc) == nb and bc.sum() == 20000 and tc.sum() == 5000
        def tail_means(x):
            lo, hi = x[x <= edges[0]], x[x > edges[-1]]
            return [float(lo.mean()) if lo.size else 0.0, float(hi.mean()) if hi.size else 0.0]

        cases.append({
            "edges": floats(edges),
            "baseline_tail_means": tail_means(base),
            "batch_tail_means": tail_means(batch),
            "baseline_counts": ints(bc),
            "batch_counts": ints(tc),
            "baseline_std": float(np.std(base, ddof=1)),
            "baseline_std_ddof0": float(np.std(base, ddof=0)),
            "ks_exact": float(scipy.stats.ks_2samp(base, batch, method="asymp").statistic),
            "wasserstein_exact": float(scipy.stats.wasserstein_distance(base, batch)),
        })
    return cases


# --------------------------------------------------------------------------- multiple testing
def holm(pvalues):
    """Holm (1979) step-down adjusted p-values.

    S. Holm (1979), "A Simple Sequentially Rejective Multiple Test Procedure",
    Scandinavian Journal of Statistics 6(2):65-70.
    With p_(1) <= ... <= p_(m) sorted ascending:
        adj_(i) = min(1, max_{j <= i} (m - j + 1) * p_(j))
    mapped back to the original order.

    Hand-worked example: p = [0.01, 0.04, 0.03, 0.005], m = 4
        sorted: 0.005, 0.01, 0.03, 0.04  (original positions 3, 0, 2, 1)
        times (4, 3, 2, 1): 0.02, 0.03, 0.06, 0.04
        running max:        0.02, 0.03, 0.06, 0.06
        original order:     [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    scaled = (m - np.arange(m)) * p[order]
    adj_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adj = np.empty(m)
    adj[order] = adj_sorted
    return adj


def multiple_testing_sections():
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-15, atol=0)
    rng = rng_for(9, 0)
    sets = [
        [0.01, 0.04, 0.03, 0.005],
        [0.3],
        [0.02, 0.02, 0.5, 1.0, 0.001, 0.001, 0.04],  # ties and a 1.0
        rng.uniform(0.0, 0.1, size=10),
        np.concatenate([rng.uniform(size=40), rng.beta(0.1, 1.0, size=10) * 1e-3]),
    ]
    holm_cases, bh_cases = [], []
    for ps in sets:
        ps = np.asarray(ps, dtype=np.float64)
        holm_cases.append({"pvalues": floats(ps), "adjusted": floats(holm(ps))})
        bh_cases.append({"pvalues": floats(ps),
                         "adjusted": floats(scipy.stats.false_discovery_control(ps, method="bh"))})
    return holm_cases, bh_cases


# --------------------------------------------------------------------------- poison detectors
def binom_sf_section():
    """One-sided binomial tail P(X >= k) = binom.sf(k - 1, n, p) (rate tests of the detectors)."""
    out = []
    for k, n, p in [(1, 10, 0.1), (5, 20, 0.1), (50, 5000, 0.0003), (30, 2000, 0.005),
                    (120, 1000, 0.1), (3, 250, 0.002), (1000, 100000, 0.009)]:
        out.append({"k": k, "n": n, "p": p, "sf": float(scipy.stats.binom.sf(k - 1, n, p))})
    return out


def betabinom_sf_section():
    """Beta-binomial predictive tail P(K >= k), K ~ BetaBinomial(n, a, b) = betabinom.sf(k - 1,
    n, a, b): the rate tests against a trusted rate estimated from m rows (a = x + 1/2,
    b = m - x + 1/2), and the exchangeable out-of-range null (a = 2, b = m - 1).

    The tail is scipy's pmf summed over k..n: scipy 1.17's betabinom.sf goes through 1 - cdf
    and loses about 1e-5 relative far in the tail (9.822564e-8 against 9.822522e-8 for
    k=30, n=200, a=5.5, b=245.5; the summed pmf agrees with a log-gamma sum to 1e-12)."""
    out = []
    for k, n, a, b in [(1, 10, 0.5, 100.5), (3, 300, 0.5, 250.5), (9, 300, 2.0, 249.0),
                       (40, 2000, 20.5, 1980.5), (30, 200, 5.5, 245.5), (2, 200, 0.5, 450.5),
                       (120, 1000, 100.5, 900.5), (5, 5000000, 0.5, 20000.5),
                       (60, 10000, 1.0, 20000.0), (1, 1, 0.5, 0.5)]:
        out.append({"k": k, "n": n, "a": a, "b": b,
                    "sf": float(scipy.stats.betabinom.pmf(np.arange(k, n + 1), n, a, b).sum())})
    return out


def count_power_section():
    """Detectable effect of a count test (src/stats/power.rs): the critical count k* is the
    smallest k with betabinom tail P(K >= k) < level and k / n - base >= deny; the detectable
    excess share e is the root of binom.sf(k* - 1, n, base + e) = power (brentq), independent
    of the Rust bisection."""
    out = []
    for n, base, deny, level, a, b in [(5000, 0.00925, 0.01, 0.00085, 185.5, 19815.5),
                                       (400, 0.0, 0.01, 0.00085, 0.5, 20000.5),
                                       (1500, 0.002, 0.0, 0.001, 40.5, 19960.5),
                                       (300, 0.05, 0.03, 0.0005, 50.5, 950.5),
                                       (20000, 0.01, 0.005, 1e-4, 200.5, 19800.5)]:
        tails = scipy.stats.betabinom.pmf(np.arange(0, n + 1), n, a, b)[::-1].cumsum()[::-1]
        crit = next(k for k in range(1, n + 1)
                    if tails[k] < level and k / n - base >= deny and k / n - base > 0)
        power = 0.8
        q = scipy.optimize.brentq(lambda q: scipy.stats.binom.sf(crit - 1, n, q) - power,
                                  max(base, 1e-12), 1.0, xtol=1e-14)
        out.append({"n": n, "base": base, "deny": deny, "level": level, "a": a, "b": b,
                    "critical": crit, "excess_share": q - base})
    return out


def drift_power_section():
    """Detectable effects of the drift tests (src/stats/power.rs), from scipy's distributions:
    ks: critical = max(kstwobign.isf(level / 2) / sqrt(n_eff), deny), effect = critical +
    norm.ppf(power) * sqrt(1/n + 1/m) / 2 (Massey 1951);
    chi2: critical statistic max(chi2.isf(level, dof), n_eff * deny), effect = the lambda / n_eff
    at which ncx2.sf(critical, dof, lambda) = power (brentq); and ncx2.sf itself."""
    ks, chi, ncx = [], [], []
    for n, m, deny, level in [(1000, 20000, 0.05, 0.001), (400, 20000, 0.0, 0.0005),
                              (5000, 20000, 0.1, 0.0001), (200000, 1000000, 0.05, 0.001)]:
        n_eff = n * m / (n + m)
        crit = max(float(scipy.stats.kstwobign.isf(level / 2)) / math.sqrt(n_eff), deny)
        effect = crit + float(scipy.stats.norm.ppf(0.8)) * 0.5 * math.sqrt(1 / n + 1 / m)
        ks.append({"n": n, "m": m, "deny": deny, "level": level, "critical": crit,
                   "effect": effect})
    for dof, n, m, deny, level in [(1, 500, 20000, 0.0, 0.001), (5, 2000, 20000, 0.1, 0.001),
                                   (11, 300, 20000, 0.1, 0.0005), (3, 50000, 100000, 0.0, 1e-4),
                                   (5, 10_000_000, 1_000_000, 0.1, 0.001)]:
        n_eff = n * m / (n + m)
        crit = max(float(scipy.stats.chi2.isf(level, dof)), n_eff * deny)
        lam = scipy.optimize.brentq(lambda x: scipy.stats.ncx2.sf(crit, dof, x) - 0.8,
                                    1e-9, 1e7, xtol=1e-12, rtol=1e-14)
        chi.append({"dof": dof, "n": n, "m": m, "deny": deny, "level": level,
                    "critical": crit / n_eff, "effect": lam / n_eff})
    for x, dof, lam in [(3.84, 1, 0.5), (10.0, 4, 5.0), (30.0, 11, 12.0), (200.0, 3, 150.0),
                        (1000.0, 20, 900.0), (60000.0, 1, 59000.0), (2.5e6, 5, 2.497e6),
                        (2.5e6, 999, 2.49e6)]:
        ncx.append({"x": x, "dof": dof, "lambda": lam,
                    "sf": float(scipy.stats.ncx2.sf(x, dof, lam))})
    return ks, chi, ncx


def norm_sf_section():
    """Standard normal upper tail (the two-sample z-tests of shares and surprise)."""
    return [{"z": z, "sf": float(scipy.stats.norm.sf(z))}
            for z in [-3.0, -0.5, 0.0, 0.7, 1.96, 3.5, 6.0, 9.0]]


def mahalanobis_section():
    """Squared Mahalanobis distance z^T R^-1 z with R a correlation matrix shrunk 2% toward
    the identity, solved by numpy (the copula anomaly score)."""
    out = []
    for case, p in enumerate([2, 3, 6]):
        rng = rng_for(20, case)
        a = rng.normal(size=(200, p)) @ rng.normal(size=(p, p))
        r = np.corrcoef(a, rowvar=False)
        r = 0.98 * r + 0.02 * np.eye(p)
        for z in rng.normal(size=(3, p)) * 2.0:
            d2 = float(z @ np.linalg.solve(r, z))
            out.append({"p": p, "corr": floats(r.ravel()), "z": floats(z), "d2": d2})
    return out


# --------------------------------------------------------------------------- compare: McNemar
def mcnemar_section():
    """McNemar's test on the discordant counts of two classifiers scored on the same rows.

    b = rows only the first model gets right, c = rows only the second gets right; the
    concordant cells do not enter the test, so the table is [[0, b], [c, 0]].
        exact_p       statsmodels mcnemar(exact=True): min(1, 2 * binom.cdf(min(b, c), b + c, 1/2))
        mid_p         exact_p - binom.pmf(min(b, c), b + c, 1/2)
        mid_p_doubled min(1, 2 * (binom.cdf(min, n, 1/2) - binom.pmf(min, n, 1/2) / 2)); equals
                      mid_p unless b == c, where exact_p is capped at 1 (mid_p = 1 - pmf,
                      mid_p_doubled = 1)
        chi2_p        statsmodels mcnemar(exact=False, correction=True):
                      chi2.sf((|b - c| - 1)^2 / (b + c), 1)
    b + c = 0 is left out: the chi-square form divides by zero there.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    out = []
    for b, c in [(0, 5), (0, 17), (3, 3), (12, 12), (10, 2), (1, 9), (15, 8), (30, 52),
                 (2480, 2520), (2405, 2595)]:
        table = [[0, b], [c, 0]]
        exact = mcnemar(table, exact=True)
        chi = mcnemar(table, exact=False, correction=True)
        n, k = b + c, min(b, c)
        pmf = float(scipy.stats.binom.pmf(k, n, 0.5))
        cdf = float(scipy.stats.binom.cdf(k, n, 0.5))
        assert math.isclose(float(exact.pvalue), min(1.0, 2.0 * cdf), rel_tol=1e-15)
        stat = (abs(b - c) - 1) ** 2 / n
        assert math.isclose(float(chi.statistic), stat, rel_tol=1e-15)
        out.append({"b": b, "c": c, "exact_p": float(exact.pvalue),
                    "mid_p": float(exact.pvalue) - pmf,
                    "mid_p_doubled": min(1.0, 2.0 * (cdf - 0.5 * pmf)),
                    "chi2_statistic": float(chi.statistic), "chi2_p": float(chi.pvalue)})
    return out


# --------------------------------------------------------------------------- compare: paired t
def ttest_rel_section():
    """scipy.stats.ttest_rel(x, y): two-sided p and one-sided p_greater (mean(x - y) > 0)."""
    # (n, mean of x - y, sd of x - y)
    specs = [(5, 0.8, 0.6), (12, -0.3, 0.5), (50, 0.1, 0.4), (300, 0.0, 1.0), (2000, 0.03, 0.5)]
    out = []
    for ci, (n, delta, sd) in enumerate(specs):
        rng = rng_for(31, ci)
        x = r6(rng.normal(0.5, 0.2, n))
        y = r6(x - rng.normal(delta, sd, n))
        res = scipy.stats.ttest_rel(x, y)
        greater = scipy.stats.ttest_rel(x, y, alternative="greater")
        assert float(res.statistic) == float(greater.statistic)
        out.append({"x": floats(x), "y": floats(y), "df": n - 1,
                    "statistic": float(res.statistic), "p": float(res.pvalue),
                    "p_greater": float(greater.pvalue)})
    return out


def t_sf_section():
    """Student-t upper tail scipy.stats.t.sf(t, df)."""
    out = []
    for df in [1.0, 4.0, 30.0, 100000.0]:
        for t in [-2.0, 0.0, 0.5, 1.5, 2.776, 4.0, 8.0]:
            out.append({"t": t, "df": df, "sf": float(scipy.stats.t.sf(t, df))})
    return out


# --------------------------------------------------------------------------- compare: Bowker
def bowker_section():
    """Bowker's symmetry test on a k x k table (statsmodels SquareTable(table,
    shift_zeros=False).symmetry(method="bowker")).

    statistic = sum over pairs i < j of (n_ij - n_ji)^2 / (n_ij + n_ji), df = k (k - 1) / 2.
    statsmodels adds 1e-20 to every denominator: a pair with n_ij = n_ji = 0 adds 0 to the
    statistic and still counts in df (no NaN). Some implementations drop such pairs from df;
    nonzero_pairs and pvalue_nonzero_pairs = chi2.sf(statistic, nonzero_pairs) give that form.
    """
    from statsmodels.stats.contingency_tables import SquareTable

    tables = [
        [[40, 12], [5, 43]],
        [[120, 8, 3], [14, 95, 6], [2, 11, 60]],
        [[50, 4, 0], [9, 30, 3], [0, 1, 20]],  # pair (0, 2) empty
        [[300, 0, 2, 0], [6, 250, 0, 1], [1, 0, 90, 5], [0, 0, 0, 40]],  # pairs (0,3), (1,2) empty
    ]
    out = []
    for t in tables:
        a = np.asarray(t, dtype=np.float64)
        res = SquareTable(a, shift_zeros=False).symmetry(method="bowker")
        k = a.shape[0]
        iu = np.triu_indices(k, 1)
        up, lo = a[iu], a.T[iu]
        nz = (up + lo) > 0
        stat = float(np.sum((up[nz] - lo[nz]) ** 2 / (up[nz] + lo[nz])))
        assert math.isclose(float(res.statistic), stat, rel_tol=1e-14), (res.statistic, stat)
        assert float(res.df) == k * (k - 1) / 2
        out.append({"table": [ints(row) for row in t], "statistic": float(res.statistic),
                    "df": int(res.df), "pvalue": float(res.pvalue),
                    "nonzero_pairs": int(nz.sum()),
                    "pvalue_nonzero_pairs": float(scipy.stats.chi2.sf(stat, int(nz.sum())))})
    return out


# --------------------------------------------------------------------------- compare: ECE
ECE_EDGES = np.arange(1, 10) / 10.0  # the doubles nearest 0.1, 0.2, ..., 0.9


def ece_bins(conf):
    """Bin index 0..9 = number of edges strictly below the value: bins [0, 0.1], (0.1, 0.2], ...,
    (0.9, 1] (right-closed; the first also holds 0)."""
    return np.searchsorted(ECE_EDGES, conf, side="left")


def ece(y, p):
    """Expected calibration error of the predicted class, 10 equal-width bins.

    pred = 1 if p >= 0.5 else 0;  conf = max(p, 1 - p) (in double arithmetic);
    correct = (pred == y);  ECE = sum over non-empty bins b of (n_b / n) * |mean(correct in b)
    - mean(conf in b)|.
    """
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    conf = np.maximum(p, 1.0 - p)
    correct = ((p >= 0.5).astype(np.int64) == y).astype(np.float64)
    bins = ece_bins(conf)
    counts = np.bincount(bins, minlength=10)
    total = 0.0
    for b in range(10):
        if counts[b]:
            m = bins == b
            total += counts[b] / len(y) * abs(correct[m].mean() - conf[m].mean())
    return total, counts, conf, correct


def ece_section():
    from sklearn.calibration import calibration_curve

    # (n, slope and shift on the logit scale of the reported probability, decimals)
    specs = [(200, 1.0, 0.0, 6), (500, 2.0, 0.3, 6), (1000, 0.5, -0.2, 6), (2000, 1.5, 0.0, 2)]
    out = []
    for ci, (n, slope, shift, dec) in enumerate(specs):
        rng = rng_for(32, ci)
        q = 1.0 / (1.0 + np.exp(-rng.normal(0.0, 1.5, n)))  # true probability of class 1
        y = (rng.random(n) < q).astype(np.int64)
        logit = np.log(q / (1.0 - q))
        p = np.round(1.0 / (1.0 + np.exp(-(slope * logit + shift))), dec)
        value, counts, conf, correct = ece(y, p)
        # Independent check of the per-bin means: sklearn bins on linspace(0, 1, 11), whose
        # 0.3, 0.6 and 0.7 are one ulp above k/10; no confidence may sit on those doubles.
        sk_edges = np.linspace(0.0, 1.0, 11)[1:-1]
        assert not np.isin(conf, sk_edges[sk_edges != ECE_EDGES]).any()
        prob_true, prob_pred = calibration_curve(correct, conf, n_bins=10, strategy="uniform")
        check = float(np.sum(counts[counts > 0] / n * np.abs(prob_true - prob_pred)))
        assert math.isclose(value, check, rel_tol=1e-12), (value, check)
        out.append({"y": ints(y), "p": floats(p), "ece": float(value),
                    "bin_counts": ints(counts)})
    return out


# --------------------------------------------------------------------------- compare: KS on scores
def ks_scores_section():
    """Two-sample KS on score vectors rounded to 2 decimals (many ties), method="asymp".

    With ties the statistic is still sup_x |F_a(x) - F_b(x)| of the right-continuous ECDFs,
    attained at one of the pooled values; the script checks scipy against that. The p-value
    formula assumes continuous data, so with ties it is conservative.
    """
    specs = [((2.0, 5.0), (2.4, 5.0), 1500, 2000), ((2.0, 2.0), (2.0, 2.0), 800, 1200)]
    out = []
    for ci, (pa, pb, n1, n2) in enumerate(specs):
        rng = rng_for(33, ci)
        a = np.round(rng.beta(*pa, n1), 2)
        b = np.round(rng.beta(*pb, n2), 2)
        res = scipy.stats.ks_2samp(a, b, method="asymp")
        grid = np.unique(np.concatenate([a, b]))
        fa = np.searchsorted(np.sort(a), grid, side="right") / n1
        fb = np.searchsorted(np.sort(b), grid, side="right") / n2
        assert float(res.statistic) == float(np.max(np.abs(fa - fb)))
        en = n1 * n2 / (n1 + n2)
        out.append({"a": floats(a), "b": floats(b), "statistic": float(res.statistic),
                    "en": float(en),
                    "kolmogorov_sf": float(scipy.special.kolmogorov(np.sqrt(en) * res.statistic)),
                    "scipy_asymp_pvalue": float(res.pvalue)})
    return out


# --------------------------------------------------------------------------- JSON output
def fmt_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"non-finite value {v!r}")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError(type(v))


def to_json(obj, level=0, width=100):
    """Pretty JSON: one key per line (sorted); lists of numbers wrapped to ~width columns."""
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {to_json(obj[k], level + 1, width)}" for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if not obj:
            return "[]"
        if all(not isinstance(x, (dict, list)) for x in obj):
            lines, cur = [], ""
            for s in (fmt_scalar(x) for x in obj):
                if cur and len(inner) + len(cur) + len(s) + 2 > width:
                    lines.append(cur + ",")
                    cur = s
                else:
                    cur = f"{cur}, {s}" if cur else s
            lines.append(cur)
            return "[\n" + "\n".join(inner + ln for ln in lines) + "\n" + pad + "]"
        return "[\n" + ",\n".join(inner + to_json(x, level + 1, width) for x in obj) + "\n" + pad + "]"
    return fmt_scalar(obj)


def main():
    kol_sf, kol_isf = kolmogorov_sections()
    ks_power, chi2_power, ncx2_sf = drift_power_section()
    chi2_sf, chi2_isf = chi2_dist_sections()
    holm_cases, bh_cases = multiple_testing_sections()
    out = {
        "scipy_version": scipy.__version__,
        "numpy_version": np.__version__,
        "ks_2samp_exact": ks_exact_section(),
        "ks_2samp_asymp": ks_asymp_section(),
        "kolmogorov_sf": kol_sf,
        "kolmogorov_isf": kol_isf,
        "chisquare": chisquare_section(),
        "chi2_contingency": contingency_section(),
        "chi2_sf": chi2_sf,
        "chi2_isf": chi2_isf,
        "jensenshannon": jensenshannon_section(),
        "psi": psi_section(),
        "wasserstein": wasserstein_section(),
        "binned": binned_section(),
        "holm": holm_cases,
        "bh": bh_cases,
        "binom_sf": binom_sf_section(),
        "norm_sf": norm_sf_section(),
        "betabinom_sf": betabinom_sf_section(),
        "count_power": count_power_section(),
        "ks_power": ks_power,
        "chi2_power": chi2_power,
        "ncx2_sf": ncx2_sf,
        "mahalanobis": mahalanobis_section(),
        "statsmodels_version": statsmodels.__version__,
        "mcnemar": mcnemar_section(),
        "ttest_rel": ttest_rel_section(),
        "t_sf": t_sf_section(),
        "bowker": bowker_section(),
        "ece": ece_section(),
        "ks_scores": ks_scores_section(),
    }
    text = to_json(out) + "\n"
    # the text must parse back to exactly the same values, with no NaN/inf anywhere
    assert json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) == out
    json.dumps(out, allow_nan=False)
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    with open(OUT_PATH, "w") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(OUT_PATH, REPO_ROOT)} ({len(text)} bytes) "
          f"scipy {scipy.__version__} numpy {np.__version__}", file=sys.stderr)
    for k in sorted(out):
        if isinstance(out[k], list):
            print(f"  {k}: {len(out[k])}", file=sys.stderr)


if __name__ == "__main__":
    main()
