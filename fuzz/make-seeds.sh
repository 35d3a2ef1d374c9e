#!/usr/bin/env bash
# Regenerates fuzz/seeds/: for every target, small valid inputs made by the gate itself from
# the bundled testdata, and hostile ones (truncated, huge declared lengths, deep nesting,
# invalid UTF-8, repeated names, non-finite numbers). The fuzzers mutate from these; the
# test `hostile_inputs` replays each of them through the same entry point.
#
# Needs a built binary (cargo build), openssl, and Python with pyarrow (PYTHON=...).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/debug/poisongate}
PY=${PYTHON:-python3}
S=fuzz/seeds
rm -rf "$S" && mkdir -p "$S"
for t in baseline check_csv ledger model_scan noise parent_report policy read_csv read_ipc \
  read_ndjson read_parquet sha256sum signature summary; do mkdir -p "$S/$t"; done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Small data files in every format, and hostile ones.
"$PY" - "$S" <<'PY'
import io, json, sys, pyarrow as pa, pyarrow.parquet as pq, pyarrow.ipc as ipc, pyarrow.csv as pcsv
S = sys.argv[1]
t = pq.read_table("testdata/clean/batch.parquet").slice(0, 24)
def w(target, name, data):
    open(f"{S}/{target}/{name}", "wb").write(data)
buf = io.BytesIO(); pq.write_table(t, buf, row_group_size=8); pq_bytes = buf.getvalue()
w("read_parquet", "small.parquet", pq_bytes)
w("read_parquet", "truncated_footer.parquet", pq_bytes[:-9])
# The footer's length field claims more bytes than the file holds.
w("read_parquet", "huge_footer_len.parquet", pq_bytes[:-8] + (2**31 - 1).to_bytes(4, "little") + b"PAR1")
w("read_parquet", "magic_only.parquet", b"PAR1PAR1")
types = pa.table({"i": pa.array([1, None, -(2**63)], pa.int64()), "f": [float("nan"), float("inf"), -0.0],
                  "s": pa.array(["a", None, "é" * 40]).dictionary_encode(), "b": [True, False, None],
                  "d": pa.array([0, 1, None], pa.date32()), "l": pa.array([[1], [], None], pa.list_(pa.int8()))})
buf = io.BytesIO(); pq.write_table(types, buf); w("read_parquet", "types.parquet", buf.getvalue())
buf = io.BytesIO()
with ipc.new_file(buf, t.schema) as f: f.write_table(t, max_chunksize=8)
w("read_ipc", "small.arrow", buf.getvalue())
w("read_ipc", "truncated.arrow", buf.getvalue()[:-12])
buf2 = io.BytesIO()
with ipc.new_stream(buf2, types.schema) as f: f.write_table(types)
w("read_ipc", "types.stream.arrow", buf2.getvalue())
buf = io.BytesIO()
with ipc.new_file(buf, types.schema) as f: f.write_table(types)
w("read_ipc", "types.arrow", buf.getvalue())
for codec in ("lz4", "zstd"):  # compressed buffers: each declares its decompressed length
    buf = io.BytesIO()
    with ipc.new_file(buf, types.schema, options=ipc.IpcWriteOptions(compression=codec)) as f:
        f.write_table(types)
    w("read_ipc", f"types.{codec}.arrow", buf.getvalue())
buf = io.BytesIO(); pcsv.write_csv(t, buf); csv = buf.getvalue()
w("read_csv", "small.csv", csv)
w("read_csv", "repeated_header.csv", b"a,b,a\n1,2,3\n")
w("read_csv", "ragged.csv", b"a,b\n1\n2,3,4\n\"5,6\n")
w("read_csv", "invalid_utf8.csv", b"a,b\n\xff\xfe,1\n")
w("read_csv", "header_only.csv", csv.split(b"\n")[0] + b"\n")
rows = t.to_pylist()
nd = "".join(json.dumps(r, default=str) + "\n" for r in rows).encode()
w("read_ndjson", "small.ndjson", nd)
w("read_ndjson", "deep.ndjson", b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}\n")
w("read_ndjson", "mixed_types.ndjson", b'{"a": 1}\n{"a": "x"}\n{"a": [1]}\n{"a": {"b": null}}\n')
w("read_ndjson", "invalid_utf8.ndjson", b'{"a": "\xff"}\n')
# check_csv: rows with the baseline's columns, clean and with hostile values.
w("check_csv", "clean.csv", b"\n".join(open("testdata/clean/batch.csv", "rb").read().split(b"\n")[:151]) + b"\n")
head = open("testdata/clean/batch.csv", "rb").readline()
w("check_csv", "hostile_values.csv", head + b"1,NaN,inf,-inf,,1e308,,,,1\n2,-1,-1e308,nan,999999999999,0,north,,web,0\n3,,,,,,,,,\n")
w("check_csv", "wrong_types.csv", head + b"x,y,z,w,v,u,t,s,r,q\n")
PY

# Gate artefacts, made by the gate.
"$BIN" profile testdata/trusted/applications.parquet -o "$tmp/baseline.json" --label defaulted --id application_id --seed 7 > /dev/null
cp "$tmp/baseline.json" "$S/baseline/bundled.json"
printf '{"format": "poisongate.baseline/1", "rows": -1}' > "$S/baseline/wrong_fields.json"
"$PY" -c 'import sys; sys.stdout.write("[" * 100000 + "]" * 100000)' > "$S/baseline/deep.json"
printf '\xff\xfe{"format": 1}' > "$S/baseline/invalid_utf8.json"
"$BIN" policy --init > "$S/policy/template.toml"
printf '[gate]\nprofile = "strict"\nnull-draws = 1000\n' > "$S/policy/strict.toml"
printf '[gate]\nnull-draws = 1e400\n[checks]\n"drift-numeric" = "nonsense"\n' > "$S/policy/bad.toml"
"$PY" -c 'import sys; sys.stdout.write("a = " + "[" * 5000 + "]" * 5000 + "\n")' > "$S/policy/deep.toml"
cmp=(--key application_id --label defaulted --before-col pred_before --after-col pred_after
     --before-score score_before --after-score score_after --segment channel --segment region)
"$BIN" compare testdata/compare/clean.parquet "${cmp[@]}" --pin-noise "$S/noise/pinned.json" > /dev/null
printf '{"format": "poisongate.noise/1", "rows": 1, "classes": [], "inputs": [], "entries": {"x": -1}}' > "$S/noise/negative.json"
"$BIN" plan testdata/clean/shards -o "$tmp/manifest.json" > /dev/null
cp "$tmp/manifest.json" "$S/summary/manifest.json"
"$BIN" summarize --baseline "$tmp/baseline.json" --manifest "$tmp/manifest.json" --shard 0/2 -o "$S/summary/shard0.part" > /dev/null
head -c 200 "$S/summary/shard0.part" > "$S/summary/truncated.part"
(cd "$tmp" && sha256sum baseline.json manifest.json) > "$S/sha256sum/plain.sha256"
printf '%064d *bin\\nary\r\n\\%064d  back\\\\slash\n' 0 1 > "$S/sha256sum/escaped.sha256"
printf 'not a digest\n\xff\n' > "$S/sha256sum/junk.sha256"
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/key.pem" 2> /dev/null
openssl ec -in "$tmp/key.pem" -pubout -out "$tmp/key.pub" 2> /dev/null
printf poisongate > "$tmp/msg"
openssl dgst -sha256 -sign "$tmp/key.pem" "$tmp/msg" | base64 -w0 > "$tmp/sig"
"$PY" - "$tmp" "$S/signature" <<'PY'
import sys
tmp, out = sys.argv[1:]
key, sig = open(f"{tmp}/key.pub", "rb").read(), open(f"{tmp}/sig", "rb").read()
frame = lambda k, s: len(k).to_bytes(2, "big") + k + s
open(f"{out}/valid", "wb").write(frame(key, sig))
open(f"{out}/raw_der", "wb").write(frame(key, __import__("base64").b64decode(sig)))
open(f"{out}/rsa_shaped", "wb").write(frame(b"-----BEGIN PUBLIC KEY-----\nMAo=\n-----END PUBLIC KEY-----\n", b"MAYCAQECAQE="))
PY
"$BIN" check --baseline "$tmp/baseline.json" testdata/clean/batch.parquet --ledger "$tmp/ledger" > /dev/null
"$BIN" check --baseline "$tmp/baseline.json" testdata/clean/shards --ledger "$tmp/ledger" > /dev/null
cp "$tmp/ledger/ledger.jsonl" "$S/ledger/two_entries.jsonl"
head -c 100 "$tmp/ledger/ledger.jsonl" > "$S/ledger/truncated.jsonl"
set +e
"$BIN" check --baseline "$tmp/baseline.json" testdata/poison/flip10.parquet --quarantine "$tmp/q.csv" --json "$S/parent_report/flip10.json" > /dev/null
set -e
test -s "$S/parent_report/flip10.json"
# Model files: the scan's corpus (benign, hostile and malformed; benches/scan/make_corpus.py).
for f in testdata/models/*/*; do cp "$f" "$S/model_scan/$(basename "$(dirname "$f")")_$(basename "$f")"; done
echo "seeds: $(find "$S" -type f | wc -l) files, $(du -sh "$S" | cut -f1)"
