#!/usr/bin/env python3
"""Serve the models saved by compare_gen.py over the Open Inference Protocol (KServe V2 REST).

    python benches/eval/oip_server.py --data /tmp/pg-compare [--port 0] [--host 127.0.0.1]

A test double of an MLServer scikit-learn runtime, enough for `poisongate compare
--before-endpoint/--after-endpoint`:

  GET  /v2/health/live, /v2/health/ready    200
  GET  /v2/models/{name}/ready              200 when the model file exists (404 otherwise)
  GET  /v2/models/{name}                    model metadata
  POST /v2/models/{name}/infer              {"parameters": {"content_type": "pd"},
                                             "inputs": [{"name": COL, "shape": [n],
                                                         "datatype": "FP64"|"INT64"|"BOOL"|"BYTES",
                                                         "data": [...]}, ...],
                                             "outputs": [{"name": "predict"},
                                                         {"name": "predict_proba"}]}
       -> {"model_name": name, "id": ..., "parameters": {"content_type": "np"},
           "outputs": [{"name": "predict", "shape": [n, 1], "datatype": "INT64", "data": [...]},
                       {"name": "predict_proba", "shape": [n, C], "datatype": "FP64",
                        "data": [row-major]}]}

A model name is `{dataset}__{model}__{scenario}__{seed}__{before|after}` (compare_gen.py's
model_name()); it maps to the joblib file compare_gen.py saved (model_path()). Models are
loaded on first use and kept in a small LRU cache; each dataset's plan (make_plan) is built once.
The feature matrix is rebuilt with compare_gen.design(plan, frame) from the columns by name, so
the inputs may come in any order and extra inputs are ignored. The answers are exactly
compare_gen.predict(): the class is the argmax of the unrounded probabilities, and the
probabilities are rounded to 6 decimals, so the endpoints give the numbers the files hold.

Errors: 404 {"error": ...} for an unknown model or path, 400 {"error": ...} for a malformed
request (not JSON, missing or ragged inputs, a datatype that does not match the data, a category
the model's plan does not know, an unknown output name), 500 {"error": ...} if the model fails.

When started, it prints one line `listening on http://HOST:PORT` to stdout (flushed), so a
caller that passes --port 0 learns the port the system chose.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import uuid
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_gen  # noqa: E402
from gen import CAT, FLOAT, INT  # noqa: E402

NAME = re.compile(r"^([a-z0-9_]+?)__([a-z]+)__([a-z0-9_]+)__(\d+)__(before|after)$")
OUTPUTS = ("predict", "predict_proba")
MAX_BODY = 256 * 1024 * 1024


class BadRequest(Exception):
    """A 400 answer."""


class NotFound(Exception):
    """A 404 answer."""


class Models:
    """Name -> (plan, model), lazily loaded; plans per dataset, models in an LRU cache."""

    def __init__(self, data: Path, cache: int) -> None:
        self.data = data
        self.cache = cache
        self.plans: dict[str, compare_gen.Plan] = {}
        self.models: OrderedDict[Path, object] = OrderedDict()
        self.lock = threading.Lock()
        self.plan_lock = threading.Lock()

    def path(self, name: str) -> tuple[str, Path]:
        m = NAME.match(name)
        if not m:
            raise NotFound(f"no model named {name!r} (expected "
                           "DATASET__MODEL__SCENARIO__SEED__before|after)")
        dataset, model, scenario, seed, side = m.groups()
        if dataset not in compare_gen.DATASETS or model not in compare_gen.MODELS:
            raise NotFound(f"no model named {name!r}: unknown dataset or model family")
        if scenario not in (*compare_gen.SCENARIOS, "noise"):
            raise NotFound(f"no model named {name!r}: unknown scenario {scenario!r}")
        path = self.data / compare_gen.model_path(dataset, model, scenario, int(seed), side)
        if not path.is_file():
            raise NotFound(f"no model named {name!r} ({path} does not exist)")
        return dataset, path

    def plan(self, dataset: str) -> compare_gen.Plan:
        with self.plan_lock:  # make_plan takes seconds: build each one once
            if dataset not in self.plans:
                self.plans[dataset] = compare_gen.make_plan(dataset)
            return self.plans[dataset]

    def get(self, name: str) -> tuple[compare_gen.Plan, object]:
        import joblib

        dataset, path = self.path(name)
        plan = self.plan(dataset)
        with self.lock:
            if path in self.models:
                self.models.move_to_end(path)
                return plan, self.models[path]
        model = joblib.load(path)
        if hasattr(model, "n_jobs"):
            model.set_params(n_jobs=1)  # as compare_gen.proba_of(); set once, before sharing
        with self.lock:
            self.models[path] = model
            self.models.move_to_end(path)
            while len(self.models) > self.cache:
                self.models.popitem(last=False)
        return plan, model


def decode_inputs(plan: compare_gen.Plan, body: object) -> tuple[dict, int, list[str]]:
    """The request's columns as compare_gen frame arrays, the row count, the outputs asked."""
    if not isinstance(body, dict):
        raise BadRequest("the request body is not a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("the request has no `inputs` list")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("`parameters` is not an object")
    if params.get("content_type", "pd") != "pd":
        raise BadRequest(f"content_type {params.get('content_type')!r}: only the columns layout "
                         "(content_type pd) is served")
    frame: dict[str, np.ndarray] = {}
    n = None
    for inp in inputs:
        if not isinstance(inp, dict):
            raise BadRequest("an input is not an object")
        name, shape, dtype, data = (inp.get(k) for k in ("name", "shape", "datatype", "data"))
        if not isinstance(name, str) or not isinstance(data, list):
            raise BadRequest("every input needs a string `name` and a `data` list")
        if (not isinstance(shape, list) or not shape
                or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)):
            raise BadRequest(f"input {name!r}: `shape` must be a list of integers")
        if len(shape) == 2 and shape[1] == 1:
            shape = shape[:1]
        if len(shape) != 1 or shape[0] != len(data):
            raise BadRequest(f"input {name!r}: shape {inp.get('shape')} does not match "
                             f"{len(data)} values (one column per input)")
        if n is None:
            n = len(data)
        elif n != len(data):
            raise BadRequest(f"input {name!r} has {len(data)} rows, the others {n}")
        if name in frame:
            raise BadRequest(f"input {name!r} given twice")
        frame[name] = decode_column(name, dtype, data)
    missing = [c for c in plan.kinds if c not in frame]
    if missing:
        raise BadRequest(f"missing input(s) {', '.join(missing)}; the model takes "
                         f"{', '.join(plan.kinds)}")
    for c, kind in plan.kinds.items():
        v = frame[c]
        if kind == CAT:
            if v.dtype != object:
                raise BadRequest(f"input {c!r} is categorical: send it as BYTES")
            unknown = sorted({str(x) for x in v} - set(plan.categories[c]))
            if unknown:
                raise BadRequest(f"input {c!r}: unknown categor{'ies' if len(unknown) > 1 else 'y'}"
                                 f" {', '.join(map(repr, unknown[:5]))} (the model knows "
                                 f"{', '.join(plan.categories[c])})")
        elif kind in (FLOAT, INT):
            if v.dtype == object:
                raise BadRequest(f"input {c!r} is numeric: send it as FP64 or INT64")
            if not np.all(np.isfinite(v.astype(np.float64))):
                raise BadRequest(f"input {c!r} holds a value that is not a finite number")
    outputs = body.get("outputs")
    if outputs is None:
        wanted = list(OUTPUTS)
    else:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise BadRequest("`outputs` must be a list of {\"name\": ...} objects")
        wanted = [o["name"] for o in outputs]
        unknown = [o for o in wanted if o not in OUTPUTS]
        if unknown:
            raise BadRequest(f"unknown output(s) {', '.join(unknown)}; this model has "
                             f"{', '.join(OUTPUTS)}")
    return frame, int(n or 0), wanted


def decode_column(name: str, dtype: object, data: list) -> np.ndarray:
    def bad(what: str) -> BadRequest:
        return BadRequest(f"input {name!r} ({dtype}): {what}")

    if dtype == "FP64" or dtype == "FP32":
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in data):
            raise bad("every value must be a number")
        return np.array(data, dtype=np.float64)
    if dtype in ("INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64"):
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in data):
            raise bad("every value must be an integer")
        return np.array(data, dtype=np.int64)
    if dtype == "BOOL":
        if not all(isinstance(x, bool) for x in data):
            raise bad("every value must be true or false")
        return np.array(data, dtype=bool)
    if dtype == "BYTES":
        if not all(isinstance(x, str) for x in data):
            raise bad("every value must be a string")
        return np.array(data, dtype=object)
    raise bad("unsupported datatype")


def infer(models: Models, name: str, body: object) -> dict:
    plan, model = models.get(name)
    frame, n, wanted = decode_inputs(plan, body)
    if n == 0:
        raise BadRequest("no rows")
    try:
        x = compare_gen.design(plan, frame)
    except (KeyError, ValueError, TypeError) as e:
        raise BadRequest(f"the inputs do not fit the model: {e!r}") from e
    pred, proba = compare_gen.predict(model, x)  # the same numbers as the files
    k = proba.shape[1]
    outs = {
        "predict": {"name": "predict", "shape": [n, 1], "datatype": "INT64",
                    "data": [int(v) for v in pred]},
        "predict_proba": {"name": "predict_proba", "shape": [n, k], "datatype": "FP64",
                          "data": [float(v) for v in proba.reshape(-1)]},
    }
    return {"model_name": name, "id": str(uuid.uuid4()),
            "parameters": {"content_type": "np"}, "outputs": [outs[o] for o in wanted]}


def make_handler(models: Models, quiet: bool):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
        server_version = "pg-oip-test/1"

        def log_message(self, fmt: str, *args) -> None:  # noqa: D102
            if not quiet:
                super().log_message(fmt, *args)

        def send(self, code: int, doc: object) -> None:
            raw = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def route(self) -> tuple[str | None, str]:
            path = self.path.split("?", 1)[0].rstrip("/")
            m = re.fullmatch(r"/v2/models/([^/]+)(?:/versions/[^/]+)?(/ready|/infer)?", path)
            if m:
                return m.group(1), m.group(2) or ""
            return None, path

        def do_GET(self) -> None:  # noqa: N802
            name, tail = self.route()
            try:
                if name is None:
                    if tail in ("/v2/health/live", "/v2/health/ready"):
                        self.send(200, {"live": True} if tail.endswith("live") else
                                  {"ready": True})
                    elif tail == "/v2":
                        self.send(200, {"name": "pg-oip-test", "version": "1",
                                        "extensions": []})
                    else:
                        self.send(404, {"error": f"no route {self.path}"})
                    return
                if tail == "/ready":
                    models.path(name)
                    self.send(200, {"name": name, "ready": True})
                elif tail == "":
                    plan, model = models.get(name)
                    self.send(200, {
                        "name": name, "platform": "sklearn",
                        "inputs": [{"name": c, "datatype": "BYTES" if k == CAT else
                                    ("INT64" if k == INT else "FP64"), "shape": [-1]}
                                   for c, k in plan.kinds.items()],
                        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]},
                                    {"name": "predict_proba", "datatype": "FP64",
                                     "shape": [-1, plan.n_classes]}],
                    })
                else:
                    self.send(405, {"error": f"GET {tail}: use POST"})
            except NotFound as e:
                self.send(404, {"error": str(e)})
            except Exception as e:  # noqa: BLE001 - the server must answer
                self.send(500, {"error": f"{e.__class__.__name__}: {e}"})

        def do_POST(self) -> None:  # noqa: N802
            name, tail = self.route()
            length = self.headers.get("Content-Length")
            try:
                size = int(length) if length is not None else -1
            except ValueError:
                size = -1
            if size < 0 or size > MAX_BODY:
                self.close_connection = True
                self.send(400 if size < 0 else 413,
                          {"error": "a request needs a Content-Length of at most "
                                    f"{MAX_BODY} bytes"})
                return
            raw = self.rfile.read(size)
            if name is None or tail != "/infer":
                self.send(404, {"error": f"no route POST {self.path}"})
                return
            try:
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise BadRequest(f"the body is not JSON ({e})") from e
                self.send(200, infer(models, name, body))
            except NotFound as e:
                self.send(404, {"error": str(e)})
            except BadRequest as e:
                self.send(400, {"error": str(e)})
            except Exception as e:  # noqa: BLE001 - the server must answer
                self.send(500, {"error": f"{e.__class__.__name__}: {e}"})

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="directory written by compare_gen.py")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    ap.add_argument("--cache", type=int, default=64, help="models kept loaded (default 64)")
    ap.add_argument("--log", action="store_true", help="log every request to stderr")
    args = ap.parse_args()
    if not args.data.is_dir():
        ap.error(f"{args.data} is not a directory")
    models = Models(args.data.resolve(), max(1, args.cache))
    server = ThreadingHTTPServer((args.host, args.port), make_handler(models, not args.log))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
