//! Streaming a batch block by block, so that `check` never holds the decoded batch.
//!
//! A batch is cut into *blocks* of at most [`CHUNK_ROWS`] rows, aligned to the start of their
//! file: block `k` of a file holds its rows `[k * CHUNK_ROWS, (k + 1) * CHUNK_ROWS)`. Every
//! summary and detector state is a fold over blocks, so the result is a function of the files
//! alone, not of how they were read. Blocks arrive in *windows* of up to [`WINDOW_BLOCKS`]
//! blocks, which are processed in parallel and then dropped:
//!
//! - Parquet files are decoded one window at a time (a row range, which the decoder maps to
//!   the row groups and pages it needs), reading only the requested columns. Peak memory is
//!   one window, whatever the file's size.
//! - CSV, NDJSON and Arrow IPC files are decoded whole, one file at a time, then cut into
//!   windows; peak memory is the largest file, not the batch.
//!
//! The first pass also hashes every file (on a second thread, while it decodes) and checks
//! that files share one schema and hold rows. Later passes (the exact counts of a few
//! candidate values, the ids of flagged rows) read only the columns they need, and check
//! that each file still has the size, row count and SHA-256 the first pass saw (the digest is
//! recomputed on a second thread while the pass decodes).

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use super::read::{check_same_schema, check_window, decode, guard, too_long_batch};
use super::{Format, InputFile, InputMeta};
use crate::error::{Error, Result};

/// Rows encoded at a time: bounds the working set per thread.
pub const CHUNK_ROWS: usize = 1 << 16;

/// Blocks per window (two in unit tests, so that small files span several windows).
#[cfg(not(test))]
pub const WINDOW_BLOCKS: usize = 8;
/// Blocks per window (two in unit tests, so that small files span several windows).
#[cfg(test)]
pub const WINDOW_BLOCKS: usize = 2;

/// Rows per window.
pub const WINDOW_ROWS: usize = WINDOW_BLOCKS * CHUNK_ROWS;

/// Where a batch's rows come from.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// Frames already in memory (one per input file).
    Frames(&'a [DataFrame]),
    /// Files, decoded as they are read; with the provenance of the first pass, when a later
    /// pass should check that they did not change.
    Files(&'a [InputFile], &'a [InputMeta]),
    /// No rows can be read again: a decision from kept summaries alone (the ledger's window
    /// of past batches). The detectors that count values in a second read do not run.
    Absent,
}

/// A first-pass callback: the batch's schema, a window's blocks, the place of the first.
pub type FirstPassFn<'f> = dyn FnMut(&Schema, &[DataFrame], Place) -> Result<()> + 'f;

/// Where a window's first row lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Its row in the batch.
    pub row: usize,
    /// The input (file) it comes from, from 0.
    pub input: usize,
    /// Its row in that input (in the whole file, for a range of one).
    pub input_row: usize,
}

/// A callback over one window: its blocks, and the batch row of the first one.
pub type WindowFn<'f> = dyn FnMut(&[DataFrame], usize) -> Result<()> + 'f;

impl Rows<'_> {
    /// Calls `f` on every window of the batch in batch order, with only `columns` (every
    /// column when `None`; names the batch lacks are skipped).
    ///
    /// # Errors
    /// A file that can no longer be read, or that changed since the first pass; any error `f`
    /// returns.
    pub fn for_each_window(&self, columns: Option<&[String]>, f: &mut WindowFn<'_>) -> Result<()> {
        match *self {
            Rows::Absent => Ok(()),
            Rows::Frames(frames) => {
                let mut first = 0usize;
                for df in frames {
                    let df = match columns {
                        Some(c) => project(df, c),
                        None => df.clone(),
                    };
                    windows_of(&df, first, f)?;
                    first += df.height();
                }
                Ok(())
            }
            Rows::Files(files, metas) => {
                let mut first = 0usize;
                for (i, file) in files.iter().enumerate() {
                    let meta = metas.get(i);
                    // With the first pass's digest at hand, the file is hashed again on a
                    // second thread while it is decoded: a later pass must see the bytes the
                    // first one saw, not just as many of them (a swap between the passes, or
                    // between `summarize` and `check --summaries`, is refused).
                    let handle = open_input(file)?;
                    let (rows, digest) = std::thread::scope(|scope| {
                        let hasher = meta.filter(|m| !m.sha256.is_empty()).map(|_| {
                            scope.spawn(|| crate::digest::sha256_open(&handle, &file.path))
                        });
                        // A file this process's first pass accepted is not walked again: this
                        // pass compares its SHA-256 with the first pass's instead.
                        let walked =
                            meta.is_some_and(|m| super::walk::accepted(&file.path, &m.sha256));
                        let rows = decode_windows(
                            file,
                            Some(&handle),
                            columns,
                            walked,
                            &mut |w, start| windows_of(w, first + start, f),
                        );
                        let digest = hasher.map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(Error::Internal("hashing thread panicked".into()))
                            })
                        });
                        (rows, digest)
                    });
                    let rows = rows?;
                    if let Some(m) = meta {
                        let changed = |what: &str| {
                            Error::input(
                                Path::new(&file.name()),
                                format!(
                                    "the file changed while it was being checked (its {what} differs from the first pass)"
                                ),
                            )
                        };
                        let now = std::fs::metadata(&file.path).map(|m| m.len()).ok();
                        if rows != m.rows || now != Some(m.bytes) {
                            return Err(changed("size or row count"));
                        }
                        if let Some(digest) = digest {
                            let (sha256, _) = digest?;
                            if sha256 != m.sha256 {
                                return Err(changed("SHA-256"));
                            }
                        }
                    }
                    first += rows as usize;
                }
                Ok(())
            }
        }
    }
}

/// The columns of `df` among `columns`, in `df`'s order.
fn project(df: &DataFrame, columns: &[String]) -> DataFrame {
    let keep: Vec<Column> = df
        .columns()
        .iter()
        .filter(|c| columns.iter().any(|n| n == c.name().as_str()))
        .cloned()
        .collect();
    DataFrame::new(df.height(), keep).unwrap_or_else(|_| DataFrame::empty_with_height(df.height()))
}

/// Cuts a decoded run of rows (starting at a multiple of [`CHUNK_ROWS`] in its file) into
/// blocks, and hands them to `f` a window at a time.
fn windows_of(df: &DataFrame, first: usize, f: &mut WindowFn<'_>) -> Result<()> {
    let height = df.height();
    let mut offset = 0usize;
    while offset < height {
        let len = WINDOW_ROWS.min(height - offset);
        let blocks: Vec<DataFrame> = (offset..offset + len)
            .step_by(CHUNK_ROWS)
            .map(|o| df.slice(o as i64, CHUNK_ROWS.min(offset + len - o)))
            .collect();
        f(&blocks, first + offset)?;
        offset += len;
    }
    Ok(())
}

/// Decodes one file a run of rows at a time (each starting at a multiple of
/// [`WINDOW_ROWS`]) and returns its row count.
fn decode_windows(
    file: &InputFile,
    handle: Option<&File>,
    columns: Option<&[String]>,
    walked: bool,
    f: &mut dyn FnMut(&DataFrame, usize) -> Result<()>,
) -> Result<u64> {
    let path = &file.path;
    let name = file.name();
    let shown = Path::new(&name);
    if file.range.is_some() && file.format != Format::Parquet {
        return Err(Error::input(
            shown,
            "a row range of a file is read from Parquet only",
        ));
    }
    if file.format != Format::Parquet {
        let mut df = decode(path, shown, file.format, walked)?;
        if let Some(c) = columns {
            df = project(&df, c);
        }
        f(&df, 0)?;
        return Ok(df.height() as u64);
    }
    // One open per pass: every reader takes a duplicate of the same handle (the decoder maps
    // the file and reads by position, so the duplicates share no offset that matters).
    let opened;
    let handle = match handle {
        Some(h) => h,
        None => {
            opened = open_input(file)?;
            &opened
        }
    };
    // Page headers first: a page that would make the decoder abort is refused here.
    if !walked {
        guard(path, shown, Format::Parquet, || {
            super::walk::parquet_pages(handle)
        })?;
    }
    let open = || {
        handle
            .try_clone()
            .map_err(|e| Error::input(shown, super::io_cause(&e)))
    };
    let metadata = guard(path, shown, Format::Parquet, || {
        ParquetReader::new(handle.try_clone()?)
            .get_metadata()
            .map(Clone::clone)
    })?;
    // A unit of a sharded check reads its rows only; blocks stay aligned to the file's start
    // because the range starts at a multiple of a block.
    let (begin, total) = match &file.range {
        Some(r) => {
            if r.start % CHUNK_ROWS != 0 || r.start >= r.end || r.end > metadata.num_rows {
                return Err(Error::input(
                    shown,
                    format!(
                        "rows {}..{} are not a unit of this file ({} rows)",
                        r.start, r.end, metadata.num_rows
                    ),
                ));
            }
            (r.start, r.end)
        }
        None => (0, metadata.num_rows),
    };
    let wanted: Option<Vec<String>> = match columns {
        Some(c) => {
            let schema = guard(path, shown, Format::Parquet, || {
                let mut r = ParquetReader::new(handle.try_clone()?);
                r.set_metadata(metadata.clone());
                r.schema()
            })?;
            Some(
                c.iter()
                    .filter(|n| schema.contains(n.as_str()))
                    .cloned()
                    .collect(),
            )
        }
        None => None,
    };
    let mut start = begin;
    while start < total {
        let len = WINDOW_ROWS.min(total - start);
        if wanted.as_ref().is_some_and(Vec::is_empty) {
            f(&DataFrame::empty_with_height(len), start - begin)?;
            start += len;
            continue;
        }
        let file_handle = open()?;
        let df = guard(path, shown, Format::Parquet, || {
            let mut r = ParquetReader::new(file_handle)
                .with_slice(Some((start, len)))
                .with_columns(wanted.clone());
            r.set_metadata(metadata.clone());
            r.finish()
        })?;
        if df.height() != len {
            return Err(Error::input(
                shown,
                format!(
                    "not valid Parquet: rows {start}..{} decoded to {} rows",
                    start + len,
                    df.height()
                ),
            ));
        }
        f(&df, start - begin)?;
        start += len;
    }
    Ok((total - begin) as u64)
}

/// Opens an input, naming it in the error.
fn open_input(file: &InputFile) -> Result<File> {
    File::open(&file.path).map_err(|e| Error::input(Path::new(&file.name()), super::io_cause(&e)))
}

/// The columns and dtypes of a file, from its first window.
///
/// # Errors
/// A file that cannot be read or decoded.
pub fn schema_of(file: &InputFile) -> Result<Vec<(String, DataType)>> {
    let mut schema = None;
    let read = decode_windows(file, None, None, false, &mut |w: &DataFrame, _| {
        if schema.is_none() {
            schema = Some(
                w.columns()
                    .iter()
                    .map(|c| (c.name().to_string(), c.dtype().clone()))
                    .collect(),
            );
        }
        // Stop after the first window (this sentinel is dropped below).
        Err(Error::Internal(String::new()))
    });
    match (schema, read) {
        (Some(s), _) => Ok(s),
        (None, Err(e)) => Err(e),
        (None, Ok(_)) => Err(Error::input(
            Path::new(&file.name()),
            "no rows (header or schema only)",
        )),
    }
}

/// Rows that the batch's Parquet files declare in their footers (other formats count 0): a
/// capacity hint, so per-row state is allocated once instead of grown by doubling.
#[must_use]
pub fn row_hint(files: &[InputFile]) -> usize {
    files
        .iter()
        .filter(|f| f.format == Format::Parquet)
        .filter_map(|f| {
            if let Some(r) = &f.range {
                return Some(r.len());
            }
            let file = File::open(&f.path).ok()?;
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ParquetReader::new(file).num_rows().ok()
            }))
            .ok()
            .flatten()
        })
        .sum()
}

/// The first pass over a batch's files: decodes each a window at a time, hashes it on a
/// second thread, checks that it holds rows and shares the first file's schema, and hands
/// every window to `f` with the schema of the batch.
///
/// # Errors
/// Any unreadable, empty or corrupt input; two inputs whose columns or dtypes differ; any
/// error `f` returns.
pub fn first_pass(files: &[InputFile], f: &mut FirstPassFn<'_>) -> Result<Vec<InputMeta>> {
    let mut metas: Vec<InputMeta> = Vec::with_capacity(files.len());
    let mut first_schema: Option<DataFrame> = None;
    let mut first_row = 0usize;
    let progress = crate::progress::files(files.len() as u64);
    for (input, file) in files.iter().enumerate() {
        progress.set_message(file.name());
        let name = file.name();
        let shown = Path::new(&name);
        let size = std::fs::metadata(&file.path)
            .map_err(|e| Error::input(shown, super::io_cause(&e)))?
            .len();
        if size == 0 {
            return Err(Error::input(shown, "file is empty (0 bytes)"));
        }
        let handle = open_input(file)?;
        let (digest, decoded) = std::thread::scope(|scope| {
            let hasher = scope.spawn(|| crate::digest::sha256_open(&handle, &file.path));
            let mut schema_df: Option<DataFrame> = None;
            let decoded = decode_windows(
                file,
                Some(&handle),
                None,
                false,
                &mut |w: &DataFrame, start| {
                    check_window(shown, w)?;
                    if (first_row + start + w.height()) as u64 > crate::limits::MAX_BATCH_ROWS {
                        return Err(too_long_batch(shown));
                    }
                    if schema_df.is_none() {
                        if w.width() == 0 {
                            return Err(Error::input(shown, "no columns"));
                        }
                        let empty = w.clear();
                        if let (Some(first), Some(first_meta)) = (&first_schema, metas.first()) {
                            let meta = InputMeta {
                                path: name.clone(),
                                format: file.format,
                                sha256: String::new(),
                                bytes: size,
                                rows: 0,
                                object: None,
                            };
                            check_same_schema(first, &empty, first_meta, &meta)?;
                        }
                        schema_df = Some(empty);
                    }
                    let schema = schema_df.as_ref().map(DataFrame::schema).cloned();
                    let base = file.range.as_ref().map_or(0, |r| r.start);
                    windows_of(w, start, &mut |blocks, at| {
                        let place = Place {
                            row: first_row + at,
                            input,
                            input_row: base + at,
                        };
                        f(schema.as_ref().expect("set above"), blocks, place)
                    })
                },
            );
            let digest = hasher
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("hashing thread panicked".into())));
            (digest, decoded.map(|rows| (rows, schema_df)))
        });
        let (rows, schema_df) = decoded?;
        let (sha256, bytes) = digest.map_err(|e| match e {
            Error::Input { cause, .. } => Error::input(shown, cause),
            other => other,
        })?;
        if rows == 0 {
            return Err(Error::input(shown, "no rows (header or schema only)"));
        }
        if first_schema.is_none() {
            first_schema = schema_df;
        }
        super::walk::accept(&file.path, &sha256);
        metas.push(InputMeta {
            path: name.clone(),
            format: file.format,
            sha256,
            bytes,
            rows,
            object: file.origin.as_ref().map(|o| o.object.clone()),
        });
        first_row += rows as usize;
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(metas)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 300,001 rows in row groups of 70,000 (not a multiple of a block), one null in seven.
    fn frame() -> DataFrame {
        let n = 300_001usize;
        let a: Vec<i64> = (0..n as i64).collect();
        let b: Vec<Option<f64>> = (0..n)
            .map(|i| (i % 7 != 0).then_some(i as f64 / 3.0))
            .collect();
        DataFrame::new_infer_height(vec![Column::new("a".into(), a), Column::new("b".into(), b)])
            .unwrap()
    }

    fn collect(
        rows: Rows<'_>,
        columns: Option<&[String]>,
    ) -> (Vec<(usize, Vec<usize>)>, DataFrame) {
        let mut windows = Vec::new();
        let mut all: Option<DataFrame> = None;
        rows.for_each_window(columns, &mut |blocks, first| {
            windows.push((first, blocks.iter().map(DataFrame::height).collect()));
            for b in blocks {
                match &mut all {
                    Some(df) => {
                        df.vstack_mut(b).unwrap();
                    }
                    None => all = Some(b.clone()),
                }
            }
            Ok(())
        })
        .unwrap();
        (windows, all.unwrap())
    }

    #[test]
    fn files_stream_in_aligned_blocks_and_match_the_frames() {
        let dir = std::env::temp_dir().join(format!("pg-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.parquet");
        let mut df = frame();
        ParquetWriter::new(File::create(&path).unwrap())
            .with_row_group_size(Some(70_000))
            .finish(&mut df)
            .unwrap();
        let files = vec![
            InputFile::local(path.clone(), Format::Parquet),
            InputFile::local(path.clone(), Format::Parquet),
        ];
        let mut seen = Vec::new();
        let metas = first_pass(&files, &mut |schema, blocks, first| {
            assert_eq!(schema.len(), 2);
            assert_eq!(first.input_row, first.row - 300_001 * first.input);
            seen.push((first.row, blocks.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            metas.iter().map(|m| m.rows).collect::<Vec<_>>(),
            [300_001; 2]
        );
        assert_eq!(metas[0].sha256, metas[1].sha256);
        // Windows of two blocks, the second file's starting at its own row 0.
        let firsts: Vec<usize> = seen.iter().map(|s| s.0).collect();
        assert_eq!(firsts, [0, 131_072, 262_144, 300_001, 431_073, 562_145]);
        let frames = vec![df.clone(), df.clone()];
        let (w_files, from_files) = collect(Rows::Files(&files, &metas), None);
        let (w_frames, from_frames) = collect(Rows::Frames(&frames), None);
        assert_eq!(w_files, w_frames);
        assert_eq!(w_files[2], (262_144, vec![37_857]));
        assert!(from_files.equals_missing(&from_frames));
        let mut both = df.clone();
        both.vstack_mut(&df).unwrap();
        assert!(from_files.equals_missing(&both));
        // A later pass reads only the columns asked for; a missing one is skipped.
        let only = ["b".to_owned(), "zz".to_owned()];
        let (_, b) = collect(Rows::Files(&files, &metas), Some(&only));
        assert_eq!(b.get_column_names(), ["b"]);
        assert_eq!(b.height(), 600_002);
        let mut height = 0;
        Rows::Files(&files, &metas)
            .for_each_window(Some(&["zz".to_owned()]), &mut |blocks, _| {
                for b in blocks {
                    assert_eq!(b.width(), 0);
                    height += b.height();
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(height, 600_002);
        // A file that changed after the first pass is an error, not a silent mix.
        let mut short = df.slice(0, 1000);
        ParquetWriter::new(File::create(&path).unwrap())
            .finish(&mut short)
            .unwrap();
        let err = Rows::Files(&files, &metas)
            .for_each_window(None, &mut |_, _| Ok(()))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("changed while it was being checked"),
            "{err}"
        );
        // A row range (a unit of a sharded check): its rows only, numbered from 0.
        ParquetWriter::new(File::create(&path).unwrap())
            .with_row_group_size(Some(70_000))
            .finish(&mut df.clone())
            .unwrap();
        let mut ranged = InputFile::local(path.clone(), Format::Parquet);
        ranged.range = Some(CHUNK_ROWS..3 * CHUNK_ROWS + 5);
        let mut got: Option<DataFrame> = None;
        let mut firsts = Vec::new();
        let metas = first_pass(std::slice::from_ref(&ranged), &mut |_, blocks, first| {
            assert_eq!(first.input_row, first.row + CHUNK_ROWS);
            firsts.push(first.row);
            for b in blocks {
                match &mut got {
                    Some(df) => {
                        df.vstack_mut(b).unwrap();
                    }
                    None => got = Some(b.clone()),
                }
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(metas[0].rows, (2 * CHUNK_ROWS + 5) as u64);
        assert_eq!(firsts, [0, 2 * CHUNK_ROWS]);
        let want = df.slice(CHUNK_ROWS as i64, 2 * CHUNK_ROWS + 5);
        assert!(got.unwrap().equals_missing(&want));
        for bad in [1..CHUNK_ROWS, 0..300_002, 5..5] {
            ranged.range = Some(bad);
            let err = first_pass(std::slice::from_ref(&ranged), &mut |_, _, _| Ok(())).unwrap_err();
            assert!(err.to_string().contains("not a unit of this file"), "{err}");
        }
        // Same size and rows, other bytes: refused by the digest.
        let csv = dir.join("t.csv");
        std::fs::write(&csv, "a,b\n1,2\n3,4\n").unwrap();
        let files = vec![InputFile::local(csv.clone(), Format::Csv)];
        let metas = first_pass(&files, &mut |_, _, _| Ok(())).unwrap();
        Rows::Files(&files, &metas)
            .for_each_window(None, &mut |_, _| Ok(()))
            .unwrap();
        std::fs::write(&csv, "a,b\n1,2\n3,5\n").unwrap();
        let err = Rows::Files(&files, &metas)
            .for_each_window(None, &mut |_, _| Ok(()))
            .unwrap_err();
        assert!(err.to_string().contains("SHA-256 differs"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
