//! Decoding files into frames, hashing them, and assembling a batch of one schema.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use polars::prelude::*;

use super::{Format, InputFile, InputMeta, io_cause};
use crate::error::{Error, Result};
use crate::limits::{MAX_COLUMNS, MAX_JSON_DEPTH, MAX_LINE_BYTES};

/// The frames of one batch, in input order, with their provenance.
#[derive(Debug)]
pub struct Batch {
    /// One frame per input file.
    pub frames: Vec<DataFrame>,
    /// Provenance of each input, parallel to `frames`.
    pub inputs: Vec<InputMeta>,
}

impl Batch {
    /// Total rows across inputs.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.inputs.iter().map(|m| m.rows).sum()
    }

    /// The schema shared by every frame.
    #[must_use]
    pub fn schema(&self) -> Vec<(String, DataType)> {
        self.frames.first().map(schema_of).unwrap_or_default()
    }
}

fn schema_of(df: &DataFrame) -> Vec<(String, DataType)> {
    df.columns()
        .iter()
        .map(|c| (c.name().to_string(), c.dtype().clone()))
        .collect()
}

/// Reads every input of a batch, checks that they share one schema and hold rows.
///
/// # Errors
/// Any unreadable or empty input, or two inputs whose columns or dtypes differ.
pub fn read_batch(files: &[InputFile]) -> Result<Batch> {
    let mut frames = Vec::with_capacity(files.len());
    let mut inputs = Vec::with_capacity(files.len());
    let progress = crate::progress::files(files.len() as u64);
    for file in files {
        progress.set_message(file.name());
        let (meta, df) = read_file(file)?;
        if inputs.iter().map(|m: &InputMeta| m.rows).sum::<u64>() + meta.rows
            > crate::limits::MAX_BATCH_ROWS
        {
            return Err(too_long_batch(Path::new(&meta.path)));
        }
        if let (Some(first), Some(first_meta)) = (frames.first(), inputs.first()) {
            check_same_schema(first, &df, first_meta, &meta)?;
        }
        frames.push(df);
        inputs.push(meta);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(Batch { frames, inputs })
}

pub(super) fn check_same_schema(
    first: &DataFrame,
    other: &DataFrame,
    first_meta: &InputMeta,
    other_meta: &InputMeta,
) -> Result<()> {
    let (a, b) = (schema_of(first), schema_of(other));
    if a == b {
        return Ok(());
    }
    let names_a: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    let names_b: Vec<&str> = b.iter().map(|(n, _)| n.as_str()).collect();
    let cause = if let Some(n) = names_a.iter().find(|n| !names_b.contains(n)) {
        format!("column `{n}` is missing from the second file")
    } else if let Some(n) = names_b.iter().find(|n| !names_a.contains(n)) {
        format!("column `{n}` is only in the second file")
    } else if let Some(((n, ta), (_, tb))) = a
        .iter()
        .zip(&b)
        .find(|((na, ta), (nb, tb))| na == nb && ta != tb)
    {
        format!("column `{n}` is {ta} in the first file and {tb} in the second")
    } else {
        "columns appear in a different order".to_owned()
    };
    Err(Error::SchemaMismatch {
        first: first_meta.path.clone().into(),
        second: other_meta.path.clone().into(),
        cause,
    })
}

/// Reads one file: decodes it and hashes its bytes (in parallel), and rejects empty data.
///
/// # Errors
/// Missing, unreadable, truncated or corrupt files, and files with no rows or no columns.
pub fn read_file(file: &InputFile) -> Result<(InputMeta, DataFrame)> {
    let path = &file.path;
    // Errors and reports name the input as given: the S3 URI for a spilled object.
    let name = file.name();
    let shown = Path::new(&name);
    let meta = std::fs::metadata(path).map_err(|e| Error::input(shown, io_cause(&e)))?;
    if meta.len() == 0 {
        return Err(Error::input(shown, "file is empty (0 bytes)"));
    }
    let (digest, frame) = rayon::join(
        || crate::digest::sha256_file(path),
        || decode(path, shown, file.format, false),
    );
    let (sha256, bytes) = digest.map_err(|e| rename(e, shown))?;
    let df = frame?;
    check_window(shown, &df)?;
    if df.height() as u64 > crate::limits::MAX_BATCH_ROWS {
        return Err(too_long_batch(shown));
    }
    if df.width() == 0 {
        return Err(Error::input(shown, "no columns"));
    }
    if df.height() == 0 {
        return Err(Error::input(shown, "no rows (header or schema only)"));
    }
    let meta = InputMeta {
        path: name.clone(),
        format: file.format,
        sha256,
        bytes,
        rows: df.height() as u64,
        object: file.origin.as_ref().map(|o| o.object.clone()),
    };
    Ok((meta, df))
}

/// An input error about a spilled copy, renamed to the input it stands for.
fn rename(e: Error, shown: &Path) -> Error {
    match e {
        Error::Input { cause, .. } => Error::input(shown, cause),
        other => other,
    }
}

/// Decodes a file with polars. Decoder panics on hostile bytes become input errors naming the
/// file instead of crashing the gate.
///
/// `walked` says that an earlier pass of this process accepted the file's structure (the
/// checks of [`walk`](super::walk) and the line scans) and has its SHA-256 to compare with:
/// those reads are then skipped.
pub(super) fn decode(path: &Path, shown: &Path, format: Format, walked: bool) -> Result<DataFrame> {
    match format {
        _ if walked => {}
        Format::Csv => {
            repeated_header(path, shown)?;
            scan_lines(path, shown, format)?;
        }
        Format::Ndjson => scan_lines(path, shown, format)?,
        Format::Parquet => guard(path, shown, format, || {
            super::walk::parquet_pages(&std::fs::File::open(path)?)
        })?,
        Format::Ipc => guard(path, shown, format, || super::walk::ipc_messages(path))?,
    }
    guard(path, shown, format, || decode_inner(path, format))
}

/// Runs a decoder step; its errors and panics become one input error naming the input (not
/// a spilled copy).
pub(super) fn guard<T>(
    path: &Path,
    shown: &Path,
    format: Format,
    step: impl FnOnce() -> PolarsResult<T>,
) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(step)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::input(
            shown,
            format!(
                "not valid {}: {}",
                format.name(),
                // Decoder messages may name the spilled copy; name the input instead.
                e.to_string()
                    .replace(&path.display().to_string(), &shown.display().to_string())
            ),
        )),
        Err(_) => Err(Error::input(
            shown,
            format!("not valid {}: decoder failed", format.name()),
        )),
    }
}

fn decode_inner(path: &Path, format: Format) -> PolarsResult<DataFrame> {
    let open = || File::open(path).map_err(PolarsError::from);
    match format {
        Format::Parquet => ParquetReader::new(open()?).finish(),
        Format::Ipc => IpcReader::new(open()?).finish(),
        Format::Ndjson => JsonReader::new(open()?)
            .with_json_format(JsonFormat::JsonLines)
            .finish(),
        Format::Csv => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(10_000))
            .try_into_reader_with_file_path(Some(path.to_path_buf()))?
            .finish(),
    }
}

/// Refuses a CSV or NDJSON input with a line longer than [`MAX_LINE_BYTES`], or NDJSON
/// nested deeper than [`MAX_JSON_DEPTH`], before the decoder sees it (see [`crate::limits`]):
/// one pass over the bytes, which for NDJSON also tracks strings (where brackets are text)
/// and their escapes.
fn scan_lines(path: &Path, shown: &Path, format: Format) -> Result<()> {
    use std::io::Read;
    let mut file = File::open(path).map_err(|e| Error::input(shown, super::io_cause(&e)))?;
    let too_long = || {
        Error::unusable(
            shown,
            format!(
                "a line is longer than {} MiB (the cap on one {} line)",
                MAX_LINE_BYTES >> 20,
                format.name()
            ),
            "split the long values out of the table",
        )
    };
    let too_deep = || {
        Error::unusable(
            shown,
            format!("JSON nested more than {MAX_JSON_DEPTH} levels deep (a table's cells are not)"),
            "flatten the nested values into columns",
        )
    };
    let json = format == Format::Ndjson;
    let (mut line, mut depth, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::input(shown, super::io_cause(&e))),
        };
        let chunk = &buf[..n];
        if !json {
            // Line lengths only: memchr finds the line ends at memory speed.
            let mut from = 0;
            for end in memchr::memchr_iter(b'\n', chunk) {
                if line + (end - from) > MAX_LINE_BYTES {
                    return Err(too_long());
                }
                (line, from) = (0, end + 1);
            }
            line += n - from;
            if line > MAX_LINE_BYTES {
                return Err(too_long());
            }
            continue;
        }
        for &b in chunk {
            line += 1;
            if b == b'\n' {
                // A new record (a raw line end inside a string is not JSON: the decoder's to
                // refuse).
                (line, depth, in_string, escaped) = (0, 0, false, false);
                continue;
            }
            if line > MAX_LINE_BYTES {
                return Err(too_long());
            }
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_JSON_DEPTH {
                        return Err(too_deep());
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
}

/// Longest header line read when looking for a repeated column name.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Refuses a CSV header that names a column twice. The CSV reader would rename the second
/// `row_id` to `row_id_duplicated_0`, and the batch would then be blocked for a "missing" or
/// "extra" column that is really an ambiguous file.
fn repeated_header(path: &Path, shown: &Path) -> Result<()> {
    use std::io::{BufRead, BufReader, Read};
    let mut line = Vec::new();
    File::open(path)
        .map(|f| BufReader::new(f.take(MAX_HEADER_BYTES)))
        .and_then(|mut r| r.read_until(b'\n', &mut line))
        .map_err(|e| Error::input(shown, super::io_cause(&e)))?;
    if line.len() as u64 == MAX_HEADER_BYTES && line.last() != Some(&b'\n') {
        return Err(Error::unusable(
            shown,
            format!(
                "the CSV header is longer than {} MiB",
                MAX_HEADER_BYTES >> 20
            ),
            "shorten the column names, or split the table",
        ));
    }
    let names = header_fields(&String::from_utf8_lossy(&line));
    if names.len() > MAX_COLUMNS {
        return Err(too_wide(shown, names.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in &names {
        if !seen.insert(name.as_str()) {
            return Err(Error::unusable(
                shown,
                format!("the CSV header names the column `{name}` more than once"),
                "give every column of the header its own name",
            ));
        }
    }
    Ok(())
}

/// The error for a batch with more than [`crate::limits::MAX_BATCH_ROWS`] rows.
pub(super) fn too_long_batch(shown: &Path) -> Error {
    Error::unusable(
        shown,
        format!(
            "the batch holds more than {} rows (the cap on one batch)",
            crate::limits::MAX_BATCH_ROWS
        ),
        "check it in parts, or with `plan`, `summarize` and `merge`",
    )
}

/// The error for an input with more than [`MAX_COLUMNS`] columns.
pub(super) fn too_wide(shown: &Path, columns: usize) -> Error {
    Error::unusable(
        shown,
        format!("{columns} columns, more than the cap of {MAX_COLUMNS}"),
        "split the table, or leave out the columns the model does not read",
    )
}

/// Refuses a decoded window with more than [`MAX_COLUMNS`] columns or a string cell longer
/// than [`crate::limits::MAX_CELL_BYTES`] (see [`crate::limits`]). A string's length is read
/// from its view, so the check costs one pass over 16 bytes a cell, not over the strings.
pub(super) fn check_window(shown: &Path, df: &DataFrame) -> Result<()> {
    use crate::limits::MAX_CELL_BYTES;
    if df.width() > MAX_COLUMNS {
        return Err(too_wide(shown, df.width()));
    }
    for column in df.columns() {
        let longest = match column.dtype() {
            DataType::String => column.as_materialized_series().str().ok().map(|ca| {
                ca.downcast_iter()
                    .flat_map(|a| a.views().iter().map(|v| v.length))
                    .max()
                    .unwrap_or(0)
            }),
            DataType::Binary => column.as_materialized_series().binary().ok().map(|ca| {
                ca.downcast_iter()
                    .flat_map(|a| a.views().iter().map(|v| v.length))
                    .max()
                    .unwrap_or(0)
            }),
            _ => None,
        };
        if longest.is_some_and(|l| l as usize > MAX_CELL_BYTES) {
            return Err(Error::unusable(
                shown,
                format!(
                    "column `{}` holds a value longer than {} MiB (the cap on one cell)",
                    column.name(),
                    MAX_CELL_BYTES >> 20
                ),
                "split the long values out of the table",
            ));
        }
    }
    Ok(())
}

/// The fields of one CSV header line (RFC 4180 quoting: `"a,b"` is one field and `""` inside
/// quotes is a quote), without the line end.
fn header_fields(line: &str) -> Vec<String> {
    let line = line.trim_end_matches(['\n', '\r']);
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}
