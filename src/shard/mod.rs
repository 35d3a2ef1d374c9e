//! Sharded checks (DESIGN §6): `plan` lists a batch's units, `summarize` folds the units of
//! one shard into a *part*, `merge` combines parts, and `check --summaries` decides from the
//! merge exactly as `check` decides from the files.
//!
//! **Units.** A unit is one input file, named as given (a path every shard can open, or an
//! `s3://` URI), with its size and SHA-256. The manifest lists them in the batch's order and
//! carries the digest of that list; shard `i/N` takes the contiguous run of units
//! `[i * len / N, (i + 1) * len / N)`.
//!
//! **Parts.** A part (`poisongate.summary/4`) starts with a JSON header: the build, the digests
//! of the baseline, the policy and the manifest, and the units it covers. Then come, per unit,
//! its provenance, schema, column summaries and row-pass state. Column summaries merge by
//! exact addition (integer counts, exact floating sums: [`crate::stats::exact`]), so merging
//! is commutative and associative and the merged part is byte-identical whatever the split
//! and the merge tree. The row-pass state is kept per unit and concatenated in unit order
//! when the check decides.
//!
//! **Refusals.** Parts whose headers disagree, a unit covered twice (a retried duplicate) and,
//! at `check --summaries`, a unit not covered (a lost task) are exit 2, never a partial
//! decision.
//!
//! The row-pass state does not grow with the rows: per unit the accumulators' states (class
//! and surprise tables, counts, the duplicate groups: exact up to
//! [`crate::poison::duplicates::MAX_GROUPS`] distinct rows, a hash sample of them beyond) and
//! at most [`crate::poison::LR_ROWS`] rows of the label test's sample, stored as
//! little-endian records. Nothing is kept per row.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::source::{Format, InputFile, InputMeta, ObjectRef, Sources, continues_input};

/// Format tag of a manifest.
pub const MANIFEST_FORMAT: &str = "poisongate.manifest/1";
/// Format tag of a summary part.
pub const PART_FORMAT: &str = "poisongate.summary/4";

/// The units of a batch, in batch order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// SHA-256 of the units' JSON (as written here, compact).
    pub sha256: String,
    /// The units.
    pub units: Vec<Unit>,
}

/// One unit of work: an input file, or a range of its rows (`plan --unit-rows`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// Position in the batch, from 0.
    pub index: usize,
    /// The file as given (path or `s3://` URI).
    pub path: String,
    /// Decoder.
    pub format: Format,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Rows, when the file's footer says (Parquet): of the range, for a range unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Rows `[start, end)` of the file, for a unit smaller than its file (Parquet; `start` a
    /// multiple of 65,536). The units of one file are consecutive and cover it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[u64; 2]>,
    /// ETag, version and encryption of an S3 object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
}

fn units_digest(units: &[Unit]) -> Result<String> {
    let bytes = serde_json::to_vec(units).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(crate::integrity::sha256_hex(&bytes))
}

/// Lists the units of a batch: every file, hashed; with `unit_rows`, Parquet files of more
/// rows are cut into ranges of that many rows (rounded up to a multiple of
/// [`crate::rows::CHUNK_ROWS`], so that every range starts on a block boundary and the
/// blocks, hence the result, are those of the whole file).
///
/// # Errors
/// A file that cannot be read or is empty.
pub fn plan(files: &[InputFile], unit_rows: Option<usize>) -> Result<Manifest> {
    let block = crate::rows::CHUNK_ROWS;
    let step = unit_rows.map(|r| r.max(1).div_ceil(block) * block);
    let mut units = Vec::with_capacity(files.len());
    for file in files {
        let name = file.name();
        let (sha256, bytes) = crate::integrity::sha256_file(&file.path).map_err(|e| match e {
            Error::Input { cause, .. } => Error::input(Path::new(&name), cause),
            other => other,
        })?;
        if bytes == 0 {
            return Err(Error::input(Path::new(&name), "file is empty (0 bytes)"));
        }
        let rows = (file.format == Format::Parquet)
            .then(|| crate::source::stream::row_hint(std::slice::from_ref(file)) as u64);
        // Whole, or cut into consecutive ranges of `step` rows.
        let ranges: Vec<Option<[u64; 2]>> = match (step, rows) {
            (Some(step), Some(total)) if total > step as u64 => (0..total)
                .step_by(step)
                .map(|a| Some([a, (a + step as u64).min(total)]))
                .collect(),
            _ => vec![None],
        };
        for range in ranges {
            units.push(Unit {
                index: units.len(),
                path: name.clone(),
                format: file.format,
                bytes,
                sha256: sha256.clone(),
                rows: range.map_or(rows, |[a, b]| Some(b - a)),
                range,
                object: file.origin.as_ref().map(|o| o.object.clone()),
            });
        }
    }
    Ok(Manifest {
        format: MANIFEST_FORMAT.to_owned(),
        sha256: units_digest(&units)?,
        units,
    })
}

impl Unit {
    /// The unit's file, resolved through `sources` and limited to the unit's range.
    ///
    /// # Errors
    /// As [`Sources::resolve`]; a path that resolves to nothing.
    pub fn input(&self, sources: &Sources) -> Result<InputFile> {
        let mut files = sources.resolve(std::slice::from_ref(&self.path), Some(self.format))?;
        let Some(mut file) = files.pop() else {
            return Err(Error::input(Path::new(&self.path), "not found"));
        };
        file.range = self.range.map(|[a, b]| a as usize..b as usize);
        Ok(file)
    }

    /// Refuses a read of the unit whose bytes are not the ones `plan` hashed.
    ///
    /// # Errors
    /// Another SHA-256 or size than the manifest pins.
    pub fn check_read(&self, meta: &InputMeta) -> Result<()> {
        if meta.sha256 == self.sha256 && meta.bytes == self.bytes {
            return Ok(());
        }
        Err(Error::input(
            Path::new(&self.path),
            format!(
                "the file changed since `plan` (SHA-256 {}, the manifest pins {})",
                meta.sha256, self.sha256
            ),
        ))
    }
}

impl Manifest {
    /// Reads and checks a manifest.
    ///
    /// # Errors
    /// Unreadable or malformed JSON, another format, a digest that does not match its units,
    /// or units out of order.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let m: Self = serde_json::from_slice(bytes)
            .map_err(|e| Error::summary(path, format!("not a manifest: {e}")))?;
        if m.format != MANIFEST_FORMAT {
            return Err(Error::summary(
                path,
                format!("format `{}`, expected `{MANIFEST_FORMAT}`", m.format),
            ));
        }
        if m.units.is_empty() {
            return Err(Error::summary(path, "the manifest lists no units"));
        }
        if m.units.iter().enumerate().any(|(i, u)| u.index != i) {
            return Err(Error::summary(
                path,
                "units are not numbered 0, 1, 2, ... in order",
            ));
        }
        if units_digest(&m.units)? != m.sha256 {
            return Err(Error::summary(
                path,
                "its digest does not match its units (edited after `plan`)",
            ));
        }
        Ok(m)
    }

    /// Each unit's input's position among the batch's inputs (the pieces of one file are one
    /// input; see [`continues_input`]).
    #[must_use]
    pub fn input_places(&self) -> Vec<u64> {
        let mut place = 0u64;
        self.units
            .iter()
            .enumerate()
            .map(|(i, u)| {
                if i > 0 && !(continues_input(u.range) && self.units[i - 1].path == u.path) {
                    place += 1;
                }
                place
            })
            .collect()
    }

    /// The units of shard `spec` (`i/N`, `0 <= i < N`): a contiguous run, possibly empty when
    /// there are more shards than units.
    ///
    /// # Errors
    /// A malformed spec.
    pub fn shard(&self, spec: &str) -> Result<Vec<&Unit>> {
        let parsed = spec.split_once('/').and_then(|(i, n)| {
            Some((
                i.trim().parse::<usize>().ok()?,
                n.trim().parse::<usize>().ok()?,
            ))
        });
        let Some((i, n)) = parsed.filter(|&(i, n)| n > 0 && i < n) else {
            return Err(Error::Usage(format!(
                "--shard `{spec}`: expected I/N with 0 <= I < N, e.g. 0/4"
            )));
        };
        let len = self.units.len();
        Ok(self.units[i * len / n..(i + 1) * len / n].iter().collect())
    }
}

/// The build that writes parts and ledger entries (`poisongate VERSION`): states of different
/// builds never merge.
#[must_use]
pub fn tool() -> String {
    format!("poisongate {}", env!("CARGO_PKG_VERSION"))
}

mod part;

pub use part::{Part, PartHeader, schema_text};
