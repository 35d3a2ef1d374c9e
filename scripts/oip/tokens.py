#!/usr/bin/env python3
"""Mint the signing key, JWKS and tokens of the endpoint tests.

    python scripts/oip/tokens.py OUT_DIR ISSUER AUDIENCE

Writes OUT_DIR/jwks.json (the public key the proxy trusts) and these RS256 tokens, one per
file: valid.jwt (an hour), expired.jwt, wrong-audience.jwt, wrong-issuer.jwt and
foreign.jwt (signed by a key that is not in the JWKS, with the trusted key's id).

Also a test CA (ca.pem) and a server certificate it signed for localhost and 127.0.0.1
(server.pem, server-key.pem), for the proxy's https port.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwcrypto import jwk, jwt


def tls(out: Path) -> None:
    """A CA and a localhost server certificate signed by it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "poisongate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (out / "ca.pem").write_bytes(ca.public_bytes(pem))
    (out / "server.pem").write_bytes(cert.public_bytes(pem))
    (out / "server-key.pem").write_bytes(
        key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


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
    tls(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
