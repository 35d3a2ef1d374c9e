"""Writes the X.509 fixtures of model signing's certificate mode to testdata/modelsign/certs/.

    target/modelsign-venv/bin/python scripts/modelsign/make_certs.py

Uses `cryptography` (pinned in scripts/requirements-modelsign.txt, the same library the
reference tool signs and verifies with). Keys and signatures are random, so a rerun writes
other bytes with the same structure; the tests depend on the structure only.

- root.pem: the trust anchor a verifier is given (P-256, 2020-01-01 to 2120-01-01, path length 1).
- intermediate.pem: a CA under root (P-384, path length 0), shipped in each bundle's chain.
- leaf*.pem / leaf*.key: signing certificates under the intermediate:
  - leaf: key usage digitalSignature and extended key usage codeSigning (P-256);
  - leaf-eku: codeSigning only, no key usage extension (P-384);
  - leaf-nosign: keyEncipherment and serverAuth: may not sign (refused);
  - leaf-expired: valid 2021 only: accepted, because the chain is checked at the signing
    certificate's notBefore (as the reference verifier does), not at the time of verification;
  - leaf-early: notBefore 2019, before the CAs are valid: refused.
- other-root.pem, other-leaf.pem / .key: a second hierarchy the verifier does not trust.
- root-pathlen0.pem, root-expired.pem: the root's key and name in certificates a verifier
  must not accept as the anchor of these chains: path length 0 (the intermediate exceeds it),
  and valid 2020 only (not valid at the signing certificates' notBefore).
"""

import datetime
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OUT = pathlib.Path(__file__).resolve().parents[2] / "testdata" / "modelsign" / "certs"


def when(year, month=1, day=1):
    return datetime.datetime(year, month, day, tzinfo=datetime.timezone.utc)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "poisongate tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def usage(**bits):
    flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=False,
                 crl_sign=False, encipher_only=False, decipher_only=False)
    flags.update(bits)
    return x509.KeyUsage(**flags)


def cert(cn, key, issuer_name, issuer_key, start, end, ca, key_usage=None, eku=None, path_length=0):
    b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if key_usage is not None:
        b = b.add_extension(key_usage, critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA256() if isinstance(issuer_key.curve, ec.SECP256R1) else hashes.SHA384())


def write(stem, certificate, key=None):
    (OUT / f"{stem}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (OUT / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    ca_usage = usage(key_cert_sign=True, crl_sign=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = cert("test root CA", root_key, name("test root CA"), root_key, when(2020), when(2120), True, ca_usage, path_length=1)
    write("root", root)
    write("root-pathlen0", cert("test root CA", root_key, name("test root CA"), root_key, when(2020), when(2120),
                                True, ca_usage, path_length=0))
    write("root-expired", cert("test root CA", root_key, name("test root CA"), root_key, when(2020), when(2021),
                               True, ca_usage, path_length=1))
    inter_key = ec.generate_private_key(ec.SECP384R1())
    inter = cert("test signing CA", inter_key, root.subject, root_key, when(2020), when(2120), True, ca_usage)
    write("intermediate", inter)

    leaves = {
        "leaf": (ec.SECP256R1(), when(2026), when(2126), usage(digital_signature=True), [ExtendedKeyUsageOID.CODE_SIGNING]),
        "leaf-eku": (ec.SECP384R1(), when(2026), when(2126), None, [ExtendedKeyUsageOID.CODE_SIGNING]),
        "leaf-nosign": (ec.SECP256R1(), when(2026), when(2126), usage(key_encipherment=True), [ExtendedKeyUsageOID.SERVER_AUTH]),
        "leaf-expired": (ec.SECP256R1(), when(2021), when(2022), usage(digital_signature=True), None),
        "leaf-early": (ec.SECP256R1(), when(2019, 6), when(2126), usage(digital_signature=True), None),
    }
    for stem, (curve, start, end, ku, eku) in leaves.items():
        key = ec.generate_private_key(curve)
        write(stem, cert(f"model signer ({stem})", key, inter.subject, inter_key, start, end, False, ku, eku), key)

    other_key = ec.generate_private_key(ec.SECP256R1())
    other = cert("other root CA", other_key, name("other root CA"), other_key, when(2020), when(2120), True, ca_usage)
    write("other-root", other)
    key = ec.generate_private_key(ec.SECP256R1())
    write("other-leaf", cert("model signer (other)", key, other.subject, other_key, when(2026), when(2126), False,
                             usage(digital_signature=True), [ExtendedKeyUsageOID.CODE_SIGNING]), key)


if __name__ == "__main__":
    main()
