//! Resource caps: what a hostile input may cost the gate before it is refused (exit 2).
//!
//! Every input the gate parses may come from the attacker it guards against, and a gate that
//! runs out of memory or time is killed, which a pipeline may read as an infrastructure
//! failure to retry rather than as a refusal. So each dimension along which a file can make
//! the gate's work grow faster than its size has a cap, checked before the work it bounds
//! where that is possible (a CSV header, an NDJSON line, a file's metadata), and at the first
//! window otherwise. Memory is then bounded by the window for Parquet (streamed), and by
//! about twice the largest file for CSV, NDJSON and Arrow IPC (decoded whole).
//!
//! The caps sit far above what tabular training data holds; a file past one is refused with
//! the cap named, so that a real table that needs more can be split.

/// Columns in one input file. `profile` keeps about 22 KB of state and writes about 4 KB of
/// baseline per column (measured: 100,000 columns of 3 rows took 2.2 GiB and a 370 MB
/// baseline), so 10,000 columns cost at most about 220 MB and a 40 MB baseline.
pub const MAX_COLUMNS: usize = 10_000;

/// Bytes in one line of a CSV or NDJSON input, hence in one cell. The CSV decoder's time
/// grows with the square of a line's length (measured here: a 200 MB line 9.7 s, 800 MB
/// 138 s, so a 2 GB line about 15 minutes); 8 MiB takes a fraction of a second.
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// Bytes in one string cell of a Parquet or Arrow IPC input (their cells are not lines: a
/// dictionary page can hand the same long value to every row).
pub const MAX_CELL_BYTES: usize = MAX_LINE_BYTES;

/// Bytes a compressed Arrow IPC buffer may declare per byte it holds. Zstandard's densest
/// block (run-length, 128 KiB from 4 bytes) gives 32,768; LZ4 frames stay under 256.
pub const MAX_IPC_RATIO: u64 = 1 << 15;

/// Bytes an Arrow IPC file's buffers may declare in all, decompressed: such a file is decoded
/// whole (Parquet is streamed a window at a time), so this bounds the memory one can claim.
pub const MAX_IPC_DECODED_BYTES: u64 = 16 << 30;

/// Nesting of arrays and objects in an NDJSON line. The JSON decoder recurses once per level
/// on its own stack, and a line of a hundred thousand `[` overflows it (an abort, not an
/// error); a table's cells nest a few levels at most.
pub const MAX_JSON_DEPTH: usize = 64;

/// Rows in one batch: the row-level detectors index rows with 32 bits.
pub const MAX_BATCH_ROWS: u64 = u32::MAX as u64;

/// Bytes of a baseline file (the bundled one is 240 KB; 10,000 columns make about 40 MB).
pub const MAX_BASELINE_BYTES: u64 = 1 << 30;

// Categories per column are bounded where they are counted: a baseline pins at most 10,000
// values of a column (`baseline::default_calibration`), `check` counts at most
// `summary::categorical::MAX_UNSEEN_DISTINCT` distinct values outside them one by one in a
// batch (the smallest ones; the rest add to an overflow count), and a label holds at most
// 1,000 classes.

/// A reader that counts the bytes it has passed on: where a parser stopped, for the offset of
/// a finding or the bound a header may claim.
#[derive(Debug)]
pub struct Counted<R> {
    /// The reader counted.
    pub inner: R,
    /// Bytes read through it so far.
    pub n: u64,
}

impl<R> Counted<R> {
    /// Counts from zero.
    pub fn new(inner: R) -> Self {
        Self { inner, n: 0 }
    }
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
