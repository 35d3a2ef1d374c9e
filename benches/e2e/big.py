"""Writes a large `current.parquet` for the scaling benchmark without holding it in memory:
`--chunks` tables of `--chunk-rows` rows each, drawn by ../shared/bench/peers/gen.py's
`make_table` with seeds `seed, seed + 1, ...` (so rows are not repeated: a file made by
copying one chunk would be a duplicate flood), appended to one Parquet file with the same
row groups (1M rows) and compression as gen.py. The reference file is gen.py's own, unchanged.

    python benches/e2e/big.py --peers ../shared/bench/peers --chunks 10 --out DIR/current.parquet
"""
import argparse
import os
import sys

import pyarrow.parquet as pq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", required=True)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--chunk-rows", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sys.path.insert(0, a.peers)
    import gen  # noqa: E402  (the peers kit's generator)

    tmp = a.out + ".tmp"
    writer = None
    for k in range(a.chunks):
        t = gen.make_table(a.chunk_rows, a.seed + k, True)
        if writer is None:
            writer = pq.ParquetWriter(tmp, t.schema, compression="snappy")
        writer.write_table(t, row_group_size=1_000_000)
        print(f"chunk {k + 1}/{a.chunks}", file=sys.stderr)
    writer.close()
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
