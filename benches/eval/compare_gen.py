#!/usr/bin/env python3
"""Generate the evaluation files of the `poisongate compare` suite.

    python benches/eval/compare_gen.py --out /tmp/pg-compare            # 5 seeds
    python benches/eval/compare_gen.py --out /tmp/pg-compare --quick    # 2 seeds

For every dataset, model family and seed it trains a serving ("before") model on clean rows
and five retrained ("after") models: one on a fresh clean draw and four on the same draw
poisoned in one known way. It then scores one set of held-out evaluation rows with both models.
Each (dataset, model, scenario, seed) is written to
DIR/<dataset>/<model>/<scenario>/<seed>.parquet. Each (dataset, model) also gets one clean pair,
DIR/<dataset>/<model>/noise.parquet, for pinning the retraining noise (--pin-noise).
DIR/manifest.json lists every file with its expected verdict and the arguments to pass to
`poisongate compare`. compare_run.py runs them. See README.md, section "compare".

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
SCENARIOS = ("clean", "flips20", "targeted5", "backdoor", "confident10")
TRAIN_ROWS = 5_000
EVAL_ROWS = 3_000
REFERENCE_ROWS = 10_000  # one training-pool draw per dataset the attacks are planned on
EVAL_SHARE = 0.4  # share of the real rows held out for the evaluation draws
NOISE_SEED = 1_000  # the seed of the noise pairs (never used by a gated file)
SCORE_DECIMALS = 6


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
    )


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def design(plan: Plan, f: Frame) -> np.ndarray:
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


ATTACKS = {"flips20": flips20, "targeted5": targeted5, "backdoor": backdoor,
           "confident10": confident10}


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
    for name in names:
        t0 = time.perf_counter()
        plan = make_plan(name)
        args = plan.args()
        col, value, target = plan.backdoor
        for seed in [*seeds, NOISE_SEED]:
            ev = plan.eval_draw(rng_for(name, "eval", seed), EVAL_ROWS)
            x_ev = design(plan, ev)
            f_before = plan.train_draw(rng_for(name, "before", seed), TRAIN_ROWS)
            f_after = plan.train_draw(rng_for(name, "after", seed), TRAIN_ROWS)
            x_before, x_after = design(plan, f_before), design(plan, f_after)
            for kind in models:
                before = fit(kind, plan, x_before, f_before[LABEL],
                             state_for(name, kind, "before", seed))
                pred_b, prob_b = predict(before, x_ev)
                after_state = state_for(name, kind, "after", seed)
                scenarios = ["clean"] if seed == NOISE_SEED else list(SCENARIOS)
                for sc in scenarios:
                    if sc == "clean":
                        y, detail = f_after[LABEL], "a fresh clean draw and a new model seed"
                    else:
                        y, detail = ATTACKS[sc](
                            plan=plan, f=f_after, rng=rng_for(name, sc, seed),
                            before=before, x=x_after,
                        )
                    after = fit(kind, plan, x_after, y, after_state)
                    pred_a, prob_a = predict(after, x_ev)
                    if seed == NOISE_SEED:
                        rel = Path(name) / kind / "noise.parquet"
                    else:
                        rel = Path(name) / kind / sc / f"{seed}.parquet"
                    write(out / rel, table(plan, ev, pred_b, prob_b, pred_a, prob_a))
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
                    }
                    if seed != NOISE_SEED:
                        entry["noise"] = (Path(name) / kind / "noise.parquet").as_posix()
                    manifest.append(entry)
        print(
            f"{name}: {len(models)} model(s) x {len(seeds)} seed(s) "
            f"({time.perf_counter() - t0:.1f} s) - {plan.source}; segments "
            f"{plan.categorical} + {plan.numeric_segment}; backdoor {col} = {value!r} -> "
            f"{target}; targeted {plan.targeted[0]} > q{round(plan.targeted[1] * 100)}: "
            f"{plan.targeted[3]} -> {plan.targeted[4]}",
            file=sys.stderr,
        )
    order = {s: i for i, s in enumerate(("noise", *SCENARIOS))}
    manifest.sort(key=lambda e: (e["dataset"], e["model"], order[e["scenario"]], e["seed"]))
    return manifest


def summary(manifest: list[dict]) -> None:
    """Mean metrics per model and scenario: the poisoned retrains must look poisoned."""
    print("mean over datasets and seeds (before -> after on the evaluation rows):")
    print(f"  {'model':6s} {'scenario':11s} {'runs':>4s} {'flip':>6s} {'acc b->a':>13s} "
          f"{'log-loss b->a':>14s} {'key->target b->a':>17s}")
    keys = sorted({(e["model"], e["scenario"]) for e in manifest},
                  key=lambda k: (MODELS.index(k[0]), ("noise", *SCENARIOS).index(k[1])))
    for model, sc in keys:
        ms = [e["metrics"] for e in manifest if e["model"] == model and e["scenario"] == sc]

        def m(k: str) -> float:
            return float(np.mean([x[k] for x in ms]))

        print(
            f"  {model:6s} {sc:11s} {len(ms):4d} {m('flip_rate'):6.3f} "
            f"{m('accuracy_before'):.3f}->{m('accuracy_after'):.3f} "
            f"{m('log_loss_before'):6.3f}->{m('log_loss_after'):6.3f} "
            f"{m('key_target_rate_before'):8.3f}->{m('key_target_rate_after'):.3f}"
        )


def write_manifest(path: Path, manifest: list[dict]) -> None:
    lines = ",\n".join(json.dumps(e, sort_keys=True) for e in manifest)
    path.write_text(f"[\n{lines}\n]\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument(
        "--seeds", type=int, default=None, help="seeds 0..N-1 (default 5; 2 with --quick)"
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
    manifest = generate(args.out, names, models, list(range(n_seeds)))
    write_manifest(args.out / "manifest.json", manifest)
    summary(manifest)
    gated = sum(e["role"] == "gate" for e in manifest)
    print(
        f"wrote {gated} files to gate and {len(manifest) - gated} noise files to {args.out} "
        f"in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
