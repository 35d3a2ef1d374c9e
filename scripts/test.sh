#!/usr/bin/env bash
# The test suite. Starts a real S3-compatible server (moto's, in-memory, on loopback) for the
# S3 integration tests and a real model server (MLServer behind a JWT-checking proxy, on
# loopback) for the endpoint tests, runs `cargo test --locked` with any extra arguments, then
# stops them.
#
# moto is installed on first use into target/moto-venv from scripts/requirements-s3.txt
# (PyPI only; no docker). Set POISONGATE_TEST_S3_ENDPOINT to use a server of your own.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every temporary file of the tests and of their servers goes under one directory, removed at
# the end: a process a test kills on purpose, or the fuzz seeds' per-process scratch directory,
# would otherwise leave its own behind in /tmp.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/poisongate-test.XXXXXX")
export TMPDIR=$scratch
trap 'rm -rf "$scratch"' EXIT

# The full suite (no arguments): compile the tests in the background while the Python
# environments install (scripts/venvs.sh), which is mostly waiting on the network.
build_pid=""
if [ "$#" -eq 0 ]; then
  # --timings keeps target/cargo-timings/cargo-timing.html: which crates the build waited on.
  cargo test --locked --no-run --timings > "$scratch/build.log" 2>&1 &
  build_pid=$!
  trap 'kill "$build_pid" 2>/dev/null || true; rm -rf "$scratch"' EXIT
  bash scripts/venvs.sh
fi

if [ -z "${POISONGATE_TEST_S3_ENDPOINT:-}" ]; then
  venv=${POISONGATE_MOTO_VENV:-target/moto-venv}
  if [ ! -x "$venv/bin/moto_server" ]; then
    echo "installing moto into $venv (scripts/requirements-s3.txt)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-s3.txt
  fi
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p target
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" > target/moto.log 2>&1 &
  moto_pid=$!
  trap 'kill ${build_pid:-} "$moto_pid" 2>/dev/null || true; rm -rf "$scratch"' EXIT
  python3 - "$port" <<'PY'
import socket, sys, time
for _ in range(150):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit("moto_server did not start within 30 s; see target/moto.log")
PY
  export POISONGATE_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  echo "S3 test server: moto $("$venv/bin/pip" show moto 2>/dev/null | sed -n 's/^Version: //p') at $POISONGATE_TEST_S3_ENDPOINT"
fi

# The model endpoints of the `compare --before-endpoint` tests (MLServer behind a JWT proxy).
# Set POISONGATE_TEST_OIP_URL and POISONGATE_TEST_OIP_DIR to use a set-up of your own.
oip_pids=""
if [ -z "${POISONGATE_TEST_OIP_URL:-}" ]; then
  # shellcheck source=scripts/oip/up.sh
  source scripts/oip/up.sh
fi
trap 'kill ${build_pid:-} ${moto_pid:-} $oip_pids 2>/dev/null || true; rm -rf "$scratch"' EXIT

if [ -n "$build_pid" ]; then
  wait "$build_pid" || { cat "$scratch/build.log"; echo "test.sh: cargo test --no-run failed"; exit 1; }
  build_pid=""
  grep -E '^ *(Finished|warning|error)' "$scratch/build.log" || true
fi
cargo test --locked "$@"

# With no arguments (the full suite), also the Python-side suites against the binary that
# cargo test built: the Spark package on pyspark in local mode, pipelines/ (validators plus a
# local run of the sharded-check definitions), and model signing against the reference tool. With arguments, only cargo test runs.
if [ "$#" -eq 0 ]; then
  BIN="${CARGO_TARGET_DIR:-target}/debug/poisongate"
  spark_venv=${POISONGATE_SPARK_VENV:-target/spark-venv}
  if [ ! -x "$spark_venv/bin/python" ] || ! "$spark_venv/bin/python" -c 'import pyspark, pyarrow, pandas' 2>/dev/null; then
    echo "installing pyspark into $spark_venv (python/poisongate_spark/requirements-test.txt)"
    python3 -m venv "$spark_venv"
    "$spark_venv/bin/pip" install --quiet --disable-pip-version-check \
      -r python/poisongate_spark/requirements-test.txt
  fi
  # Installed as a user would (a wheel built from pyproject.toml), not from the source tree.
  "$spark_venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall \
    ./python/poisongate_spark
  echo "Spark: pyspark $("$spark_venv/bin/python" -c 'import pyspark; print(pyspark.__version__)'), $(java -version 2>&1 | head -1)"
  # The Spark suite (about a minute, mostly the JVM) runs beside the two suites after it,
  # which are single processes one after the other; its output is printed when it ends.
  POISONGATE_BIN="$BIN" "$spark_venv/bin/python" -m unittest discover \
    -s python/poisongate_spark/tests -v > "$scratch/spark.log" 2>&1 &
  spark_pid=$!
  trap 'kill ${spark_pid:-} ${moto_pid:-} $oip_pids 2>/dev/null || true; rm -rf "$scratch"' EXIT
  # A failure of either suite is held until the Spark suite has ended and its output is
  # printed, so that every failure of the run is reported.
  suites_rc=0
  bash pipelines/validate.sh "$BIN" || suites_rc=$?
  # OpenSSF model signing against its reference implementation (model-signing, pinned).
  bash scripts/modelsign/interop.sh "$BIN" || suites_rc=$?
  spark_rc=0
  wait "$spark_pid" || spark_rc=$?
  spark_pid=""
  cat "$scratch/spark.log"
  if [ "$spark_rc" -ne 0 ]; then
    echo "test.sh: the Spark suite failed (exit $spark_rc)"
  fi
  if [ "$suites_rc" -ne 0 ]; then
    echo "test.sh: pipelines/validate.sh or scripts/modelsign/interop.sh failed (see above)"
  fi
  if [ "$spark_rc" -ne 0 ] || [ "$suites_rc" -ne 0 ]; then
    exit 1
  fi
fi
