#!/usr/bin/env bash
# Builds the gate's image from a built binary and runs it once on the bundled data.
#
#   bash pipelines/image/build.sh [BIN] [TAG]
#     BIN  the binary to ship (default target/release/poisongate; CI ships the test build's
#          target/debug/poisongate, stripped: see pipelines/README.md, "The image")
#     TAG  the image's name (default localhost/poisongate:VERSION)
#
# Needs buildah (Debian: apt-get install buildah) and root: the build uses buildah's vfs
# storage and chroot isolation, which need no container engine, no daemon and no registry
# (FROM scratch pulls nothing). Storage lives under target/buildah and is removed at exit.
#
# Then, in the image as built (its user, its entrypoint, nothing mounted but the data):
#   - the image has no shell and runs as 65532:65532, with the OCI labels set;
#   - profile the trusted data, verify the baseline's digest, check the clean batch (exit 0),
#     a poisoned batch (exit 1) and a truncated file (exit 2);
#   - with target/moto-venv present (scripts/test.sh installs it), check an s3:// batch
#     from moto's server on loopback.
# With POISONGATE_IMAGE_ARCHIVE=FILE, the image is also written there as an OCI archive
# (`skopeo copy oci-archive:FILE docker://REGISTRY/...` or `podman load -i FILE` take it on).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/poisongate}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
TAG=${2:-localhost/poisongate:$version}
test -x "$BIN" || { echo "build.sh: no binary at $BIN (cargo build --release)"; exit 2; }
command -v buildah > /dev/null || { echo "build.sh: buildah is not installed (apt-get install buildah)"; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/poisongate-image.XXXXXX")
store=$PWD/target/buildah
B=(buildah --storage-driver vfs --root "$store/root" --runroot "$store/run")
ctr=""
cleanup() {
  [ -n "$ctr" ] && "${B[@]}" rm "$ctr" > /dev/null 2>&1 || true
  [ -n "${moto_pid:-}" ] && kill "$moto_pid" 2> /dev/null || true
  "${B[@]}" rmi -f "$TAG" > /dev/null 2>&1 || true
  rm -rf "$work" "$store"
}
trap cleanup EXIT

# The build context: a root filesystem with the binary, the shared objects it links (as ldd
# resolves them on this machine, at the paths the loader looks for them), the CA bundle, an
# /etc/passwd naming the numeric user, and a world-writable sticky /tmp.
root=$work/rootfs
install -d "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/work"
install -d -m 1777 "$root/tmp"
if command -v strip > /dev/null; then
  strip --strip-debug -o "$root/usr/local/bin/poisongate" "$BIN"
else
  cp "$BIN" "$root/usr/local/bin/poisongate"
fi
chmod 0755 "$root/usr/local/bin/poisongate"
ldd "$BIN" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' | while read -r lib; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
ca=/etc/ssl/certs/ca-certificates.crt
test -s "$ca" || { echo "build.sh: no CA bundle at $ca (apt-get install ca-certificates)"; exit 2; }
install -m 0644 "$ca" "$root$ca"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/work:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
cp pipelines/image/Containerfile "$work/Containerfile"
echo "image: $(find "$root" -type f | wc -l) files, $(du -sh "$root" | cut -f1)"

source_url=${POISONGATE_IMAGE_SOURCE:-$(git remote get-url origin 2> /dev/null || echo unknown)}
revision=$(git rev-parse HEAD 2> /dev/null || echo unknown)
"${B[@]}" bud --quiet --isolation chroot --layers=false \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg SOURCE="$source_url" \
  -t "$TAG" -f "$work/Containerfile" "$work" > /dev/null
echo "ok: built $TAG"

# What the image is, read from its configuration.
config() { "${B[@]}" inspect --type image --format "$1" "$TAG"; }
[ "$(config '{{.OCIv1.Config.User}}')" = "65532:65532" ] || { echo "build.sh: the image's user is not 65532:65532"; exit 1; }
[ "$(config '{{index .OCIv1.Config.Entrypoint 0}}')" = "/usr/local/bin/poisongate" ] \
  || { echo "build.sh: the entrypoint is not the binary"; exit 1; }
for label in source version revision licenses; do
  value=$(config "{{index .OCIv1.Config.Labels \"org.opencontainers.image.$label\"}}")
  [ -n "$value" ] || { echo "build.sh: label org.opencontainers.image.$label is empty"; exit 1; }
done
[ "$(config '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}')" = "$version" ] \
  || { echo "build.sh: the version label is not $version"; exit 1; }
echo "ok: user 65532:65532, entrypoint the binary, OCI labels source/version/revision/licenses"

# Run the image as a pipeline would: its entrypoint and user, the data read-only, one
# writable directory for the outputs.
data=$work/data
out=$work/out
install -d "$data" "$out"
chmod 0777 "$out"
cp -r testdata/trusted testdata/clean testdata/poison testdata/broken "$data/"
chmod -R a+rX "$data"
ctr=$("${B[@]}" from --quiet "$TAG")
run() { # run WANT ARGS...: the image with ARGS must exit WANT
  local want=$1 got; shift
  set +e
  "${B[@]}" run --isolation chroot --volume "$data:/data:ro" --volume "$out:/out" \
    "$ctr" -- /usr/local/bin/poisongate "$@" > "$work/run.log" 2>&1
  got=$?
  set -e
  if [ "$got" -ne "$want" ]; then
    cat "$work/run.log"; echo "build.sh: expected exit $want, got $got: poisongate $*"; exit 1
  fi
  echo "ok (exit $got in the image): poisongate $*"
}
if "${B[@]}" run --isolation chroot "$ctr" -- /bin/sh -c true > /dev/null 2>&1; then
  echo "build.sh: the image has a shell"; exit 1
fi
echo "ok: no /bin/sh in the image"
run 0 profile /data/trusted/applications.parquet -o /out/baseline.json --label defaulted --id application_id
run 0 verify /out/baseline.json --sha256-file /out/baseline.json.sha256
run 0 check --baseline /out/baseline.json /data/clean/batch.parquet --json /out/clean.json
run 1 check --baseline /out/baseline.json /data/poison/trigger_channel.parquet --json /out/poison.json
run 2 check --baseline /out/baseline.json /data/broken/truncated.parquet
grep -q '"verdict": "pass"' "$out/clean.json" && grep -q '"verdict": "blocked"' "$out/poison.json" \
  || { echo "build.sh: the reports written in the image do not say pass / blocked"; exit 1; }
[ "$(stat -c %u "$out/clean.json")" = 65532 ] || { echo "build.sh: the report is not owned by 65532"; exit 1; }

# S3 from the image: moto's server on loopback (chroot isolation shares the host's network).
if [ -x target/moto-venv/bin/moto_server ]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  target/moto-venv/bin/moto_server -H 127.0.0.1 -p "$port" > "$work/moto.log" 2>&1 &
  moto_pid=$!
  AWS_ENDPOINT_URL="http://127.0.0.1:$port" target/moto-venv/bin/python - <<'PY'
import os, time, boto3
s3 = boto3.client("s3", aws_access_key_id="ci", aws_secret_access_key="ci", region_name="us-east-1",
                  endpoint_url=os.environ["AWS_ENDPOINT_URL"])
for _ in range(100):
    try:
        s3.create_bucket(Bucket="pg-image")
        break
    except Exception:
        time.sleep(0.2)
s3.upload_file("testdata/poison/trigger_channel.parquet", "pg-image", "batch/trigger_channel.parquet")
s3.upload_file("testdata/clean/batch.parquet", "pg-image", "clean/batch.parquet")
PY
  s3env=(--env AWS_ACCESS_KEY_ID=ci --env AWS_SECRET_ACCESS_KEY=ci --env AWS_REGION=us-east-1
         --env "AWS_ENDPOINT_URL=http://127.0.0.1:$port" --env AWS_EC2_METADATA_DISABLED=true)
  run_s3() {
    local want=$1 got; shift
    set +e
    "${B[@]}" run --isolation chroot "${s3env[@]}" --volume "$out:/out" \
      "$ctr" -- /usr/local/bin/poisongate "$@" > "$work/run.log" 2>&1
    got=$?
    set -e
    [ "$got" -eq "$want" ] || { cat "$work/run.log"; echo "build.sh: expected exit $want, got $got: poisongate $*"; exit 1; }
    echo "ok (exit $got in the image): poisongate $*"
  }
  run_s3 0 check --baseline /out/baseline.json s3://pg-image/clean/batch.parquet
  run_s3 1 check --baseline /out/baseline.json s3://pg-image/batch/trigger_channel.parquet
else
  echo "skipped: the S3 run (no target/moto-venv; bash scripts/test.sh installs it)"
fi
if [ -n "${POISONGATE_IMAGE_ARCHIVE:-}" ]; then
  rm -f "$POISONGATE_IMAGE_ARCHIVE"
  "${B[@]}" push --quiet "$TAG" "oci-archive:$POISONGATE_IMAGE_ARCHIVE:$TAG"
  tar -xOf "$POISONGATE_IMAGE_ARCHIVE" index.json | grep -q "$TAG" \
    || { echo "build.sh: $POISONGATE_IMAGE_ARCHIVE does not name $TAG"; exit 1; }
  echo "ok: wrote $POISONGATE_IMAGE_ARCHIVE ($(du -h "$POISONGATE_IMAGE_ARCHIVE" | cut -f1), OCI archive)"
fi
echo "image built and run: $TAG"
