#!/usr/bin/env python3
"""Generate src/scan/allowlist.tsv, the built-in allowlist of `poisongate verify --scan`.

Run from the repository root, after benches/scan/make_corpus.py:

    /tmp/pgvenv/bin/python scripts/gen_scan_allowlist.py
    /tmp/pgvenv/bin/python scripts/gen_scan_allowlist.py --check   # also re-check testdata/models/truth.json

The allowlist is not guessed. Every estimator of `sklearn.utils.all_estimators()`
that can be fitted on a tiny synthetic data set is fitted, written with
`joblib.dump` and with `pickle.dumps` (protocols 2 and 5), and every global its
pickle imports is read *statically* (pickletools.genops; GLOBAL, INST, and
STACK_GLOBAL with its two string operands resolved through the stack and the
memo). The globals of the benign files of testdata/models/ are added, and a few
fixed families (NumPy reconstruction, joblib's array wrapper, PyTorch tensor
rebuild, the XGBoost and LightGBM scikit-learn wrappers, harmless Python
containers). A hard denylist is applied last: a denied global never enters the
list, even when an estimator imports it (a warning names the estimator).

Nothing is ever unpickled here: the estimators are pickled, and their pickles
(and the corpus files) are only walked opcode by opcode.

With the same package versions the output is byte-identical from run to run.
"""

from __future__ import annotations

import argparse
import ast
import bz2
import gzip
import io
import json
import lzma
import os
import pickletools
import struct
import sys
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------
# Static pickle walker (shared with benches/scan/make_corpus.py)
# ---------------------------------------------------------------------------


class ScanError(Exception):
    """The file is malformed: the walk could not finish."""


class Sym:
    """An opaque value on the symbolic stack (a global, a call, a persistent id)."""

    __slots__ = ("kind", "a", "b", "state")

    def __init__(self, kind, a=None, b=None):
        self.kind = kind
        self.a = a
        self.b = b
        self.state = None

    def is_global(self, module, name):
        return self.kind == "global" and self.a == module and self.b == name


class Dict:
    """A pickled dict as a list of pairs (keys need not be hashable)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs=()):
        self.pairs = list(pairs)

    def get(self, key, default=None):
        for k, v in self.pairs:
            if isinstance(k, str) and k == key:
                return v
        return default


EXT = "#ext"  # module slot of an extension-registry code (EXT1/EXT2/EXT4)
MAX_DEPTH = 6
PICKLE_PROTOS = (2, 3, 4, 5)


def looks_like_pickle(b: bytes) -> bool:
    return len(b) >= 3 and b[0] == 0x80 and b[1] in PICKLE_PROTOS and b[-1:] == b"."


def render(g) -> str:
    module, name = g
    if module == EXT:
        return f"ext:{name}"
    return f"{module}.{name}"


def _joblib_skip_array(f, wrapper: Sym, globals_, depth, persids):
    """Skip (or walk) the array payload joblib writes right after a NumpyArrayWrapper's BUILD."""
    import numpy as np  # only to turn a dtype string like 'f8' into an item size

    state = wrapper.state
    if not isinstance(state, Dict):
        raise ScanError("NumpyArrayWrapper state is not a dict")
    dt = state.get("dtype")
    shape = state.get("shape")
    if not (isinstance(dt, Sym) and dt.kind == "call" and isinstance(dt.b, tuple) and dt.b
            and isinstance(dt.b[0], str)):
        raise ScanError("NumpyArrayWrapper dtype is not numpy.dtype(<str>, ...)")
    # numpy.dtype's state: (version, byteorder, subdescr, names, fields, elsize, alignment, flags);
    # elsize is -1 for fixed-size kinds and the item size for flexible and structured ones.
    dstate = dt.state
    descr = dt.b[0]
    try:
        base = np.dtype(descr)
    except TypeError as e:
        raise ScanError(f"bad dtype {descr!r}: {e}") from None
    itemsize, hasobject = base.itemsize, base.hasobject
    if isinstance(dstate, tuple) and len(dstate) >= 8:
        if isinstance(dstate[5], int) and dstate[5] > 0:
            itemsize = dstate[5]
        if isinstance(dstate[7], int) and dstate[7] & 1:  # NPY_ITEM_REFCOUNT: holds objects
            hasobject = True
    if not isinstance(shape, tuple) or not all(isinstance(x, int) and x >= 0 for x in shape):
        raise ScanError("NumpyArrayWrapper shape is not a tuple of ints")
    if hasobject:
        # a nested, complete pickle stream of the object array
        walk_pickle_stream(f, globals_, depth + 1, persids)
        return
    count = 1
    for x in shape:
        count *= x
    data = f.getbuffer()
    end = len(data)
    if state.get("numpy_array_alignment_bytes") is not None:
        pad = f.read(1)
        if len(pad) != 1:
            raise ScanError("joblib array padding byte missing")
        if f.tell() + pad[0] > end:
            raise ScanError("joblib array padding runs past the end")
        f.seek(pad[0], io.SEEK_CUR)
    n = count * itemsize
    if f.tell() + n > end:
        raise ScanError("joblib array data runs past the end")
    f.seek(n, io.SEEK_CUR)


def walk_pickle_stream(f: io.BytesIO, globals_: set, depth: int = 0, persids: list | None = None):
    """Walk one pickle stream from f's position to its STOP. Collects (module, name) globals.

    Raises ScanError on anything a real unpickler would refuse (stack or memo
    errors, truncation, unknown opcodes) and on joblib array data that runs past
    the end.
    """
    if depth > MAX_DEPTH:
        raise ScanError("nesting too deep")
    # NB: pop_mark() rebinds `stack`; never write stack.append(<expr calling pop_mark()>)
    stack: list = []
    meta: list = []
    memo: dict = {}

    def pop():
        if not stack:
            raise ScanError("stack underflow")
        return stack.pop()

    def top():
        if not stack:
            raise ScanError("stack underflow")
        return stack[-1]

    def pop_mark():
        nonlocal stack
        if not meta:
            raise ScanError("no MARK to pop to")
        items = stack
        stack = meta.pop()
        return items

    try:
        ops = pickletools.genops(f)
        for op, arg, _pos in ops:
            n = op.name
            if n in ("PROTO", "FRAME"):
                continue
            if n == "STOP":
                value = pop()
                return value
            if n == "MARK":
                meta.append(stack)
                stack = []
            elif n == "POP":
                if stack:
                    stack.pop()
                else:
                    pop_mark()
            elif n == "POP_MARK":
                pop_mark()
            elif n == "DUP":
                stack.append(top())
            elif n in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
                       "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE",
                       "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"):
                stack.append(arg)
            elif n in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
                b = bytes(arg)
                if looks_like_pickle(b):
                    # bytes that are themselves a pickle are followed
                    inner: set = set()
                    try:
                        walk_pickle_stream(io.BytesIO(b), inner, depth + 1, None)
                        globals_ |= inner
                    except ScanError:
                        pass
                stack.append(b)
            elif n == "NONE":
                stack.append(None)
            elif n == "NEWTRUE":
                stack.append(True)
            elif n == "NEWFALSE":
                stack.append(False)
            elif n in ("NEXT_BUFFER", "READONLY_BUFFER"):
                if n == "NEXT_BUFFER":
                    stack.append(Sym("buffer"))
                else:
                    top()
            elif n == "EMPTY_LIST":
                stack.append([])
            elif n == "EMPTY_DICT":
                stack.append(Dict())
            elif n == "EMPTY_TUPLE":
                stack.append(())
            elif n == "EMPTY_SET":
                stack.append(Sym("set"))
            elif n == "LIST":
                v = list(pop_mark())
                stack.append(v)
            elif n == "TUPLE":
                v = tuple(pop_mark())
                stack.append(v)
            elif n == "TUPLE1":
                a = pop()
                stack.append((a,))
            elif n == "TUPLE2":
                b_ = pop()
                a = pop()
                stack.append((a, b_))
            elif n == "TUPLE3":
                c = pop()
                b_ = pop()
                a = pop()
                stack.append((a, b_, c))
            elif n == "DICT":
                items = pop_mark()
                if len(items) % 2:
                    raise ScanError("odd number of items for DICT")
                v = Dict(zip(items[0::2], items[1::2]))
                stack.append(v)
            elif n == "FROZENSET":
                pop_mark()
                stack.append(Sym("frozenset"))
            elif n == "APPEND":
                v = pop()
                t = top()
                if isinstance(t, list):
                    t.append(v)
            elif n == "APPENDS":
                items = pop_mark()
                t = top()
                if isinstance(t, list):
                    t.extend(items)
            elif n == "SETITEM":
                v = pop()
                k = pop()
                t = top()
                if isinstance(t, Dict):
                    t.pairs.append((k, v))
            elif n == "SETITEMS":
                items = pop_mark()
                if len(items) % 2:
                    raise ScanError("odd number of items for SETITEMS")
                t = top()
                if isinstance(t, Dict):
                    t.pairs.extend(zip(items[0::2], items[1::2]))
            elif n == "ADDITEMS":
                pop_mark()
                top()
            elif n in ("GLOBAL", "INST"):
                module, _, name = arg.partition(" ")
                globals_.add((module, name))
                g = Sym("global", module, name)
                if n == "GLOBAL":
                    stack.append(g)
                else:
                    v = Sym("call", g, tuple(pop_mark()))
                    stack.append(v)
            elif n == "STACK_GLOBAL":
                name = pop()
                module = pop()
                if not isinstance(module, str) or not isinstance(name, str):
                    raise ScanError("STACK_GLOBAL operands are not strings")
                globals_.add((module, name))
                stack.append(Sym("global", module, name))
            elif n == "OBJ":
                items = pop_mark()
                if not items:
                    raise ScanError("OBJ without a class")
                stack.append(Sym("call", items[0], tuple(items[1:])))
            elif n == "NEWOBJ":
                args = pop()
                cls = pop()
                stack.append(Sym("call", cls, args))
            elif n == "NEWOBJ_EX":
                pop()  # kwargs
                args = pop()
                cls = pop()
                stack.append(Sym("call", cls, args))
            elif n == "REDUCE":
                args = pop()
                func = pop()
                stack.append(Sym("call", func, args))
            elif n == "BUILD":
                state = pop()
                obj = top()
                if isinstance(obj, Sym):
                    obj.state = state
                    if (obj.kind == "call" and isinstance(obj.a, Sym)
                            and obj.a.is_global("joblib.numpy_pickle", "NumpyArrayWrapper")):
                        _joblib_skip_array(f, obj, globals_, depth, persids)
            elif n == "PERSID":
                pid = Sym("persid", arg)
                if persids is not None:
                    persids.append(arg)
                stack.append(pid)
            elif n == "BINPERSID":
                pid = pop()
                if persids is not None:
                    persids.append(pid)
                stack.append(Sym("persid", pid))
            elif n in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise ScanError(f"memo index {arg} not found")
                stack.append(memo[arg])
            elif n in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = top()
            elif n == "MEMOIZE":
                memo[len(memo)] = top()
            elif n in ("EXT1", "EXT2", "EXT4"):
                globals_.add((EXT, str(arg)))
                stack.append(Sym("global", EXT, str(arg)))
            else:
                raise ScanError(f"unhandled opcode {n}")
    except ValueError as e:  # pickletools: unknown opcode, truncated argument, no STOP
        raise ScanError(str(e)) from None
    raise ScanError("pickle ended without STOP")


# --- containers -------------------------------------------------------------

COMPRESSED = (
    (b"\x1f\x8b", "gzip", gzip.decompress),
    (b"BZh", "bz2", bz2.decompress),
    (b"\xfd7zXZ\x00", "xz", lzma.decompress),
    (b"\x5d\x00\x00", "lzma", lzma.decompress),
    (b"\x78", "zlib", zlib.decompress),
)


def scan_pickle_bytes(data: bytes, globals_: set, persids=None):
    for magic, _name, fn in COMPRESSED:
        if data.startswith(magic):
            try:
                data = fn(data)
            except Exception as e:  # truncated or corrupt compressed stream
                raise ScanError(f"decompression failed: {e}") from None
            break
    f = io.BytesIO(data)
    walk_pickle_stream(f, globals_, 0, persids)


def parse_npy(data: bytes, globals_: set):
    if not data.startswith(b"\x93NUMPY"):
        raise ScanError("not an npy file")
    if len(data) < 10:
        raise ScanError("npy header truncated")
    major = data[6]
    if major == 1:
        (hlen,) = struct.unpack_from("<H", data, 8)
        start = 10
    elif major in (2, 3):
        if len(data) < 12:
            raise ScanError("npy header truncated")
        (hlen,) = struct.unpack_from("<I", data, 8)
        start = 12
    else:
        raise ScanError(f"npy version {major} unknown")
    if start + hlen > len(data):
        raise ScanError("npy header runs past the end")
    text = data[start:start + hlen].decode("latin1")
    try:
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise ScanError(f"npy header is not a literal: {e}") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ScanError("npy header is not a dict with descr, fortran_order, shape")
    import numpy as np

    try:
        dtype = np.dtype(header["descr"])
    except TypeError as e:
        raise ScanError(f"npy descr: {e}") from None
    body = data[start + hlen:]
    if dtype.hasobject:
        walk_pickle_stream(io.BytesIO(body), globals_, 0, None)
        return
    count = 1
    for x in header["shape"]:
        count *= x
    if len(body) < count * dtype.itemsize:
        raise ScanError("npy data shorter than its shape says")


ST_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
            "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def parse_safetensors(data: bytes):
    if len(data) < 8:
        raise ScanError("safetensors header length truncated")
    (n,) = struct.unpack_from("<Q", data, 0)
    if 8 + n > len(data):
        raise ScanError("safetensors header length larger than the file")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        raise ScanError(f"safetensors header: {e}") from None
    body = len(data) - 8 - n
    spans = []
    for k, v in header.items():
        if k == "__metadata__":
            continue
        lo, hi = v["data_offsets"]
        size = ST_SIZES[v["dtype"]]
        for d in v["shape"]:
            size *= d
        if not (0 <= lo <= hi <= body):
            raise ScanError(f"{k}: data_offsets run past the file")
        if hi - lo != size:
            raise ScanError(f"{k}: data_offsets do not match dtype and shape")
        spans.append((lo, hi))
    spans.sort()
    for (a0, a1), (b0, _b1) in zip(spans, spans[1:]):
        if b0 < a1:
            raise ScanError("safetensors data_offsets overlap")


def keras_unsafe(cfg) -> set:
    """Objects of a Keras 3 config.json a loader would have to import or run."""
    out = set()

    def walk(o):
        if isinstance(o, dict):
            if "class_name" in o and "config" in o:
                module = o.get("module")
                cls = o["class_name"]
                custom = o.get("registered_name") not in (None, cls)
                foreign = module is not None and not (module == "keras" or module.startswith("keras."))
                if custom or foreign or cls == "Lambda":  # Lambda carries marshalled Python code
                    out.add((module or "keras.layers", cls))
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(cfg)
    return out


def scan_file(path: Path) -> set:
    """All globals a file imports, as (module, name). Raises ScanError if malformed."""
    data = path.read_bytes()
    globals_: set = set()
    if data.startswith(b"PK\x03\x04"):
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            names = zf.namelist()
        except zipfile.BadZipFile as e:
            raise ScanError(str(e)) from None
        if "config.json" in names and "metadata.json" in names:
            globals_ |= keras_unsafe(json.loads(zf.read("config.json")))
            return globals_
        if all(n.endswith(".npy") for n in names):
            for n in names:
                parse_npy(zf.read(n), globals_)
            return globals_
        pkls = [n for n in names if n.endswith(".pkl")]
        if not pkls:
            raise ScanError("zip without a pickle")
        for n in pkls:
            persids: list = []
            scan_pickle_bytes(zf.read(n), globals_, persids)
            prefix = n.rsplit("/", 1)[0]
            for pid in persids:
                if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage":
                    if f"{prefix}/data/{pid[2]}" not in names:
                        raise ScanError(f"{n}: storage {pid[2]!r} not in the archive")
        return globals_
    if data.startswith(b"\x93NUMPY"):
        parse_npy(data, globals_)
        return globals_
    if len(data) >= 9 and data[8:9] == b"{":
        parse_safetensors(data)
        return globals_
    scan_pickle_bytes(data, globals_)
    return globals_


# ---------------------------------------------------------------------------
# Allowlist
# ---------------------------------------------------------------------------

GROUPS = {
    "joblib-wrapper": "joblib's array placeholders: record shape, dtype and order; array bytes are read as data",
    "lightgbm": "LightGBM scikit-learn wrappers and Booster: the model is restored from a model string, no code",
    "numpy-reconstruct": "NumPy array, dtype, scalar and RandomState/Generator reconstruction from raw bytes and plain state",
    "numpy-function": "NumPy reductions estimators keep as parameters (e.g. pooling_func=numpy.mean): pure math, no I/O",
    "numpy-type": "NumPy scalar types and dtype classes referenced as values (e.g. an estimator's dtype parameter)",
    "numpy-ufunc": "NumPy ufuncs: pure element-wise math on arrays, no I/O, no imports, no code objects",
    "python-builtin-container": "Python constructors of plain data (containers, numbers, bytes, slices, ranges)",
    "python-codec": "_codecs.encode: how protocol <= 2 stores bytes; codecs resolve only inside the encodings package",
    "python-copyreg": "copyreg/copy_reg object reconstruction helpers: call __new__/__init__ of a class that must itself be allowlisted",
    "scipy-helper": "SciPy data containers (sparse matrices and the like) and helpers fitted estimators keep",
    "sklearn-estimator": "scikit-learn estimator classes: created with __new__, state restored as plain attributes",
    "sklearn-helper": ("scikit-learn internals fitted estimators keep (trees, losses, binners, distance metrics, "
                       "kernels, scorers) and the scoring functions they hold as parameters (f_classif, ...)"),
    "torch-rebuild": "PyTorch tensor/storage rebuild functions, storage types and dtypes: build tensors from archive bytes",
    "xgboost": "XGBoost scikit-learn wrappers and Booster: the model is restored from a raw model buffer, no code",
}

NUMPY_RECONSTRUCT = [
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy.random", "__RandomState_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._philox", "Philox"),
    ("numpy.random._sfc64", "SFC64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random.mtrand", "RandomState"),
    ("numpy.random._generator", "Generator"),
]

# Functions of numpy's namespace that estimators keep as parameters; anything
# else callable from numpy is left out unless it is a ufunc or a type.
NUMPY_REDUCTIONS = {"mean", "median", "average", "sum", "max", "min", "amax", "amin", "std", "var", "prod",
                    "nanmean", "nanmedian", "nansum", "nanmax", "nanmin", "argmax", "argmin"}

JOBLIB = [
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("joblib.numpy_pickle", "NDArrayWrapper"),
    ("joblib.numpy_pickle_compat", "NDArrayWrapper"),
    ("joblib.numpy_pickle_compat", "ZNDArrayWrapper"),
    ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"),
]

TORCH_STORAGES = ["FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage",
                  "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage",
                  "ComplexFloatStorage", "ComplexDoubleStorage"]
TORCH_DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                "uint8", "bool", "complex64", "complex128", "uint16", "uint32", "uint64",
                "float8_e4m3fn", "float8_e5m2"]
TORCH = ([("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3"),
          ("torch._utils", "_rebuild_parameter"), ("torch.storage", "UntypedStorage"),
          ("torch", "UntypedStorage")]
         + [("torch", s) for s in TORCH_STORAGES] + [("torch", d) for d in TORCH_DTYPES])

XGBOOST = [("xgboost.sklearn", "XGBClassifier"), ("xgboost.sklearn", "XGBRegressor"),
           ("xgboost.sklearn", "XGBRanker"), ("xgboost.core", "Booster")]
LIGHTGBM = [("lightgbm.sklearn", "LGBMClassifier"), ("lightgbm.sklearn", "LGBMRegressor"),
            ("lightgbm.sklearn", "LGBMRanker"), ("lightgbm.basic", "Booster")]

# Harmless constructors of plain data. The py2 module name __builtin__ is what
# Python 3 writes (fix_imports) at protocols 0-2; range is xrange there.
BUILTIN_CTORS = ["set", "frozenset", "slice", "complex", "bytearray", "range", "bytes", "object",
                 "int", "float", "bool", "str", "list", "dict", "tuple"]
PY_BUILTIN = ([("builtins", n) for n in BUILTIN_CTORS]
              + [("__builtin__", n) for n in BUILTIN_CTORS if n != "range"]
              + [("__builtin__", "xrange"), ("collections", "OrderedDict"),
                 ("collections", "defaultdict")])
PY_COPYREG = [("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor")]  # __newobj__ only if seen
PY_CODEC = [("_codecs", "encode")]

DENY_MODULES = {
    "os", "posix", "nt", "subprocess", "pty", "sys", "runpy", "pickle", "_pickle", "marshal", "types",
    "ctypes", "importlib", "pkgutil", "pydoc", "code", "codeop", "cProfile", "profile", "threading",
    "_thread", "multiprocessing", "atexit", "socket", "webbrowser", "shutil", "tempfile", "io", "_io",
    "functools", "_functools", "operator", "_operator", "commands", "posixpath", "ntpath", "signal",
    "asyncio", "urllib", "http", "ftplib", "smtplib", "telnetlib", "bdb", "pdb", "timeit", "trace",
    "dill", "cloudpickle", "joblib.externals.cloudpickle", "shelve", "dbm", "sqlite3", "zipimport",
    "inspect", "gc", "weakref", "linecache", "glob", "builtins.open",
    "sklearn.datasets", "sklearn.utils._testing", "sklearn.utils._show_versions",
}
DENY_EXACT = {
    ("numpy", "load"), ("numpy", "save"), ("numpy", "savez"), ("numpy", "savez_compressed"),
    ("numpy", "loadtxt"), ("numpy", "savetxt"), ("numpy", "genfromtxt"), ("numpy", "fromfile"),
    ("numpy", "memmap"), ("numpy", "fromregex"), ("joblib", "load"), ("joblib", "dump"),
    ("joblib.numpy_pickle", "load"), ("joblib.numpy_pickle", "dump"), ("copyreg", "__newobj_ex__"),
    ("torch", "load"), ("torch", "save"), ("torch.serialization", "load"),
}


def denied(g) -> str | None:
    module, name = g
    if module == EXT:
        return "extension-registry code"
    top = module.split(".", 1)[0]
    if module in DENY_MODULES or top in DENY_MODULES or any(module.startswith(d + ".") for d in DENY_MODULES):
        return f"module {module} is denied"
    if module in ("builtins", "__builtin__"):
        allowed = set(BUILTIN_CTORS) | {"xrange"}
        if name not in allowed:
            return f"builtins.{name} is not a plain-data constructor"
    if g in DENY_EXACT or (top == "numpy" and name.split(".")[-1] in {n for _m, n in DENY_EXACT}):
        return "file I/O or unpickling entry point"
    if top == "numpy" and any(p in module for p in ("ctypeslib", "f2py", "distutils", "testing")):
        return "numpy ctypes/f2py/testing helpers"
    return None


def nested_class_ok(module: str, name: str) -> bool:
    """A dotted name is allowed only if it is a class defined nested (its __qualname__ is the name)."""
    import importlib

    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except Exception:
        return False
    return isinstance(obj, type) and obj.__module__ == module and obj.__qualname__ == name


def group_of(g, estimator_classes: set) -> str:
    module, name = g
    top = module.split(".", 1)[0]
    if g in set(PY_BUILTIN):
        return "python-builtin-container"
    if module in ("copyreg", "copy_reg"):
        return "python-copyreg"
    if g in set(PY_CODEC):
        return "python-codec"
    if g in set(JOBLIB) or top == "joblib":
        return "joblib-wrapper"
    if top == "torch":
        return "torch-rebuild"
    if top == "xgboost":
        return "xgboost"
    if top == "lightgbm":
        return "lightgbm"
    if top == "scipy":
        return "scipy-helper"
    if top == "sklearn":
        return "sklearn-estimator" if g in estimator_classes else "sklearn-helper"
    if top == "numpy":
        if g in set(NUMPY_RECONSTRUCT) or module.startswith("numpy.ma"):
            return "numpy-reconstruct"
        import numpy as np

        obj = getattr(np, name, None) if module == "numpy" else None
        if isinstance(obj, np.ufunc):
            return "numpy-ufunc"
        if isinstance(obj, type):
            return "numpy-type"
        if callable(obj) and name in NUMPY_REDUCTIONS:
            return "numpy-function"
        return "UNKNOWN"
    return "UNKNOWN"


def tiny_data():
    import numpy as np

    rng = np.random.default_rng(20240611)
    X = rng.normal(size=(40, 4))
    Xpos = np.abs(X) + 0.1
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    y3 = np.digitize(X[:, 0], [-0.5, 0.5])
    yr = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=40)
    return X, Xpos, y, y3, yr


def fit_one(name, cls, X, Xpos, y, yr):
    """Fit a fresh instance; returns the fitted estimator or raises."""
    import numpy as np

    text = ["the cat sat", "a dog ran", "the dog sat", "a cat ran"] * 5
    mod = cls.__module__
    if name == "FrozenEstimator":
        from sklearn.linear_model import LogisticRegression

        return cls(LogisticRegression().fit(X, y)).fit(X, y)
    inst = None
    try:
        from sklearn.utils._test_common.instance_generator import _construct_instances

        inst = next(iter(_construct_instances(cls)))
    except Exception:
        inst = cls()
    if name == "TfidfTransformer":
        return inst.fit((Xpos * 3).astype(np.int64))
    if "feature_extraction.text" in mod:
        return inst.fit(text)
    if name in ("ClassifierChain", "MultiOutputClassifier"):
        return inst.fit(X, np.c_[y, 1 - y])
    if name == "RegressorChain":
        return inst.fit(X, np.c_[yr, -yr])
    if name == "KernelCenterer":
        return inst.fit(X @ X.T)
    if name == "SparseCoder":
        from sklearn.decomposition import SparseCoder

        return SparseCoder(dictionary=np.eye(4)[:3]).fit(X)
    if name == "DictVectorizer":
        return inst.fit([{"a": 1, "b": 2}, {"a": 3, "c": 1}])
    if name == "FeatureHasher":
        return inst.fit([{"a": 1}, {"b": 2}])
    if name == "PatchExtractor":
        return inst.fit(np.arange(2 * 8 * 8, dtype=float).reshape(2, 8, 8))
    if name in ("LabelEncoder", "LabelBinarizer"):
        return inst.fit(y)
    if name == "MultiLabelBinarizer":
        return inst.fit([[1, 2], [3]])
    if name == "IsotonicRegression":
        return inst.fit(X[:, 0], yr)
    tags = getattr(inst, "__sklearn_tags__", None)
    est_type = tags().estimator_type if tags else None
    positive = "NMF" in name or "Chi2" in name or name in (
        "MultinomialNB", "ComplementNB", "CategoricalNB", "AdditiveChi2Sampler",
        "LatentDirichletAllocation", "SkewedChi2Sampler", "PoissonRegressor", "GammaRegressor",
        "TweedieRegressor")
    Xf = Xpos if positive else X
    if name == "CategoricalNB":
        Xf = (Xpos * 2).astype(int)
    if est_type == "classifier":
        return inst.fit(Xf, y)
    if est_type == "regressor":
        target = np.abs(yr) + 0.1 if positive else yr
        try:
            return inst.fit(Xf, target)
        except ValueError:
            return inst.fit(Xf, np.c_[target, target])
    try:
        return inst.fit(Xf, y)
    except TypeError:
        return inst.fit(Xf)


def estimator_globals():
    """{(module, name): sorted list of estimator names that import it}, skipped list, estimator classes."""
    import pickle
    import warnings

    import joblib
    from sklearn.utils import all_estimators

    X, Xpos, y, _y3, yr = tiny_data()
    seen: dict = {}
    skipped = []
    classes = set()
    for name, cls in all_estimators():
        classes.add((cls.__module__, cls.__qualname__))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                est = fit_one(name, cls, X, Xpos, y, yr)
            except Exception as e:
                skipped.append(f"{name} ({type(e).__name__})")
                continue
        blobs = []
        bio = io.BytesIO()
        joblib.dump(est, bio)
        blobs.append(bio.getvalue())
        blobs.append(pickle.dumps(est, protocol=2))
        blobs.append(pickle.dumps(est, protocol=5))
        for b in blobs:
            gl: set = set()
            scan_pickle_bytes(b, gl)
            for g in gl:
                seen.setdefault(g, set()).add(name)
    return seen, skipped, classes


def corpus_globals(models: Path):
    truth = json.loads((models / "truth.json").read_text())
    seen: dict = {}
    for rel, t in sorted(truth.items()):
        if t["expect"] != "safe" or t["format"] == "keras":
            continue
        for g in scan_file(models / rel):
            seen.setdefault(g, set()).add(f"corpus:{rel}")
    return seen


def build(models: Path):
    import joblib
    import numpy
    import scipy
    import sklearn

    est_seen, skipped, est_classes = estimator_globals()
    sources: dict = {}
    for g, who in est_seen.items():
        sources.setdefault(g, set()).update(who)
    if (models / "truth.json").exists():
        for g, who in corpus_globals(models).items():
            sources.setdefault(g, set()).update(who)
    fixed = {}
    for lst in (NUMPY_RECONSTRUCT, JOBLIB, TORCH, XGBOOST, LIGHTGBM, PY_BUILTIN, PY_COPYREG, PY_CODEC):
        for g in lst:
            fixed[g] = True
    ufuncs = sorted(n for n in dir(numpy) if isinstance(getattr(numpy, n), numpy.ufunc))
    for n in ufuncs:
        fixed[("numpy", n)] = True

    entries = {}
    warnings_ = []
    dotted_ok = []
    for g in sorted(set(sources) | set(fixed)):
        module, name = g
        why = denied(g)
        if why:
            who = ", ".join(sorted(sources.get(g, ["(fixed list)"])))
            warnings_.append(f"denied {render(g)}: {why}; imported by: {who}")
            continue
        if "." in name:
            if nested_class_ok(module, name):
                dotted_ok.append(render(g))
            else:
                who = ", ".join(sorted(sources.get(g, ["(fixed list)"])))
                warnings_.append(f"denied {render(g)}: dotted name is not a nested class; imported by: {who}")
                continue
        grp = group_of(g, est_classes)
        if grp == "UNKNOWN":
            who = ", ".join(sorted(sources.get(g, ["(fixed list)"])))
            warnings_.append(f"left out {render(g)}: no group vouches for it; imported by: {who}")
            continue
        entries[g] = grp
    versions = {
        "python": ".".join(map(str, sys.version_info[:3])),
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "scipy": scipy.__version__,
        "joblib": joblib.__version__,
    }
    return entries, skipped, warnings_, dotted_ok, versions


def render_tsv(entries, skipped, warnings_, dotted_ok, versions) -> str:
    out = []
    out.append("# poisongate verify --scan: built-in ALLOWLIST of pickle globals (module<TAB>name<TAB>group).")
    out.append("# Anything not listed here is unsafe. Generated by scripts/gen_scan_allowlist.py; do not edit.")
    out.append("# Generated with " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    out.append("# Sources: every sklearn.utils.all_estimators() estimator that fits on tiny data, dumped with")
    out.append("# joblib.dump and pickle.dumps (protocols 2 and 5) and walked statically; the benign files of")
    out.append("# testdata/models/; fixed families (NumPy, joblib, PyTorch, XGBoost, LightGBM, Python containers).")
    for g in sorted(GROUPS):
        out.append(f"# group {g}: {GROUPS[g]}")
    if dotted_ok:
        out.append("# dotted names kept (genuine nested classes): " + ", ".join(dotted_ok))
    else:
        out.append("# dotted names kept (genuine nested classes): none")
    out.append(f"# estimators skipped (could not be fitted on tiny data): {len(skipped)}")
    for i in range(0, len(skipped), 6):
        out.append("#   " + ", ".join(skipped[i:i + 6]))
    if warnings_:
        out.append("# denied or left out although something imported them:")
        for w in warnings_:
            out.append("#   " + w)
    else:
        out.append("# denied or left out although something imported them: none")
    for (module, name), grp in sorted(entries.items()):
        out.append(f"{module}\t{name}\t{grp}")
    return "\n".join(out) + "\n"


def check(models: Path, allow: set) -> int:
    truth = json.loads((models / "truth.json").read_text())
    bad = 0
    for rel, t in sorted(truth.items()):
        try:
            gl = scan_file(models / rel)
            unsafe = sorted(render(g) for g in gl if g not in allow)
            got = "unsafe" if unsafe else "safe"
        except ScanError as e:
            got, unsafe = "error", []
            err = str(e)
        ok = got == t["expect"] and (got != "unsafe" or unsafe == sorted(t["callables"]))
        if not ok:
            bad += 1
            print(f"MISMATCH {rel}: expect {t['expect']} {t['callables']}, got {got} {unsafe}"
                  + (f" ({err})" if got == "error" else ""))
    print(f"check: {len(truth) - bad}/{len(truth)} truth entries agree with the reference walker")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "src/scan/allowlist.tsv")
    ap.add_argument("--models", type=Path, default=ROOT / "testdata/models")
    ap.add_argument("--check", action="store_true", help="re-check truth.json with the reference walker")
    args = ap.parse_args()
    want = {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    if any(os.environ.get(k) != v for k, v in want.items()):
        env = dict(os.environ)
        env.update(want)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    entries, skipped, warnings_, dotted_ok, versions = build(args.models)
    text = render_tsv(entries, skipped, warnings_, dotted_ok, versions)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    counts: dict = {}
    for grp in entries.values():
        counts[grp] = counts.get(grp, 0) + 1
    print(f"wrote {args.out}: {len(entries)} entries")
    for grp in sorted(counts):
        print(f"  {grp}: {counts[grp]}")
    print(f"skipped estimators: {len(skipped)}: {', '.join(skipped)}")
    for w in warnings_:
        print("WARNING " + w)
    if args.check:
        return check(args.models, set(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
