//! Decoding files into frames, hashing them, and assembling a batch of one schema.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use polars::prelude::*;

use super::{Format, InputFile, InputMeta, io_cause};
use crate::error::{Error, Result};

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
        || decode(path, shown, file.format),
    );
    let (sha256, bytes) = digest.map_err(|e| rename(e, shown))?;
    let df = frame?;
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
pub(super) fn decode(path: &Path, shown: &Path, format: Format) -> Result<DataFrame> {
    if format == Format::Csv {
        repeated_header(path, shown)?;
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
    let names = header_fields(&String::from_utf8_lossy(&line));
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
