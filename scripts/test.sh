#!/usr/bin/env bash
# The test suite. Starts a real S3-compatible server (moto's, in-memory, on loopback) for the
# S3 integration tests, runs `cargo test --locked` with any extra arguments, then stops it.
#
# moto is installed on first use into target/moto-venv from scripts/requirements-s3.txt
# (PyPI only; no docker). Set POISONGATE_TEST_S3_ENDPOINT to use a server of your own.
set -euo pipefail
cd "$(dirname "$0")/.."

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
  trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
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

cargo test --locked "$@"
