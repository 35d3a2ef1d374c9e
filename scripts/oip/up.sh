# Sourced by scripts/test.sh: the model endpoints of the `compare --before-endpoint` tests.
#
# Installs MLServer with its scikit-learn runtime into target/oip-venv on first use
# (scripts/oip/requirements.txt, PyPI only), trains the test models (scripts/oip/train.py),
# mints the test key and tokens (scripts/oip/tokens.py), starts MLServer on loopback and the
# JWT-checking proxy in front of it (scripts/oip/jwt_proxy.py), waits until every model is
# ready, and exports
#   POISONGATE_TEST_OIP_URL  the proxy's base URL (models at $URL/v2/models/<name>)
#   POISONGATE_TEST_OIP_DIR  the tokens (*.jwt), the test CA (ca.pem), eval.parquet and
#                            scored-*.parquet
#   POISONGATE_TEST_OIP_TLS_URL  the same proxy on https, with a certificate from ca.pem
# The caller kills $oip_pids on exit.
oip_venv=${POISONGATE_OIP_VENV:-target/oip-venv}
if [ ! -x "$oip_venv/bin/mlserver" ] || ! "$oip_venv/bin/python" -c 'import mlserver_sklearn, jwt, jwcrypto, pyarrow' 2>/dev/null; then
  echo "installing MLServer into $oip_venv (scripts/oip/requirements.txt)"
  python3 -m venv "$oip_venv"
  "$oip_venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/oip/requirements.txt
fi
oip_bin=$(cd "$oip_venv/bin" && pwd)
oip_dir=$(cd target && pwd)/oip
rm -rf "$oip_dir"
mkdir -p "$oip_dir"
"$oip_venv/bin/python" scripts/oip/train.py "$oip_dir" > "$oip_dir/train.log" 2>&1 || { cat "$oip_dir/train.log"; exit 1; }
"$oip_venv/bin/python" scripts/oip/tokens.py "$oip_dir" https://issuer.poisongate.test poisongate
oip_free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
oip_http=$(oip_free_port); oip_grpc=$(oip_free_port); oip_metrics=$(oip_free_port); oip_proxy=$(oip_free_port)
(cd "$oip_dir/models" && MLSERVER_HTTP_PORT=$oip_http MLSERVER_GRPC_PORT=$oip_grpc \
  MLSERVER_METRICS_PORT=$oip_metrics MLSERVER_HOST=127.0.0.1 \
  exec "$oip_bin/mlserver" start .) > "$oip_dir/mlserver.log" 2>&1 &
oip_pids="$!"
"$oip_venv/bin/python" scripts/oip/jwt_proxy.py --port "$oip_proxy" --upstream "http://127.0.0.1:$oip_http" \
  --jwks "$oip_dir/jwks.json" --issuer https://issuer.poisongate.test --audience poisongate \
  > "$oip_dir/proxy.log" 2>&1 &
oip_pids="$oip_pids $!"
oip_tls=$(oip_free_port)
"$oip_venv/bin/python" scripts/oip/jwt_proxy.py --port "$oip_tls" --upstream "http://127.0.0.1:$oip_http" \
  --jwks "$oip_dir/jwks.json" --issuer https://issuer.poisongate.test --audience poisongate \
  --tls-cert "$oip_dir/server.pem" --tls-key "$oip_dir/server-key.pem" \
  > "$oip_dir/proxy-tls.log" 2>&1 &
oip_pids="$oip_pids $!"
python3 - "$oip_http" <<'PY' || { tail -20 "$oip_dir/mlserver.log"; exit 1; }
import sys, time, urllib.request
port = sys.argv[1]
for _ in range(300):
    try:
        ok = all(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{m}/ready", timeout=1).status == 200
            for m in ("serving", "clean", "backdoor", "tensor")
        )
        if ok:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit("MLServer did not load the test models within 60 s; see target/oip/mlserver.log")
PY
export POISONGATE_TEST_OIP_URL="http://127.0.0.1:$oip_proxy"
export POISONGATE_TEST_OIP_DIR="$oip_dir"
export POISONGATE_TEST_OIP_TLS_URL="https://localhost:$oip_tls"
echo "model endpoints: MLServer $("$oip_venv/bin/pip" show mlserver 2>/dev/null | sed -n 's/^Version: //p') behind the JWT proxy at $POISONGATE_TEST_OIP_URL ($(sed -n 1p "$oip_dir/train.log"))"
