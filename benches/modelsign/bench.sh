#!/usr/bin/env bash
# Times `poisongate verify --model` beside `sha256sum` (one process, and one per core), `openssl
# dgst -sha256` over the same files and the reference verifier (`model_signing verify key`),
# side by side in one run, on a generated model directory of many files (default 2 GiB: 8
# weight shards of 192 MiB, 64 of 8 MiB and 400 small files). Page cache warm: each tool runs once untimed, then REPS times in turn.
#
# Usage (from the repository root, after `cargo build --release`):
#   bash benches/modelsign/bench.sh [--bin target/release/poisongate] [--out /tmp/pg-modelsign] [--reps 3]
# The reference tool comes from target/modelsign-venv (scripts/modelsign/interop.sh installs it).
set -euo pipefail
bin=target/release/poisongate
out=/tmp/pg-modelsign
reps=3
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bin=$(realpath "$bin")
ms=$(realpath target/modelsign-venv/bin/model_signing)
model="$out/model"
if [ ! -f "$out/.done" ]; then
  rm -rf "$out"; mkdir -p "$model/weights" "$model/layers" "$model/misc"
  # Fast incompressible bytes: AES-CTR of zeros (openssl), not /dev/urandom.
  # (openssl dies of SIGPIPE when head has enough; that is not a failure.)
  gen() { { openssl enc -aes-128-ctr -nosalt -pass "pass:$1" -in /dev/zero 2> /dev/null || true; } | head -c "$2" > "$3"; }
  for i in $(seq 1 8); do gen "w$i" $((192 << 20)) "$model/weights/model-0000$i-of-00008.safetensors"; done
  for i in $(seq 1 64); do gen "l$i" $((8 << 20)) "$model/layers/layer-$i.bin"; done
  for i in $(seq 1 400); do gen "m$i" $((1000 + i * 37)) "$model/misc/part-$i.json"; done
  openssl ecparam -name prime256v1 -genkey -noout -out "$out/key.pem"
  openssl ec -in "$out/key.pem" -pubout -out "$out/key.pub" 2> /dev/null
  "$ms" sign key "$model" --private_key "$out/key.pem" --signature "$out/model.sig" > /dev/null
  touch "$out/.done"
fi
files=$(find "$model" -type f | wc -l)
bytes=$(find "$model" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f", s}')
echo "model: $files files, $bytes bytes; $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"

run_sha256sum() { find "$model" -type f -print0 | xargs -0 sha256sum > /dev/null; }
# OpenSSL's SHA-256 uses the CPU's SHA extensions where coreutils 9.1 does not: the hashing
# floor of one core.
run_openssl() { find "$model" -type f -print0 | xargs -0 openssl dgst -sha256 > /dev/null; }
run_sha256sum_par() { find "$model" -type f -print0 | xargs -0 -P "$(nproc)" -n 16 sha256sum > /dev/null; }
run_poisongate() { "$bin" verify --model "$model" --bundle "$out/model.sig" --public-key "$out/key.pub" > /dev/null; }
run_reference() { "$ms" verify key "$model" --signature "$out/model.sig" --public_key "$out/key.pub" > /dev/null 2>&1; }

tools=(sha256sum sha256sum_par openssl poisongate reference)
for t in "${tools[@]}"; do "run_$t"; done   # warm the page cache and check every tool passes
declare -A best
for _ in $(seq 1 "$reps"); do
  for t in "${tools[@]}"; do
    s=$(date +%s.%N); "run_$t"; e=$(date +%s.%N)
    d=$(echo "$e - $s" | bc -l)
    if [ -z "${best[$t]:-}" ] || (( $(echo "$d < ${best[$t]}" | bc -l) )); then best[$t]=$d; fi
  done
done
printf '%-16s %10s %10s %12s\n' tool seconds GB/s "vs sha256sum"
for t in "${tools[@]}"; do
  printf '%-16s %10.2f %10.2f %12.2f\n' "$t" "${best[$t]}" "$(echo "$bytes / ${best[$t]} / 1000000000" | bc -l)" \
    "$(echo "${best[$t]} / ${best[sha256sum]}" | bc -l)"
done
