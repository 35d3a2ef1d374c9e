//! Inputs: resolving paths, directories and globs to files, reading them into frames, and
//! recording their provenance (SHA-256, size, rows).
//!
//! This module owns I/O only. It does not summarise: [`crate::summary`] consumes the frames
//! chunk by chunk, so a streaming or sharded reader only has to change how frames arrive.

mod format;
mod read;

pub use format::Format;
pub use read::{Batch, read_batch, read_file};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One input file and how to decode it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Where it is.
    pub path: PathBuf,
    /// How to decode it.
    pub format: Format,
}

/// Provenance of one input, recorded in baselines and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputMeta {
    /// The path as given (or as found under a directory or glob).
    pub path: String,
    /// Decoder used.
    pub format: Format,
    /// SHA-256 of the file's bytes, lowercase hex.
    pub sha256: String,
    /// File size in bytes.
    pub bytes: u64,
    /// Rows decoded.
    pub rows: u64,
}

/// Expands every `DATA` argument (file, directory, glob) into input files, in a stable order.
///
/// Directories are walked recursively and contribute every file with a supported extension;
/// globs must match at least one file. The same file named twice is read once.
///
/// # Errors
/// A path that does not exist, a glob that matches nothing, a directory without supported
/// files, or a file whose format cannot be told from its extension without `--format`.
pub fn resolve(args: &[String], format: Option<Format>) -> Result<Vec<InputFile>> {
    if args.is_empty() {
        return Err(Error::Usage("no DATA inputs given".into()));
    }
    let mut files: Vec<InputFile> = Vec::new();
    for arg in args {
        for path in expand(arg, format)? {
            let format = match format {
                Some(f) => f,
                None => Format::from_path(&path).ok_or_else(|| {
                    Error::input(
                        &path,
                        "unknown file extension; expected .parquet, .csv, .arrow/.ipc/.feather or .ndjson/.jsonl (or pass --format)",
                    )
                })?,
            };
            if !files.iter().any(|f| f.path == path) {
                files.push(InputFile { path, format });
            }
        }
    }
    Ok(files)
}

fn is_glob(arg: &str) -> bool {
    arg.contains(['*', '?', '['])
}

fn expand(arg: &str, format: Option<Format>) -> Result<Vec<PathBuf>> {
    if arg.starts_with("s3://") {
        return Err(Error::input(
            Path::new(arg),
            "s3:// inputs are not supported by this build yet",
        ));
    }
    let path = Path::new(arg);
    if is_glob(arg) && !path.exists() {
        let mut out: Vec<PathBuf> = glob::glob(arg)
            .map_err(|e| Error::input(path, format!("invalid glob: {e}")))?
            .filter_map(std::result::Result::ok)
            .filter(|p| p.is_file())
            .collect();
        out.sort();
        if out.is_empty() {
            return Err(Error::input(path, "glob matched no files"));
        }
        return Ok(out);
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::input(path, io_cause(&e)))?;
    if meta.is_dir() {
        let mut out = Vec::new();
        walk(path, format, &mut out)?;
        out.sort();
        if out.is_empty() {
            return Err(Error::input(
                path,
                "directory holds no .parquet, .csv, .arrow, .ipc, .feather, .ndjson or .jsonl files",
            ));
        }
        return Ok(out);
    }
    Ok(vec![path.to_path_buf()])
}

fn walk(dir: &Path, format: Option<Format>, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::input(dir, io_cause(&e)))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::input(dir, io_cause(&e)))?;
        let path = entry.path();
        let name = entry.file_name();
        // Hidden files and Spark/Hadoop markers (_SUCCESS, _committed_*) are not data.
        if name.to_string_lossy().starts_with(['.', '_']) {
            continue;
        }
        if path.is_dir() {
            walk(&path, format, out)?;
        } else if match format {
            Some(f) => Format::from_path(&path) == Some(f),
            None => Format::from_path(&path).is_some(),
        } {
            out.push(path);
        }
    }
    Ok(())
}

/// A short, stable cause for an I/O error (no OS error numbers).
pub(crate) fn io_cause(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}
