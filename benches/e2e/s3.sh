#!/usr/bin/env bash
# S3 read throughput: the seeded ROWS-row Parquet batch of ../shared/bench/peers/gen.py read from
# moto's S3 server on loopback, next to the same file read locally.
#
#   ROWS=1000000 bash benches/e2e/s3.sh        # REPEAT=3 runs each; prints medians
#
# Timed, each REPEAT times:
# - `poisongate verify FILE --sha256-file` on the local file and on the object: read + SHA-256,
#   i.e. the raw read path (for S3: list-free GET, stream to the spill directory, hash);
# - boto3's `download_file` of the same object (a peer's S3 read, multipart and threaded);
# - `poisongate check` of the local file and of the object, with every detector.
# moto is a Python server holding objects in memory: the S3 numbers measure this client against
# that server on one machine, not AWS.
set -euo pipefail
ROWS=${ROWS:-1000000}
REPEAT=${REPEAT:-3}
source "$(dirname "$0")/common.sh"

MOTO_VENV=${MOTO_VENV:-$ROOT/target/moto-venv}
if [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install --quiet -r "$ROOT/scripts/requirements-s3.txt"
fi
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" > "$tmp/moto.log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_EC2_METADATA_DISABLED=true

if [ ! -f "$DIR/baseline.json" ]; then
  "$BIN" profile "$DIR/reference.parquet" -o "$DIR/baseline.json" --label label --seed 1 >&2
fi
"$MOTO_VENV/bin/python" - "$DIR/current.parquet" <<'PY'
import sys, time, boto3
s3 = boto3.client("s3")
for _ in range(100):
    try:
        s3.create_bucket(Bucket="bench")
        break
    except Exception:
        time.sleep(0.2)
s3.upload_file(sys.argv[1], "bench", "batch/current.parquet")
PY
(cd "$DIR" && sha256sum current.parquet) > "$tmp/SHA256SUMS"
cp "$tmp/SHA256SUMS" "$tmp/sums-s3"
cat "$DIR/current.parquet" > /dev/null
bytes=$(stat -c %s "$DIR/current.parquet")

peer='import sys, time, boto3
s3 = boto3.client("s3")
t = time.perf_counter(); s3.download_file("bench", "batch/current.parquet", sys.argv[1])
print(f"{time.perf_counter() - t:.3f}")'

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timed() { # prints "wall_s rss_kib" of a command whose exit code must be $1
  local want=$1; shift
  set +e
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" > /dev/null 2> "$tmp/err"
  local rc=$?
  set -e
  if [ "$rc" -ne "$want" ]; then echo "exit $rc, expected $want: $*" >&2; cat "$tmp/err" >&2; exit 1; fi
  tail -n 1 "$tmp/time"  # GNU time prefixes a "Command exited with non-zero status" line
}
# The seeded current batch drifts from the reference by design: whatever `check` decides
# locally, the S3 copy must decide the same.
set +e
"$BIN" check --baseline "$DIR/baseline.json" "$DIR/current.parquet" > /dev/null 2>&1
verdict=$?
set -e
declare -A wall rss
for i in $(seq "$REPEAT"); do
  for case in verify-local verify-s3 check-local check-s3; do
    case $case in
      verify-local) r=$(timed 0 "$BIN" verify "$DIR/current.parquet" --sha256-file "$tmp/SHA256SUMS") ;;
      verify-s3) r=$(timed 0 "$BIN" verify s3://bench/batch/current.parquet --sha256-file "$tmp/sums-s3") ;;
      check-local) r=$(timed "$verdict" "$BIN" check --baseline "$DIR/baseline.json" "$DIR/current.parquet") ;;
      check-s3) r=$(timed "$verdict" "$BIN" check --baseline "$DIR/baseline.json" s3://bench/batch/current.parquet) ;;
    esac
    wall[$case]+="${r% *} "; rss[$case]+="${r#* } "
  done
  rm -f "$tmp/peer.parquet"
  wall[boto3]+="$("$MOTO_VENV/bin/python" -c "$peer" "$tmp/peer.parquet") "
done

mb=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1e6}')
echo "S3 read throughput, $ROWS rows, $mb MB Parquet (medians of $REPEAT; moto on loopback)"
printf '%-14s %9s %10s %12s\n' case wall_s MB/s peak_RSS_MiB
for case in verify-local verify-s3 boto3 check-local check-s3; do
  # shellcheck disable=SC2086
  w=$(median ${wall[$case]})
  if [ "$case" = boto3 ]; then m="-"; else
    # shellcheck disable=SC2086
    m=$(awk -v k="$(median ${rss[$case]})" 'BEGIN {printf "%.0f", k / 1024}')
  fi
  printf '%-14s %9s %10s %12s\n' "$case" "$w" "$(awk -v b="$bytes" -v w="$w" 'BEGIN {printf "%.0f", b / 1e6 / w}')" "$m"
done
