#!/usr/bin/env python3
"""Generate the seeded datasets and batches of the poisoning-detector evaluation suite.

    python benches/eval/gen.py --out /tmp/pg-eval            # 10 seeds, every size
    python benches/eval/gen.py --out /tmp/pg-eval --quick    # 3 seeds, 2,000-row batches
    python benches/eval/gen.py --out /tmp/pg-eval --verify   # generate, then check the files
    python benches/eval/gen.py --out /tmp/pg-eval-small --suite small   # small trusted sets

Writes, for every dataset, DIR/<dataset>/trusted.parquet (pin a baseline from it) and
DIR/<dataset>/<scenario>/<size>/<seed>.parquet (batches to check), plus DIR/manifest.json, a
list with one entry per batch: what was done to it, which rows were attacked and which verdict
a gate should give. Every file has an int64 `row_id` (unique across the trusted set and all
batches of a dataset) and an int64 `label` (0..K-1).

Real datasets are small, so the trusted set and every batch are independent draws from a
smoothed bootstrap of the real rows (Silverman 1986, section 6.4): rows are sampled with
replacement and continuous columns get Gaussian noise of 0.1 x the column's sd. A clean batch
therefore comes from exactly the distribution the baseline was pinned from. See README.md.

--suite small writes a separate suite with the same layout: trusted sets of 200-500 rows
(small, wide and weak-signal data) and 200/300-row batches.

Every random choice comes from numpy's default_rng seeded by (dataset, scenario, size, seed),
so two runs with the pinned package versions write identical files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

Frame = dict[str, np.ndarray]  # column name -> values; features plus LABEL, no ids
Rng = np.random.Generator

ID = "row_id"
LABEL = "label"
FLOAT, INT, CAT = "float", "int", "cat"  # continuous numeric, discrete numeric, string category
JITTER = 0.1  # smoothed-bootstrap noise, in units of the column's sd
SIZES = (250, 1000, 2000, 5000, 20000)  # every batch size in use; the index enters the row ids
ID_BLOCK = 100_000  # ids reserved per batch (a batch holds at most 20,000 rows)


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------


@dataclass
class Dataset:
    name: str
    kinds: dict[str, str]  # feature -> FLOAT | INT | CAT, in file order
    n_classes: int
    trusted_rows: int
    draw: Callable[[Rng, int], Frame]  # n independent rows from the generating distribution
    source: str  # one line for the README / logs
    real: Frame | None = None  # the real rows draw() resamples (None: drawn from a generator)

    def cols(self, *kinds: str) -> list[str]:
        return [c for c, k in self.kinds.items() if k in kinds]


def smoothed_bootstrap(real: Frame, kinds: dict[str, str]) -> Callable[[Rng, int], Frame]:
    """Rows drawn with replacement; FLOAT columns jittered by N(0, (0.1 sd)^2)."""
    m = len(real[LABEL])
    sd = {c: float(np.std(real[c], ddof=1)) for c, k in kinds.items() if k == FLOAT}

    def draw(rng: Rng, n: int) -> Frame:
        idx = rng.integers(0, m, n)
        out = {c: v[idx] for c, v in real.items()}
        for c, s in sd.items():
            out[c] = out[c] + rng.normal(0.0, JITTER * s, n)
        return out

    return draw


def identifier(name: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in name.strip().lower())
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_")


def load_breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer as load

    d = load()
    names = [identifier(n) for n in d.feature_names]
    real: Frame = {n: d.data[:, i].astype(np.float64) for i, n in enumerate(names)}
    real[LABEL] = d.target.astype(np.int64)
    kinds = dict.fromkeys(names, FLOAT)
    return Dataset(
        name="breast_cancer",
        kinds=kinds,
        n_classes=2,
        trusted_rows=10_000,
        draw=smoothed_bootstrap(real, kinds),
        real=real,
        source="sklearn load_breast_cancer: 569 rows, 30 continuous features, 2 classes",
    )


def load_wine() -> Dataset:
    from sklearn.datasets import load_wine as load

    d = load()
    names = [identifier(n) for n in d.feature_names]
    kinds = {n: INT if n in ("magnesium", "proline") else FLOAT for n in names}
    real: Frame = {}
    for i, n in enumerate(names):
        col = d.data[:, i]
        real[n] = col.astype(np.int64) if kinds[n] == INT else col.astype(np.float64)
    real[LABEL] = d.target.astype(np.int64)
    return Dataset(
        name="wine",
        kinds=kinds,
        n_classes=3,
        trusted_rows=10_000,
        draw=smoothed_bootstrap(real, kinds),
        real=real,
        source="sklearn load_wine: 178 rows, 11 continuous + 2 integer features, 3 classes",
    )


def load_fair() -> Dataset:
    import statsmodels.api as sm

    df = sm.datasets.fair.load_pandas().data
    # age and yrs_married are continuous quantities recorded at interval midpoints: jittered.
    # Ratings, schooling and children are counts/ordinal codes; occupations are nominal codes.
    real: Frame = {
        "rate_marriage": df["rate_marriage"].to_numpy().astype(np.int64),
        "age": df["age"].to_numpy(np.float64),
        "yrs_married": df["yrs_married"].to_numpy(np.float64),
        "children": np.floor(df["children"].to_numpy()).astype(np.int64),  # 5.5 codes "5 or more"
        "religious": df["religious"].to_numpy().astype(np.int64),
        "educ": df["educ"].to_numpy().astype(np.int64),
        "occupation": np.array([f"occ_{int(v)}" for v in df["occupation"]], dtype=object),
        "occupation_husb": np.array(
            [f"husb_occ_{int(v)}" for v in df["occupation_husb"]], dtype=object
        ),
        LABEL: (df["affairs"].to_numpy() > 0).astype(np.int64),
    }
    kinds = {
        "rate_marriage": INT,
        "age": FLOAT,
        "yrs_married": FLOAT,
        "children": INT,
        "religious": INT,
        "educ": INT,
        "occupation": CAT,
        "occupation_husb": CAT,
    }
    return Dataset(
        name="fair",
        kinds=kinds,
        n_classes=2,
        trusted_rows=10_000,
        draw=smoothed_bootstrap(real, kinds),
        real=real,
        source="statsmodels fair (1974 survey): 6,366 rows, 2 continuous, 4 ordinal, "
        "2 categorical; label = affairs > 0",
    )


def load_anes96() -> Dataset:
    import statsmodels.api as sm

    df = sm.datasets.anes96.load_pandas().data
    ints = ["TVnews", "selfLR", "ClinLR", "DoleLR", "age", "educ", "income"]
    real: Frame = {"logpopul": df["logpopul"].to_numpy(np.float64)}
    for c in ints:
        real[identifier(c)] = df[c].to_numpy().astype(np.int64)
    real["pid"] = np.array([f"pid_{int(v)}" for v in df["PID"]], dtype=object)
    real[LABEL] = df["vote"].to_numpy().astype(np.int64)
    kinds = {"logpopul": FLOAT, **dict.fromkeys((identifier(c) for c in ints), INT), "pid": CAT}
    return Dataset(
        name="anes96",
        kinds=kinds,
        n_classes=2,
        trusted_rows=10_000,
        draw=smoothed_bootstrap(real, kinds),
        real=real,
        source="statsmodels anes96 (1996 US election survey): 944 rows, 1 continuous, "
        "7 ordinal, 1 categorical (party id); label = vote",
    )


REGIONS = np.array(["north", "south", "east", "west", "central", "islands"], dtype=object)
REGION_P = np.array([0.30, 0.25, 0.20, 0.15, 0.092, 0.008])
REGION_EFFECT = np.array([0.0, 0.5, -0.35, 0.15, 0.85, 1.35])
CHANNELS = np.array(["web", "branch", "phone"], dtype=object)
CHANNEL_EFFECT = np.array([0.0, -0.5, 0.7])


def synthetic_draw(rng: Rng, n: int) -> Frame:
    """Mixed synthetic table: normal, lognormal, Poisson and logit-normal columns, two categories.

    age, credit_score and income share a latent factor (correlations 0.6 and 0.5); visits and
    utilization share another. The label is Bernoulli(sigmoid(linear predictor)); the predictor
    is scaled so the Bayes error is about 15% and about a third of the rows are positive.
    """
    z = rng.standard_normal((n, 4))
    age = 42.0 + 11.0 * z[:, 0]
    credit = 650.0 + 70.0 * (0.6 * z[:, 0] + 0.8 * z[:, 1])
    log_income = 10.8 + 0.5 * (0.5 * z[:, 0] + np.sqrt(0.75) * z[:, 2])
    visits = rng.poisson(np.exp(0.7 + 0.35 * z[:, 1] - 0.2 * z[:, 3]))
    utilization = 1.0 / (1.0 + np.exp(-(-0.5 + 0.9 * z[:, 3] - 0.3 * z[:, 1])))
    region = rng.choice(len(REGIONS), n, p=REGION_P)
    logits = np.stack([0.5 - 0.03 * (age - 42.0), np.zeros(n), -0.5 + 0.02 * (age - 42.0)], 1)
    p_channel = np.exp(logits)
    p_channel /= p_channel.sum(1, keepdims=True)
    channel = (rng.random(n)[:, None] > np.cumsum(p_channel, 1)).sum(1).clip(0, 2)
    lin = (
        -1.0 * (credit - 650.0) / 70.0
        - 0.6 * (log_income - 10.8) / 0.5
        + 0.35 * (visits - 2.0) / 1.5
        + 1.2 * (utilization - 0.4) / 0.2
        + REGION_EFFECT[region]
        + CHANNEL_EFFECT[channel]
    )
    p = 1.0 / (1.0 + np.exp(-(-1.6 + 1.7 * lin)))
    return {
        "age": age,
        "credit_score": credit,
        "income": np.exp(log_income),
        "visits": visits.astype(np.int64),
        "utilization": utilization,
        "region": REGIONS[region],
        "channel": CHANNELS[channel],
        LABEL: (rng.random(n) < p).astype(np.int64),
    }


def load_synthetic() -> Dataset:
    kinds = {
        "age": FLOAT,
        "credit_score": FLOAT,
        "income": FLOAT,
        "visits": INT,
        "utilization": FLOAT,
        "region": CAT,
        "channel": CAT,
    }
    return Dataset(
        name="synthetic",
        kinds=kinds,
        n_classes=2,
        trusted_rows=20_000,
        draw=synthetic_draw,
        source="synthetic mixed table: 4 continuous (normal, lognormal, logit-normal), "
        "1 Poisson, 2 categorical; logistic label, Bayes error ~15%",
    )


LOADERS: dict[str, Callable[[], Dataset]] = {
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
    "fair": load_fair,
    "anes96": load_anes96,
    "synthetic": load_synthetic,
}


# -- the small suite (--suite small): small, wide and weak-signal trusted sets ----------------

WIDE_COLUMNS = 40
WIDE_FACTORS = 4
WIDE_LOGNORMAL = 10  # the last 10 columns are exp() of their factor score: right-skewed


def _wide_parameters() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed loadings, noise sds, locations and scales of the wide factor table (seeded)."""
    rng = np.random.default_rng(zlib.crc32(b"wide_factor loadings"))
    loadings = rng.normal(0.0, 0.15, (WIDE_COLUMNS, WIDE_FACTORS))  # small cross-loadings
    primary = np.arange(WIDE_COLUMNS) % WIDE_FACTORS
    loadings[np.arange(WIDE_COLUMNS), primary] = rng.uniform(0.55, 0.9, WIDE_COLUMNS)
    noise = np.sqrt(np.clip(1.0 - (loadings**2).sum(1), 0.04, None))  # unit-variance scores
    loc = rng.uniform(5.0, 50.0, WIDE_COLUMNS)
    scale = loc * rng.uniform(0.08, 0.25, WIDE_COLUMNS)  # positive columns: ratio scales
    return loadings, noise, loc, scale


WIDE_LOADINGS, WIDE_NOISE, WIDE_LOC, WIDE_SCALE = _wide_parameters()


def wide_factor_draw(rng: Rng, n: int) -> Frame:
    """40 correlated numeric columns from 4 latent factors plus noise; the label is logistic in
    three of the factors. Columns sharing a primary factor correlate at 0.3-0.8 (median 0.5)."""
    f = rng.standard_normal((n, WIDE_FACTORS))
    z = f @ WIDE_LOADINGS.T + rng.standard_normal((n, WIDE_COLUMNS)) * WIDE_NOISE
    out: Frame = {}
    for j in range(WIDE_COLUMNS):
        if j < WIDE_COLUMNS - WIDE_LOGNORMAL:
            out[f"x{j + 1:02d}"] = WIDE_LOC[j] + WIDE_SCALE[j] * z[:, j]
        else:
            out[f"x{j + 1:02d}"] = WIDE_LOC[j] * np.exp(0.35 * z[:, j])
    p = 1.0 / (1.0 + np.exp(-(-0.4 + 1.3 * f[:, 0] - 0.9 * f[:, 1] + 0.6 * f[:, 2])))
    out[LABEL] = (rng.random(n) < p).astype(np.int64)
    return out


def load_wide_factor() -> Dataset:
    return Dataset(
        name="wide_factor_300",
        kinds={f"x{j + 1:02d}": FLOAT for j in range(WIDE_COLUMNS)},
        n_classes=2,
        trusted_rows=300,
        draw=wide_factor_draw,
        source="synthetic wide table: 40 continuous (30 normal, 10 lognormal) from 4 latent "
        "factors + noise; label logistic in 3 factors",
    )


SEGMENTS = np.array(["seg_a", "seg_b", "seg_c", "seg_d", "seg_e"], dtype=object)
SEGMENT_P = np.array([0.34, 0.27, 0.20, 0.14, 0.05])
SEGMENT_EFFECT = np.array([0.0, 0.15, -0.1, 0.25, 0.4])
DEVICES = np.array(["mobile", "desktop", "tablet"], dtype=object)
DEVICE_P = np.array([0.55, 0.35, 0.10])
DEVICE_EFFECT = np.array([0.0, -0.15, 0.1])
WEAK_SLOPE = 1.5  # out-of-fold AUC of a logistic regression on 450 rows about 0.61


def weak_mixed_draw(rng: Rng, n: int) -> Frame:
    """A mixed table whose features say little about the label.

    age normal; tenure lognormal (correlated with age); balance lognormal; contacts Poisson;
    segment (5 values) and device (3 values) categorical. The label is
    Bernoulli(sigmoid(-0.85 + 1.5 * small linear predictor)): about 30% positive. The AUC of the
    true probability is about 0.67; a logistic regression's 5-fold out-of-fold AUC is about 0.61
    on 450-row draws (0.645 on the trusted set itself).
    """
    z = rng.standard_normal((n, 3))
    age = 45.0 + 12.0 * z[:, 0]
    tenure = np.exp(1.2 + 0.7 * (0.5 * z[:, 0] + np.sqrt(0.75) * z[:, 1]))
    balance = np.exp(7.5 + 0.9 * z[:, 2])
    contacts = rng.poisson(np.exp(0.8 + 0.3 * z[:, 1]))
    segment = rng.choice(len(SEGMENTS), n, p=SEGMENT_P)
    device = rng.choice(len(DEVICES), n, p=DEVICE_P)
    lin = (
        0.25 * z[:, 0]
        - 0.3 * z[:, 1]
        + 0.2 * (contacts - 2.3) / 1.6
        + SEGMENT_EFFECT[segment]
        + DEVICE_EFFECT[device]
    )
    p = 1.0 / (1.0 + np.exp(-(-0.85 + WEAK_SLOPE * lin)))
    return {
        "age": age,
        "tenure": tenure,
        "balance": balance,
        "contacts": contacts.astype(np.int64),
        "segment": SEGMENTS[segment],
        "device": DEVICES[device],
        LABEL: (rng.random(n) < p).astype(np.int64),
    }


def load_weak_mixed() -> Dataset:
    return Dataset(
        name="weak_mixed_450",
        kinds={
            "age": FLOAT,
            "tenure": FLOAT,
            "balance": FLOAT,
            "contacts": INT,
            "segment": CAT,
            "device": CAT,
        },
        n_classes=2,
        trusted_rows=450,
        draw=weak_mixed_draw,
        source="synthetic weak-signal table: 3 continuous, 1 Poisson, 2 categorical; "
        "out-of-fold AUC about 0.61-0.65",
    )


def small(load: Callable[[], Dataset], name: str, rows: int) -> Callable[[], Dataset]:
    """A default-suite dataset under a new name with a small trusted set."""

    def loader() -> Dataset:
        ds = load()
        return replace(ds, name=name, trusted_rows=rows, source=f"{ds.source}; trusted {rows}")

    return loader


SMALL_LOADERS: dict[str, Callable[[], Dataset]] = {
    "breast_cancer_250": small(load_breast_cancer, "breast_cancer_250", 250),
    "wide_factor_300": load_wide_factor,
    "weak_mixed_450": load_weak_mixed,
    "fair_450": small(load_fair, "fair_450", 450),
    "wine_200": small(load_wine, "wine_200", 200),
    "anes96_500": small(load_anes96, "anes96_500", 500),
}
ALL_LOADERS = {**LOADERS, **SMALL_LOADERS}


# ---------------------------------------------------------------------------
# Trusted-set statistics the attacks are built from
# ---------------------------------------------------------------------------


@dataclass
class Context:
    ds: Dataset
    trusted: Frame
    mean: dict[str, float] = field(default_factory=dict)
    sd: dict[str, float] = field(default_factory=dict)
    class_share: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cat_share: dict[str, dict[str, float]] = field(default_factory=dict)
    informative: list[str] = field(default_factory=list)  # numeric features, most informative first
    # where the mild shifts and rescales are measured (None: the trusted set itself). The small
    # suite measures them on a large reference draw: a KS of 0.10 on a 250-row sample against
    # its own shifted copy overstates the change (local clumps), so shifts would be cut short.
    mild_from: Context | None = None

    @classmethod
    def build(cls, ds: Dataset, trusted: Frame) -> Context:
        ctx = cls(ds, trusted)
        y = trusted[LABEL]
        ctx.class_share = np.bincount(y, minlength=ds.n_classes) / len(y)
        eta2: dict[str, float] = {}
        for c in ds.cols(FLOAT, INT):
            x = trusted[c].astype(np.float64)
            ctx.mean[c], ctx.sd[c] = float(x.mean()), float(x.std(ddof=1))
            between = sum(
                (y == k).mean() * (x[y == k].mean() - x.mean()) ** 2
                for k in range(ds.n_classes)
                if (y == k).any()
            )
            eta2[c] = between / x.var()  # correlation ratio: share of variance explained by class
        ctx.informative = sorted(eta2, key=lambda c: -eta2[c])
        for c in ds.cols(CAT):
            values, counts = np.unique(trusted[c], return_counts=True)
            ctx.cat_share[c] = {str(v): n / len(y) for v, n in zip(values, counts, strict=True)}
        return ctx

    def quantile(self, col: str, q: float) -> float:
        return float(np.quantile(self.trusted[col].astype(np.float64), q))

    @cached_property
    def model(self) -> object:
        """Logistic regression on the trusted set (standardized numerics, one-hot categories)."""
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        prep = ColumnTransformer(
            [
                ("num", StandardScaler(), self.ds.cols(FLOAT, INT)),
                ("cat", OneHotEncoder(handle_unknown="ignore"), self.ds.cols(CAT)),
            ]
        )
        model = make_pipeline(prep, LogisticRegression(max_iter=2000))
        model.fit(to_pandas(self.trusted, self.ds), self.trusted[LABEL])
        return model

    @cached_property
    def shifts(self) -> dict[str, float]:
        return mild_shifts(self.mild_from or self)

    @cached_property
    def rescales(self) -> list[str]:
        return mild_rescales(self.mild_from or self)


def to_pandas(frame: Frame, ds: Dataset) -> object:
    import pandas as pd

    return pd.DataFrame({c: frame[c] for c in ds.kinds})


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    family: str
    kind: str  # key into BUILDERS
    rate: float  # share of the batch's rows that are attacked (0 for clean and mild)
    sizes: tuple[int, ...]
    hard: bool = False
    seed_factor: int = 1  # seed_factor x --seeds seeds (the small suite's clean batches: 3)

    @property
    def expect(self) -> str:
        return "pass" if self.family in ("clean", "mild") else "block"


ATTACK_SIZES = (2000, 5000)
SMALL = (250,)


def _scenarios() -> list[Scenario]:
    s = [Scenario("clean", "clean", "clean", 0.0, (1000, 2000, 5000, 20000))]
    for kind in ("shift", "category", "prior", "rescale"):
        s.append(Scenario(f"mild-{kind}", "mild", f"mild-{kind}", 0.0, ATTACK_SIZES))

    def attack(family: str, kind: str, pct: int, hard: bool = False) -> None:
        s.append(Scenario(f"{family}-{pct}", family, kind, pct / 100, ATTACK_SIZES, hard))

    for pct in (2, 5, 10, 20):
        attack("random-flip", "random-flip", pct, hard=pct == 2)
    for pct in (3, 5):
        attack("targeted-flip", "targeted-flip", pct, hard=pct == 3)
    attack("confident-flip", "confident-flip", 5)
    for pct in (1, 3, 5):
        attack("trigger", "trigger", pct)
    for pct in (3, 5):
        attack("clean-label", "clean-label", pct)
    attack("common-trigger", "common-trigger", 5)
    for pct in (2, 5):
        attack("outlier", "outlier", pct)
    for pct in (2, 5):
        attack("mixed-row", "mixed-row", pct, hard=pct == 2)
    for pct in (2, 5):
        attack("duplicate", "duplicate", pct)
    for pct in (2, 5):
        attack("near-duplicate", "near-duplicate", pct)
    for pct in (2, 5):
        attack("swap", "swap", pct, hard=pct == 2)
    s.append(Scenario("small-random-flip-10", "random-flip", "random-flip", 0.10, SMALL, True))
    s.append(Scenario("small-trigger-5", "trigger", "trigger", 0.05, SMALL, True))
    return s


SCENARIOS = _scenarios()

SMALL_SIZES = (200, 300)  # the small suite's batch sizes; the index enters the row ids


def _small_scenarios() -> list[Scenario]:
    """The small suite: every scenario at 200 and 300 rows; clean batches get 3x the seeds."""
    s = [Scenario("clean", "clean", "clean", 0.0, SMALL_SIZES, seed_factor=3)]
    for kind in ("shift", "category", "prior", "rescale"):
        s.append(Scenario(f"mild-{kind}", "mild", f"mild-{kind}", 0.0, SMALL_SIZES))

    def attack(family: str, kind: str, pct: int, hard: bool = False) -> None:
        s.append(Scenario(f"{family}-{pct}", family, kind, pct / 100, SMALL_SIZES, hard))

    for pct in (2, 5, 10, 20):
        attack("random-flip", "random-flip", pct, hard=pct == 2)
    attack("targeted-flip", "targeted-flip", 5)
    attack("confident-flip", "confident-flip", 5)
    for pct in (3, 5):
        attack("trigger", "trigger", pct)
    attack("outlier", "outlier", 5)
    attack("duplicate", "duplicate", 5)
    for pct in (2, 5):
        attack("swap", "swap", pct, hard=True)
    attack("mixed-row", "mixed-row", 5, hard=True)
    return s


SMALL_SCENARIOS = _small_scenarios()


@dataclass(frozen=True)
class Suite:
    name: str
    loaders: dict[str, Callable[[], Dataset]]
    scenarios: list[Scenario]
    sizes: tuple[int, ...]  # every batch size in use; the index enters the row ids
    quick_sizes: tuple[int, ...]  # --quick keeps only these sizes
    seeds: int  # default --seeds
    quick_seeds: int  # default --seeds with --quick
    mild_reference: int = 0  # rows of the reference draw mild changes are sized on (0: trusted)


SUITES = {
    "default": Suite("default", LOADERS, SCENARIOS, SIZES, (2000, 250), 10, 3),
    "small": Suite("small", SMALL_LOADERS, SMALL_SCENARIOS, SMALL_SIZES, (200,), 10, 3, 10_000),
}


@dataclass
class Batch:
    frame: Frame
    attacked: np.ndarray  # bool per row
    ignore: np.ndarray | None = None  # bool per row: left out of row-level metrics
    trigger_features: list[str] = field(default_factory=list)
    detail: str = ""


def n_rows(frame: Frame) -> int:
    return len(frame[LABEL])


def take(frame: Frame, idx: np.ndarray) -> Frame:
    return {c: v[idx] for c, v in frame.items()}


def concat(frames: list[Frame]) -> Frame:
    return {c: np.concatenate([f[c] for f in frames]) for c in frames[0]}


def other_class(rng: Rng, y: np.ndarray, k: int) -> np.ndarray:
    """A different class for every entry: 1 - y for two classes, a uniform other one otherwise."""
    if k == 2:
        return 1 - y
    return (y + rng.integers(1, k, len(y))) % k


def draw_weighted(ctx: Context, rng: Rng, n: int, accept: Callable[[Frame], np.ndarray]) -> Frame:
    """n rows from the generator reweighted by accept(row) in [0, 1] (rejection sampling)."""
    parts: list[Frame] = []
    got = 0
    while got < n:
        f = ctx.ds.draw(rng, 2 * n)
        keep = rng.random(n_rows(f)) < accept(f)
        parts.append(take(f, np.flatnonzero(keep)))
        got += int(keep.sum())
    return take(concat(parts), np.arange(n))


def pick(rng: Rng, candidates: np.ndarray, k: int) -> np.ndarray:
    """k distinct row indices from a boolean mask (all of them if there are fewer)."""
    idx = np.flatnonzero(candidates)
    return np.sort(rng.choice(idx, min(k, len(idx)), replace=False))


def mask(n: int, idx: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[idx] = True
    return m


def fmt(x: float) -> str:
    return f"{x:.6g}"


# -- clean and mild ---------------------------------------------------------


def build_clean(ctx: Context, rng: Rng, n: int, _rate: float) -> Batch | None:
    return Batch(ctx.ds.draw(rng, n), np.zeros(n, dtype=bool), detail="independent draw")


MILD_KS = 0.10  # how far 0.25 sd moves a normal column (KS = 2 Phi(0.125) - 1 = 0.0995)
MILD_OUTSIDE = 0.005  # share of values a mild change may push past the trusted range


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def outside_share(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((y < x.min()) | (y > x.max())))


def mild_shifts(ctx: Context) -> dict[str, float]:
    """Column -> additive shift: 0.25 sd, or less where that would not be mild.

    The shift is applied to the trusted sample itself. On a normal column 0.25 sd moves the
    distribution by KS 0.10. On a skewed, peaked or spiky column (a smoothed bootstrap of few
    distinct values, or a point mass) the same shift in sd units moves it much further, so the
    shift is cut to the size that moves it by KS 0.10. Integer columns get the largest integer
    shift within that. Columns where the shift would be under 0.05 sd, or would push more than
    0.5% of the values past the trusted range, are not used.
    """
    out: dict[str, float] = {}
    for c in ctx.ds.cols(FLOAT, INT):
        x, sd = ctx.trusted[c], ctx.sd[c]
        if ctx.ds.kinds[c] == INT:
            steps = [
                d
                for d in range(1, max(1, round(0.25 * sd)) + 1)
                if ks_statistic(x, x + d) <= MILD_KS
            ]
            delta = float(max(steps, default=0))
        elif ks_statistic(x, x + 0.25 * sd) <= MILD_KS:
            delta = 0.25 * sd
        else:
            lo, hi = 0.0, 0.25 * sd  # KS grows with the shift: bisect for KS = MILD_KS
            for _ in range(30):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if ks_statistic(x, x + mid) <= MILD_KS else (lo, mid)
            delta = lo
        if delta >= 0.05 * sd and outside_share(x, x + delta) <= MILD_OUTSIDE:
            out[c] = delta
    return out


def rescale(ctx: Context, col: str, x: np.ndarray) -> np.ndarray:
    if ctx.ds.kinds[col] == INT:
        return np.round(x * 1.03).astype(np.int64)
    return x * 1.03


def mild_rescales(ctx: Context) -> list[str]:
    """Columns a 3% rescale changes mildly: a ratio scale (no negative values), KS <= 0.06 on
    the trusted sample, at most 0.5% of values pushed past its range; integers need 30 levels."""
    out = []
    for c in ctx.ds.cols(FLOAT, INT):
        x = ctx.trusted[c]
        if x.min() < 0 or (ctx.ds.kinds[c] == INT and len(np.unique(x)) < 30):
            continue
        y = rescale(ctx, c, x)
        if ks_statistic(x, y) <= 0.06 and outside_share(x, y) <= MILD_OUTSIDE:
            out.append(c)
    return out


def build_mild_shift(ctx: Context, rng: Rng, n: int, _rate: float) -> Batch | None:
    shifts = ctx.shifts
    if not shifts:
        return None
    col = str(rng.choice(list(shifts)))
    f = ctx.ds.draw(rng, n)
    f[col] = f[col] + (round(shifts[col]) if ctx.ds.kinds[col] == INT else shifts[col])
    sd = (ctx.mild_from or ctx).sd[col]  # the sd the shift was sized on
    return Batch(
        f,
        np.zeros(n, dtype=bool),
        detail=f"{col} + {fmt(shifts[col])} ({shifts[col] / sd:.2f} sd)",
    )


def build_mild_rescale(ctx: Context, rng: Rng, n: int, _rate: float) -> Batch | None:
    cols = ctx.rescales
    if not cols:
        return None
    col = str(rng.choice(cols))
    f = ctx.ds.draw(rng, n)
    f[col] = rescale(ctx, col, f[col])
    return Batch(f, np.zeros(n, dtype=bool), detail=f"{col} x 1.03")


def reweight(p: float, q: float) -> float:
    """Relative acceptance that moves a group's share from p to q."""
    return q * (1 - p) / (p * (1 - q))


def build_mild_category(ctx: Context, rng: Rng, n: int, _rate: float) -> Batch | None:
    if not ctx.cat_share:
        return None
    # the category whose share is closest to 30% (enough rows for a visible, still mild change)
    col, value = min(
        ((c, v) for c, s in ctx.cat_share.items() for v in s),
        key=lambda cv: abs(ctx.cat_share[cv[0]][cv[1]] - 0.3),
    )
    p = ctx.cat_share[col][value]
    q = p * (1 + 1 / 3) if rng.random() < 0.5 or p < 0.1 else p * (1 - 1 / 3)
    w = reweight(p, q)
    wmax = max(w, 1.0)

    def accept(f: Frame) -> np.ndarray:
        return np.where(f[col] == value, w, 1.0) / wmax

    return Batch(
        draw_weighted(ctx, rng, n, accept),
        np.zeros(n, dtype=bool),
        detail=f"share of {col}={value} {p:.3f} -> {q:.3f}",
    )


def build_mild_prior(ctx: Context, rng: Rng, n: int, _rate: float) -> Batch | None:
    # two classes: the minority one; more: any
    k = int(np.argmin(ctx.class_share) if ctx.ds.n_classes == 2 else rng.integers(ctx.ds.n_classes))
    p = float(ctx.class_share[k])
    q = 1.2 * p
    w = reweight(p, q)

    def accept(f: Frame) -> np.ndarray:
        return np.where(f[LABEL] == k, 1.0, 1.0 / w)

    return Batch(
        draw_weighted(ctx, rng, n, accept),
        np.zeros(n, dtype=bool),
        detail=f"share of class {k} {p:.3f} -> {q:.3f}",
    )


# -- label flips ------------------------------------------------------------


def build_random_flip(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    f = ctx.ds.draw(rng, n)
    idx = pick(rng, np.ones(n, dtype=bool), round(rate * n))
    f[LABEL][idx] = other_class(rng, f[LABEL][idx], ctx.ds.n_classes)
    return Batch(f, mask(n, idx), detail=f"{len(idx)} random labels flipped")


def build_targeted_flip(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    """One-directional flips A -> B among rows with an informative feature above its 70th pct."""
    col = str(rng.choice(ctx.informative[:3]))
    f = ctx.ds.draw(rng, n)
    y, k = f[LABEL], round(rate * n)
    for q in (0.7, 0.6, 0.5, 0.4, 0.3):  # widen the region only if it holds too few A rows
        thr = ctx.quantile(col, q)
        region_t = ctx.trusted[col] > thr
        counts = np.bincount(ctx.trusted[LABEL][region_t], minlength=ctx.ds.n_classes)
        a = int(np.argmax(counts))  # the class that dominates the region in trusted data
        counts[a] = -1
        b = int(np.argmax(counts))  # the runner-up: the plausible wrong answer
        cand = (f[col] > thr) & (y == a)
        if cand.sum() >= k:
            break
    idx = pick(rng, cand, k)
    y[idx] = b
    detail = f"{col} > {fmt(thr)} (q{round(q * 100)}): class {a} -> {b}"
    return Batch(f, mask(n, idx), detail=detail)


def build_confident_flip(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    """Flip the rows whose given label a trusted-set model is most sure of."""
    f = ctx.ds.draw(rng, n)
    y = f[LABEL]
    proba = ctx.model.predict_proba(to_pandas(f, ctx.ds))  # type: ignore[attr-defined]
    p_true = np.round(proba[np.arange(n), y], 9)  # rounded: ties broken by row, not by float noise
    order = np.lexsort((np.arange(n), -p_true))
    idx = np.sort(order[: round(rate * n)])
    others = proba[idx].copy()
    others[np.arange(len(idx)), y[idx]] = -1.0
    y[idx] = np.argmax(others, axis=1)
    return Batch(f, mask(n, idx), detail=f"min p(true label) flipped {p_true[idx].min():.4f}")


def build_swap(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    """Swap labels within pairs of rows of different classes: every marginal is unchanged."""
    f = ctx.ds.draw(rng, n)
    y = f[LABEL]
    before = np.bincount(y, minlength=ctx.ds.n_classes)
    queues = [list(rng.permutation(np.flatnonzero(y == c))) for c in range(ctx.ds.n_classes)]
    pairs: list[tuple[int, int]] = []
    while len(pairs) < round(rate * n / 2):
        left = np.array([len(q) for q in queues], dtype=np.float64)
        if (left > 0).sum() < 2:
            break
        a = int(rng.choice(len(left), p=left / left.sum()))
        left[a] = 0
        b = int(rng.choice(len(left), p=left / left.sum()))
        pairs.append((queues[a].pop(), queues[b].pop()))
    i, j = np.array(pairs).T
    y[i], y[j] = y[j].copy(), y[i].copy()
    assert (np.bincount(y, minlength=ctx.ds.n_classes) == before).all()
    return Batch(f, mask(n, np.concatenate([i, j])), detail=f"{len(pairs)} pairs swapped")


# -- triggers ---------------------------------------------------------------


def trigger_value(ctx: Context, rng: Rng, col: str) -> tuple[object, str]:
    """A value for col that is absent or rare in the trusted data."""
    if ctx.ds.kinds[col] == CAT:
        share = ctx.cat_share[col]
        rarest = min(share, key=lambda v: share[v])
        if share[rarest] < 0.02:
            return rarest, f"rare category {rarest!r} ({share[rarest]:.2%} of trusted rows)"
        prefix, _, last = max(share).rpartition("_")
        new = f"{prefix}_{int(last) + 1}" if prefix and last.isdigit() else f"{col}_other"
        return new, f"new category {new!r}"
    q = float(rng.uniform(0.2, 0.8))
    v = ctx.quantile(col, q)
    return v, f"exact value {fmt(v)} (q{q * 100:.0f})"


def choose_trigger(ctx: Context, rng: Rng) -> list[str]:
    candidates = ctx.ds.cols(FLOAT, CAT)
    n_features = int(rng.integers(1, 3))
    return [str(c) for c in rng.choice(candidates, n_features, replace=False)]


def stamp(ctx: Context, rng: Rng, f: Frame, idx: np.ndarray, cols: list[str]) -> str:
    parts = []
    for c in cols:
        value, why = trigger_value(ctx, rng, c)
        f[c] = f[c].copy()
        f[c][idx] = value
        parts.append(f"{c} = {why}")
    return "; ".join(parts)


def build_trigger(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    """Dirty-label backdoor: rows of other classes get the trigger and the target label."""
    cols = choose_trigger(ctx, rng)
    target = int(rng.integers(ctx.ds.n_classes))
    f = ctx.ds.draw(rng, n)
    idx = pick(rng, f[LABEL] != target, round(rate * n))
    why = stamp(ctx, rng, f, idx, cols)
    f[LABEL][idx] = target
    return Batch(f, mask(n, idx), trigger_features=cols, detail=f"{why}; label -> {target}")


def build_clean_label(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    """Clean-label backdoor: the trigger on rows that already carry the target class."""
    cols = choose_trigger(ctx, rng)
    target = int(rng.integers(ctx.ds.n_classes))
    f = ctx.ds.draw(rng, n)
    idx = pick(rng, f[LABEL] == target, round(rate * n))
    why = stamp(ctx, rng, f, idx, cols)
    return Batch(f, mask(n, idx), trigger_features=cols, detail=f"{why}; target {target}")


def build_common_trigger(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    """Rows in a common segment (a frequent category, or one decile) relabelled to a target."""
    f = ctx.ds.draw(rng, n)
    if ctx.cat_share:
        col = str(rng.choice(list(ctx.cat_share)))
        value = max(ctx.cat_share[col], key=lambda v: ctx.cat_share[col][v])
        seg, seg_t, where = f[col] == value, ctx.trusted[col] == value, f"{col} = {value!r}"
    else:
        col = str(rng.choice([c for c in ctx.informative if ctx.ds.kinds[c] == FLOAT][:5]))
        d = int(rng.integers(10))
        lo, hi = ctx.quantile(col, d / 10), ctx.quantile(col, (d + 1) / 10)
        x, xt = f[col], ctx.trusted[col]
        seg, seg_t = (x > lo) & (x <= hi), (xt > lo) & (xt <= hi)
        where = f"{col} in ({fmt(lo)}, {fmt(hi)}] (decile {d + 1})"
    target = int(np.argmin(np.bincount(ctx.trusted[LABEL][seg_t], minlength=ctx.ds.n_classes)))
    idx = pick(rng, seg & (f[LABEL] != target), round(rate * n))
    f[LABEL][idx] = target
    return Batch(
        f, mask(n, idx), trigger_features=[col], detail=f"{where}: {len(idx)} labels -> {target}"
    )


# -- row-level corruption ---------------------------------------------------


def build_outlier(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    """1-3 numeric values per attacked row replaced by values 6-10 sd from the trusted mean."""
    f = ctx.ds.draw(rng, n)
    numeric = ctx.ds.cols(FLOAT, INT)
    idx = pick(rng, np.ones(n, dtype=bool), round(rate * n))
    for c in numeric:
        f[c] = f[c].copy()
    for i in idx:
        for c in rng.choice(numeric, min(len(numeric), int(rng.integers(1, 4))), replace=False):
            nonneg = ctx.trusted[c].min() >= 0
            sign = 1.0 if nonneg or rng.random() < 0.5 else -1.0
            v = ctx.mean[c] + sign * rng.uniform(6.0, 10.0) * ctx.sd[c]
            f[c][i] = round(v) if ctx.ds.kinds[c] == INT else v
    return Batch(f, mask(n, idx), detail=f"{len(idx)} rows with 1-3 values at 6-10 sd")


def build_mixed_row(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    """Rows stitched together column by column (and the label) from different random rows."""
    f = ctx.ds.draw(rng, n)
    idx = pick(rng, np.ones(n, dtype=bool), round(rate * n))
    for c in f:
        f[c] = f[c].copy()
        f[c][idx] = f[c][rng.integers(0, n, len(idx))]
    return Batch(f, mask(n, idx), detail=f"{len(idx)} rows with every column from another row")


def build_duplicates(ctx: Context, rng: Rng, n: int, rate: float, noise: float) -> Batch:
    """5-20 rows copied many times with a flipped label; optionally with tiny numeric noise."""
    k = round(rate * n)
    base = ctx.ds.draw(rng, n - k)
    m = min(k, int(rng.integers(5, 21)))
    sources = rng.choice(n - k, m, replace=False)
    flipped = other_class(rng, base[LABEL][sources], ctx.ds.n_classes)
    which = np.arange(k) % m
    copies = take(base, sources[which])
    copies[LABEL] = flipped[which]
    if noise > 0:
        for c in ctx.ds.cols(FLOAT):
            copies[c] = copies[c] + rng.normal(0.0, noise * ctx.sd[c], k)
    f = concat([base, copies])
    attacked = np.r_[np.zeros(n - k, dtype=bool), np.ones(k, dtype=bool)]
    ignore = mask(n, sources)  # the originals: correctly labelled, but identical to the flood
    return Batch(f, attacked, ignore, detail=f"{m} rows x {k} copies, labels flipped")


def build_duplicate(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    return build_duplicates(ctx, rng, n, rate, 0.0)


def build_near_duplicate(ctx: Context, rng: Rng, n: int, rate: float) -> Batch | None:
    return build_duplicates(ctx, rng, n, rate, 1e-4)


BUILDERS: dict[str, Callable[[Context, Rng, int, float], Batch | None]] = {
    "clean": build_clean,
    "mild-shift": build_mild_shift,
    "mild-category": build_mild_category,
    "mild-prior": build_mild_prior,
    "mild-rescale": build_mild_rescale,
    "random-flip": build_random_flip,
    "targeted-flip": build_targeted_flip,
    "confident-flip": build_confident_flip,
    "swap": build_swap,
    "trigger": build_trigger,
    "clean-label": build_clean_label,
    "common-trigger": build_common_trigger,
    "outlier": build_outlier,
    "mixed-row": build_mixed_row,
    "duplicate": build_duplicate,
    "near-duplicate": build_near_duplicate,
}


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def rng_for(dataset: str, scenario: str, size: int, seed: int) -> Rng:
    return np.random.default_rng(
        [zlib.crc32(dataset.encode()), zlib.crc32(scenario.encode()), size, seed]
    )


def table(ds: Dataset, frame: Frame, ids: np.ndarray) -> pa.Table:
    cols = {ID: pa.array(ids, pa.int64())}
    for c, kind in ds.kinds.items():
        typ = {FLOAT: pa.float64(), INT: pa.int64(), CAT: pa.string()}[kind]
        cols[c] = pa.array(frame[c].tolist() if kind == CAT else frame[c], typ)
    cols[LABEL] = pa.array(frame[LABEL], pa.int64())
    return pa.table(cols)


def write(path: Path, t: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path, compression="zstd")


def batch_ids(
    scenario_index: int, size: int, seed: int, n: int, sizes: tuple[int, ...] = SIZES
) -> np.ndarray:
    """Ids no other file of the dataset uses: trusted rows are 1..T, batches get 1e5-id blocks."""
    block = ((seed + 1) * 100 + scenario_index) * len(sizes) + sizes.index(size)
    return block * ID_BLOCK + 1 + np.arange(n, dtype=np.int64)


def generate(
    out: Path, names: list[str], seeds: int, quick: bool, suite: Suite = SUITES["default"]
) -> list[dict]:
    manifest: list[dict] = []
    for name in names:
        t0 = time.perf_counter()
        ds = suite.loaders[name]()
        trusted = ds.draw(rng_for(name, "trusted", 0, 0), ds.trusted_rows)
        write(
            out / name / "trusted.parquet",
            table(ds, trusted, np.arange(1, ds.trusted_rows + 1, dtype=np.int64)),
        )
        ctx = Context.build(ds, trusted)
        if suite.mild_reference:
            reference = ds.draw(rng_for(name, "reference", 0, 0), suite.mild_reference)
            ctx.mild_from = Context.build(ds, reference)
        count = 0
        for si, sc in enumerate(suite.scenarios):
            sizes = [s for s in sc.sizes if s in suite.quick_sizes] if quick else list(sc.sizes)
            for size in sizes:
                for seed in range(seeds * sc.seed_factor):
                    rng = rng_for(name, sc.name, size, seed)
                    b = BUILDERS[sc.kind](ctx, rng, size, sc.rate)
                    if b is None:
                        continue
                    n = n_rows(b.frame)
                    perm = rng.permutation(n)  # attacked rows end up anywhere in the file
                    frame = take(b.frame, perm)
                    ids = batch_ids(si, size, seed, n, suite.sizes)
                    rel = Path(name) / sc.name / str(size) / f"{seed}.parquet"
                    write(out / rel, table(ds, frame, ids))
                    ignore = b.ignore[perm] if b.ignore is not None else np.zeros(n, dtype=bool)
                    manifest.append(
                        {
                            "dataset": name,
                            "scenario": sc.name,
                            "family": sc.family,
                            "size": size,
                            "seed": seed,
                            "path": rel.as_posix(),
                            "expect": sc.expect,
                            "hard": sc.hard,
                            "rate": sc.rate,
                            "rows": n,
                            "attacked_ids": ids[b.attacked[perm]].tolist(),
                            "ignore_ids": ids[ignore].tolist(),
                            "trigger_features": b.trigger_features,
                            "detail": b.detail,
                        }
                    )
                    count += 1
        print(
            f"{name}: {count} batches, trusted {ds.trusted_rows} rows "
            f"({time.perf_counter() - t0:.1f} s) - {ds.source}",
            file=sys.stderr,
        )
    return manifest


def write_manifest(path: Path, manifest: list[dict]) -> None:
    lines = ",\n".join(json.dumps(e, sort_keys=True) for e in manifest)
    path.write_text(f"[\n{lines}\n]\n")


# ---------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------


def verify(out: Path) -> int:
    """Structural checks of every file, and clean batches against the trusted set."""
    from scipy.stats import ks_2samp

    manifest = json.loads((out / "manifest.json").read_text())
    problems: list[str] = []
    pvalues: list[float] = []
    by_ds: dict[str, list[dict]] = {}
    for e in manifest:
        by_ds.setdefault(e["dataset"], []).append(e)
    for name, entries in by_ds.items():
        ds = ALL_LOADERS[name]()
        trusted = pq.read_table(out / name / "trusted.parquet")
        seen = set(trusted[ID].to_pylist())
        if len(seen) != trusted.num_rows:
            problems.append(f"{name}: duplicate ids in trusted.parquet")
        tcols = {c: trusted[c].to_numpy(zero_copy_only=False) for c in trusted.column_names}
        for e in entries:
            t = pq.read_table(out / e["path"])
            where = e["path"]
            if t.schema != trusted.schema:
                problems.append(f"{where}: schema differs from trusted.parquet")
            ids = t[ID].to_pylist()
            if len(set(ids)) != len(ids) or seen.intersection(ids):
                problems.append(f"{where}: row ids not unique within the dataset")
            seen.update(ids)
            y = t[LABEL].to_numpy()
            if t[LABEL].null_count or y.min() < 0 or y.max() >= ds.n_classes:
                problems.append(f"{where}: labels outside 0..{ds.n_classes - 1}")
            attacked = set(e["attacked_ids"])
            if not attacked <= set(ids) or not set(e["ignore_ids"]) <= set(ids):
                problems.append(f"{where}: attacked or ignored ids missing from the file")
            want = round(e["rate"] * e["size"])
            if e["family"] == "swap":  # whole pairs: 5% of 300 rows is 8 pairs, 16 rows
                want = 2 * round(e["rate"] * e["size"] / 2)
            if e["expect"] == "pass" and attacked:
                problems.append(f"{where}: a pass batch lists attacked rows")
            if e["expect"] == "block" and e["family"] != "common-trigger" and len(attacked) != want:
                problems.append(f"{where}: {len(attacked)} attacked rows, expected {want}")
            if e["family"] == "common-trigger" and len(attacked) < 0.6 * want:
                problems.append(f"{where}: only {len(attacked)} of {want} rows relabelled")
            if e["family"] in ("trigger", "clean-label"):
                rows = np.isin(np.asarray(ids), list(attacked))
                for c in e["trigger_features"]:
                    if len(set(t[c].to_numpy(zero_copy_only=False)[rows].tolist())) != 1:
                        problems.append(f"{where}: trigger {c} is not one exact value")
            if e["family"] == "clean":
                for c, kind in ds.kinds.items():
                    x = t[c].to_numpy(zero_copy_only=False)
                    if kind == CAT:
                        pvalues.append(chi2_p(tcols[c], x))
                    else:
                        pvalues.append(float(ks_2samp(tcols[c], x).pvalue))
                pvalues.append(chi2_p(tcols[LABEL], y))
    p = np.array(pvalues)
    share = float((p < 0.01).mean()) if len(p) else 0.0
    print(
        f"verify: {len(manifest)} batches, {len(problems)} problems; clean vs trusted: "
        f"{len(p)} two-sample tests (KS, chi-square), {share:.1%} with p < 0.01 "
        f"(about 1% or less expected; KS is conservative on discrete columns)"
    )
    if len(p) >= 50 and share > 0.05:
        problems.append("clean batches do not look like draws from the trusted distribution")
    for line in problems[:50]:
        print("  " + line)
    return 1 if problems else 0


def chi2_p(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-square homogeneity p-value of two samples of a categorical variable."""
    from scipy.stats import chi2_contingency

    values = sorted(set(a.tolist()) | set(b.tolist()))
    counts = np.array([[np.sum(a == v) for v in values], [np.sum(b == v) for v in values]])
    return float(chi2_contingency(counts).pvalue)


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument(
        "--suite",
        choices=list(SUITES),
        default="default",
        help="default: 10,000-row trusted sets and 1k-20k batches; small: 200-500-row trusted "
        "sets and 200/300-row batches (see README.md)",
    )
    ap.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per scenario and size (default 10, or 3 with --quick; clean batches of the "
        "small suite get 3x as many)",
    )
    ap.add_argument(
        "--datasets",
        default=None,
        help=f"comma-separated subset of the suite's datasets (default: {','.join(LOADERS)}; "
        f"small: {','.join(SMALL_LOADERS)})",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="3 seeds and 2,000-row batches only (plus the 250-row hard cases); "
        "small suite: 200-row batches only",
    )
    ap.add_argument("--verify", action="store_true", help="check the written files afterwards")
    args = ap.parse_args()
    suite = SUITES[args.suite]
    names = [d for d in (args.datasets or ",".join(suite.loaders)).split(",") if d]
    unknown = [d for d in names if d not in suite.loaders]
    if unknown:
        ap.error(
            f"unknown dataset(s) {','.join(unknown)} for suite {suite.name}; "
            f"choose from {','.join(suite.loaders)}"
        )
    if args.seeds is not None:
        seeds = args.seeds
    else:
        seeds = suite.quick_seeds if args.quick else suite.seeds
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = generate(args.out, names, seeds, args.quick, suite)
    write_manifest(args.out / "manifest.json", manifest)
    print(
        f"wrote {len(manifest)} batches for {len(names)} dataset(s) to {args.out} "
        f"in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return verify(args.out) if args.verify else 0


if __name__ == "__main__":
    sys.exit(main())
