"""``spark-submit -m poisongate_spark`` / ``python -m poisongate_spark``: a sharded check as a
pipeline step. Exits with the gate's code: 0 pass, 1 blocked, 2 could not evaluate.

    python -m poisongate_spark --baseline baseline.json --shards 8 \\
        --binary ./poisongate s3://bucket/batch/ -- --json report.json --junit junit.xml

Arguments after ``--`` go to the final ``poisongate check --summaries`` unchanged.

    python -m poisongate_spark profile -o baseline.json --shards 8 \\
        --binary ./poisongate s3://bucket/trusted/ -- --label y --seed 1

pins a baseline instead (a sharded ``poisongate profile``): the arguments after ``--`` go to
every profile step. Exits 0 when the baseline is written, 2 when it could not be.
"""

from __future__ import annotations

import argparse
import sys

from . import ERROR, PoisongateError, check, profile


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pinning = bool(argv) and argv[0] == "profile"
    if pinning:
        argv = argv[1:]
    rest: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(
        prog="poisongate_spark profile" if pinning else "poisongate_spark",
        description=__doc__.split("\n")[0])
    if pinning:
        parser.add_argument("-o", "--output", required=True, help="the baseline to write")
    else:
        parser.add_argument("--baseline", required=True)
    parser.add_argument("--shards", type=int, default=None)
    parser.add_argument("--binary", default=None, help="the poisongate binary (default: PATH)")
    if not pinning:
        parser.add_argument("--policy", default=None)
        parser.add_argument("--expect-baseline-sha256", default=None)
    parser.add_argument("--s3-endpoint", default=None)
    parser.add_argument("--unit-rows", type=int, default=None,
                        help="cut Parquet files of more rows into units of this many rows")
    parser.add_argument("--master", default=None, help="Spark master (default: spark-submit's)")
    parser.add_argument("data", nargs="+")
    args = parser.parse_args(argv)
    try:
        from pyspark.sql import SparkSession

        # A session that was running already belongs to the caller: leave it running.
        owned = SparkSession.getActiveSession() is None
        builder = SparkSession.builder.appName("poisongate")
        if args.master:
            builder = builder.master(args.master)
        spark = builder.getOrCreate()
    except Exception as e:  # noqa: BLE001 - no Spark means the batch was not evaluated
        print(f"poisongate_spark: cannot start Spark: {e}", file=sys.stderr)
        return ERROR
    try:
        if pinning:
            digest = profile(spark, args.data, args.output, profile_args=rest,
                             shards=args.shards, binary=args.binary,
                             s3_endpoint=args.s3_endpoint, unit_rows=args.unit_rows)
            sys.stdout.write(f"pinned {args.output}\nsha256 {digest}\n")
            return 0
        result = check(spark, args.baseline, args.data, shards=args.shards, binary=args.binary,
                       policy=args.policy, check_args=rest, s3_endpoint=args.s3_endpoint,
                       expect_baseline_sha256=args.expect_baseline_sha256,
                       unit_rows=args.unit_rows)
    except PoisongateError as e:
        print(f"poisongate_spark: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - fail closed on anything unexpected
        print(f"poisongate_spark: {type(e).__name__}: {e}", file=sys.stderr)
        return ERROR
    finally:
        if owned:
            spark.stop()
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
