//! Inputs: resolving paths, directories and globs to files, reading them into frames, and
//! recording their provenance (SHA-256, size, rows).
//!
//! This module owns I/O only. It does not summarise: [`crate::summary`] consumes the frames
//! chunk by chunk, so a streaming or sharded reader only has to change how frames arrive.

mod format;
mod read;
pub mod s3;
pub mod stream;
mod walk;

pub use format::Format;
pub use read::{Batch, read_batch, read_file};
pub use s3::{ObjectRef, S3Options, S3Uri};
pub use stream::Rows;

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
    /// The S3 object it was downloaded from, when it was (then `path` is the spilled copy).
    pub origin: Option<Origin>,
    /// Only these rows of the file (a unit of a sharded check, [`crate::shard`]): Parquet
    /// only, starting at a multiple of [`stream::CHUNK_ROWS`]. `None` reads every row.
    pub range: Option<std::ops::Range<usize>>,
}

/// Whether a unit with `range` continues the input of the unit before it: a range that
/// starts past row 0 is a later piece of the same file, and the pieces of one file make one
/// input, as a single read of the file records it.
#[must_use]
pub fn continues_input(range: Option<[u64; 2]>) -> bool {
    range.is_some_and(|[start, _]| start > 0)
}

impl InputFile {
    /// A local file.
    #[must_use]
    pub fn local(path: PathBuf, format: Format) -> Self {
        Self {
            path,
            format,
            origin: None,
            range: None,
        }
    }

    /// The name errors and reports use: the `s3://` URI, or the local path.
    #[must_use]
    pub fn name(&self) -> String {
        match &self.origin {
            Some(o) => o.uri.clone(),
            None => self.path.display().to_string(),
        }
    }
}

/// Where a spilled input came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `s3://bucket/key`.
    pub uri: String,
    /// ETag, version and encryption as read.
    pub object: ObjectRef,
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
    /// ETag, version id and server-side encryption, for S3 objects.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub object: Option<ObjectRef>,
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
                files.push(InputFile::local(path, format));
            }
        }
    }
    Ok(files)
}

/// Inputs from local paths and S3, with the S3 client made on first use and the spilled
/// objects kept until this is dropped.
#[derive(Debug, Default)]
pub struct Sources {
    options: S3Options,
    s3: std::cell::OnceCell<s3::S3>,
}

/// The cause S3 gives for a key that does not exist (then the key may name a prefix).
const NO_SUCH_OBJECT: &str = "no such object";

impl Sources {
    /// Sources with these S3 settings.
    #[must_use]
    pub fn new(options: S3Options) -> Self {
        Self {
            options,
            s3: std::cell::OnceCell::new(),
        }
    }

    fn s3(&self, first: &str) -> Result<&s3::S3> {
        if let Some(s3) = self.s3.get() {
            return Ok(s3);
        }
        let client = s3::S3::connect(&self.options, first)?;
        Ok(self.s3.get_or_init(|| client))
    }

    /// [`resolve`], where any argument may also be `s3://bucket/key` or `s3://bucket/prefix/`.
    /// S3 objects are downloaded (streamed to a temporary directory) before this returns.
    ///
    /// A key that does not exist but has objects under `key/` is read as that prefix, as a
    /// local directory is.
    ///
    /// # Errors
    /// As [`resolve`]; for S3, a listing or download that fails, or a prefix without data.
    pub fn resolve(&self, args: &[String], format: Option<Format>) -> Result<Vec<InputFile>> {
        if args.is_empty() {
            return Err(Error::Usage("no DATA inputs given".into()));
        }
        let mut files: Vec<InputFile> = Vec::new();
        for arg in args {
            let found = if S3Uri::is_s3(arg) {
                self.resolve_s3(arg, format)?
            } else {
                resolve(std::slice::from_ref(arg), format)?
            };
            for file in found {
                if !files.iter().any(|f| f.name() == file.name()) {
                    files.push(file);
                }
            }
        }
        Ok(files)
    }

    fn resolve_s3(&self, arg: &str, format: Option<Format>) -> Result<Vec<InputFile>> {
        let uri = S3Uri::parse(arg)?;
        let s3 = self.s3(arg)?;
        let objects = if uri.is_prefix() {
            let keys = s3.list(&uri)?;
            fetch_data(s3, &uri, keys, format)?
        } else {
            // A key without a known extension, or one that does not exist, may name a
            // "directory" of objects, as a local path may; failing that, its own error stands.
            let missing = match object_format(&uri, format) {
                Err(no_format) => no_format,
                Ok(_) => match s3.fetch(&uri) {
                    Ok(one) => return Ok(vec![spilled(one, format)?]),
                    Err(Error::S3 { cause, .. }) if cause == NO_SUCH_OBJECT => {
                        Error::s3(&uri, NO_SUCH_OBJECT)
                    }
                    Err(e) => return Err(e),
                },
            };
            let dir = uri.as_dir();
            let keys = s3.list(&dir)?;
            if keys.is_empty() {
                return Err(missing);
            }
            fetch_data(s3, &dir, keys, format)?
        };
        objects.into_iter().map(|f| spilled(f, format)).collect()
    }

    /// A local path holding one file or S3 object (downloaded first), with the object's
    /// metadata.
    ///
    /// # Errors
    /// A prefix where one object is needed, or an object that cannot be read.
    pub fn open(&self, arg: &str) -> Result<(PathBuf, Option<ObjectRef>)> {
        if !S3Uri::is_s3(arg) {
            return Ok((PathBuf::from(arg), None));
        }
        let uri = S3Uri::parse(arg)?;
        if uri.is_prefix() {
            return Err(Error::s3(&uri, "names a prefix; one object is needed here"));
        }
        let fetched = self.s3(arg)?.fetch(&uri)?;
        Ok((fetched.path, Some(fetched.object)))
    }

    /// The bytes of one local file or S3 object (a baseline, a checksum file), with the S3
    /// object's metadata. Local read errors are built by `local_error`.
    ///
    /// # Errors
    /// The file or object cannot be read.
    pub fn read_bytes(
        &self,
        arg: &str,
        local_error: impl Fn(&Path, String) -> Error,
    ) -> Result<(Vec<u8>, Option<ObjectRef>)> {
        let (path, object) = self.open(arg)?;
        let bytes = std::fs::read(&path).map_err(|e| match object {
            Some(_) => Error::s3(arg, format!("reading the spilled copy: {e}")),
            None => local_error(&path, io_cause(&e)),
        })?;
        Ok((bytes, object))
    }
}

/// The data objects among `keys` under `prefix`, downloaded. Keys below a hidden or marker
/// "directory" are skipped, as on disk.
fn fetch_data(
    s3: &s3::S3,
    prefix: &S3Uri,
    keys: Vec<S3Uri>,
    format: Option<Format>,
) -> Result<Vec<s3::Fetched>> {
    let keys: Vec<S3Uri> = keys
        .into_iter()
        .filter(|u| {
            let rel = u.key.strip_prefix(&prefix.key).unwrap_or(&u.key);
            !rel.split('/').any(|seg| seg.starts_with(['.', '_']))
                && is_data_name(u.basename(), format)
        })
        .collect();
    if keys.is_empty() {
        return Err(Error::s3(
            prefix,
            "no .parquet, .csv, .arrow, .ipc, .feather, .ndjson or .jsonl objects under this prefix",
        ));
    }
    s3.fetch_all(&keys)
}

/// The input file of a downloaded object.
fn spilled(f: s3::Fetched, format: Option<Format>) -> Result<InputFile> {
    Ok(InputFile {
        format: object_format(&f.uri, format)?,
        path: f.path,
        origin: Some(Origin {
            uri: f.uri.to_string(),
            object: f.object,
        }),
        range: None,
    })
}

fn object_format(uri: &S3Uri, format: Option<Format>) -> Result<Format> {
    match format {
        Some(f) => Ok(f),
        None => Format::from_path(Path::new(uri.basename())).ok_or_else(|| {
            Error::s3(
                uri,
                "unknown file extension; expected .parquet, .csv, .arrow/.ipc/.feather or .ndjson/.jsonl (or pass --format)",
            )
        }),
    }
}

fn is_glob(arg: &str) -> bool {
    arg.contains(['*', '?', '['])
}

fn expand(arg: &str, format: Option<Format>) -> Result<Vec<PathBuf>> {
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

/// Whether a file name found under a directory or prefix is data: hidden files and
/// Spark/Hadoop markers (`_SUCCESS`, `_committed_*`) are not, and neither are other formats.
fn is_data_name(name: &str, format: Option<Format>) -> bool {
    if name.is_empty() || name.starts_with(['.', '_']) {
        return false;
    }
    let path = Path::new(name);
    match format {
        Some(f) => Format::from_path(path) == Some(f),
        None => Format::from_path(path).is_some(),
    }
}

fn walk(dir: &Path, format: Option<Format>, out: &mut Vec<PathBuf>) -> Result<()> {
    walk_with(dir, &|name| is_data_name(name, format), out)
}

/// Every file under `dir` that a reader of the directory would load, whatever its extension:
/// all but hidden files and Spark/Hadoop markers (names starting with `.` or `_`, which Spark,
/// pyarrow and pandas skip too), sorted. What a training step verifies before reading a
/// directory: a file the gate could not read (`part-9.csv.gz`, `part-9`) must not pass unseen.
///
/// # Errors
/// An unreadable directory, or an entry that is neither a directory nor a regular file (a
/// FIFO or a device would block or never end when read).
pub fn every_file(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk_with(
        dir,
        &|name| !name.is_empty() && !name.starts_with(['.', '_']),
        &mut out,
    )?;
    for path in &out {
        if !path.is_file() {
            return Err(Error::input(
                path,
                "neither a directory nor a regular file; it cannot be verified",
            ));
        }
    }
    out.sort();
    Ok(out)
}

fn walk_with(dir: &Path, keep: &dyn Fn(&str) -> bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::input(dir, io_cause(&e)))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::input(dir, io_cause(&e)))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !name.starts_with(['.', '_']) {
                walk_with(&path, keep, out)?;
            }
        } else if keep(&name) {
            out.push(path);
        }
    }
    Ok(())
}

pub use crate::error::io_cause;
