#!/usr/bin/env bash
# Interoperability of `poisongate verify --model` and `poisongate sign` with the reference
# implementation of OpenSSF model signing (the `model-signing` package, pinned in
# scripts/requirements-modelsign.txt): bundles the reference tool makes in this run verify in
# poisongate and tampered copies fail with exit 1; bundles poisongate makes verify with
# `model_signing verify key`; a verdict signed by `check --attest` verifies with openssl. Each
# case prints one `ok` line; the first failure exits 1.
#
# Usage: scripts/modelsign/interop.sh BIN   (run by scripts/test.sh after cargo test)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(realpath "${1:?usage: interop.sh BIN}")

venv=${POISONGATE_MODELSIGN_VENV:-target/modelsign-venv}
if [ ! -x "$venv/bin/model_signing" ] || ! "$venv/bin/python" -c 'import model_signing, OpenSSL' 2>/dev/null; then
  echo "installing model-signing into $venv (scripts/requirements-modelsign.txt)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-modelsign.txt
fi
MS="$(realpath "$venv")/bin/model_signing"
PY="$(realpath "$venv")/bin/python"
echo "reference: model-signing $("$venv/bin/pip" show model-signing 2>/dev/null | sed -n 's/^Version: //p')"

repo=$(pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/modelsign.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

cases=0
fail() { echo "FAIL: $*"; exit 1; }
# expect WANT DESCRIPTION PATTERN -- CMD...: CMD exits WANT and its output matches PATTERN.
expect() {
  local want=$1 what=$2 pattern=$3; shift 4
  set +e
  "$@" > out.txt 2>&1
  local got=$?
  set -e
  if [ "$got" -ne "$want" ]; then cat out.txt; fail "$what: expected exit $want, got $got: $*"; fi
  if [ -n "$pattern" ] && ! grep -Eq -- "$pattern" out.txt; then
    cat out.txt; fail "$what: output does not match /$pattern/"
  fi
  cases=$((cases + 1))
  echo "ok (exit $got): $what"
}

for curve in prime256v1 secp384r1 secp521r1; do
  openssl ecparam -name "$curve" -genkey -noout -out "$curve.pem"
  openssl ec -in "$curve.pem" -pubout -out "$curve.pub" 2>/dev/null
done
openssl ecparam -name prime256v1 -genkey -noout -out other.pem
openssl ec -in other.pem -pubout -out other.pub 2>/dev/null

# A model directory of the usual shape: config, tokenizer, weight shards, an empty file, a
# nested directory, and git metadata that signing leaves out.
make_model() {
  rm -rf "$1"; mkdir -p "$1/tokenizer" "$1/weights/extra" "$1/.git"
  printf '{"architectures": ["Toy"], "hidden": 16}\n' > "$1/config.json"
  printf 'a\nb\nc\n' > "$1/tokenizer/vocab.txt"
  for i in 1 2 3; do head -c $((20000 + i * 777)) /dev/urandom > "$1/weights/shard-0000$i.bin"; done
  : > "$1/weights/extra/empty.bin"
  printf 'ref: refs/heads/main\n' > "$1/.git/HEAD"
  printf '*.tmp\n' > "$1/.gitignore"
}

verify() { "$BIN" verify --model "$1" --bundle "$2" --public-key "$3" "${@:4}"; }

# 1. Bundles made by the reference tool, every curve, verify in poisongate.
for curve in prime256v1 secp384r1 secp521r1; do
  make_model "m-$curve"
  "$MS" sign key "m-$curve" --private_key "$curve.pem" --signature "m-$curve/model.sig" > /dev/null
  expect 0 "reference sign key ($curve) verifies" "OK: signature verified" -- verify "m-$curve" "m-$curve/model.sig" "$curve.pub"
done
# The signature outside the directory works too.
make_model m-out
"$MS" sign key m-out --private_key prime256v1.pem --signature out.sig > /dev/null
expect 0 "reference bundle outside the directory" "6 file" -- verify m-out out.sig prime256v1.pub

# 2. Tampered copies of a reference-signed model fail with exit 1, naming what changed.
fresh() { rm -rf t; cp -a m-prime256v1 t; }
fresh; printf 'X' | dd of=t/weights/shard-00002.bin bs=1 seek=100 conv=notrunc 2> /dev/null
expect 1 "a changed byte" "weights/shard-00002.bin: FAILED: changed" -- verify t t/model.sig prime256v1.pub
fresh; echo extra > t/weights/backdoor.bin
expect 1 "an extra file" "weights/backdoor.bin: FAILED: not signed" -- verify t t/model.sig prime256v1.pub
expect 0 "an extra file with --ignore-unsigned-files" "1 unsigned file" -- verify t t/model.sig prime256v1.pub --ignore-unsigned-files
fresh; rm t/tokenizer/vocab.txt
expect 1 "a removed file" "tokenizer/vocab.txt: FAILED: signed but missing" -- verify t t/model.sig prime256v1.pub
expect 1 "a removed file with --ignore-unsigned-files" "tokenizer/vocab.txt: FAILED: signed but missing" -- verify t t/model.sig prime256v1.pub --ignore-unsigned-files
fresh; mv t/weights/shard-00001.bin t/weights/shard-00009.bin
expect 1 "a renamed file" "shard-00009.bin: FAILED: renamed from the signed weights/shard-00001.bin" -- verify t t/model.sig prime256v1.pub
fresh
expect 1 "a wrong key" "does not verify with this public key" -- verify t t/model.sig other.pub
expect 1 "a key on another curve" "does not verify with this public key \(ECDSA P-384" -- verify t t/model.sig secp384r1.pub
# The payload edited to match a swapped file (digest and root digest both recomputed), with
# the original signature: the signature no longer verifies.
fresh; echo poisoned > t/config.json
"$PY" - t/model.sig t/config.json <<'PY'
import base64, hashlib, json, sys
path, changed = sys.argv[1], sys.argv[2]
b = json.load(open(path))
st = json.loads(base64.b64decode(b["dsseEnvelope"]["payload"]))
for r in st["predicate"]["resources"]:
    if r["name"] == "config.json":
        r["digest"] = hashlib.sha256(open(changed, "rb").read()).hexdigest()
root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in st["predicate"]["resources"]))
st["subject"][0]["digest"]["sha256"] = root.hexdigest()
b["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
json.dump(b, open(path, "w"))
PY
expect 1 "an edited payload" "does not verify with this public key" -- verify t t/model.sig prime256v1.pub
fresh
"$PY" - t/model.sig <<'PY'
import base64, json, sys
b = json.load(open(sys.argv[1]))
s = bytearray(base64.b64decode(b["dsseEnvelope"]["signatures"][0]["sig"]))
s[-5] ^= 0x01
b["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(s)).decode()
json.dump(b, open(sys.argv[1], "w"))
PY
expect 1 "a flipped signature byte" "does not verify with this public key" -- verify t t/model.sig prime256v1.pub
# The key hint is never trusted: a bundle whose hint names another key still verifies with
# the right key and fails with the wrong one.
fresh
"$PY" - t/model.sig <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
b["verificationMaterial"]["publicKey"]["hint"] = "0" * 64
json.dump(b, open(sys.argv[1], "w"))
PY
expect 0 "a wrong key hint is ignored" "OK: signature verified" -- verify t t/model.sig prime256v1.pub

# 3. The signed policy: ignore paths, symbolic links, shards.
make_model m-ign; echo "draft" > m-ign/NOTES.md
"$MS" sign key m-ign --private_key prime256v1.pem --signature m-ign/model.sig --ignore-paths m-ign/NOTES.md > /dev/null
echo "changed after signing" > m-ign/NOTES.md
expect 0 "a signed ignore path is skipped" "OK" -- verify m-ign m-ign/model.sig prime256v1.pub

make_model m-link; ln -s weights/shard-00001.bin m-link/alias.bin
"$MS" sign key m-link --private_key prime256v1.pem --signature m-link/model.sig --allow_symlinks > /dev/null
expect 0 "a symbolic link the signed policy allows" "OK" -- verify m-link m-link/model.sig prime256v1.pub
printf 'X' | dd of=m-link/weights/shard-00001.bin bs=1 seek=5 conv=notrunc 2> /dev/null
expect 1 "a changed link target" "alias.bin: FAILED: changed" -- verify m-link m-link/model.sig prime256v1.pub
fresh; ln -s /etc/hostname t/weights/sneaky.bin
expect 1 "a symbolic link the signed policy does not allow" "weights/sneaky.bin: a symbolic link, which the signed policy does not allow" -- verify t t/model.sig prime256v1.pub

make_model m-shard
"$PY" - m-shard prime256v1.pem <<'PY'
import sys
from model_signing import hashing, signing
model, key = sys.argv[1], sys.argv[2]
signing.Config().use_elliptic_key_signer(private_key=key).set_hashing_config(
    hashing.Config().use_shard_serialization(shard_size=4096)
).sign(model, f"{model}/model.sig")
PY
expect 0 "reference shards serialization verifies shard by shard" "shards serialization" -- verify m-shard m-shard/model.sig prime256v1.pub
printf 'X' | dd of=m-shard/weights/shard-00003.bin bs=1 seek=9000 conv=notrunc 2> /dev/null
expect 1 "a changed byte in one shard" "weights/shard-00003.bin: FAILED: bytes 8192..12288 changed" -- verify m-shard m-shard/model.sig prime256v1.pub

# 4. Bundles poisongate makes verify with the reference tool, on every curve.
for curve in prime256v1 secp384r1 secp521r1; do
  make_model "p-$curve"
  "$BIN" sign --model "p-$curve" --key "$curve.pem" > /dev/null
  expect 0 "poisongate sign ($curve) verifies with model_signing verify key" "Verification succeeded" -- \
    "$MS" verify key "p-$curve" --signature "p-$curve/model.sig" --public_key "$curve.pub"
  expect 0 "poisongate sign ($curve) verifies with poisongate" "OK" -- verify "p-$curve" "p-$curve/model.sig" "$curve.pub"
done
echo tampered >> p-prime256v1/config.json
expect 1 "a changed file fails model_signing verify on a poisongate bundle" "Hash mismatch for 'config.json'" -- \
  "$MS" verify key p-prime256v1 --signature p-prime256v1/model.sig --public_key prime256v1.pub
make_model p-ign; echo draft > p-ign/NOTES.md
"$BIN" sign --model p-ign --key prime256v1.pem --signature p-ign.sig --ignore-paths NOTES.md > /dev/null
echo changed > p-ign/NOTES.md
expect 0 "a poisongate ignore path is honoured by model_signing" "Verification succeeded" -- \
  "$MS" verify key p-ign --signature p-ign.sig --public_key prime256v1.pub

# 4b. Certificate mode, both ways, with the committed hierarchy of testdata/modelsign/certs
# (scripts/modelsign/make_certs.py): each bundle carries the signing certificate and the
# intermediate CA, and each verifier trusts the root only. The two verifiers must agree on
# every certificate, including the ones they refuse.
certs="$repo/testdata/modelsign/certs"
cverify() { "$BIN" verify --model "$1" --bundle "$2" --certificate-chain "$certs/${3:-root.pem}"; }
for leaf in leaf leaf-eku leaf-expired leaf-nosign leaf-early other-leaf; do
  make_model "c-$leaf"
  "$MS" sign certificate "c-$leaf" --private_key "$certs/$leaf.key" --signing_certificate "$certs/$leaf.pem" \
    --certificate_chain "$certs/intermediate.pem" --signature "c-$leaf/model.sig" > /dev/null
  make_model "pc-$leaf"
  "$BIN" sign --model "pc-$leaf" --key "$certs/$leaf.key" --signing-certificate "$certs/$leaf.pem" \
    --certificate-chain "$certs/intermediate.pem" > /dev/null
  case $leaf in
    leaf|leaf-eku|leaf-expired) want=0 ref="Verification succeeded" ours="OK: signature verified" ;;
    leaf-nosign) want=1 ref="cannot be used for signing" ours="may not sign" ;;
    *) want=1 ref="unable to get|certificate is not yet valid|verify error" ours="does not chain to the CA certificates" ;;
  esac
  expect "$want" "reference sign certificate ($leaf) in poisongate verify --certificate-chain" "$ours" -- cverify "c-$leaf" "c-$leaf/model.sig"
  expect "$want" "poisongate sign --signing-certificate ($leaf) in model_signing verify certificate" "$ref" -- \
    "$MS" verify certificate "pc-$leaf" --signature "pc-$leaf/model.sig" --certificate_chain "$certs/root.pem"
done
printf 'X' | dd of=c-leaf/weights/shard-00002.bin bs=1 seek=10 conv=notrunc 2> /dev/null
expect 1 "a changed byte under a reference certificate bundle" "weights/shard-00002.bin: FAILED: changed" -- cverify c-leaf c-leaf/model.sig
expect 1 "a reference certificate bundle against another root" "no path to a trusted CA" -- cverify c-leaf-eku c-leaf-eku/model.sig other-root.pem
expect 2 "a reference key bundle in certificate mode" "verify it with --public-key" -- cverify m-prime256v1 m-prime256v1/model.sig
# Anchors both verifiers refuse: the root's key and name with path length 0, or expired before
# the signing certificate's notBefore, and a certificate that is no CA (ours refuses it as a CA
# file, exit 2; the reference finds no issuer, exit 1).
for anchor in root-pathlen0 root-expired; do
  case $anchor in
    root-pathlen0) ours="path length constraint \(0\) is exceeded" ref="path length constraint exceeded" ;;
    root-expired) ours="the CA certificate was not valid at that time" ref="certificate has expired" ;;
  esac
  expect 1 "poisongate verify with $anchor.pem as the CA" "$ours" -- cverify c-leaf-eku c-leaf-eku/model.sig "$anchor.pem"
  expect 1 "model_signing verify with $anchor.pem as the CA" "$ref" -- \
    "$MS" verify certificate c-leaf-eku --signature c-leaf-eku/model.sig --certificate_chain "$certs/$anchor.pem"
done
expect 2 "poisongate verify with a signing certificate as the CA" "is not a CA certificate" -- cverify c-leaf-eku c-leaf-eku/model.sig leaf.pem
expect 1 "model_signing verify with a signing certificate as the CA" "Verification failed" -- \
  "$MS" verify certificate c-leaf-eku --signature c-leaf-eku/model.sig --certificate_chain "$certs/leaf.pem"

# 5. Modes this verifier refuses: exit 2 with one line, never a pass.
"$PY" - m-prime256v1/model.sig keyless.sig <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
b["verificationMaterial"] = {"certificate": {"rawBytes": "MIIB"}, "tlogEntries": [{"logIndex": "1"}]}
json.dump(b, open(sys.argv[2], "w"))
PY
expect 2 "a keyless Sigstore bundle is refused" "keyless Sigstore bundle" -- verify m-prime256v1 keyless.sig prime256v1.pub

# 6. A signed verdict (check --attest) verified outside poisongate: the DSSE signature over
# PAE(type, payload) checked by openssl from the shell (neither sigstore-python nor cosign
# verifies a key-only DSSE bundle without a transparency-log entry offline).
"$BIN" profile "$repo/testdata/trusted/applications.parquet" -o baseline.json --label defaulted --id application_id > /dev/null
set +e
"$BIN" check --baseline baseline.json "$repo/testdata/clean/batch.parquet" --attest prime256v1.pem --attestation verdict.sig > /dev/null
rc=$?
set -e
[ "$rc" -eq 0 ] || fail "check --attest on the clean batch exited $rc"
"$PY" - verdict.sig <<'PY'
import base64, json, sys
b = json.load(open(sys.argv[1]))
env = b["dsseEnvelope"]
payload = base64.b64decode(env["payload"])
t = env["payloadType"].encode()
open("pae.bin", "wb").write(b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload))
open("sig.der", "wb").write(base64.b64decode(env["signatures"][0]["sig"]))
st = json.loads(payload)
assert st["predicateType"] == "https://slsa.dev/verification_summary/v1", st["predicateType"]
assert st["predicate"]["verificationResult"] == "PASSED"
PY
expect 0 "openssl verifies the DSSE signature of a poisongate verdict" "Verified OK" -- \
  openssl dgst -sha256 -verify prime256v1.pub -signature sig.der pae.bin
printf 'X' >> pae.bin
expect 1 "openssl refuses the verdict with one byte appended" "Verification failure" -- \
  openssl dgst -sha256 -verify prime256v1.pub -signature sig.der pae.bin
expect 0 "verify --attestation passes the attested batch" "is a subject of the verdict" -- \
  "$BIN" verify --attestation verdict.sig --public-key prime256v1.pub "$repo/testdata/clean/batch.parquet"
cp "$repo/testdata/clean/batch.parquet" swapped.parquet
printf 'X' >> swapped.parquet
expect 1 "verify --attestation refuses a batch swapped after the gate" "swapped.parquet: FAILED" -- \
  "$BIN" verify --attestation verdict.sig --public-key prime256v1.pub swapped.parquet

echo "model-signing interoperability: $cases cases passed"
