#!/usr/bin/env python3
"""A JWT-checking reverse proxy that answers the way Istio does in front of a KServe model.

    python scripts/oip/jwt_proxy.py --port P --upstream http://127.0.0.1:8080 \
        --jwks keys/jwks.json --issuer https://issuer.test --audience poisongate

Istio's RequestAuthentication rejects a request that carries a bad token (bad signature, a
key not in the JWKS, expired, wrong issuer or audience) with 401 "Jwt verification fails";
an AuthorizationPolicy that requires a request principal rejects a request without a token
with 403 "RBAC: access denied". A request with a valid RS256 token is forwarded to the
upstream model server without the Authorization header (as Istio does unless
forwardOriginalToken is set).

For the endpoint tests only, paths under /fault/ inject what a real deployment sometimes
does, after the token check, before forwarding the rest of the path:
  /fault/slow/<seconds>/...   waits, then forwards (a timeout)
  /fault/flaky/<n>/...        answers 503 with Retry-After: 0 the first n times it sees that
                              path, then forwards (a rolling restart)
  /fault/busy/...             always answers 429
  /fault/notready/...         answers /ready with 503 and everything else with 503
  /fault/echo-token/...       answers 500 with the request's token in the body (a server that
                              leaks it; the client must not repeat it)
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

FLAKY: dict[str, int] = {}
LOCK = threading.Lock()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--jwks", required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--audience", required=True)
    ap.add_argument("--tls-cert", help="serve https with this certificate (PEM)")
    ap.add_argument("--tls-key", help="and this key (PEM)")
    a = ap.parse_args()
    keys = jwt.PyJWKSet.from_json(open(a.jwks).read())
    by_kid = {k.key_id: k for k in keys.keys}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def reply(self, status: int, body: bytes, ctype: str = "text/plain", extra=None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def token_ok(self) -> bool:
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                self.reply(403, b"RBAC: access denied")
                return False
            token = auth[len("Bearer "):].strip()
            try:
                kid = jwt.get_unverified_header(token).get("kid")
                key = by_kid[kid]
                jwt.decode(
                    token,
                    key.key,
                    algorithms=["RS256"],
                    audience=a.audience,
                    issuer=a.issuer,
                    options={"require": ["exp", "iss", "aud"]},
                )
            except Exception:  # noqa: BLE001 (any failure is a 401, as Istio answers)
                self.reply(401, b"Jwt verification fails")
                return False
            return True

        def handle_any(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if not self.token_ok():
                return
            path = self.path
            if path.startswith("/fault/"):
                parts = path.split("/")
                kind = parts[2]
                if kind == "slow":
                    time.sleep(float(parts[3]))
                    path = "/" + "/".join(parts[4:])
                elif kind == "flaky":
                    n = int(parts[3])
                    with LOCK:
                        seen = FLAKY.get(path, 0)
                        FLAKY[path] = seen + 1
                    if seen < n:
                        self.reply(503, b"upstream connect error", extra={"Retry-After": "0"})
                        return
                    path = "/" + "/".join(parts[4:])
                elif kind == "busy":
                    self.reply(429, b"too many requests", extra={"Retry-After": "0"})
                    return
                elif kind == "notready":
                    self.reply(503, b"")
                    return
                elif kind == "echo-token":
                    msg = "internal error for " + self.headers.get("Authorization", "")
                    self.reply(500, msg.encode())
                    return
            req = urllib.request.Request(a.upstream + path, data=body, method=method)
            if body is not None:
                req.add_header("Content-Type", self.headers.get("Content-Type", "application/json"))
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    self.reply(r.status, r.read(), r.headers.get("Content-Type", "application/json"))
            except urllib.error.HTTPError as e:
                self.reply(e.code, e.read(), e.headers.get("Content-Type", "text/plain"))
            except OSError as e:
                self.reply(503, json.dumps({"error": f"upstream: {e}"}).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802
            self.handle_any("GET")

        def do_POST(self) -> None:  # noqa: N802
            self.handle_any("POST")

    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    if a.tls_cert:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
