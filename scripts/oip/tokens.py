#!/usr/bin/env python3
"""Mint the signing key, JWKS and tokens of the endpoint tests.

    python scripts/oip/tokens.py OUT_DIR ISSUER AUDIENCE

Writes OUT_DIR/jwks.json (the public key the proxy trusts) and these RS256 tokens, one per
file: valid.jwt (an hour), expired.jwt, wrong-audience.jwt, wrong-issuer.jwt and
foreign.jwt (signed by a key that is not in the JWKS, with the trusted key's id).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from jwcrypto import jwk, jwt


def main() -> int:
    out, issuer, audience = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    key = jwk.JWK.generate(kty="RSA", size=2048, kid="poisongate-test", alg="RS256", use="sig")
    foreign = jwk.JWK.generate(kty="RSA", size=2048, kid="poisongate-test", alg="RS256")
    (out / "jwks.json").write_text(json.dumps({"keys": [json.loads(key.export_public())]}))
    now = int(time.time())

    def mint(signer: jwk.JWK, **claims) -> str:
        base = {"iss": issuer, "aud": audience, "sub": "pipeline", "iat": now, "exp": now + 3600}
        base.update(claims)
        t = jwt.JWT(header={"alg": "RS256", "kid": "poisongate-test"}, claims=base)
        t.make_signed_token(signer)
        return t.serialize()

    tokens = {
        "valid": mint(key),
        "expired": mint(key, iat=now - 7200, exp=now - 3600),
        "wrong-audience": mint(key, aud="someone-else"),
        "wrong-issuer": mint(key, iss="https://elsewhere.test"),
        "foreign": mint(foreign),
    }
    for name, t in tokens.items():
        (out / f"{name}.jwt").write_text(t + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
