#!/usr/bin/env python3
"""Write two ~1 GiB model files for timing `poisongate verify --scan` against reading them.

From the repository root, with the test-data venv (numpy, scikit-learn, joblib):

    /tmp/pgvenv/bin/python benches/scan/big_checkpoint.py [--out /tmp/pg-scan-big] [--mib 1024]

writes into --out:

    big_state_dict.pt   a PyTorch-style zip checkpoint laid out like
                        testdata/models/benign/torch_state_dict.pt: `archive/data.pkl`
                        (protocol 2 pickle of an OrderedDict of tensors rebuilt with
                        torch._utils._rebuild_tensor_v2, persistent ids
                        ('storage', torch.FloatStorage, key, 'cpu', numel)), the records
                        `archive/data/<key>` stored uncompressed and 64-byte aligned,
                        `archive/byteorder`, `archive/version`,
                        `archive/.data/serialization_id`; 64 float32 tensors of 2048x2048
                        (4 Mi floats, 16 MiB each) by default
    big_model.joblib    an uncompressed `joblib.dump` of a dict of four float64 arrays
                        (the bulk) and a fitted LogisticRegression

The pickle-writing helpers are reused from make_corpus.py (no torch needed); tensor
data is written one record at a time, so memory stays near one tensor for the zip
(the joblib dump holds its arrays in memory, ~1 GiB). The files are scratch: delete
the directory when done.
"""

from __future__ import annotations

import os
import sys

# make_corpus.py re-executes sys.argv on import unless these are set; set them first so
# that happens (if at all) before anything is written.
_PINNED = {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
if any(os.environ.get(k) != v for k, v in _PINNED.items()):
    _env = dict(os.environ)
    _env.update(_PINNED)
    os.execve(sys.executable, [sys.executable] + sys.argv, _env)

import argparse  # noqa: E402
import collections  # noqa: E402
import importlib.util  # noqa: E402
import struct  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent


def load_make_corpus():
    sys.dont_write_bytecode = True
    spec = importlib.util.spec_from_file_location("make_corpus", HERE / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_corpus"] = mod
    spec.loader.exec_module(mod)
    return mod


def write_torch_zip(path: Path, mc, n_tensors: int, side: int, prefix="archive") -> None:
    import numpy as np

    torch = mc._fake_torch()
    numel = side * side
    sd = collections.OrderedDict()
    keys = []
    for i in range(n_tensors):
        key = str(i)
        st = mc.FakeStorage(key, torch.FloatStorage, numel, None)
        sd[f"layers.{i}.weight"] = mc.FakeTensor(st, (side, side))
        keys.append(key)
    sd._metadata = collections.OrderedDict([("", {"version": 1})] +
                                           [(f"layers.{i}", {"version": 1}) for i in range(n_tensors)])
    pkl = mc.torch_pickle(sd)
    rng = np.random.default_rng(7)

    def records():
        # same order as make_corpus._torch_records(layout="v2")
        yield "data.pkl", pkl
        yield "byteorder", b"little"
        for k in sorted(keys):
            yield f"data/{k}", rng.standard_normal(numel, dtype=np.float32).astype("<f4").tobytes()
        yield "version", b"3\n"
        yield ".data/serialization_id", b"1180470412850366204108123460917425614620"

    with open(path, "wb") as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in records():  # as make_corpus.torch_zip, to a file instead of a buffer
            zi = zipfile.ZipInfo(f"{prefix}/{name}", date_time=mc.ZIP_DATE)
            zi.compress_type = zipfile.ZIP_STORED
            base = f.tell() + 30 + len(zi.filename.encode()) + 4
            pad = -base % 64
            zi.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            zf.writestr(zi, data)


def write_joblib(path: Path, total_mib: int) -> None:
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(11)
    X = rng.normal(size=(200, 8))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    clf = LogisticRegression(max_iter=200).fit(X, y)
    per = total_mib * 1024 * 1024 // 8 // 4  # float64 elements per array, four arrays
    obj = {"model": clf}
    for name in ("embeddings", "item_factors", "user_factors", "lookup"):
        obj[name] = rng.standard_normal(per)
    joblib.dump(obj, path)  # uncompressed: arrays follow their NumpyArrayWrapper raw


def main() -> int:
    ap = argparse.ArgumentParser(description="Write ~1 GiB torch-zip and joblib files for scan timing.")
    ap.add_argument("--out", type=Path, default=Path("/tmp/pg-scan-big"))
    ap.add_argument("--mib", type=int, default=1024, help="approximate size of each file in MiB")
    ap.add_argument("--only", choices=["torch", "joblib"], help="write just one of the two")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    side = 2048
    n_tensors = max(1, args.mib * 1024 * 1024 // (side * side * 4))
    # joblib first: make_corpus registers stand-in `torch` modules, which scipy (imported
    # by scikit-learn) would take for the real torch.
    if args.only in (None, "joblib"):
        p = args.out / "big_model.joblib"
        write_joblib(p, args.mib)
        print(f"{p}: {p.stat().st_size} bytes (4 float64 arrays + LogisticRegression)")
    if args.only in (None, "torch"):
        mc = load_make_corpus()
        p = args.out / "big_state_dict.pt"
        write_torch_zip(p, mc, n_tensors, side)
        print(f"{p}: {p.stat().st_size} bytes ({n_tensors} tensors of {side}x{side} float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
