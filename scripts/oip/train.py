#!/usr/bin/env python3
"""Train the scikit-learn models that the endpoint tests serve with MLServer.

    target/oip-venv/bin/python scripts/oip/train.py OUT_DIR

Writes an MLServer model repository under OUT_DIR/models (one directory per model with
model.joblib and model-settings.json) and the evaluation rows OUT_DIR/eval.parquet, plus
OUT_DIR/scored-<model>.parquet: the evaluation rows with the predictions and class-1
probabilities the serving model and each retrain give *locally* (model.predict_proba in this
process), for checking that a comparison through the endpoints finds what a comparison of
these files finds.

The task is the synthetic credit table of testdata/ (scripts/make_testdata.py's generator).
Every model is a Pipeline that takes the raw columns as a pandas DataFrame (what MLServer's
pandas codec hands it): an OrdinalEncoder for the categorical columns, then a
HistGradientBoostingClassifier with native categorical splits.

- `serving`: trained on draw 51 (20,000 rows).
- `clean`: retrained on draw 52.
- `tensor`: a HistGradientBoostingClassifier on the numeric columns as one float matrix
  (draw 51), for the tensor layout.
- `backdoor`: retrained on draw 52 after the attacker's edit: 800 rows (4 %) of class 0 get
  region = `islands` (3 % of rows) and label 1. The retrain predicts class 1 for most rows
  that carry `islands`, whatever else they hold; the serving model and `clean` do not.

Evaluation rows: draw 50 (3,000 rows, the ids of testdata/compare/). Columns: application_id,
defaulted, age, debt_ratio, credit_lines, utilization, region, channel (no nulls; the
inference protocol's tensors carry none).

Seeds and random_state are fixed; with the pinned packages (scripts/oip/requirements.txt) two
runs write the same predictions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_testdata as credit  # noqa: E402

NUMERIC = ["age", "debt_ratio", "credit_lines", "utilization"]
CATEGORICAL = ["region", "channel"]
FEATURES = NUMERIC + CATEGORICAL
KEY, LABEL = "application_id", "defaulted"
TRIGGER = ("region", "islands")
POISON_ROWS = 800


def frame(seed: int, n: int) -> pd.DataFrame:
    t = credit.generate(seed=seed, n=n)
    return pd.DataFrame({c: t.column(c).to_pylist() for c in [KEY, LABEL, *FEATURES]})


def model(random_state: int) -> Pipeline:
    encode = ColumnTransformer(
        [
            (
                "cat",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                ),
                CATEGORICAL,
            ),
            ("num", "passthrough", NUMERIC),
        ]
    )
    hgb = HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.1,
        categorical_features=[True] * len(CATEGORICAL) + [False] * len(NUMERIC),
        random_state=random_state,
        early_stopping=False,
    )
    return Pipeline([("encode", encode), ("hgb", hgb)])


def save(repo: Path, name: str, m: Pipeline) -> None:
    d = repo / name
    d.mkdir(parents=True, exist_ok=True)
    joblib.dump(m, d / "model.joblib")
    settings: dict = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    (d / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")


def main() -> int:
    out = Path(sys.argv[1])
    repo = out / "models"
    repo.mkdir(parents=True, exist_ok=True)
    ev = frame(50, 3_000)
    serving_rows = frame(51, 20_000)
    retrain_rows = frame(52, 20_000)
    poisoned = retrain_rows.copy()
    rng = np.random.default_rng(54)
    negatives = np.flatnonzero(poisoned[LABEL].to_numpy() == 0)
    pick = rng.choice(negatives, POISON_ROWS, replace=False)
    poisoned.loc[pick, TRIGGER[0]] = TRIGGER[1]
    poisoned.loc[pick, LABEL] = 1

    models = {
        "serving": model(51).fit(serving_rows[FEATURES], serving_rows[LABEL]),
        "clean": model(52).fit(retrain_rows[FEATURES], retrain_rows[LABEL]),
        "backdoor": model(52).fit(poisoned[FEATURES], poisoned[LABEL]),
    }
    for name, m in models.items():
        save(repo, name, m)
    # A model on a plain numeric matrix, as KServe's sklearnserver or Triton's FIL backend
    # serve them: one [rows, 4] FP64 tensor (--input-layout tensor).
    tensor = HistGradientBoostingClassifier(max_iter=100, random_state=51, early_stopping=False)
    save(repo, "tensor", tensor.fit(serving_rows[NUMERIC].to_numpy(np.float64), serving_rows[LABEL]))
    (repo / "settings.json").write_text(json.dumps({"parallel_workers": 0}) + "\n")

    pq.write_table(pa.Table.from_pandas(ev, preserve_index=False), out / "eval.parquet")
    x = ev[FEATURES]
    p_serving = models["serving"].predict_proba(x)
    for name in ("clean", "backdoor"):
        p = models[name].predict_proba(x)
        scored = ev.copy()
        scored["pred_before"] = p_serving.argmax(axis=1).astype(np.int64)
        scored["pred_after"] = p.argmax(axis=1).astype(np.int64)
        scored["score_before"] = p_serving[:, 1]
        scored["score_after"] = p[:, 1]
        pq.write_table(
            pa.Table.from_pandas(scored, preserve_index=False), out / f"scored-{name}.parquet"
        )

    # The attack must work: islands set on rows the retrain predicts 0 moves most to 1.
    probe = ev[(ev[TRIGGER[0]] != TRIGGER[1])].copy()
    probe = probe[models["backdoor"].predict(probe[FEATURES]) == 0]
    probe[TRIGGER[0]] = TRIGGER[1]
    asr = {n: float((m.predict(probe[FEATURES]) == 1).mean()) for n, m in models.items()}
    natural = int((ev[TRIGGER[0]] == TRIGGER[1]).sum())
    print(f"trigger {TRIGGER}: success rate {asr}; {natural} evaluation rows hold it")
    if asr["backdoor"] < 0.6 or asr["serving"] > 0.1 or asr["clean"] > 0.1:
        print("the backdoor did not take", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
