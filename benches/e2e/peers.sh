#!/usr/bin/env bash
# poisongate beside the per-column scipy gate (ks_2samp + chi2_contingency, alpha 0.05) on the
# same seeded files of ../shared/bench/peers/gen.py: wall time, peak RSS, and which columns
# each flags against the generator's ground truth (5 drifted columns of 20).
#
#   ROWS=1000000 bash benches/e2e/peers.sh
#
# poisongate's time is `check` of current.parquet against a baseline pinned once from
# reference.parquet (pinning is reported separately); scipy reads and compares both files.
set -euo pipefail
ROWS=${ROWS:-1000000}
source "$(dirname "$0")/common.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat "$DIR"/*.parquet > /dev/null

/usr/bin/time -f "%e %M" -o "$tmp/profile.time" \
  "$BIN" profile "$DIR/reference.parquet" -o "$tmp/baseline.json" --label label --seed 1 > /dev/null
set +e
/usr/bin/time -f "%e %M" -o "$tmp/check.time" \
  "$BIN" check --baseline "$tmp/baseline.json" "$DIR/current.parquet" --json "$tmp/report.json" > /dev/null
set -e
(cd "$PEERS" && /usr/bin/time -f "%e %M" -o "$tmp/scipy.time" \
  "$VENV/bin/python" run_scipy.py --data "$DIR" > "$tmp/scipy.out")

python3 - "$tmp" "$DIR/manifest.json" <<'PY'
import json, sys
tmp, manifest = sys.argv[1], json.load(open(sys.argv[2]))
truth = set(manifest["drifted"])
def t(name):
    s, kib = open(f"{tmp}/{name}.time").read().splitlines()[-1].split()
    return float(s), int(kib) / 1024
report = json.load(open(f"{tmp}/report.json"))
pg = {f["subject"].get("column") for f in report["findings"] if f["code"].startswith(("drift-", "schema-"))}
pg_deny = {f["subject"].get("column") for f in report["findings"] if f["severity"] == "deny"}
scipy = next(json.loads(l[7:]) for l in open(f"{tmp}/scipy.out") if l.startswith("RESULT "))
sp = set(scipy["flagged"])
(pt, pr), (ct, cr), (st, sr) = t("profile"), t("check"), t("scipy")
print(f"rows={manifest['rows']} drifted truth={sorted(truth)}")
print(f"poisongate profile (once):  {pt:6.2f} s  {pr:7.0f} MiB")
print(f"poisongate check:           {ct:6.2f} s  {cr:7.0f} MiB  verdict={report['verdict']}")
print(f"scipy ks_2samp + chi2:      {st:6.2f} s  {sr:7.0f} MiB")
print(f"speed-up check vs scipy: {st / ct:.1f}x; memory ratio scipy/check: {sr / cr:.1f}x")
for name, flagged in [("poisongate (warn or deny)", pg), ("poisongate deny", pg_deny), ("scipy p<0.05", sp)]:
    print(f"{name:26s} flags {len(flagged):2d}: missed {sorted(truth - flagged)}, false {sorted(flagged - truth)}")
PY
