#!/usr/bin/env python3
"""Build the model-artifact corpus for `poisongate verify --scan`.

Run from the repository root:

    /tmp/pgvenv/bin/python benches/scan/make_corpus.py --out testdata/models

The out directory is removed and written afresh:

    benign/     fitted scikit-learn models (joblib, uncompressed and zlib/gzip/bz2/lzma/xz;
                plain pickle at protocols 2-5), .npy/.npz, safetensors, PyTorch-style
                checkpoint zips, a Keras 3 .keras archive: all expected "safe"
    hostile/    pickles whose globals would run something (os.system, eval, subprocess,
                the published blocklist bypasses, STACK_GLOBAL dotted names, EXT1, a
                pickle nested in bytes, an object array inside joblib/npy/npz, torch zips,
                Keras Lambda and custom objects): all expected "unsafe"
    malformed/  truncated or inconsistent files: expected "error"
    pin/        trusted.joblib and swapped.joblib for the import-pin tests
    truth.json  {relative path: {"expect", "format", "technique", "callables"}}

Every hostile payload is harmless (at most it would `touch /tmp/poisongate-scan-marker`),
and nothing hostile is ever unpickled or loaded by this script: hostile pickles are
written either by pickling an object whose __reduce__ names the callable, or by
assembling pickle opcodes by hand. The `callables` of a pickle-based entry are read
back statically (pickletools.genops, via scripts/gen_scan_allowlist.py) and are
spelled exactly as the pickle spells them: os.system is "posix.system", and at
protocols 0-2 Python 3 writes Python 2 names (fix_imports), so builtins.eval is
"__builtin__.eval" and subprocess.check_output is "commands.check_output" there.

Deterministic: PYTHONHASHSEED and thread counts are pinned (the script re-executes
itself if needed), zip timestamps are fixed and gzip headers carry mtime 0, so two
runs give byte-identical files.
"""

from __future__ import annotations

import os
import sys

_PINNED = {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
if any(os.environ.get(k) != v for k, v in _PINNED.items()):
    _env = dict(os.environ)
    _env.update(_PINNED)
    os.execve(sys.executable, [sys.executable] + sys.argv, _env)

import argparse  # noqa: E402
import collections  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import marshal  # noqa: E402
import pickle  # noqa: E402
import pickletools  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import joblib  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MARKER = "/tmp/poisongate-scan-marker"
CMD = "touch " + MARKER
ZIP_DATE = (2024, 1, 1, 0, 0, 0)
COMPRESSIONS = ["zlib", "gzip", "bz2", "lzma", "xz"]


def _load_walker():
    sys.dont_write_bytecode = True
    spec = importlib.util.spec_from_file_location("gen_scan_allowlist", ROOT / "scripts/gen_scan_allowlist.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


WALK = _load_walker()

# Globals a hostile fixture may contain besides its payload (containers the
# payload is wrapped in); everything else a hostile pickle imports is a callable.
WRAPPER_GLOBALS = (set(WALK.NUMPY_RECONSTRUCT) | set(WALK.JOBLIB) | set(WALK.TORCH)
                   | set(WALK.PY_BUILTIN) | set(WALK.PY_COPYREG) | set(WALK.PY_CODEC))


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


class Corpus:
    def __init__(self, root: Path):
        self.root = root
        self.truth: dict = {}

    def add(self, rel, data: bytes, expect, fmt, technique, callables=None):
        assert rel not in self.truth, rel
        assert expect in ("safe", "unsafe", "error") and fmt in (
            "pickle", "joblib", "torch-zip", "npy", "npz", "safetensors", "keras")
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if callables is None:
            callables = self.derive(path) if expect == "unsafe" else []
        if expect == "unsafe":
            assert callables, f"{rel}: no callable found"
        else:
            assert not callables or technique.startswith("pin-"), rel
        self.truth[rel] = {"expect": expect, "format": fmt, "technique": technique,
                           "callables": sorted(set(callables))}

    def derive(self, path: Path):
        gl = WALK.scan_file(path)
        return [WALK.render(g) for g in gl if g not in WRAPPER_GLOBALS]

    def write_truth(self):
        text = json.dumps(self.truth, indent=1, sort_keys=True) + "\n"
        (self.root / "truth.json").write_text(text)


def fixed_gzip(data: bytes) -> bytes:
    """joblib's gzip header carries the current time: pin MTIME to 0."""
    if data[:2] == b"\x1f\x8b":
        data = data[:4] + b"\x00\x00\x00\x00" + data[8:]
    return data


def jdump(obj, compress=None) -> bytes:
    bio = io.BytesIO()
    if compress is None:
        joblib.dump(obj, bio)
    else:
        joblib.dump(obj, bio, compress=(compress, 3))
    return fixed_gzip(bio.getvalue())


class _FixedTime:
    """Stand-in for the time module inside zipfile so numpy.savez writes fixed timestamps."""

    def __init__(self, real):
        self._real = real

    def time(self):
        return 1704067200.0

    def localtime(self, t=None):
        return self._real.gmtime(1704067200)

    def __getattr__(self, name):
        return getattr(self._real, name)


def npz_bytes(compressed: bool, **arrays) -> bytes:
    real = zipfile.time
    zipfile.time = _FixedTime(real)
    try:
        bio = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(bio, **arrays)
        return bio.getvalue()
    finally:
        zipfile.time = real


def npy_bytes(arr, allow_pickle=False) -> bytes:
    bio = io.BytesIO()
    np.save(bio, arr, allow_pickle=allow_pickle)
    return bio.getvalue()


def check_pickle_static(data: bytes):
    """pickletools.dis validates stack and memo use without running anything."""
    pickletools.dis(data, out=io.StringIO())


# ---------------------------------------------------------------------------
# Benign models
# ---------------------------------------------------------------------------


def tiny_data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(80, 4))
    y = (X[:, 0] - 0.7 * X[:, 2] + 0.3 * rng.normal(size=80) > 0).astype(np.int64)
    yr = X @ np.array([1.5, -2.0, 0.0, 0.7]) + 0.2 * rng.normal(size=80)
    return X, y, yr


def sklearn_models():
    import pandas as pd
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import (AdaBoostClassifier, ExtraTreesClassifier, GradientBoostingClassifier,
                                  HistGradientBoostingClassifier, IsolationForest, RandomForestClassifier)
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Lasso, LogisticRegression, Ridge
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
    from sklearn.svm import SVC, LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    X, y, yr = tiny_data()
    Xpos = np.abs(X)
    rng = np.random.default_rng(11)
    df = pd.DataFrame({"region": rng.choice(["north", "south", "east"], size=80),
                       "income": X[:, 0] * 1000 + 5000, "age": X[:, 1] * 10 + 40, "debt": X[:, 2]})
    df.loc[::9, "income"] = np.nan
    pre = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]),
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
         ["income", "age", "debt"]),
    ])
    models = [
        ("logistic_regression", LogisticRegression(max_iter=200).fit(X, y)),
        ("random_forest", RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, y)),
        ("extra_trees", ExtraTreesClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, y)),
        ("gradient_boosting", GradientBoostingClassifier(n_estimators=3, max_depth=2, random_state=0).fit(X, y)),
        ("hist_gradient_boosting", HistGradientBoostingClassifier(max_iter=3, max_depth=3,
                                                                   random_state=0).fit(X, y)),
        ("decision_tree", DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)),
        ("kneighbors", KNeighborsClassifier(n_neighbors=3).fit(X, y)),
        ("svc_probability", SVC(probability=True, random_state=0).fit(X, y)),
        ("linear_svc", LinearSVC(random_state=0).fit(X, y)),
        ("gaussian_nb", GaussianNB().fit(X, y)),
        ("mlp", MLPClassifier(hidden_layer_sizes=(5,), max_iter=30, random_state=0).fit(X, y)),
        ("ridge", Ridge().fit(X, yr)),
        ("lasso", Lasso(alpha=0.1).fit(X, yr)),
        ("kmeans", KMeans(n_clusters=3, n_init=1, random_state=0).fit(X)),
        ("pca", PCA(n_components=2).fit(X)),
        ("isolation_forest", IsolationForest(n_estimators=3, random_state=0).fit(X)),
        ("adaboost", AdaBoostClassifier(n_estimators=3, random_state=0).fit(X, y)),
        ("pipeline_column_transformer", Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=200))])
         .fit(df, y)),
        ("pipeline_function_transformer", Pipeline([("log1p", FunctionTransformer(np.log1p)),
                                                    ("ridge", Ridge())]).fit(Xpos, yr)),
    ]
    return models


def add_benign(c: Corpus):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = sklearn_models()
    # joblib: round-robin over uncompressed and the five compressors
    kinds = [None] + COMPRESSIONS
    for i, (name, model) in enumerate(models):
        comp = kinds[i % len(kinds)]
        suffix = "" if comp is None else f"_{comp}"
        c.add(f"benign/sk_{name}{suffix}.joblib", jdump(model, comp), "safe", "joblib",
              "sklearn-joblib" + ("" if comp is None else f"-{comp}"))
    # plain pickle.dumps at protocols 2-5
    X, y, yr = tiny_data()
    plain = [
        (2, "logistic_regression", models[0][1]),
        (3, "decision_tree_regressor", DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, yr)),
        (4, "random_forest", models[1][1]),
        (5, "pipeline_scaler_logreg",
         Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=200))]).fit(X, y)),
    ]
    for proto, name, model in plain:
        data = pickle.dumps(model, protocol=proto)
        check_pickle_static(data)
        c.add(f"benign/sk_{name}_p{proto}.pkl", data, "safe", "pickle", f"sklearn-pickle-p{proto}")
    # NumPy
    rng = np.random.default_rng(3)
    c.add("benign/npy_float64.npy", npy_bytes(rng.normal(size=(6, 4))), "safe", "npy", "npy-float64")
    c.add("benign/npy_int32.npy", npy_bytes(np.arange(24, dtype=np.int32).reshape(2, 3, 4)), "safe", "npy",
          "npy-int32")
    c.add("benign/npy_bool.npy", npy_bytes(rng.normal(size=10) > 0), "safe", "npy", "npy-bool")
    c.add("benign/npy_fortran_2d.npy", npy_bytes(np.asfortranarray(np.arange(12.0).reshape(3, 4))), "safe",
          "npy", "npy-fortran-order")
    c.add("benign/npz_savez.npz", npz_bytes(False, coef=rng.normal(size=(4, 2)), intercept=np.zeros(2),
                                            classes=np.array([0, 1], dtype=np.int64)),
          "safe", "npz", "npz-savez")
    c.add("benign/npz_savez_compressed.npz", npz_bytes(True, weights=rng.normal(size=(8, 4)).astype(np.float32),
                                                       mask=np.arange(8) % 2 == 0),
          "safe", "npz", "npz-savez-compressed")
    # safetensors
    c.add("benign/safetensors_mixed.safetensors", safetensors_benign(True), "safe", "safetensors",
          "safetensors-f32-i64-bf16-metadata")
    c.add("benign/safetensors_plain.safetensors", safetensors_benign(False), "safe", "safetensors",
          "safetensors-no-metadata")
    # PyTorch-style checkpoints
    c.add("benign/torch_state_dict.pt", torch_checkpoint("v2"), "safe", "torch-zip",
          "torch-zip-rebuild-tensor-v2")
    c.add("benign/torch_untyped_storage.pt", torch_checkpoint("v3"), "safe", "torch-zip",
          "torch-zip-untyped-storage-v3")
    c.add("benign/torch_checkpoint_dict.pt", torch_checkpoint("ckpt"), "safe", "torch-zip",
          "torch-zip-training-checkpoint")
    # Keras 3
    c.add("benign/keras_sequential_dense.keras", keras_archive("dense"), "safe", "keras",
          "keras3-sequential-dense", [])
    # pin fixtures
    trusted = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=200))]).fit(X, y)
    swapped = Pipeline([("exp", FunctionTransformer(np.exp)), ("scale", StandardScaler()),
                        ("clf", LogisticRegression(max_iter=200))]).fit(X, y)
    c.add("pin/trusted.joblib", jdump(trusted), "safe", "joblib", "pin-trusted")
    # Both pass the allowlist; `callables` names what only a pin of trusted.joblib's imports catches.
    c.add("pin/swapped.joblib", jdump(swapped), "safe", "joblib", "pin-swap-adds-numpy.exp", ["numpy.exp"])


# ---------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------


def safetensors_bytes(tensors, metadata=None, header_override=None) -> bytes:
    """tensors: [(name, dtype, shape, raw bytes)], written in the given order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if header_override:
        for name, offs in header_override.items():
            header[name]["data_offsets"] = offs
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    return struct.pack("<Q", len(hj)) + hj + data


def bf16(a: np.ndarray) -> bytes:
    u = np.asarray(a, dtype="<f4").view("<u4")
    return (u >> 16).astype("<u2").tobytes()


def _st_tensors():
    rng = np.random.default_rng(5)
    return [
        ("embed.position_ids", "I64", (1, 6), np.arange(6, dtype="<i8").reshape(1, 6).tobytes()),
        ("dense.weight", "F32", (3, 4), rng.normal(size=(3, 4)).astype("<f4").tobytes()),
        ("dense.bias", "F32", (3,), np.zeros(3, dtype="<f4").tobytes()),
        ("head.weight", "BF16", (2, 3), bf16(rng.normal(size=(2, 3)))),
    ]


def safetensors_benign(with_meta: bool) -> bytes:
    return safetensors_bytes(_st_tensors(), {"format": "pt"} if with_meta else None)


# ---------------------------------------------------------------------------
# PyTorch-style zip checkpoints (written without torch)
# ---------------------------------------------------------------------------


def _fake_torch():
    """Register stand-in modules torch, torch._utils, torch.storage so pickle writes real torch names.

    Nothing here is ever called: the functions raise if they were.
    """
    if "torch" in sys.modules and getattr(sys.modules["torch"], "_poisongate_fixture", False):
        return sys.modules["torch"]
    assert "torch" not in sys.modules, "a real torch is imported; this script writes the format by hand"
    torch = types.ModuleType("torch")
    torch._poisongate_fixture = True
    utils = types.ModuleType("torch._utils")
    storage = types.ModuleType("torch.storage")

    def _never(*_a, **_k):
        raise RuntimeError("fixture stand-in, never called")

    for fname in ("_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter"):
        f = types.FunctionType(_never.__code__, {}, fname)
        f.__module__ = "torch._utils"
        f.__qualname__ = fname
        setattr(utils, fname, f)
    for sname in ("FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage",
                  "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage"):
        setattr(torch, sname, type(sname, (), {"__module__": "torch"}))
    untyped = type("UntypedStorage", (), {"__module__": "torch.storage"})
    storage.UntypedStorage = untyped
    torch.UntypedStorage = untyped

    class dtype:  # noqa: N801 - mirrors torch.dtype, which pickles by attribute name
        def __init__(self, name):
            self.name = name

        def __reduce__(self):
            return self.name

    dtype.__module__ = "torch"
    for dname in ("float32", "uint16"):
        setattr(torch, dname, dtype(dname))
    torch._utils = utils
    torch.storage = storage
    sys.modules.update({"torch": torch, "torch._utils": utils, "torch.storage": storage})
    return torch


class FakeStorage:
    def __init__(self, key, storage_type, numel, raw):
        self.key, self.storage_type, self.numel, self.raw = key, storage_type, numel, raw


class FakeTensor:
    """Pickles like torch.Tensor._reduce_ex_internal for a dense CPU tensor."""

    def __init__(self, storage, size, v3_dtype=None):
        self.storage, self.size, self.v3_dtype = storage, tuple(size), v3_dtype

    def __reduce_ex__(self, proto):
        torch = sys.modules["torch"]
        stride = []
        acc = 1
        for d in reversed(self.size):
            stride.append(acc)
            acc *= d
        args = (self.storage, 0, self.size, tuple(reversed(stride)), False, collections.OrderedDict())
        if self.v3_dtype is not None:
            return (torch._utils._rebuild_tensor_v3, args + (self.v3_dtype,))
        return (torch._utils._rebuild_tensor_v2, args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def torch_pickle(obj) -> bytes:
    bio = io.BytesIO()
    TorchPickler(bio, protocol=2).dump(obj)  # torch.save's DEFAULT_PROTOCOL
    data = bio.getvalue()
    check_pickle_static(data)
    return data


def torch_zip(records, prefix="archive") -> bytes:
    """Stored (uncompressed) members, data 64-byte aligned with an 'FB' padding extra field."""
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in records:
            zi = zipfile.ZipInfo(f"{prefix}/{name}", date_time=ZIP_DATE)
            zi.compress_type = zipfile.ZIP_STORED
            base = bio.tell() + 30 + len(zi.filename.encode()) + 4
            pad = -base % 64
            zi.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            zf.writestr(zi, data)
    return bio.getvalue()


def _state_dict(torch, v3=False, first_key=0):
    rng = np.random.default_rng(9)
    shapes = [("fc1.weight", (4, 3)), ("fc1.bias", (4,)), ("fc2.weight", (2, 4)), ("fc2.bias", (2,))]
    sd = collections.OrderedDict()
    blobs = []
    for i, (name, shape) in enumerate(shapes):
        key = str(first_key + i)
        arr = rng.normal(size=shape)
        if v3 and name.endswith("weight"):
            raw = (np.abs(arr) * 1000).astype("<u2").tobytes()
            st = FakeStorage(key, torch.UntypedStorage, len(raw), raw)
            sd[name] = FakeTensor(st, shape, v3_dtype=torch.uint16)
        else:
            raw = arr.astype("<f4").tobytes()
            st = FakeStorage(key, torch.FloatStorage, int(np.prod(shape)), raw)
            sd[name] = FakeTensor(st, shape)
        blobs.append((key, raw))
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("fc1", {"version": 1}),
                                            ("fc2", {"version": 1})])
    return sd, blobs


def _torch_records(pkl, blobs, layout="v2", extra=()):
    recs = [("data.pkl", pkl)]
    if layout == "v3":
        recs += [(".format_version", b"1"), (".storage_alignment", b"64")]
    recs.append(("byteorder", b"little"))
    recs += [(f"data/{k}", raw) for k, raw in sorted(blobs)]
    recs += list(extra)
    recs.append(("version", b"3\n"))
    recs.append((".data/serialization_id", b"1180470412850366204108123460917425614620"))
    return recs


def torch_checkpoint(kind: str) -> bytes:
    torch = _fake_torch()
    if kind == "v2":
        sd, blobs = _state_dict(torch)
        return torch_zip(_torch_records(torch_pickle(sd), blobs))
    if kind == "v3":
        sd, blobs = _state_dict(torch, v3=True)
        return torch_zip(_torch_records(torch_pickle(sd), blobs, "v3"))
    if kind == "ckpt":
        sd, blobs = _state_dict(torch)
        ckpt = {"epoch": 3, "model_state_dict": sd,
                "optimizer_state_dict": {"state": {}, "param_groups": [
                    {"lr": 0.01, "momentum": 0.9, "params": [0, 1, 2, 3]}]},
                "loss": 0.4321}
        return torch_zip(_torch_records(torch_pickle(ckpt), blobs))
    raise ValueError(kind)


# ---------------------------------------------------------------------------
# Keras 3 .keras archives (config.json shaped like Keras 3 serialize_keras_object)
# ---------------------------------------------------------------------------


def _k_dtype():
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
            "registered_name": None}


def _k_dense(name, units, activation, in_dim):
    return {"module": "keras.layers", "class_name": "Dense",
            "config": {"name": name, "trainable": True, "dtype": _k_dtype(), "units": units,
                       "activation": activation, "use_bias": True,
                       "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                              "config": {"seed": None}, "registered_name": None},
                       "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros",
                                            "config": {}, "registered_name": None},
                       "kernel_regularizer": None, "bias_regularizer": None, "kernel_constraint": None,
                       "bias_constraint": None},
            "registered_name": None, "build_config": {"input_shape": [None, in_dim]}}


def _k_lambda():
    # Keras 3 Lambda.get_config: the function as {"class_name": "__lambda__", "config":
    # {"code": base64(marshal(code)), ...}}. The code here is a harmless `lambda x: x * 2.0`.
    import base64

    code = compile("lambda x: x * 2.0", "<lambda>", "eval").co_consts[0]
    raw = base64.encodebytes(marshal.dumps(code)).decode("ascii")
    return {"module": "keras.layers", "class_name": "Lambda",
            "config": {"name": "lambda", "trainable": True, "dtype": _k_dtype(),
                       "function": {"class_name": "__lambda__",
                                    "config": {"code": raw, "defaults": None, "closure": None}},
                       "arguments": {}},
            "registered_name": None, "build_config": {"input_shape": [None, 8]}}


def _k_custom():
    return {"module": "my_pkg.layers", "class_name": "MyLayer",
            "config": {"name": "my_layer", "trainable": True, "dtype": _k_dtype(), "units": 8},
            "registered_name": "my_pkg>MyLayer", "build_config": {"input_shape": [None, 8]}}


def keras_archive(kind: str) -> bytes:
    layers = [{"module": "keras.layers", "class_name": "InputLayer",
               "config": {"batch_shape": [None, 4], "dtype": "float32", "sparse": False, "ragged": False,
                          "name": "input_layer"}, "registered_name": None},
              _k_dense("dense", 8, "relu", 4)]
    if kind == "lambda":
        layers.append(_k_lambda())
    elif kind == "custom":
        layers.append(_k_custom())
    layers.append(_k_dense("dense_1", 1, "sigmoid", 8))
    config = {"module": "keras", "class_name": "Sequential",
              "config": {"name": "sequential", "trainable": True, "dtype": _k_dtype(), "layers": layers,
                         "build_input_shape": [None, 4]},
              "registered_name": None, "build_config": {"input_shape": [None, 4]},
              "compile_config": {"optimizer": {"module": "keras.optimizers", "class_name": "Adam",
                                               "config": {"name": "adam", "learning_rate": 0.001,
                                                          "weight_decay": None, "clipnorm": None,
                                                          "global_clipnorm": None, "clipvalue": None,
                                                          "use_ema": False, "ema_momentum": 0.99,
                                                          "ema_overwrite_frequency": None,
                                                          "loss_scale_factor": None,
                                                          "gradient_accumulation_steps": None,
                                                          "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07,
                                                          "amsgrad": False},
                                               "registered_name": None},
                                 "loss": "binary_crossentropy", "loss_weights": None, "metrics": ["accuracy"],
                                 "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1,
                                 "jit_compile": False}}
    metadata = {"keras_version": "3.3.3", "date_saved": "2024-01-01@00:00:00"}
    h5 = b"\x89HDF\r\n\x1a\n" + b"\x00" * 504  # placeholder: an HDF5 signature, no real weights
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in (("metadata.json", json.dumps(metadata).encode()),
                           ("config.json", json.dumps(config).encode()),
                           ("model.weights.h5", h5)):
            zi = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            zi.external_attr = 0o644 << 16
            zf.writestr(zi, data)
    return bio.getvalue()


# ---------------------------------------------------------------------------
# Hostile payloads
# ---------------------------------------------------------------------------


class R:
    """Pickles as func(*args). Never called or unpickled here."""

    def __init__(self, func, *args):
        self.func = func
        self.args = args

    def __reduce__(self):
        return (self.func, self.args)

    def __call__(self, *a, **k):
        raise RuntimeError("fixture payload, never called")


def _payloads():
    import atexit
    import cProfile
    import functools
    import operator
    import pkgutil
    import pydoc
    import runpy
    import socket
    import subprocess
    import threading
    import webbrowser

    imp = R(__import__, "os")
    code = f"import os; os.system({CMD!r})"
    return {
        "os-system": R(os.system, CMD),
        "getattr-import-chain": R(R(getattr, imp, "system"), CMD),
        "builtins-eval": R(eval, f"__import__('os').system({CMD!r})"),
        "builtins-exec": R(exec, code),
        "builtins-import": R(__import__, "os"),
        "runpy-run-code": R(runpy._run_code, code, {}),
        "runpy-run-path": R(runpy.run_path, MARKER + ".py"),
        "subprocess-popen": R(subprocess.Popen, ["touch", MARKER]),
        "subprocess-check-output": R(subprocess.check_output, ["touch", MARKER]),
        "socket-create-connection": R(socket.create_connection, ("127.0.0.1", 9)),
        "webbrowser-open": R(webbrowser.open, "http://127.0.0.1:9/"),
        "operator-methodcaller": R(operator.methodcaller("system", CMD), imp),
        "functools-partial": R(functools.partial(os.system, CMD)),
        "pkgutil-resolve-name": R(R(pkgutil.resolve_name, "os:system"), CMD),
        "pydoc-locate": R(R(pydoc.locate, "os.system"), CMD),
        "cprofile-run": R(cProfile.run, code),
        "threading-thread": R(threading.Thread, None, os.system, None, (CMD,)),
        "atexit-register": R(atexit.register, os.system, CMD),
    }


# Raw pickles of the object-built payloads: (technique, protocol). Protocols 0-3
# write GLOBAL (+REDUCE), 4-5 write STACK_GLOBAL.
RAW_OBJECT_PICKLES = [
    ("os-system", 0), ("os-system", 1), ("os-system", 2), ("os-system", 3), ("os-system", 4),
    ("os-system", 5),
    ("getattr-import-chain", 2), ("getattr-import-chain", 4),
    ("builtins-eval", 1), ("builtins-eval", 4),
    ("builtins-exec", 5),
    ("builtins-import", 3),
    ("runpy-run-code", 2), ("runpy-run-path", 4),
    ("subprocess-popen", 5), ("subprocess-check-output", 0), ("subprocess-check-output", 3),
    ("socket-create-connection", 3),
    ("webbrowser-open", 1),
    ("operator-methodcaller", 4),
    ("functools-partial", 2),
    ("pkgutil-resolve-name", 5),
    ("pydoc-locate", 3),
    ("cprofile-run", 0),
    ("threading-thread", 4),
    ("atexit-register", 1),
]

JOBLIB_SELECTION = [
    ("os-system", None), ("builtins-exec", "zlib"), ("subprocess-popen", "gzip"),
    ("functools-partial", "bz2"), ("operator-methodcaller", "lzma"), ("builtins-eval", "xz"),
    ("pkgutil-resolve-name", None), ("runpy-run-code", "gzip"),
]


# --- hand-assembled opcodes -------------------------------------------------

def u(s: str, proto: int) -> bytes:
    """Push a str with the opcode the given protocol would use."""
    b = s.encode("utf-8")
    if proto == 0:
        return pickle.UNICODE + s.encode("raw-unicode-escape") + b"\n"
    if proto >= 4 and len(b) < 256:
        return pickle.SHORT_BINUNICODE + bytes([len(b)]) + b
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def hdr(proto: int) -> bytes:
    return pickle.PROTO + bytes([proto]) if proto >= 2 else b""


def g(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def sg(module: str, name: str) -> bytes:
    return u(module, 4) + u(name, 4) + pickle.STACK_GLOBAL


def hand_pickles():
    """(file stem, technique, bytes) of opcode-assembled hostile pickles."""
    out = []
    # INST (protocol 0): MARK args INST module name
    out.append(("inst_p0", "inst", pickle.MARK + u(CMD, 0) + pickle.INST + b"os\nsystem\n" + pickle.STOP))
    # OBJ (protocol 1): MARK callable args OBJ
    out.append(("obj_p1", "obj", pickle.MARK + g("posix", "system") + u(CMD, 1) + pickle.OBJ + pickle.STOP))
    # NEWOBJ (protocol 2) with a hostile class
    argv = pickle.EMPTY_LIST + pickle.MARK + u("touch", 2) + u(MARKER, 2) + pickle.APPENDS
    out.append(("newobj_p2", "newobj",
                hdr(2) + g("subprocess", "Popen") + argv + pickle.TUPLE1 + pickle.NEWOBJ + pickle.STOP))
    # NEWOBJ_EX (protocol 4): cls, args, kwargs
    argv4 = pickle.EMPTY_LIST + pickle.MARK + u("touch", 4) + u(MARKER, 4) + pickle.APPENDS
    kwargs = pickle.EMPTY_DICT + u("close_fds", 4) + pickle.NEWTRUE + pickle.SETITEM
    out.append(("newobj_ex_p4", "newobj-ex",
                hdr(4) + sg("subprocess", "Popen") + argv4 + pickle.TUPLE1 + kwargs + pickle.NEWOBJ_EX
                + pickle.STOP))
    # BUILD: the first state plants __setstate__ = posix.system in the instance dict,
    # the second BUILD calls it with the command.
    out.append(("build_setstate_p2", "build-setstate",
                hdr(2) + g("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
                + pickle.EMPTY_DICT + u("__setstate__", 2) + g("posix", "system") + pickle.SETITEM
                + pickle.BUILD + u(CMD, 2) + pickle.BUILD + pickle.STOP))
    # STACK_GLOBAL dotted names resolve through the module's attributes (protocol 4+)
    out.append(("dotted_sklearn_base_p4", "stack-global-dotted-name",
                hdr(4) + sg("sklearn.base", "inspect.os.system") + u(CMD, 4) + pickle.TUPLE1 + pickle.REDUCE
                + pickle.STOP))
    out.append(("dotted_numpy_p5", "stack-global-dotted-name",
                hdr(5) + sg("numpy", "_pytesttester.os.system") + u(CMD, 5) + pickle.TUPLE1 + pickle.REDUCE
                + pickle.STOP))
    out.append(("dotted_sys_modules_p4", "stack-global-dotted-sys-modules",
                hdr(4) + pickle.EMPTY_DICT + u("modules", 4) + sg("numpy", "_core._internal.sys.modules")
                + pickle.SETITEM + pickle.STOP))
    # copyreg extension registry codes
    out.append(("ext1_p2", "ext1",
                hdr(2) + pickle.EXT1 + bytes([240]) + u(CMD, 2) + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP))
    out.append(("ext2_p3", "ext2",
                hdr(3) + pickle.EXT2 + struct.pack("<H", 0x1234) + u(CMD, 3) + pickle.TUPLE1 + pickle.REDUCE
                + pickle.STOP))
    for _stem, _t, data in out:
        check_pickle_static(data)
    return out


def desync_joblib():
    """(stem, technique, bytes): joblib streams built so that a walker that sizes an array
    wrapper differently from joblib walks the array's bytes as opcodes and swallows the
    hostile opcodes joblib runs after them into a BINBYTES argument. Each stream is valid
    both ways: joblib reads the array, runs the payload, pops its result and stops; the
    mis-sizing walker sees one bytes value, pops it and stops."""
    def wrapper_state(shape_items, elsize=-1):
        dtype = (sg("numpy", "dtype") + u("f8", 4) + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3
                 + pickle.REDUCE + pickle.MARK + pickle.BININT1 + bytes([3]) + u("<", 4) + pickle.NONE
                 + pickle.NONE + pickle.NONE + pickle.BININT + struct.pack("<i", elsize)
                 + pickle.BININT + struct.pack("<i", -1) + pickle.BININT1 + bytes([0]) + pickle.TUPLE
                 + pickle.BUILD)
        items = (u("subclass", 4) + sg("numpy", "ndarray") + u("order", 4) + u("C", 4) + u("dtype", 4) + dtype
                 + u("allow_mmap", 4) + pickle.NEWFALSE + shape_items)
        return pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS

    def shape(n):
        return u("shape", 4) + pickle.BININT + struct.pack("<i", n) + pickle.TUPLE1

    payload = sg("posix", "system") + u(CMD, 4) + pickle.TUPLE1 + pickle.REDUCE

    def swallow(data_len, at):
        # BINBYTES at `at`, covering the rest of the data and the payload.
        n = data_len - at - 5 + len(payload)
        return pickle.BINBYTES + struct.pack("<I", n)

    def tail(data):
        return data + payload + pickle.POP + pickle.STOP

    out = []
    new_wrapper = sg("joblib.numpy_pickle", "NumpyArrayWrapper") + pickle.EMPTY_TUPLE + pickle.NEWOBJ
    # 1. `shape` twice in the state dict: the last one is the one BUILD sets.
    count = 4
    data = b"\x00" * 8 + swallow(8 * count, 8)
    data += b"\x00" * (8 * count - len(data))
    state = wrapper_state(shape(1) + shape(count))
    out.append(("joblib_desync_duplicate_shape", "joblib-wrapper-duplicate-shape-key",
                hdr(4) + new_wrapper + state + pickle.BUILD + tail(data)))
    # 2. The wrapper made by copyreg._reconstructor(cls, object, None), not by the class.
    recon = (sg("copyreg", "_reconstructor") + sg("joblib.numpy_pickle", "NumpyArrayWrapper")
             + sg("builtins", "object") + pickle.NONE + pickle.TUPLE3 + pickle.REDUCE)
    data = swallow(8 * count, 0)
    data += b"\x00" * (8 * count - len(data))
    state = wrapper_state(shape(count))
    out.append(("joblib_desync_reconstructor", "joblib-wrapper-made-by-reconstructor",
                hdr(4) + recon + state + pickle.BUILD + tail(data)))
    # 3. A fixed-size dtype whose state claims another element size: NumPy ignores it.
    data = b"\x00" * count + swallow(8 * count, count)
    data += b"\x00" * (8 * count - len(data))
    out.append(("joblib_desync_elsize", "joblib-wrapper-dtype-elsize-lie",
                hdr(4) + new_wrapper + wrapper_state(shape(count), ELSIZE_LIE) + pickle.BUILD + tail(data)))
    return out


# The element size a lying dtype state claims for `f8` (NumPy sizes it 8 whatever it says).
ELSIZE_LIE = 1


def add_hostile(c: Corpus):
    pays = _payloads()
    for tech, proto in RAW_OBJECT_PICKLES:
        data = pickle.dumps(pays[tech], protocol=proto)
        check_pickle_static(data)
        c.add(f"hostile/{tech.replace('-', '_')}_p{proto}.pkl", data, "unsafe", "pickle", tech)
    for stem, tech, data in hand_pickles():
        c.add(f"hostile/{stem}.pkl", data, "unsafe", "pickle", tech)
    # a hostile pickle nested as bytes inside a benign pickled dict
    inner = pickle.dumps(pays["os-system"], protocol=2)
    outer = pickle.dumps({"format": "model-bundle", "weights": [0.25, -0.5, 1.0], "blob": inner}, protocol=4)
    c.add("hostile/nested_bytes_p4.pkl", outer, "unsafe", "pickle", "nested-pickle-in-bytes")
    inner = pickle.dumps(pays["subprocess-check-output"], protocol=4)
    outer = pickle.dumps({"format": "model-bundle", "extra": [{"name": "cache", "payload": inner}]}, protocol=5)
    c.add("hostile/nested_bytes_p5.pkl", outer, "unsafe", "pickle", "nested-pickle-in-bytes")
    # joblib, uncompressed and with each compressor
    for tech, comp in JOBLIB_SELECTION:
        suffix = "" if comp is None else f"_{comp}"
        c.add(f"hostile/{tech.replace('-', '_')}{suffix}.joblib", jdump(pays[tech], comp), "unsafe", "joblib",
              tech + ("" if comp is None else f"-{comp}"))
    # joblib: the NumpyArrayWrapper of an object-dtype array carries the payload
    bundle = {"coef": np.arange(4.0), "classes": np.array([0, 1]),
              "extras": np.array([pays["os-system"], 1.5], dtype=object)}
    c.add("hostile/object_array_wrapper.joblib", jdump(bundle), "unsafe", "joblib",
          "joblib-object-array-wrapper")
    c.add("hostile/object_array_wrapper_zlib.joblib", jdump(bundle, "zlib"), "unsafe", "joblib",
          "joblib-object-array-wrapper-zlib")
    # joblib streams that desynchronise a walker that sizes array wrappers unlike joblib
    for stem, tech, data in desync_joblib():
        c.add(f"hostile/{stem}.joblib", data, "unsafe", "joblib", tech, ["posix.system"])
    # NumPy object arrays
    arr = np.array([pays["os-system"], "padding"], dtype=object)
    c.add("hostile/object_array.npy", npy_bytes(arr, allow_pickle=True), "unsafe", "npy", "npy-object-array")
    c.add("hostile/object_array.npz",
          npz_bytes(False, weights=np.arange(6.0), payload=np.array([pays["builtins-eval"]], dtype=object)),
          "unsafe", "npz", "npz-object-array")
    # PyTorch-style zips
    torch = _fake_torch()
    sd, blobs = _state_dict(torch)
    sd["_hook"] = pays["os-system"]
    c.add("hostile/torch_data_pkl.pt", torch_zip(_torch_records(torch_pickle(sd), blobs)), "unsafe",
          "torch-zip", "torch-zip-data-pkl")
    sd, blobs = _state_dict(torch)
    extra = [("extra_state.pkl", pickle.dumps(pays["runpy-run-code"], protocol=2))]
    c.add("hostile/torch_second_pkl.pt", torch_zip(_torch_records(torch_pickle(sd), blobs, extra=extra)),
          "unsafe", "torch-zip", "torch-zip-second-pkl-member")
    # Two entries named data.pkl: a benign one and a hostile one; loaders differ in which
    # they read, so both must be judged.
    sd, blobs = _state_dict(torch)
    bad = dict(sd)
    bad["_hook"] = pays["os-system"]
    extra = [("data.pkl", torch_pickle(bad))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        dup = torch_zip(_torch_records(torch_pickle(sd), blobs, extra=extra))
    c.add("hostile/torch_duplicate_data_pkl.pt", dup, "unsafe", "torch-zip",
          "torch-zip-duplicate-data-pkl", ["posix.system"])
    # Keras 3
    c.add("hostile/keras_lambda.keras", keras_archive("lambda"), "unsafe", "keras", "keras3-lambda-layer",
          ["keras.layers.Lambda"])
    c.add("hostile/keras_custom_object.keras", keras_archive("custom"), "unsafe", "keras",
          "keras3-registered-custom-object", ["my_pkg.layers.MyLayer"])


# ---------------------------------------------------------------------------
# Malformed
# ---------------------------------------------------------------------------


def add_malformed(c: Corpus):
    from sklearn.linear_model import LogisticRegression

    X, y, _ = tiny_data()
    good = pickle.dumps(LogisticRegression(max_iter=200).fit(X, y), protocol=4)
    c.add("malformed/truncated_p4.pkl", good[: len(good) // 2], "error", "pickle", "truncated-mid-stream")
    unknown = next(b for b in range(0xF0, 0x100) if chr(b) not in pickletools.code2op)
    c.add("malformed/unknown_opcode.pkl", hdr(2) + pickle.NONE + bytes([unknown]) + pickle.STOP, "error",
          "pickle", f"unknown-opcode-0x{unknown:02x}")
    c.add("malformed/mark_unclosed.pkl", hdr(2) + pickle.BININT1 + b"\x01" + pickle.MARK + pickle.STOP, "error",
          "pickle", "mark-never-closed")
    c.add("malformed/pop_empty_stack.pkl", hdr(2) + pickle.POP + pickle.NONE + pickle.STOP, "error", "pickle",
          "pop-on-empty-stack")
    c.add("malformed/memo_get_missing.pkl", hdr(2) + pickle.NONE + pickle.BINPUT + b"\x00" + pickle.POP
          + pickle.BINGET + b"\x05" + pickle.STOP, "error", "pickle", "memo-get-missing-index")
    c.add("malformed/binbytes_past_end.pkl", hdr(3) + pickle.BINBYTES + struct.pack("<I", 4096) + b"abc"
          + pickle.STOP, "error", "pickle", "binbytes-length-past-end")
    gz = jdump(LogisticRegression(max_iter=200).fit(X, y), "gzip")
    c.add("malformed/gzip_cut_in_half.joblib", gz[: len(gz) // 2], "error", "joblib", "joblib-gzip-truncated")
    t = _st_tensors()
    c.add("malformed/safetensors_offsets_past_end.safetensors",
          safetensors_bytes(t, {"format": "pt"}, {"head.weight": [116, 128]}), "error", "safetensors",
          "safetensors-offsets-past-end")
    c.add("malformed/safetensors_overlap.safetensors",
          safetensors_bytes(t, {"format": "pt"}, {"dense.bias": [88, 100]}), "error", "safetensors",
          "safetensors-offsets-overlap")
    full = safetensors_bytes(t, {"format": "pt"})
    c.add("malformed/safetensors_header_too_long.safetensors", struct.pack("<Q", len(full) * 4) + full[8:],
          "error", "safetensors", "safetensors-header-length-past-end")
    body = "[('descr', '<f8'), ('fortran_order', False), ('shape', (3,))]"
    head = body + " " * (-(10 + len(body) + 1) % 64) + "\n"
    c.add("malformed/npy_header_not_dict.npy",
          b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode() + np.zeros(3).tobytes(), "error",
          "npy", "npy-header-not-dict-literal")
    short = npy_bytes(np.arange(10.0))
    c.add("malformed/npy_data_short.npy", short[:-24], "error", "npy", "npy-data-shorter-than-shape")
    torch = _fake_torch()
    sd, blobs = _state_dict(torch)
    c.add("malformed/torch_missing_storage.pt",
          torch_zip(_torch_records(torch_pickle(sd), [b for b in blobs if b[0] != "1"])), "error", "torch-zip",
          "torch-zip-storage-key-missing")


def main() -> int:
    ap = argparse.ArgumentParser(description="Build the verify --scan model corpus.")
    ap.add_argument("--out", type=Path, default=ROOT / "testdata/models")
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    c = Corpus(args.out)
    add_benign(c)
    add_hostile(c)
    add_malformed(c)
    c.write_truth()
    files = [p for p in args.out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    by = collections.Counter(t["expect"] for t in c.truth.values())
    print(f"wrote {len(files)} files ({size} bytes) under {args.out}: "
          + ", ".join(f"{k} {by[k]}" for k in sorted(by)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
