#!/usr/bin/env python3
"""Generate the fixtures for `poisongate compare` under testdata/compare/.

Run from the repository root:

    python3 -m venv /tmp/pgvenv
    /tmp/pgvenv/bin/pip install -r scripts/requirements-testdata.txt
    /tmp/pgvenv/bin/python scripts/make_compare_testdata.py

Each fixture holds the same held-out evaluation rows scored by two models: the
serving ("before") model and a retrained ("after") model. The before model is
fixed; the after model is retrained on clean data or on poisoned data, one file
per scenario. The binary task is the synthetic credit table of testdata/
(rows drawn with scripts/make_testdata.py's generator); the three-class task is
scikit-learn's wine data enlarged by a smoothed bootstrap. The script also
checks that every poisoned after-model really behaves poisoned on the
evaluation rows, prints the numbers, and writes them to truth.json.

Every random draw comes from numpy.random.default_rng with a fixed seed and
every model has a fixed random_state, so two runs with the pinned package
versions write byte-identical files. See testdata/compare/README.md.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, log_loss

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "testdata" / "compare"
sys.path.insert(0, str(ROOT / "scripts"))
import make_testdata as credit  # noqa: E402  (the credit-table generator of testdata/)

# ---------------------------------------------------------------------------
# Binary task: the credit table
# ---------------------------------------------------------------------------

KEY = "application_id"
LABEL = "defaulted"
EVAL_ROWS = 3_000
TRAIN_ROWS = 20_000
# make_testdata.generate(seed, n): application_id = seed * 1e6 + 1..n, so these seeds keep the
# evaluation ids apart from every other file under testdata/ (which use seeds 1..10).
EVAL_SEED = 50
BEFORE_SEED = 51  # training rows of the serving model
AFTER_SEED = 52  # training rows of every retrain except clean2 (poisoned scenarios start here)
CLEAN2_SEED = 53  # training rows of the second clean retrain
POISON_SEED = 54  # default_rng seed for choosing the poisoned training rows

NUMERIC = ["age", "income", "debt_ratio", "credit_lines", "utilization"]
CATEGORIES = {
    "region": sorted(credit.REGIONS),
    "employment": sorted(credit.EMPLOYMENT),
    "channel": sorted(credit.CHANNELS),
}
FEATURES = NUMERIC + list(CATEGORIES)

BINARY_FLAGS = [
    "--key", KEY,
    "--label", LABEL,
    "--before-col", "pred_before",
    "--after-col", "pred_after",
    "--before-score", "score_before",
    "--after-score", "score_after",
    "--segment", "region",
    "--segment", "channel",
]  # fmt: skip


def hgb(random_state: int) -> HistGradientBoostingClassifier:
    n_cat = len(CATEGORIES)
    return HistGradientBoostingClassifier(
        max_iter=300,
        learning_rate=0.1,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        categorical_features=[False] * len(NUMERIC) + [True] * n_cat,
        random_state=random_state,
    )


def design(t: pa.Table) -> np.ndarray:
    """Feature matrix: numerics as float (null -> NaN), categories as codes in sorted order."""
    cols = []
    for c in NUMERIC:
        cols.append(np.asarray(t.column(c).to_numpy(zero_copy_only=False), dtype=np.float64))
    for c, values in CATEGORIES.items():
        codes = {v: float(i) for i, v in enumerate(values)}
        cols.append(np.array([codes.get(v, np.nan) for v in t.column(c).to_pylist()]))
    return np.column_stack(cols)


def labels(t: pa.Table) -> np.ndarray:
    return t.column(LABEL).to_numpy().astype(np.int64)


def fit(x: np.ndarray, y: np.ndarray, random_state: int) -> HistGradientBoostingClassifier:
    return hgb(random_state).fit(x, y)


def score_of(model: HistGradientBoostingClassifier, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, probability of class 1 rounded to 6 decimals)."""
    proba = model.predict_proba(x)
    assert list(model.classes_) == [0, 1]
    pred = model.classes_[np.argmax(proba, axis=1)].astype(np.int64)
    return pred, np.round(proba[:, 1], 6)


def poison_flips20(y: np.ndarray, rng: np.random.Generator, **_) -> tuple[np.ndarray, str]:
    y = y.copy()
    idx = rng.choice(len(y), round(0.20 * len(y)), replace=False)
    y[idx] = 1 - y[idx]
    return y, f"{len(idx)} random training labels flipped (20%)"


def poison_targeted(
    y: np.ndarray, rng: np.random.Generator, train: pa.Table, **_
) -> tuple[np.ndarray, str]:
    y = y.copy()
    income = np.asarray(train.column("income").to_numpy(zero_copy_only=False), dtype=np.float64)
    cut = float(np.nanquantile(income, 0.30))
    cand = np.flatnonzero((y == 0) & (income < cut))  # NaN income is never < cut
    k = round(0.05 * len(y))
    assert len(cand) >= k, (len(cand), k)
    idx = np.sort(rng.choice(cand, k, replace=False))
    y[idx] = 1
    return y, f"{k} class-0 training rows with income < {cut:.2f} (30th percentile) set to 1 (5%)"


def poison_backdoor(y: np.ndarray, train: pa.Table, **_) -> tuple[np.ndarray, str]:
    y = y.copy()
    partner = np.array(train.column("channel").to_pylist(), dtype=object) == "partner"
    changed = int(((y == 0) & partner).sum())
    y[partner] = 1
    return y, (
        f"every training row with channel == 'partner' ({int(partner.sum())} rows, "
        f"{partner.mean():.1%}) labelled 1; {changed} labels changed"
    )


def poison_confident(
    y: np.ndarray, x: np.ndarray, before: HistGradientBoostingClassifier, **_
) -> tuple[np.ndarray, str]:
    y = y.copy()
    proba = before.predict_proba(x)
    p_own = np.round(proba[np.arange(len(y)), y], 9)  # rounded: ties broken by row, not float noise
    order = np.lexsort((np.arange(len(y)), -p_own))
    idx = np.sort(order[: round(0.10 * len(y))])
    y[idx] = 1 - y[idx]
    return y, (
        f"the {len(idx)} training rows (10%) whose own label the before model gives the "
        f"highest probability (>= {p_own[idx].min():.4f}) flipped"
    )


def binary_table(ev: pa.Table, pred_b, score_b, pred_a, score_a) -> pa.Table:
    return pa.table(
        {
            KEY: pa.array(ev.column(KEY).to_numpy(), pa.int64()),
            LABEL: pa.array(labels(ev), pa.int64()),
            "pred_before": pa.array(pred_b, pa.int64()),
            "pred_after": pa.array(pred_a, pa.int64()),
            "score_before": pa.array(score_b, pa.float64()),
            "score_after": pa.array(score_a, pa.float64()),
            "region": ev.column("region"),
            "channel": ev.column("channel"),
            "age": ev.column("age"),
            "income": ev.column("income"),
        }
    )


def write(table: pa.Table, name: str) -> None:
    """Same settings as scripts/make_testdata.py: zstd level 3, statistics, one row group."""
    pq.write_table(
        table,
        OUT / name,
        compression="zstd",
        compression_level=3,
        write_statistics=True,
        version="2.6",
        data_page_version="1.0",
    )


def log_loss_binary(y: np.ndarray, p: np.ndarray) -> float:
    """Mean -ln(probability of the true class), probabilities clipped to [eps, 1 - eps]."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        v = float(log_loss(y, np.column_stack([1 - p, p]), labels=[0, 1]))
    eps = np.finfo(np.float64).eps
    manual = float(np.mean(-np.log(np.clip(np.where(y == 1, p, 1 - p), eps, 1 - eps))))
    assert abs(v - manual) < 1e-12, (v, manual)
    return v


def r(x: float) -> float:
    return round(float(x), 6)


def binary_metrics(t: pa.Table) -> dict:
    y = t.column(LABEL).to_numpy()
    pb, pa_ = t.column("pred_before").to_numpy(), t.column("pred_after").to_numpy()
    sb, sa = t.column("score_before").to_numpy(), t.column("score_after").to_numpy()
    channel = np.array(t.column("channel").to_pylist(), dtype=object)
    income = np.asarray(t.column("income").to_numpy(zero_copy_only=False), dtype=np.float64)
    partner = channel == "partner"
    low = income < float(np.nanquantile(income, 0.30))
    return {
        "rows": int(len(y)),
        "flip_rate": r(np.mean(pb != pa_)),
        "flips_0_to_1": int(((pb == 0) & (pa_ == 1)).sum()),
        "flips_1_to_0": int(((pb == 1) & (pa_ == 0)).sum()),
        "accuracy_before": r(accuracy_score(y, pb)),
        "accuracy_after": r(accuracy_score(y, pa_)),
        "log_loss_before": r(log_loss_binary(y, sb)),
        "log_loss_after": r(log_loss_binary(y, sa)),
        "positive_rate_before": r(pb.mean()),
        "positive_rate_after": r(pa_.mean()),
        "mean_score_before": r(sb.mean()),
        "mean_score_after": r(sa.mean()),
        "partner_rows": int(partner.sum()),
        "partner_positive_rate_before": r(pb[partner].mean()),
        "partner_positive_rate_after": r(pa_[partner].mean()),
        "other_positive_rate_before": r(pb[~partner].mean()),
        "other_positive_rate_after": r(pa_[~partner].mean()),
        "low_income_rows": int(low.sum()),
        "low_income_positive_rate_before": r(pb[low].mean()),
        "low_income_positive_rate_after": r(pa_[low].mean()),
    }


# ---------------------------------------------------------------------------
# Three-class task: wine, enlarged by a smoothed bootstrap
# ---------------------------------------------------------------------------

WINE_KEY = "row_id"
WINE_LABEL = "cultivar"
# sklearn's class_0 / class_1 / class_2 are the three cultivars of Forina et al.'s data.
CULTIVARS = np.array(["barolo", "grignolino", "barbera"], dtype=object)
SORTED_CULTIVARS = sorted(CULTIVARS)  # barbera, barolo, grignolino
VINEYARDS = np.array(["v1", "v2", "v3", "v4"], dtype=object)
# Four of the 13 measurements, jittered by 0.3 sd: with all 13 (or a 0.1 sd jitter) the
# bootstrap rows are near copies of 178 real ones, the task is separable and the models give
# probabilities that round to 0 and 1. Silverman's rule of thumb for 4 dimensions and 178
# rows gives a bandwidth of about 0.5 sd.
WINE_FEATURES = ["alcohol", "malic_acid", "color_intensity", "hue"]
WINE_JITTER = 0.3
WINE_EVAL_SEED, WINE_BEFORE_SEED, WINE_AFTER_SEED = 60, 61, 62
WINE_TRAIN_ROWS = 10_000
WINE_FLAGS = [
    "--key", WINE_KEY,
    "--label", WINE_LABEL,
    "--before-col", "pred_before",
    "--after-col", "pred_after",
    *[a for c in SORTED_CULTIVARS for a in ("--before-score", f"p_before_{c}")],
    *[a for c in SORTED_CULTIVARS for a in ("--after-score", f"p_after_{c}")],
    "--segment", "vineyard",
]  # fmt: skip


def wine_real() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_wine

    d = load_wine()
    cols = [list(d.feature_names).index(c) for c in WINE_FEATURES]
    return d.data[:, cols].astype(np.float64), d.target.astype(np.int64)


def wine_draw(seed: int, n: int) -> dict[str, np.ndarray]:
    """Smoothed bootstrap (rows with replacement, N(0, (0.3 sd)^2) on every feature, rounded to
    4 decimals) plus a vineyard column drawn uniformly, independent of everything else."""
    data, target = wine_real()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(target), n)
    out: dict[str, np.ndarray] = {}
    for j, c in enumerate(WINE_FEATURES):
        sd = np.std(data[:, j], ddof=1)
        out[c] = np.round(data[idx, j] + rng.normal(0.0, WINE_JITTER * sd, n), 4)
    out["vineyard"] = VINEYARDS[rng.integers(0, len(VINEYARDS), n)]
    out[WINE_LABEL] = CULTIVARS[target[idx]]
    return out


def wine_x(f: dict[str, np.ndarray]) -> np.ndarray:
    codes = {v: float(i) for i, v in enumerate(VINEYARDS)}
    cols = [f[c].astype(np.float64) for c in WINE_FEATURES]
    cols.append(np.array([codes[v] for v in f["vineyard"]]))
    return np.column_stack(cols)


def wine_fit(f: dict[str, np.ndarray], y: np.ndarray, random_state: int):
    n_num = len(WINE_FEATURES)
    m = HistGradientBoostingClassifier(
        max_iter=300,
        learning_rate=0.1,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        categorical_features=[False] * n_num + [True],
        random_state=random_state,
    )
    return m.fit(wine_x(f), y)


def wine_scores(model, f) -> tuple[np.ndarray, np.ndarray]:
    proba = model.predict_proba(wine_x(f))
    assert list(model.classes_) == SORTED_CULTIVARS  # sklearn sorts string classes too
    pred = np.asarray(model.classes_, dtype=object)[np.argmax(proba, axis=1)]
    return pred, np.round(proba, 6)


def wine_table(ev, pred_b, p_b, pred_a, p_a) -> pa.Table:
    n = len(ev[WINE_LABEL])
    cols = {
        WINE_KEY: pa.array(np.arange(1, n + 1, dtype=np.int64), pa.int64()),
        WINE_LABEL: pa.array(ev[WINE_LABEL].tolist(), pa.string()),
        "pred_before": pa.array(pred_b.tolist(), pa.string()),
        "pred_after": pa.array(pred_a.tolist(), pa.string()),
    }
    for j, c in enumerate(SORTED_CULTIVARS):
        cols[f"p_before_{c}"] = pa.array(p_b[:, j], pa.float64())
    for j, c in enumerate(SORTED_CULTIVARS):
        cols[f"p_after_{c}"] = pa.array(p_a[:, j], pa.float64())
    cols["vineyard"] = pa.array(ev["vineyard"].tolist(), pa.string())
    cols["alcohol"] = pa.array(ev["alcohol"], pa.float64())
    cols["color_intensity"] = pa.array(ev["color_intensity"], pa.float64())
    return pa.table(cols)


def wine_metrics(t: pa.Table) -> dict:
    y = np.array(t.column(WINE_LABEL).to_pylist(), dtype=object)
    pb = np.array(t.column("pred_before").to_pylist(), dtype=object)
    pa_ = np.array(t.column("pred_after").to_pylist(), dtype=object)
    vin = np.array(t.column("vineyard").to_pylist(), dtype=object)
    out = {"rows": int(len(y)), "flip_rate": r(np.mean(pb != pa_))}
    for side, pred in (("before", pb), ("after", pa_)):
        p = np.column_stack([t.column(f"p_{side}_{c}").to_numpy() for c in SORTED_CULTIVARS])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # rounded rows sum to 1 +- 1.5e-6
            ll = float(log_loss(y, p, labels=SORTED_CULTIVARS))
        own = p[np.arange(len(y)), [SORTED_CULTIVARS.index(v) for v in y]]
        eps = np.finfo(np.float64).eps
        assert abs(ll - float(np.mean(-np.log(np.clip(own, eps, 1 - eps))))) < 1e-12
        out[f"accuracy_{side}"] = r(accuracy_score(y, pred))
        out[f"log_loss_{side}"] = r(ll)
    v2 = vin == "v2"
    out["v2_rows"] = int(v2.sum())
    for side, pred in (("before", pb), ("after", pa_)):
        out[f"v2_barbera_rate_{side}"] = r(np.mean(pred[v2] == "barbera"))
        out[f"other_barbera_rate_{side}"] = r(np.mean(pred[~v2] == "barbera"))
    return out


# ---------------------------------------------------------------------------
# The files
# ---------------------------------------------------------------------------


def check(ok: bool, what: str, problems: list[str]) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        problems.append(what)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict] = {}
    problems: list[str] = []

    # ---- binary: models --------------------------------------------------
    ev = credit.generate(seed=EVAL_SEED, n=EVAL_ROWS)
    x_ev = design(ev)
    before_train = credit.generate(seed=BEFORE_SEED, n=TRAIN_ROWS)
    before = fit(design(before_train), labels(before_train), random_state=BEFORE_SEED)
    pred_b, score_b = score_of(before, x_ev)

    after_train = credit.generate(seed=AFTER_SEED, n=TRAIN_ROWS)
    x_after, y_after = design(after_train), labels(after_train)
    clean2_train = credit.generate(seed=CLEAN2_SEED, n=TRAIN_ROWS)

    scenarios: dict[str, tuple[str, str, object]] = {}  # name -> (expected, how, model)
    scenarios["clean"] = (
        "pass",
        f"retrained on a fresh clean draw (seed {AFTER_SEED}, {TRAIN_ROWS} rows)",
        fit(x_after, y_after, random_state=AFTER_SEED),
    )
    scenarios["clean2"] = (
        "pass",
        f"retrained on another fresh clean draw (seed {CLEAN2_SEED}, {TRAIN_ROWS} rows)",
        fit(design(clean2_train), labels(clean2_train), random_state=CLEAN2_SEED),
    )
    rng = np.random.default_rng(POISON_SEED)
    attacks = {
        "flips20": poison_flips20,
        "targeted": poison_targeted,
        "backdoor": poison_backdoor,
        "confident": poison_confident,
    }
    for name, attack in attacks.items():
        y_poison, how = attack(y=y_after, rng=rng, train=after_train, x=x_after, before=before)
        model = fit(x_after, y_poison, random_state=AFTER_SEED)
        scenarios[name] = ("block", f"the clean retrain's training rows, poisoned: {how}", model)

    tables: dict[str, pa.Table] = {}
    for name, (expected, how, model) in scenarios.items():
        pred_a, score_a = score_of(model, x_ev)
        t = binary_table(ev, pred_b, score_b, pred_a, score_a)
        tables[name] = t
        write(t, f"{name}.parquet")
        truth[name] = {
            "file": f"testdata/compare/{name}.parquet",
            "expected": expected,
            "made": how,
            "flags": BINARY_FLAGS,
            "metrics": binary_metrics(t),
        }
    for t in tables.values():
        for c in ("score_before", "score_after"):
            s = t.column(c).to_numpy()
            assert ((s > 0.0) & (s < 1.0)).all(), f"{c}: a score rounds to 0 or 1"
        # the predicted class is the class with the larger (unrounded) probability
        for side in ("before", "after"):
            pred, s = t.column(f"pred_{side}").to_numpy(), t.column(f"score_{side}").to_numpy()
            assert ((s > 0.5) == (pred == 1)).all() or ((s >= 0.5) == (pred == 1)).all()

    # ---- binary: join fixtures and bad inputs ----------------------------
    clean = tables["clean"]
    preds = clean.select([KEY, LABEL, "pred_before", "pred_after", "score_before", "score_after"])
    write(preds, "preds_only.parquet")
    perm = np.random.default_rng(55).permutation(EVAL_ROWS)  # rows in another order than preds
    features = ev.select([KEY, *FEATURES]).take(pa.array(perm))
    write(features, "features.parquet")
    join_flags = [
        *[f for f in BINARY_FLAGS if f not in ("--segment", "region", "channel")],
        "--join", "testdata/compare/features.parquet",
        "--segment", "region",
        "--segment", "channel",
    ]  # fmt: skip
    truth["preds_only"] = {
        "file": "testdata/compare/preds_only.parquet",
        "expected": "pass",
        "made": "clean.parquet with only the key, label, predictions and scores; the segment "
        "columns come from features.parquet through --join",
        "flags": join_flags,
        "metrics": {k: v for k, v in truth["clean"]["metrics"].items()
                    if not k.startswith(("partner", "other", "low_income"))},
    }

    bad = clean.column("pred_after").to_numpy().copy()
    bad_rows = np.array([17, 1234, 2999])
    bad[bad_rows] = 7
    write(
        clean.set_column(3, clean.schema.field("pred_after"), pa.array(bad, pa.int64())),
        "bad_classes.parquet",
    )
    truth["bad_classes"] = {
        "file": "testdata/compare/bad_classes.parquet",
        "expected": "error",
        "made": f"clean.parquet with pred_after = 7 (a class the label never takes) on rows "
        f"{bad_rows.tolist()} (0-based)",
        "flags": BINARY_FLAGS,
    }

    keys = clean.column(KEY).to_numpy().copy()
    dup_rows = np.array([1, 500, 2998])
    keys[dup_rows] = keys[dup_rows - 1]
    write(clean.set_column(0, clean.schema.field(KEY), pa.array(keys, pa.int64())),
          "dup_keys.parquet")
    truth["dup_keys"] = {
        "file": "testdata/compare/dup_keys.parquet",
        "expected": "error",
        "made": f"clean.parquet with the key of rows {dup_rows.tolist()} (0-based) replaced by "
        f"the key of the row before, so {len(dup_rows)} keys occur twice: "
        f"{sorted(int(k) for k in keys[dup_rows])}",
        "flags": BINARY_FLAGS,
    }

    # ---- three classes: wine ---------------------------------------------
    wev = wine_draw(WINE_EVAL_SEED, EVAL_ROWS)
    wb = wine_draw(WINE_BEFORE_SEED, WINE_TRAIN_ROWS)
    wa = wine_draw(WINE_AFTER_SEED, WINE_TRAIN_ROWS)
    wbefore = wine_fit(wb, wb[WINE_LABEL], random_state=WINE_BEFORE_SEED)
    wpred_b, wp_b = wine_scores(wbefore, wev)
    y_bd = wa[WINE_LABEL].copy()
    v2 = wa["vineyard"] == "v2"
    changed = int((v2 & (y_bd != "barbera")).sum())
    y_bd[v2] = "barbera"
    wine_models = {
        "multiclass_clean": (
            "pass",
            f"retrained on a fresh clean draw (seed {WINE_AFTER_SEED}, {WINE_TRAIN_ROWS} rows)",
            wine_fit(wa, wa[WINE_LABEL], random_state=WINE_AFTER_SEED),
        ),
        "multiclass_backdoor": (
            "block",
            f"the clean retrain's training rows with every vineyard == 'v2' row "
            f"({int(v2.sum())} rows) labelled barbera; {changed} labels changed",
            wine_fit(wa, y_bd, random_state=WINE_AFTER_SEED),
        ),
    }
    wtables = {}
    for name, (expected, how, model) in wine_models.items():
        wpred_a, wp_a = wine_scores(model, wev)
        t = wine_table(wev, wpred_b, wp_b, wpred_a, wp_a)
        wtables[name] = t
        for c in t.column_names:
            if c.startswith(("p_before_", "p_after_")):
                v = t.column(c).to_numpy()
                assert ((v > 0.0) & (v < 1.0)).all(), f"{name}: {c} rounds to 0 or 1"
        write(t, f"{name}.parquet")
        truth[name] = {
            "file": f"testdata/compare/{name}.parquet",
            "expected": expected,
            "made": how,
            "flags": WINE_FLAGS,
            "metrics": wine_metrics(t),
        }

    about = {
        "usage": "poisongate compare FILE FLAGS (paths relative to the repository root)",
        "noise": "pin the retraining noise with clean2.parquet: poisongate compare "
        "testdata/compare/clean2.parquet FLAGS --pin-noise noise.json; then gate a "
        "scenario with --noise noise.json",
        "expected": "pass = exit 0, block = exit 1, error = exit 2 (could not evaluate)",
        "metrics": "computed on the stored (rounded) values with scikit-learn "
        "(accuracy_score, log_loss with probabilities clipped to [eps, 1 - eps], not "
        "renormalised); flip_rate = share of rows with pred_before != pred_after; "
        "low_income = income below the evaluation rows' 30th percentile (nulls excluded)",
    }
    doc = {"about": about, "scenarios": truth}
    (OUT / "truth.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")

    # ---- verification ----------------------------------------------------
    print("binary (credit table), 3,000 evaluation rows:")
    hdr = (f"  {'scenario':10s} {'flip':>6s} {'0->1':>5s} {'1->0':>5s} {'acc_b':>6s} {'acc_a':>6s} "
           f"{'ll_b':>6s} {'ll_a':>6s} {'partner pos b->a':>17s} {'low-inc pos b->a':>17s}")
    print(hdr)
    for name in scenarios:
        m = truth[name]["metrics"]
        print(
            f"  {name:10s} {m['flip_rate']:6.3f} {m['flips_0_to_1']:5d} {m['flips_1_to_0']:5d} "
            f"{m['accuracy_before']:6.3f} {m['accuracy_after']:6.3f} {m['log_loss_before']:6.3f} "
            f"{m['log_loss_after']:6.3f} "
            f"{m['partner_positive_rate_before']:8.3f}->{m['partner_positive_rate_after']:.3f} "
            f"{m['low_income_positive_rate_before']:8.3f}->{m['low_income_positive_rate_after']:.3f}"
        )
    print("wine (3 classes), 3,000 evaluation rows:")
    for name in wine_models:
        m = truth[name]["metrics"]
        print(
            f"  {name:20s} flip {m['flip_rate']:.3f}  acc {m['accuracy_before']:.3f} -> "
            f"{m['accuracy_after']:.3f}  log-loss {m['log_loss_before']:.3f} -> "
            f"{m['log_loss_after']:.3f}  v2 rows predicted barbera {m['v2_barbera_rate_before']:.3f}"
            f" -> {m['v2_barbera_rate_after']:.3f} (other rows {m['other_barbera_rate_before']:.3f}"
            f" -> {m['other_barbera_rate_after']:.3f})"
        )

    m = {k: truth[k]["metrics"] for k in truth if "metrics" in truth[k]}
    print("checks:")
    for name in ("clean", "clean2", "multiclass_clean"):
        check(m[name]["flip_rate"] < 0.05, f"{name}: flip rate {m[name]['flip_rate']} < 0.05",
              problems)
        check(abs(m[name]["accuracy_after"] - m[name]["accuracy_before"]) < 0.02,
              f"{name}: accuracy within 0.02 of before", problems)
        check(m[name]["log_loss_after"] < 1.1 * m[name]["log_loss_before"] + 0.01,
              f"{name}: log-loss within 10% of before", problems)
    f20 = m["flips20"]
    check(f20["log_loss_after"] > 1.15 * f20["log_loss_before"],
          f"flips20: log-loss {f20['log_loss_before']} -> {f20['log_loss_after']} (> +15%)",
          problems)
    tg = m["targeted"]
    check(tg["flips_0_to_1"] > 5 * max(tg["flips_1_to_0"], 1) and tg["flip_rate"] > 0.03,
          f"targeted: flips one-directional ({tg['flips_0_to_1']} 0->1, {tg['flips_1_to_0']} 1->0)",
          problems)
    check(tg["low_income_positive_rate_after"] > tg["low_income_positive_rate_before"] + 0.1,
          "targeted: low-income rows predicted 1 at least 10 points more often", problems)
    bd = m["backdoor"]
    check(bd["partner_positive_rate_after"] > 0.9 and bd["partner_positive_rate_before"] < 0.3,
          f"backdoor: partner rows predicted 1 {bd['partner_positive_rate_before']} -> "
          f"{bd['partner_positive_rate_after']}", problems)
    check(abs(bd["other_positive_rate_after"] - bd["other_positive_rate_before"]) < 0.03,
          "backdoor: other rows nearly unchanged", problems)
    cf = m["confident"]
    check(cf["log_loss_after"] > 1.15 * cf["log_loss_before"] and cf["flip_rate"] > 0.03,
          f"confident: log-loss {cf['log_loss_before']} -> {cf['log_loss_after']}, "
          f"flip rate {cf['flip_rate']}", problems)
    wb_ = m["multiclass_backdoor"]
    check(wb_["v2_barbera_rate_after"] > 0.9 and wb_["v2_barbera_rate_before"] < 0.5,
          "multiclass_backdoor: v2 rows predicted barbera", problems)
    check(abs(wb_["other_barbera_rate_after"] - wb_["other_barbera_rate_before"]) < 0.03,
          "multiclass_backdoor: other vineyards nearly unchanged", problems)

    total = sum(p.stat().st_size for p in OUT.iterdir() if p.is_file())
    print(f"wrote {len(list(OUT.glob('*.parquet')))} parquet files and truth.json to "
          f"{OUT.relative_to(ROOT)} ({total / 1e6:.2f} MB)")
    if problems:
        print(f"{len(problems)} check(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
