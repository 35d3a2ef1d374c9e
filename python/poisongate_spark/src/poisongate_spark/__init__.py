"""A sharded ``poisongate check`` (and ``poisongate profile``) on Spark.

The driver runs ``poisongate plan`` over the batch, Spark runs one ``poisongate summarize``
per shard on its executors (``mapInArrow`` over a DataFrame of shard ids), and the driver
merges the parts and decides with ``poisongate check --summaries``. The executors decode
the data with poisongate's own readers, never through Spark's type mapping, so the report
is byte for byte the one that ``poisongate check`` gives on the same files.

It fails closed: any step that exits non-zero, a missing or duplicated part, or an
executor that died raises :class:`PoisongateError` carrying exit code 2 (or the gate's own
code), and nothing in this module turns an error into a pass.

Executors need three things: the binary, the baseline and the manifest. Local paths are
shipped with ``SparkContext.addFile`` (under content-addressed names, so that two checks in
one session never collide); ``s3://`` baselines are read by the binary itself. The data
files must be readable from every executor at the paths the manifest names (``s3://``
objects or a shared file system), as for any Spark job.

:func:`profile` pins a baseline the same way: ``plan`` on the driver, one ``profile
--manifest --shard`` per shard on the executors, and ``profile --summaries`` on the driver;
the baseline is byte for byte the one ``poisongate profile`` writes from the same files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "CheckResult",
    "PoisongateError",
    "check",
    "decide",
    "plan",
    "profile",
    "summarize",
]

# Exit codes of the gate (README: "Exit codes").
PASS, BLOCKED, ERROR = 0, 1, 2


class PoisongateError(RuntimeError):
    """A step could not be evaluated. ``exit_code`` is what a pipeline step should exit with."""

    def __init__(self, message: str, exit_code: int = ERROR):
        super().__init__(message)
        self.exit_code = exit_code if exit_code != PASS else ERROR


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The gate's decision: ``exit_code`` 0 pass, 1 blocked (errors raise instead)."""

    exit_code: int
    report: dict | None
    stdout: str
    stderr: str

    @property
    def verdict(self) -> str:
        return "pass" if self.exit_code == PASS else "blocked"


def _binary(binary: str | os.PathLike | None) -> str:
    if binary is not None:
        return os.fspath(binary)
    found = shutil.which("poisongate")
    if found is None:
        raise PoisongateError("no poisongate binary: pass binary= or put poisongate on PATH")
    return found


def _run(argv: Sequence[str], allowed: Iterable[int] = (PASS,)) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except OSError as e:
        raise PoisongateError(f"{argv[0]}: cannot run: {e}") from e
    if done.returncode not in set(allowed):
        detail = (done.stderr or done.stdout).strip().splitlines()
        cause = detail[-1] if detail else f"exit {done.returncode}"
        code = done.returncode if done.returncode in (BLOCKED, ERROR) else ERROR
        raise PoisongateError(f"poisongate {argv[1]}: {cause}", exit_code=code)
    return done


def plan(data: Sequence[str], manifest: str | os.PathLike, *, binary=None,
         s3_endpoint: str | None = None, unit_rows: int | None = None) -> dict:
    """``poisongate plan DATA... -o MANIFEST [--unit-rows R]``; returns the parsed manifest.

    With ``unit_rows``, Parquet files of more rows become several units (row ranges), so
    that one large file spreads over many shards."""
    argv = [_binary(binary), "plan", *map(os.fspath, data), "-o", os.fspath(manifest)]
    if unit_rows is not None:
        argv += ["--unit-rows", str(unit_rows)]
    if s3_endpoint:
        argv += ["--s3-endpoint", s3_endpoint]
    _run(argv)
    return json.loads(Path(manifest).read_text())


def _ship(sc, path: str, staging: Path) -> str:
    """Adds a local file to the Spark job under a content-addressed name; returns that name.

    ``s3://`` paths are returned as they are, for the binary to read itself."""
    if path.startswith("s3://"):
        return path
    src = Path(path)
    sha = hashlib.sha256()
    with open(src, "rb") as f:
        # In blocks: the binary is tens of MB and a baseline can be larger.
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    name = f"pg-{sha.hexdigest()[:16]}-{src.name}"
    staged = staging / name
    if not staged.exists():
        try:
            # A hard link costs no disk and keeps the binary's mode; the content-addressed name
            # is all Spark needs. (Executors restore a mode bit a cluster manager dropped.)
            os.link(src, staged)
        except OSError:
            shutil.copyfile(src, staged)
            staged.chmod(src.stat().st_mode | 0o500)
    sc.addFile(str(staged))
    return "sparkfile:" + name


def _resolve(ref: str) -> str:
    if ref.startswith("sparkfile:"):
        from pyspark import SparkFiles

        return SparkFiles.get(ref[len("sparkfile:"):])
    return ref


def _shard_partition(binary_ref, command, shards):
    """The executor side: ``poisongate COMMAND... --shard i/N -o PART`` per shard id in the
    batches (``sparkfile:`` arguments resolved to the executor's copies)."""

    def run(batches):
        binary = _resolve(binary_ref)
        bin_dir = None
        if not os.access(binary, os.X_OK):
            # Some cluster managers drop the mode bits of shipped files.
            bin_dir = tempfile.mkdtemp(prefix="poisongate-bin-")
            copy = os.path.join(bin_dir, "poisongate")
            shutil.copyfile(binary, copy)
            os.chmod(copy, 0o700)
            binary = copy
        try:
            yield from _run_batches(batches, binary, command, shards)
        finally:
            if bin_dir is not None:
                shutil.rmtree(bin_dir, ignore_errors=True)

    return run


def _run_batches(batches, binary, command, shards):
    """Runs the shards of each batch of ids; yields one Arrow batch of results per batch."""
    import pyarrow as pa

    for batch in batches:
        ids, codes, parts, errors = [], [], [], []
        for shard in batch.column("id").to_pylist():
            with tempfile.TemporaryDirectory(prefix="poisongate-part-") as work:
                out = os.path.join(work, "part")
                argv = [binary, *map(_resolve, command), "--shard", f"{shard}/{shards}",
                        "-o", out]
                try:
                    done = subprocess.run(argv, capture_output=True, text=True, check=False)
                    code, err = done.returncode, done.stderr.strip()
                except OSError as e:
                    code, err = ERROR, f"cannot run {binary}: {e}"
                part = b""
                if code == PASS:
                    try:
                        with open(out, "rb") as f:
                            part = f.read()
                    except OSError as e:
                        code, err = ERROR, f"{command[0]} wrote no part: {e}"
            ids.append(shard)
            codes.append(code)
            parts.append(part)
            errors.append(err)
        yield pa.RecordBatch.from_arrays(
            [pa.array(ids, pa.int64()), pa.array(codes, pa.int32()),
             pa.array(parts, pa.large_binary()), pa.array(errors, pa.string())],
            names=["shard", "exit_code", "part", "stderr"],
        )


def _run_shards(spark, binary, command, ship, shards: int, parts_dir) -> list[Path]:
    """Runs ``poisongate COMMAND --shard i/N`` for every i on Spark's executors, with the local
    files ``ship`` (name -> path) shipped and put in place of ``{name}`` in ``command``; writes
    the parts to ``parts_dir`` on the driver and returns their paths, in shard order.

    Raises :class:`PoisongateError` if any shard failed, is missing or came back twice."""
    if shards < 1:
        raise PoisongateError(f"shards must be at least 1, not {shards}")
    sc = spark.sparkContext
    parts_dir = Path(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="poisongate-ship-"))
    try:
        binary_ref = _ship(sc, _binary(binary), staging)
        refs = {name: _ship(sc, os.fspath(path), staging) for name, path in ship.items()}
        argv = [refs.get(a[1:-1], a) if a.startswith("{") and a.endswith("}") else a
                for a in command]
        fn = _shard_partition(binary_ref, argv, shards)
        rows = (spark.range(0, shards, 1, numPartitions=shards)
                .mapInArrow(fn, "shard long, exit_code int, part binary, stderr string")
                .collect())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seen: dict[int, bytes] = {}
    for row in rows:
        if row.exit_code != PASS:
            raise PoisongateError(
                f"poisongate {command[0]} --shard {row.shard}/{shards}: "
                f"{row.stderr or 'exit ' + str(row.exit_code)}")
        if row.shard in seen:
            raise PoisongateError(f"shard {row.shard}/{shards} came back twice")
        seen[row.shard] = bytes(row.part)
    missing = sorted(set(range(shards)) - set(seen))
    if missing:
        raise PoisongateError(f"shards {missing} of {shards} returned no part")
    paths = []
    for shard in range(shards):
        path = parts_dir / f"part-{shard:05d}"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(seen[shard])
        os.replace(tmp, path)
        paths.append(path)
    return paths


def summarize(spark, baseline: str, manifest: str | os.PathLike, shards: int, parts_dir,
              *, binary=None, policy: str | None = None, s3_endpoint: str | None = None,
              expect_baseline_sha256: str | None = None) -> list[Path]:
    """Runs ``summarize --shard i/N`` for every i on Spark's executors; writes the parts to
    ``parts_dir`` on the driver and returns their paths, in shard order.

    Raises :class:`PoisongateError` if any shard failed, is missing or came back twice."""
    command = ["summarize", "--baseline", "{baseline}", "--manifest", "{manifest}"]
    ship = {"baseline": baseline, "manifest": manifest}
    if policy is not None:
        command += ["--policy", "{policy}"]
        ship["policy"] = policy
    if s3_endpoint:
        command += ["--s3-endpoint", s3_endpoint]
    if expect_baseline_sha256:
        command += ["--expect-baseline-sha256", expect_baseline_sha256]
    return _run_shards(spark, binary, command, ship, shards, parts_dir)


def decide(baseline: str, parts: Sequence[str | os.PathLike], workdir, *, binary=None,
           policy: str | None = None, check_args: Sequence[str] = (),
           s3_endpoint: str | None = None) -> CheckResult:
    """``poisongate merge`` the parts, then ``poisongate check --summaries``.

    ``check_args`` go to ``check`` as they are (``--json``, ``--markdown``, ``--junit``,
    ``--expect-baseline-sha256``, ...). A JSON report is always written (to ``workdir``
    unless ``check_args`` names one) and returned parsed."""
    exe = _binary(binary)
    workdir = Path(workdir)
    merged = workdir / "merged"
    _run([exe, "merge", *map(os.fspath, parts), "-o", str(merged)])
    args = list(check_args)
    if "--json" in args:
        report_path = Path(args[args.index("--json") + 1])
    else:
        report_path = workdir / "report.json"
        args += ["--json", str(report_path)]
    argv = [exe, "check", "--baseline", os.fspath(baseline), "--summaries", str(merged), *args]
    if policy is not None:
        argv += ["--policy", os.fspath(policy)]
    if s3_endpoint:
        argv += ["--s3-endpoint", s3_endpoint]
    done = _run(argv, allowed=(PASS, BLOCKED))
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as e:
        raise PoisongateError(f"check wrote no readable report at {report_path}: {e}") from e
    return CheckResult(done.returncode, report, done.stdout, done.stderr)


@contextlib.contextmanager
def _planned(spark, data: Sequence[str], workdir, shards: int | None, *, binary=None,
             s3_endpoint: str | None = None, unit_rows: int | None = None):
    """The set-up that :func:`check` and :func:`profile` share: a work directory (a fresh one,
    removed on exit, when ``workdir`` is None), ``plan`` into ``workdir/manifest.json``, and
    the shard count, by default the number of units capped at
    ``spark.sparkContext.defaultParallelism * 4``. Yields ``(workdir, manifest_path, shards)``."""
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="poisongate-spark-") if own else workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        manifest_path = workdir / "manifest.json"
        manifest = plan(data, manifest_path, binary=binary, s3_endpoint=s3_endpoint,
                        unit_rows=unit_rows)
        if shards is None:
            cap = max(1, spark.sparkContext.defaultParallelism * 4)
            shards = max(1, min(len(manifest["units"]), cap))
        yield workdir, manifest_path, shards
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def check(spark, baseline: str, data: Sequence[str], *, shards: int | None = None,
          binary=None, policy: str | None = None, check_args: Sequence[str] = (),
          workdir=None, s3_endpoint: str | None = None,
          expect_baseline_sha256: str | None = None,
          unit_rows: int | None = None) -> CheckResult:
    """plan → summarize on Spark → merge → check. ``shards`` defaults to the number of
    units (files) in the manifest, capped at ``spark.sparkContext.defaultParallelism * 4``.

    Returns the decision (exit code 0 or 1); raises :class:`PoisongateError` (exit code 2)
    when the batch could not be evaluated."""
    with _planned(spark, data, workdir, shards, binary=binary, s3_endpoint=s3_endpoint,
                  unit_rows=unit_rows) as (workdir, manifest_path, shards):
        parts = summarize(spark, baseline, manifest_path, shards, workdir / "parts",
                          binary=binary, policy=policy, s3_endpoint=s3_endpoint,
                          expect_baseline_sha256=expect_baseline_sha256)
        sha = list(check_args)
        if expect_baseline_sha256 and "--expect-baseline-sha256" not in sha:
            sha += ["--expect-baseline-sha256", expect_baseline_sha256]
        return decide(baseline, parts, workdir, binary=binary, policy=policy, check_args=sha,
                      s3_endpoint=s3_endpoint)


def profile(spark, data: Sequence[str], output: str | os.PathLike, *,
            profile_args: Sequence[str] = (), shards: int | None = None, binary=None,
            workdir=None, s3_endpoint: str | None = None,
            unit_rows: int | None = None) -> str:
    """plan → ``profile --manifest --shard`` on Spark → ``profile --summaries``: writes the
    baseline at ``output`` (and its ``.sha256`` beside it) and returns its SHA-256.

    ``profile_args`` (``--label``, ``--id``, ``--seed``, ...) go to every profile step: the
    parts record them and the last step refuses parts made with others. The baseline is byte
    for byte the one ``poisongate profile DATA... -o OUTPUT PROFILE_ARGS`` writes. ``shards``
    defaults as for :func:`check`. Raises :class:`PoisongateError` when any step fails;
    nothing is written then."""
    with _planned(spark, data, workdir, shards, binary=binary, s3_endpoint=s3_endpoint,
                  unit_rows=unit_rows) as (workdir, manifest_path, shards):
        flags = list(profile_args)
        if s3_endpoint:
            flags += ["--s3-endpoint", s3_endpoint]
        command = ["profile", "--manifest", "{manifest}", *flags]
        parts_dir = workdir / "profile-parts"
        _run_shards(spark, binary, command, {"manifest": manifest_path}, shards, parts_dir)
        _run([_binary(binary), "profile", "--summaries", str(parts_dir), "-o",
              os.fspath(output), *flags])
        return hashlib.sha256(Path(output).read_bytes()).hexdigest()
