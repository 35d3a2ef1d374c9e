"""poisongate_spark on pyspark in local mode against the real binary.

Run from the repository root (``.ci/run`` does):

    POISONGATE_BIN=target/debug/poisongate target/spark-venv/bin/python -m unittest \\
        discover -s python/poisongate_spark/tests -v

Every sharded report is compared byte for byte with the report of a plain ``poisongate check``
on the same files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import pyarrow.parquet as pq

import poisongate_spark
from poisongate_spark import PoisongateError
from poisongate_spark.__main__ import main as cli_main

ROOT = Path(__file__).resolve().parents[3]
BIN = os.environ.get("POISONGATE_BIN", str(ROOT / "target" / "debug" / "poisongate"))
TESTDATA = ROOT / "testdata"


def gate(*args: str) -> int:
    return subprocess.run([BIN, *args], capture_output=True, check=False).returncode


class SparkCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(BIN, os.X_OK):
            raise AssertionError(f"no poisongate binary at {BIN}; set POISONGATE_BIN")
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        from pyspark.sql import SparkSession

        cls.spark = (SparkSession.builder.master("local[2]").appName("poisongate-test")
                     .config("spark.ui.enabled", "false")
                     .config("spark.sql.shuffle.partitions", "1")
                     .config("spark.ui.showConsoleProgress", "false")
                     .getOrCreate())
        cls.tmp = Path(tempfile.mkdtemp(prefix="pg-spark-test-"))
        cls.baseline = cls.tmp / "baseline.json"
        code = gate("profile", str(TESTDATA / "trusted" / "applications.parquet"), "-o",
                    str(cls.baseline), "--label", "defaulted", "--id", "application_id")
        assert code == 0, f"profile exited {code}"
        # An attacked batch in four files: the flipped labels of testdata/poison/flip10.
        cls.flip = cls.tmp / "flip10"
        cls.flip.mkdir()
        table = pq.read_table(TESTDATA / "poison" / "flip10.parquet")
        cut = [0, 700, 701, 2100, table.num_rows]  # uneven, one single-row file
        for i in range(4):
            pq.write_table(table.slice(cut[i], cut[i + 1] - cut[i]),
                           cls.flip / f"part-{i}.parquet")

    @classmethod
    def tearDownClass(cls):
        cls.spark.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def plain(self, data: list[str], name: str) -> tuple[int, bytes]:
        out = self.tmp / f"{name}-plain.json"
        code = gate("check", "--baseline", str(self.baseline), *data, "--json", str(out))
        return code, out.read_bytes()

    def sharded(self, data: list[str], name: str, shards: int | None):
        out = self.tmp / f"{name}-spark-{shards}.json"
        result = poisongate_spark.check(self.spark, str(self.baseline), data, shards=shards,
                                        binary=BIN, check_args=["--json", str(out)])
        return result, out.read_bytes()

    def assert_same(self, data: list[str], name: str, want: int, shards_list):
        code, plain = self.plain(data, name)
        self.assertEqual(code, want)
        for shards in shards_list:
            result, report = self.sharded(data, name, shards)
            self.assertEqual(result.exit_code, want, f"{name} with {shards} shards")
            self.assertEqual(report, plain, f"{name} with {shards} shards: reports differ")
            self.assertEqual(result.report["verdict"], "pass" if want == 0 else "blocked")

    def test_clean_batch_passes_with_the_plain_report(self):
        self.assert_same([str(TESTDATA / "clean" / "shards")], "clean", 0, [None, 1, 2, 5])

    def test_attacked_batch_blocks_with_the_plain_report(self):
        self.assert_same([str(self.flip)], "flip", 1, [None, 3, 7])
        result, _ = self.sharded([str(self.flip)], "flip-codes", 2)
        codes = {f["code"] for f in result.report["findings"]}
        self.assertIn("poison-label-inconsistency", codes)

    def test_one_large_file_in_row_range_units(self):
        # 80,000 rows in one file: --unit-rows 65536 makes two units (two executors' work).
        table = pq.read_table(TESTDATA / "trusted" / "applications.parquet")
        import pyarrow as pa

        big = pa.concat_tables([table] * 4)
        path = self.tmp / "big.parquet"
        pq.write_table(big, path, row_group_size=30_000)
        code, plain = self.plain([str(path)], "big")
        self.assertEqual(code, 1)  # four copies of the trusted rows: a duplicate flood
        out = self.tmp / "big-spark.json"
        manifest = poisongate_spark.plan([str(path)], self.tmp / "big-manifest.json",
                                         binary=BIN, unit_rows=65536)
        self.assertEqual([u["range"] for u in manifest["units"]], [[0, 65536], [65536, 80000]])
        result = poisongate_spark.check(self.spark, str(self.baseline), [str(path)], shards=2,
                                        binary=BIN, unit_rows=65536,
                                        check_args=["--json", str(out)])
        self.assertEqual(result.exit_code, 1)
        self.assertEqual(out.read_bytes(), plain)

    def test_drifted_single_file_blocks(self):
        self.assert_same([str(TESTDATA / "drifted" / "batch.parquet")], "drifted", 1, [3])

    def test_file_changed_after_plan_is_exit_2(self):
        work = self.tmp / "changed"
        data = work / "data"
        shutil.copytree(TESTDATA / "clean" / "shards", data)
        manifest = work / "manifest.json"
        poisongate_spark.plan([str(data)], manifest, binary=BIN)
        shutil.copyfile(TESTDATA / "clean" / "batch.parquet", data / "part-1.parquet")
        with self.assertRaises(PoisongateError) as caught:
            poisongate_spark.summarize(self.spark, str(self.baseline), manifest, 3,
                                       work / "parts", binary=BIN)
        self.assertEqual(caught.exception.exit_code, 2)
        self.assertIn("changed since `plan`", str(caught.exception))

    def test_a_lost_part_is_exit_2(self):
        work = self.tmp / "lost"
        manifest = work / "manifest.json"
        work.mkdir()
        poisongate_spark.plan([str(TESTDATA / "clean" / "shards")], manifest, binary=BIN)
        parts = poisongate_spark.summarize(self.spark, str(self.baseline), manifest, 3,
                                           work / "parts", binary=BIN)
        with self.assertRaises(PoisongateError) as caught:
            poisongate_spark.decide(str(self.baseline), parts[:2], work, binary=BIN)
        self.assertEqual(caught.exception.exit_code, 2)

    def test_unreadable_input_is_exit_2(self):
        with self.assertRaises(PoisongateError) as caught:
            poisongate_spark.check(self.spark, str(self.baseline),
                                   [str(TESTDATA / "broken" / "truncated.parquet")], binary=BIN)
        self.assertEqual(caught.exception.exit_code, 2)
        self.assertIn("truncated.parquet", str(caught.exception))

    def test_sharded_profile_pins_the_plain_baseline(self):
        import pyarrow as pa

        flags = ["--label", "defaulted", "--seed", "3"]
        table = pq.read_table(TESTDATA / "trusted" / "applications.parquet")
        big = self.tmp / "profile-big.parquet"
        pq.write_table(pa.concat_tables([table] * 4), big, row_group_size=30_000)
        for name, data, shards, unit_rows in (
                ("three-files", [str(TESTDATA / "clean" / "shards")], 2, None),
                # 80,000 rows in two row-range units over three shards (one shard empty).
                ("ranges", [str(big)], 3, 65536)):
            plain = self.tmp / f"profile-{name}-plain" / "baseline.json"
            plain.parent.mkdir()
            self.assertEqual(gate("profile", *data, "-o", str(plain), *flags), 0)
            out = self.tmp / f"profile-{name}-spark" / "baseline.json"
            out.parent.mkdir()
            digest = poisongate_spark.profile(self.spark, data, out, profile_args=flags,
                                              shards=shards, binary=BIN, unit_rows=unit_rows)
            self.assertEqual(out.read_bytes(), plain.read_bytes(), f"{name}: baselines differ")
            self.assertEqual(Path(f"{out}.sha256").read_text(),
                             f"{digest}  baseline.json\n")
        # The module entry point pins the same baseline, and exits 0.
        out = self.tmp / "profile-cli" / "baseline.json"
        out.parent.mkdir()
        code = cli_main(["profile", "-o", str(out), "--binary", BIN, "--shards", "2",
                         str(TESTDATA / "clean" / "shards"), "--", *flags])
        self.assertEqual(code, 0)
        self.assertEqual(out.read_bytes(),
                         (self.tmp / "profile-three-files-plain" / "baseline.json").read_bytes())
        # A shard that cannot read its unit fails the whole profile: exit 2, nothing written.
        out = self.tmp / "profile-broken" / "baseline.json"
        out.parent.mkdir()
        with self.assertRaises(PoisongateError) as caught:
            poisongate_spark.profile(
                self.spark, [str(TESTDATA / "clean" / "shards" / "part-0.parquet"),
                             str(TESTDATA / "broken" / "truncated.parquet")], out,
                profile_args=flags, shards=2, binary=BIN)
        self.assertEqual(caught.exception.exit_code, 2)
        self.assertIn("truncated.parquet", str(caught.exception))
        self.assertFalse(out.exists())

    def test_module_entry_point_exits_with_the_gate_code(self):
        out = self.tmp / "cli.json"
        code = cli_main(["--baseline", str(self.baseline), "--binary", BIN, "--shards", "2",
                         str(self.flip), "--", "--json", str(out)])
        self.assertEqual(code, 1)
        self.assertEqual(out.read_bytes(), self.plain([str(self.flip)], "flip")[1])
        # It used the running session and left it running.
        self.assertFalse(self.spark.sparkContext._jsc.sc().isStopped())


if __name__ == "__main__":
    unittest.main()
