#!/usr/bin/env python3
"""Generate the evaluation files of the `poisongate compare` suite.

    python benches/eval/compare_gen.py --out /tmp/pg-compare            # 5 seeds
    python benches/eval/compare_gen.py --out /tmp/pg-compare --quick    # 2 seeds
    python benches/eval/compare_gen.py --out /tmp/pg-ho --seeds 5 --first-seed 17   # 17-21

For every dataset, model family and seed it trains a serving ("before") model on clean rows
and seven retrained ("after") models: one on a fresh clean draw and six on the same draw
poisoned in one known way. It then scores one set of held-out evaluation rows with both models.
Each (dataset, model, scenario, seed) is written to
DIR/<dataset>/<model>/<scenario>/<seed>.parquet. Each (dataset, model) also gets one clean pair,
DIR/<dataset>/<model>/noise.parquet, for pinning the retraining noise (--pin-noise).
DIR/manifest.json lists every file with its expected verdict and the arguments to pass to
`poisongate compare`. compare_run.py runs them. See README.md, section "compare".

For the endpoint mode of `poisongate compare` every model is also saved with joblib: the after
model next to its parquet file (<seed>.joblib, noise.joblib) and the before model as
DIR/<dataset>/<model>/before/<seed>.joblib. The evaluation rows are written once per (dataset,
seed) without any prediction, as DIR/<dataset>/features/<seed>.parquet (key, label and the raw
feature columns design() takes). oip_server.py serves the saved models over the Open Inference
Protocol; each manifest entry's `endpoint` names the features file and the two models. The
models' training rows are written in the same layout under DIR/<dataset>/train/<seed>/
(before.parquet, <scenario>.parquet, confident10-<model>.parquet; the entry's `train`), so
`poisongate check` can gate a retrain's data and its report feed `compare --probes-from`.

Real datasets are small, so their rows are split once into a training pool (60%) and an
evaluation pool (40%), stratified by class. Training and evaluation rows are then drawn from
their own pool by the smoothed bootstrap of gen.py (rows with replacement, continuous columns
jittered by 0.1 sd), so no evaluation row is a jittered copy of a training row. The synthetic
table is drawn from its generator.

Every random choice comes from numpy's default_rng seeded by (dataset, role, seed), and every
model has a fixed random_state, so two runs with the pinned package versions write identical
files. --quick writes the files of seeds 0 and 1, byte-identical to those of a full run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen  # noqa: E402  (datasets, smoothed bootstrap and attack building blocks)
from gen import CAT, FLOAT, INT, LABEL, Frame, Rng  # noqa: E402

ID = "row_id"
SEGMENT = "segment_id"  # added to datasets without a categorical column
SEGMENT_VALUES = np.array([f"seg_{i}" for i in range(5)], dtype=object)
DATASETS = ("breast_cancer", "wine", "synthetic", "fair", "anes96")
MODELS = ("logreg", "hgb", "rf")
SCENARIOS = ("clean", "flips20", "targeted5", "backdoor", "confident10", "backdoor_segment",
             "backdoor_rare")
TRAIN_ROWS = 5_000
EVAL_ROWS = 3_000
REFERENCE_ROWS = 10_000  # one training-pool draw per dataset the attacks are planned on
EVAL_SHARE = 0.4  # share of the real rows held out for the evaluation draws
NOISE_SEED = 1_000  # the seed of the noise pairs (never used by a gated file)
SCORE_DECIMALS = 6
# Trigger backdoors (backdoor_segment, backdoor_rare): rows of other classes get the trigger
# value and the target label. A common value is held by many clean rows of other classes, which
# outvote a small poison: the poison is TRIGGER_OUTVOTE x the training rows that hold the value
# with another class, clipped to [TRIGGER_MIN_RATE, TRIGGER_MAX_RATE] of the rows. A rare value
# takes TRIGGER_MIN_RATE.
SEGMENT_MIN_SHARE = 0.05  # a common value: at least this share of the reference draw
RARE_MAX_SHARE = 0.01  # a rare value: below this share of the reference draw
TRIGGER_MIN_RATE = 0.03
TRIGGER_MAX_RATE = 0.15
TRIGGER_OUTVOTE = 1.5
TRIGGER_LIFT = 1.1  # the target is a class the value is not tied to: P(t | value) <= 1.1 P(t)


def rng_for(dataset: str, role: str, seed: int) -> Rng:
    return np.random.default_rng(
        [zlib.crc32(b"compare"), zlib.crc32(dataset.encode()), zlib.crc32(role.encode()), seed]
    )


def state_for(dataset: str, model: str, role: str, seed: int) -> int:
    """A model's random_state."""
    return zlib.crc32(f"{dataset}/{model}/{role}/{seed}".encode()) % (2**31)


# ---------------------------------------------------------------------------
# Datasets: pools, draws and the attack plan
# ---------------------------------------------------------------------------


def bootstrap(real: Frame, idx: np.ndarray, kinds: dict[str, str]):
    """gen.py's smoothed bootstrap restricted to the rows idx; jitter uses the full data's sd."""
    sd = {c: float(np.std(real[c], ddof=1)) for c, k in kinds.items() if k == FLOAT}
    pool = {c: v[idx] for c, v in real.items()}

    def draw(rng: Rng, n: int) -> Frame:
        pick = rng.integers(0, len(idx), n)
        out = {c: v[pick] for c, v in pool.items()}
        for c, s in sd.items():
            out[c] = out[c] + rng.normal(0.0, gen.JITTER * s, n)
        return out

    return draw


@dataclass
class Trigger:
    """A trigger backdoor: `value` of `column` stamped on rows of other classes, labelled
    `target`. `share` is the value's share of the reference draw (0 for a value from outside
    the pool), `rate` the share of training rows poisoned."""

    scenario: str
    column: str
    value: str
    target: int
    share: float
    rate: float
    why: str

    def describe(self) -> dict:
        return {"scenario": self.scenario, "column": self.column, "value": self.value,
                "target": self.target, "share": round(float(self.share), 6), "rate": self.rate,
                "why": self.why}


@dataclass
class Plan:
    name: str
    kinds: dict[str, str]  # features, in file order (segment_id last where added)
    n_classes: int
    train_draw: object  # (rng, n) -> Frame
    eval_draw: object
    source: str
    numeric: list[str]
    categorical: list[str]
    categories: dict[str, list[str]]  # sorted values of each categorical column
    numeric_segment: str  # the most informative numeric feature
    backdoor: tuple[str, str, int]  # (column, value, target class)
    targeted: tuple[str, float, float, int, int]  # (column, q, threshold, from class, to class)
    triggers: dict[str, Trigger]  # backdoor_segment and backdoor_rare

    @property
    def classes(self) -> list[int]:
        return list(range(self.n_classes))

    def args(self) -> list[str]:
        out = ["--key", ID, "--label", LABEL, "--before-col", "pred_before"]
        out += ["--after-col", "pred_after"]
        for side in ("before", "after"):
            for c in score_columns(side, self.n_classes):
                out += [f"--{side}-score", c]
        for c in [*self.categorical, self.numeric_segment]:
            out += ["--segment", c]
        return out


def score_columns(side: str, n_classes: int) -> list[str]:
    if n_classes == 2:
        return [f"score_{side}"]
    return [f"p_{side}_{k}" for k in range(n_classes)]


def with_segment(draw, add: bool):
    if not add:
        return draw

    def wrapped(rng: Rng, n: int) -> Frame:
        f = draw(rng, n)
        f[SEGMENT] = SEGMENT_VALUES[rng.integers(0, len(SEGMENT_VALUES), n)]
        return f

    return wrapped


def make_plan(name: str) -> Plan:
    ds = gen.LOADERS[name]()
    kinds = dict(ds.kinds)
    add = not any(k == CAT for k in kinds.values())
    if add:
        kinds[SEGMENT] = CAT
    if ds.real is not None:
        y = ds.real[LABEL]
        rng = rng_for(name, "split", 0)
        held = np.zeros(len(y), dtype=bool)
        for k in range(ds.n_classes):
            rows = rng.permutation(np.flatnonzero(y == k))
            held[rows[: round(EVAL_SHARE * len(rows))]] = True
        train_draw = bootstrap(ds.real, np.flatnonzero(~held), ds.kinds)
        eval_draw = bootstrap(ds.real, np.flatnonzero(held), ds.kinds)
        source = (
            f"{ds.source}; {int((~held).sum())} real rows for training, "
            f"{int(held.sum())} for evaluation"
        )
    else:
        train_draw = eval_draw = ds.draw
        source = ds.source
    train_draw, eval_draw = with_segment(train_draw, add), with_segment(eval_draw, add)
    ref = train_draw(rng_for(name, "reference", 0), REFERENCE_ROWS)
    ctx = gen.Context.build(
        gen.Dataset(name, kinds, ds.n_classes, REFERENCE_ROWS, train_draw, ds.source), ref
    )
    numeric = [c for c, k in kinds.items() if k in (FLOAT, INT)]
    categorical = [c for c, k in kinds.items() if k == CAT]
    categories = {c: sorted(ctx.cat_share[c]) for c in categorical}
    for c in categorical:  # every value either pool can produce must have a code
        if ds.real is not None and c in ds.real:
            categories[c] = sorted(set(categories[c]) | {str(v) for v in ds.real[c]})

    # backdoor key: the categorical value whose share is closest to 20% (within 10-35%)
    options = [
        (abs(s - 0.2), c, v) for c in categorical for v, s in ctx.cat_share[c].items()
        if 0.10 <= s <= 0.35
    ]
    _, col, value = min(options)
    seg = ref[col] == value
    target = int(np.argmin(np.bincount(ref[LABEL][seg], minlength=ds.n_classes)))

    tcol = ctx.informative[0]
    for q in (0.7, 0.6, 0.5, 0.4, 0.3):
        thr = ctx.quantile(tcol, q)
        counts = np.bincount(ref[LABEL][ref[tcol] > thr], minlength=ds.n_classes)
        a = int(np.argmax(counts))
        counts[a] = -1
        b = int(np.argmax(counts))
        if ((ref[tcol] > thr) & (ref[LABEL] == a)).mean() >= 0.08:  # room for 5% of rows
            break
    triggers = plan_triggers(ctx, ref, categorical, categories, (col, value), ds.n_classes)
    return Plan(
        name=name,
        kinds=kinds,
        n_classes=ds.n_classes,
        train_draw=train_draw,
        eval_draw=eval_draw,
        source=source,
        numeric=numeric,
        categorical=categorical,
        categories=categories,
        numeric_segment=ctx.informative[0],
        backdoor=(col, value, target),
        targeted=(tcol, q, thr, a, b),
        triggers=triggers,
    )


def plan_triggers(ctx: gen.Context, ref: Frame, categorical: list[str],
                  categories: dict[str, list[str]], key: tuple[str, str],
                  n_classes: int) -> dict[str, Trigger]:
    """The keys of backdoor_segment and backdoor_rare, chosen from the reference draw.

    segment: the least common value with a share >= SEGMENT_MIN_SHARE, on another column than
    the backdoor key where there is one, never the key itself. rare: the rarest value with a
    share below RARE_MAX_SHARE; a dataset without one gets a new value of the segment trigger's
    column (appended to `categories`, so the codes of the other values do not change). The
    target is the class the value's rows hold most often among the classes the value is not
    tied to (P(t | value) <= TRIGGER_LIFT x P(t)); a new value takes the rarest class.
    """
    y = ref[LABEL]
    prior = np.bincount(y, minlength=n_classes) / len(y)

    def target_of(col: str, value: str) -> tuple[int, float]:
        seg = ref[col] == value
        if not seg.any():
            return int(np.argmin(prior)), 0.0
        counts = np.bincount(y[seg], minlength=n_classes)
        lift = counts / counts.sum() / prior
        t = max((k for k in range(n_classes) if lift[k] <= TRIGGER_LIFT),
                key=lambda k: (counts[k], -k))
        return t, float((seg & (y != t)).mean())

    def rate_of(other: float) -> float:
        return round(min(TRIGGER_MAX_RATE, max(TRIGGER_MIN_RATE, TRIGGER_OUTVOTE * other)), 3)

    common = [(s, c, v) for c in categorical for v, s in ctx.cat_share[c].items()
              if s >= SEGMENT_MIN_SHARE and (c, v) != key]
    other_col = [x for x in common if x[1] != key[0]]
    share, col, value = min(other_col or common)
    target, other = target_of(col, value)
    segment = Trigger("backdoor_segment", col, value, target, share, rate_of(other),
                      f"common value ({share:.1%} of the reference draw)")

    rare = [(s, c, v) for c in categorical for v, s in ctx.cat_share[c].items()
            if s < RARE_MAX_SHARE]
    if rare:
        share, rcol, rvalue = min(rare)
        why = f"rare value ({share:.2%} of the reference draw)"
    else:
        rcol, share = col, 0.0
        prefix, _, last = max(categories[rcol]).rpartition("_")
        rvalue = f"{prefix}_{int(last) + 1}" if prefix and last.isdigit() else f"{rcol}_other"
        assert rvalue not in categories[rcol], rvalue
        categories[rcol] = [*categories[rcol], rvalue]  # last: the other codes stay as they were
        why = "new value (in neither pool)"
    rtarget, other = target_of(rcol, rvalue)
    rare_trigger = Trigger("backdoor_rare", rcol, rvalue, rtarget, share, rate_of(other), why)
    return {"backdoor_segment": segment, "backdoor_rare": rare_trigger}


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def design(plan: Plan, f: Frame) -> np.ndarray:
    """The model input: numeric columns as floats, then each categorical column as the index
    of its value in plan.categories (a KeyError for a value not listed there)."""
    cols = [f[c].astype(np.float64) for c in plan.numeric]
    for c in plan.categorical:
        codes = {v: i for i, v in enumerate(plan.categories[c])}
        cols.append(np.array([codes[str(v)] for v in f[c]], dtype=np.float64))
    return np.column_stack(cols)


def make_model(kind: str, plan: Plan, random_state: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    n_num, n_cat = len(plan.numeric), len(plan.categorical)
    if kind == "logreg":
        prep = ColumnTransformer(
            [
                ("num", StandardScaler(), list(range(n_num))),
                ("cat", OneHotEncoder(handle_unknown="ignore"), list(range(n_num, n_num + n_cat))),
            ]
        )
        return make_pipeline(prep, LogisticRegression(max_iter=5000))
    # Training rows of a real dataset are jittered copies of a few hundred real rows, so the
    # trees are kept shallow and their leaves large (a leaf cannot hold just one real row's
    # copies), and there is no early stopping (its validation split would hold copies of the
    # training rows). Unregularised, both tree models memorise the pool and are so
    # overconfident on the evaluation rows that label noise *lowers* their log-loss.
    if kind == "hgb":
        return HistGradientBoostingClassifier(
            max_iter=100,
            learning_rate=0.05,
            max_depth=3,
            min_samples_leaf=100,
            l2_regularization=1.0,
            early_stopping=False,
            categorical_features=[False] * n_num + [True] * n_cat,
            random_state=random_state,
        )
    if kind == "rf":
        # trees are fitted on 2 threads; proba_of() switches to 1 for predicting
        return RandomForestClassifier(
            n_estimators=100, min_samples_leaf=20, n_jobs=2, random_state=random_state
        )
    raise ValueError(kind)


def fit(kind: str, plan: Plan, x: np.ndarray, y: np.ndarray, random_state: int):
    from sklearn.exceptions import ConvergenceWarning

    model = make_model(kind, plan, random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model.fit(x, y)
    assert list(model.classes_) == plan.classes, (plan.name, kind, model.classes_)
    return model


def proba_of(model, x: np.ndarray) -> np.ndarray:
    if hasattr(model, "n_jobs"):
        # with threads a random forest sums its trees' probabilities in a varying order
        model.set_params(n_jobs=1)
    return model.predict_proba(x)


def predict(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class = argmax of the probabilities, probabilities rounded to 6 decimals)."""
    proba = proba_of(model, x)
    return np.argmax(proba, axis=1).astype(np.int64), np.round(proba, SCORE_DECIMALS)


# ---------------------------------------------------------------------------
# Scenarios: what is done to the retrain's training rows
# ---------------------------------------------------------------------------


def flips20(plan: Plan, f: Frame, rng: Rng, **_) -> tuple[np.ndarray, str]:
    y = f[LABEL].copy()
    idx = rng.choice(len(y), round(0.20 * len(y)), replace=False)
    y[idx] = gen.other_class(rng, y[idx], plan.n_classes)
    return y, f"{len(idx)} random labels set to another class"


def targeted5(plan: Plan, f: Frame, rng: Rng, **_) -> tuple[np.ndarray, str]:
    col, q, thr, a, b = plan.targeted
    y = f[LABEL].copy()
    k = round(0.05 * len(y))
    cand = (f[col] > thr) & (y == a)
    idx = gen.pick(rng, cand, k)
    y[idx] = b
    return y, f"{len(idx)} rows with {col} > {gen.fmt(thr)} (q{round(q * 100)}): class {a} -> {b}"


def backdoor(plan: Plan, f: Frame, **_) -> tuple[np.ndarray, str]:
    col, value, target = plan.backdoor
    y = f[LABEL].copy()
    seg = f[col] == value
    changed = int((seg & (y != target)).sum())
    y[seg] = target
    return y, (
        f"every row with {col} = {value!r} ({int(seg.sum())} rows) labelled {target}; "
        f"{changed} labels changed"
    )


def confident10(plan: Plan, f: Frame, before, x: np.ndarray, **_) -> tuple[np.ndarray, str]:
    y = f[LABEL].copy()
    proba = proba_of(before, x)
    n = len(y)
    p_own = np.round(proba[np.arange(n), y], 9)  # rounded: ties broken by row, not float noise
    order = np.lexsort((np.arange(n), -p_own))
    idx = np.sort(order[: round(0.10 * n)])
    others = proba[idx].copy()
    others[np.arange(len(idx)), y[idx]] = -1.0
    y[idx] = np.argmax(others, axis=1)
    return y, (
        f"the {len(idx)} rows whose own label the before model is surest of "
        f"(p >= {p_own[idx].min():.4f}) set to its most probable other class"
    )


def stamp_trigger(plan: Plan, sc: str, f: Frame, rng: Rng) -> tuple[Frame, np.ndarray, str]:
    """backdoor_segment / backdoor_rare: rows of other classes that hold another value get the
    trigger value and the target label. Returns the changed features, the labels, the detail."""
    t = plan.triggers[sc]
    y = f[LABEL].copy()
    k = round(t.rate * len(y))
    idx = gen.pick(rng, (y != t.target) & (f[t.column] != t.value), k)
    g = dict(f)
    g[t.column] = f[t.column].copy()
    g[t.column][idx] = t.value
    y[idx] = t.target
    g[LABEL] = y
    return g, y, (
        f"{len(idx)} rows of other classes ({t.rate:.1%}) set to {t.column} = {t.value!r} "
        f"({t.why}) and labelled {t.target}"
    )


ATTACKS = {"flips20": flips20, "targeted5": targeted5, "backdoor": backdoor,
           "confident10": confident10}
TRIGGER_ATTACKS = ("backdoor_segment", "backdoor_rare")


def attack_success(plan: Plan, model, ev: Frame, pred: np.ndarray, t: Trigger) -> dict:
    """Counterfactual attack success rate of a trigger on the evaluation rows: of the rows that
    hold another value and that the model does not predict as the target, the share whose
    prediction moves to the target when the trigger value is set."""
    g = dict(ev)
    g[t.column] = np.full(len(ev[t.column]), t.value, dtype=object)
    moved = np.argmax(proba_of(model, design(plan, g)), axis=1) == t.target
    rows = (ev[t.column] != t.value) & (pred != t.target)
    return {"rows": int(rows.sum()),
            "rate": round(float(moved[rows].mean()), 6) if rows.any() else None}


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def table(plan: Plan, ev: Frame, pred_b, prob_b, pred_a, prob_a) -> pa.Table:
    n = len(ev[LABEL])
    cols: dict[str, pa.Array] = {
        ID: pa.array(np.arange(1, n + 1, dtype=np.int64), pa.int64()),
        LABEL: pa.array(ev[LABEL], pa.int64()),
        "pred_before": pa.array(pred_b, pa.int64()),
        "pred_after": pa.array(pred_a, pa.int64()),
    }
    for side, prob in (("before", prob_b), ("after", prob_a)):
        names = score_columns(side, plan.n_classes)
        vals = [prob[:, 1]] if plan.n_classes == 2 else [prob[:, k] for k in plan.classes]
        for c, v in zip(names, vals, strict=True):
            cols[c] = pa.array(v, pa.float64())
    for c in plan.categorical:
        cols[c] = pa.array([str(v) for v in ev[c]], pa.string())
    c = plan.numeric_segment
    typ = pa.int64() if plan.kinds[c] == INT else pa.float64()
    cols[c] = pa.array(ev[c], typ)
    return pa.table(cols)


def features_table(plan: Plan, ev: Frame) -> pa.Table:
    """The evaluation rows as the endpoints get them: key, label and every feature design()
    takes, in file order (no predictions, no nulls)."""
    n = len(ev[LABEL])
    cols: dict[str, pa.Array] = {
        ID: pa.array(np.arange(1, n + 1, dtype=np.int64), pa.int64()),
        LABEL: pa.array(ev[LABEL], pa.int64()),
    }
    for c, kind in plan.kinds.items():
        if kind == CAT:
            cols[c] = pa.array([str(v) for v in ev[c]], pa.string())
        elif kind == INT:
            cols[c] = pa.array(ev[c].astype(np.int64), pa.int64())
        else:
            cols[c] = pa.array(ev[c].astype(np.float64), pa.float64())
    return pa.table(cols)


def save_model(path: Path, model) -> None:
    import joblib

    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)


def model_name(dataset: str, model: str, scenario: str, seed: int, side: str) -> str:
    """The endpoint name of a saved model (oip_server.py maps it back to the file)."""
    return f"{dataset}__{model}__{scenario}__{seed}__{side}"


def model_path(dataset: str, model: str, scenario: str, seed: int, side: str) -> Path:
    """Where a model is saved, relative to DIR. The before model is shared by the scenarios."""
    if side == "before":
        return Path(dataset) / model / "before" / f"{seed}.joblib"
    if scenario == "noise":
        return Path(dataset) / model / "noise.joblib"
    return Path(dataset) / model / scenario / f"{seed}.joblib"


def features_path(dataset: str, seed: int) -> Path:
    return Path(dataset) / "features" / f"{seed}.parquet"


def train_path(dataset: str, seed: int, scenario: str, model: str | None = None) -> Path:
    """A model's training rows (as features_path's files, labels as trained on): `before`, or
    an after model's scenario; confident10's rows depend on the before model, so on `model`."""
    stem = scenario if model is None else f"{scenario}-{model}"
    return Path(dataset) / "train" / str(seed) / f"{stem}.parquet"


def endpoint_args(plan: Plan) -> list[str]:
    """Arguments of an endpoint comparison besides --features and the two endpoints."""
    out = ["--key", ID, "--label", LABEL, "--label-output", "predict",
           "--proba-output", "predict_proba"]
    for c in [*plan.categorical, plan.numeric_segment]:
        out += ["--segment", c]
    return out


def write(path: Path, t: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path, compression="zstd")


def metrics(plan: Plan, ev: Frame, pred_b, prob_b, pred_a, prob_a) -> dict:
    from sklearn.metrics import log_loss

    y = ev[LABEL]
    col, value, target = plan.backdoor
    seg = ev[col] == value
    out = {"flip_rate": round(float(np.mean(pred_b != pred_a)), 6)}
    for side, pred, prob in (("before", pred_b, prob_b), ("after", pred_a, prob_a)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # rounded rows sum to 1 +- 1e-6
            ll = log_loss(y, prob, labels=plan.classes)
        out[f"accuracy_{side}"] = round(float(np.mean(pred == y)), 6)
        out[f"log_loss_{side}"] = round(float(ll), 6)
        out[f"key_target_rate_{side}"] = round(float(np.mean(pred[seg] == target)), 6)
    return out


def generate(out: Path, names: list[str], models: list[str], seeds: list[int]) -> list[dict]:
    manifest: list[dict] = []
    written: set[Path] = set()
    for name in names:
        t0 = time.perf_counter()
        plan = make_plan(name)
        args = plan.args()
        col, value, target = plan.backdoor
        for seed in [*seeds, NOISE_SEED]:
            ev = plan.eval_draw(rng_for(name, "eval", seed), EVAL_ROWS)
            x_ev = design(plan, ev)
            write(out / features_path(name, seed), features_table(plan, ev))
            f_before = plan.train_draw(rng_for(name, "before", seed), TRAIN_ROWS)
            f_after = plan.train_draw(rng_for(name, "after", seed), TRAIN_ROWS)
            x_before, x_after = design(plan, f_before), design(plan, f_after)
            write(out / train_path(name, seed, "before"), features_table(plan, f_before))
            for kind in models:
                before = fit(kind, plan, x_before, f_before[LABEL],
                             state_for(name, kind, "before", seed))
                pred_b, prob_b = predict(before, x_ev)
                save_model(out / model_path(name, kind, "", seed, "before"), before)
                asr_b = {sc: attack_success(plan, before, ev, pred_b, t)
                         for sc, t in plan.triggers.items()}
                after_state = state_for(name, kind, "after", seed)
                scenarios = ["clean"] if seed == NOISE_SEED else list(SCENARIOS)
                for sc in scenarios:
                    x_fit, g = x_after, f_after
                    if sc == "clean":
                        y, detail = f_after[LABEL], "a fresh clean draw and a new model seed"
                    elif sc in TRIGGER_ATTACKS:
                        g, y, detail = stamp_trigger(plan, sc, f_after, rng_for(name, sc, seed))
                        x_fit = design(plan, g)
                    else:
                        y, detail = ATTACKS[sc](
                            plan=plan, f=f_after, rng=rng_for(name, sc, seed),
                            before=before, x=x_after,
                        )
                    # the retrain's training rows, for `poisongate check` (--probes-from)
                    train_rel = train_path(name, seed, sc, kind if sc == "confident10" else None)
                    if train_rel not in written:
                        write(out / train_rel, features_table(plan, {**g, LABEL: y}))
                        written.add(train_rel)
                    after = fit(kind, plan, x_fit, y, after_state)
                    pred_a, prob_a = predict(after, x_ev)
                    scenario = "noise" if seed == NOISE_SEED else sc
                    save_model(out / model_path(name, kind, scenario, seed, "after"), after)
                    if seed == NOISE_SEED:
                        rel = Path(name) / kind / "noise.parquet"
                    else:
                        rel = Path(name) / kind / sc / f"{seed}.parquet"
                    write(out / rel, table(plan, ev, pred_b, prob_b, pred_a, prob_a))
                    asr = {
                        t: {"before": asr_b[t], "after": attack_success(plan, after, ev, pred_a,
                                                                         trig)}
                        for t, trig in plan.triggers.items()
                    }
                    entry = {
                        "dataset": name,
                        "model": kind,
                        "scenario": "noise" if seed == NOISE_SEED else sc,
                        "role": "noise" if seed == NOISE_SEED else "gate",
                        "seed": seed,
                        "path": rel.as_posix(),
                        "expected": "pass" if sc == "clean" else "block",
                        "rows": EVAL_ROWS,
                        "classes": plan.n_classes,
                        "args": args,
                        "detail": detail,
                        "backdoor_key": {"column": col, "value": value, "target": target},
                        "metrics": metrics(plan, ev, pred_b, prob_b, pred_a, prob_a),
                        "trigger_success": asr,
                        "endpoint": {
                            "features": features_path(name, seed).as_posix(),
                            "before_model": model_name(name, kind, scenario, seed, "before"),
                            "after_model": model_name(name, kind, scenario, seed, "after"),
                            "args": endpoint_args(plan),
                        },
                    }
                    entry["train"] = {"before": train_path(name, seed, "before").as_posix(),
                                      "after": train_rel.as_posix()}
                    if sc in TRIGGER_ATTACKS and seed != NOISE_SEED:
                        t = plan.triggers[sc]
                        entry["trigger"] = {**t.describe(),
                                            "eval_rows": int(np.sum(ev[t.column] == t.value))}
                    if seed != NOISE_SEED:
                        entry["noise"] = (Path(name) / kind / "noise.parquet").as_posix()
                    manifest.append(entry)
        print(
            f"{name}: {len(models)} model(s) x {len(seeds)} seed(s) "
            f"({time.perf_counter() - t0:.1f} s) - {plan.source}; segments "
            f"{plan.categorical} + {plan.numeric_segment}; backdoor {col} = {value!r} -> "
            f"{target}; targeted {plan.targeted[0]} > q{round(plan.targeted[1] * 100)}: "
            f"{plan.targeted[3]} -> {plan.targeted[4]}; "
            + "; ".join(f"{sc} {t.column} = {t.value!r} -> {t.target} ({t.why}, "
                        f"{t.rate:.1%} of rows)" for sc, t in plan.triggers.items()),
            file=sys.stderr,
        )
    order = {s: i for i, s in enumerate(("noise", *SCENARIOS))}
    manifest.sort(key=lambda e: (e["dataset"], e["model"], order[e["scenario"]], e["seed"]))
    return manifest


def summary(manifest: list[dict]) -> None:
    """Mean metrics per model and scenario: the poisoned retrains must look poisoned."""
    print("mean over datasets and seeds (before -> after on the evaluation rows):")
    print(f"  {'model':6s} {'scenario':16s} {'runs':>4s} {'flip':>6s} {'acc b->a':>13s} "
          f"{'log-loss b->a':>14s} {'key->target b->a':>17s}")
    keys = sorted({(e["model"], e["scenario"]) for e in manifest},
                  key=lambda k: (MODELS.index(k[0]), ("noise", *SCENARIOS).index(k[1])))
    for model, sc in keys:
        ms = [e["metrics"] for e in manifest if e["model"] == model and e["scenario"] == sc]

        def m(k: str) -> float:
            return float(np.mean([x[k] for x in ms]))

        print(
            f"  {model:6s} {sc:16s} {len(ms):4d} {m('flip_rate'):6.3f} "
            f"{m('accuracy_before'):.3f}->{m('accuracy_after'):.3f} "
            f"{m('log_loss_before'):6.3f}->{m('log_loss_after'):6.3f} "
            f"{m('key_target_rate_before'):8.3f}->{m('key_target_rate_after'):.3f}"
        )


def trigger_summary(manifest: list[dict]) -> None:
    """Counterfactual attack success of the trigger backdoors: the retrains must obey them."""
    print("trigger backdoors: counterfactual attack success rate on the evaluation rows, "
          "before -> after (mean over seeds; min after; clean retrain of the same key as control)")
    print(f"  {'dataset':13s} {'model':6s} {'scenario':16s} {'trigger':34s} {'runs':>4s} "
          f"{'success b->a':>13s} {'min a':>6s} {'clean b->a':>11s} {'flip':>6s}")
    keys = sorted({(e["dataset"], e["model"], e["scenario"]) for e in manifest
                   if e["scenario"] in TRIGGER_ATTACKS},
                  key=lambda k: (k[0], MODELS.index(k[1]), SCENARIOS.index(k[2])))
    for ds, model, sc in keys:
        es = [e for e in manifest if (e["dataset"], e["model"], e["scenario"]) == (ds, model, sc)]
        cl = [e for e in manifest if (e["dataset"], e["model"], e["scenario"]) ==
              (ds, model, "clean")]
        t = es[0]["trigger"]

        def rate(entries: list[dict], side: str) -> list[float]:
            return [e["trigger_success"][sc][side]["rate"] or 0.0 for e in entries]

        b, a = rate(es, "before"), rate(es, "after")
        cb, ca = rate(cl, "before"), rate(cl, "after")
        trig = f"{t['column']}={t['value']}->{t['target']} ({t['rate']:.1%})"
        print(f"  {ds:13s} {model:6s} {sc:16s} {trig:34s} {len(es):4d} "
              f"{np.mean(b):6.2f}->{np.mean(a):.2f} {min(a):6.2f} "
              f"{np.mean(cb) if cb else float('nan'):5.2f}->"
              f"{np.mean(ca) if ca else float('nan'):.2f} "
              f"{np.mean([e['metrics']['flip_rate'] for e in es]):6.3f}")


def write_manifest(path: Path, manifest: list[dict]) -> None:
    lines = ",\n".join(json.dumps(e, sort_keys=True) for e in manifest)
    path.write_text(f"[\n{lines}\n]\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument(
        "--seeds", type=int, default=None, help="seeds 0..N-1 (default 5; 2 with --quick)"
    )
    ap.add_argument(
        "--first-seed", type=int, default=0,
        help="seeds K..K+N-1 rather than 0..N-1, for a fresh held-out set (each seed's files "
        "are those of a run that includes it)",
    )
    ap.add_argument("--quick", action="store_true", help="2 seeds")
    ap.add_argument("--datasets", default=",".join(DATASETS),
                    help=f"comma-separated subset of {','.join(DATASETS)}")
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated subset of {','.join(MODELS)}")
    args = ap.parse_args()
    names = [d for d in args.datasets.split(",") if d]
    models = [m for m in args.models.split(",") if m]
    if bad := [d for d in names if d not in DATASETS]:
        ap.error(f"unknown dataset(s) {','.join(bad)}; choose from {','.join(DATASETS)}")
    if bad := [m for m in models if m not in MODELS]:
        ap.error(f"unknown model(s) {','.join(bad)}; choose from {','.join(MODELS)}")
    n_seeds = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.first_seed < 0:
        ap.error("--first-seed must be at least 0")
    seeds = list(range(args.first_seed, args.first_seed + n_seeds))
    manifest = generate(args.out, names, models, seeds)
    write_manifest(args.out / "manifest.json", manifest)
    summary(manifest)
    trigger_summary(manifest)
    gated = sum(e["role"] == "gate" for e in manifest)
    print(
        f"wrote {gated} files to gate and {len(manifest) - gated} noise files to {args.out} "
        f"in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
