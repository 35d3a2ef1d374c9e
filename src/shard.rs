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

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::DataType;
use serde::{Deserialize, Serialize};

use crate::check::UnitSummary;
use crate::error::{Error, Result};
use crate::poison::{LrRow, ScanState, States};
use crate::sections::{Reader, put_section};
use crate::source::{Format, InputFile, InputMeta, ObjectRef, Sources, continues_input};
use crate::summary::BatchSummary;

/// Format tag of a manifest.
pub const MANIFEST_FORMAT: &str = "poisongate.manifest/1";
/// Format tag of a summary part.
pub const PART_FORMAT: &str = "poisongate.summary/4";
/// First bytes of a part file.
const MAGIC: &[u8] = b"poisongate.summary/4\n";
/// Largest JSON section a part may hold (the column summaries of wide batches).
const MAX_JSON: u64 = 1 << 30;

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

/// The header of a part: what it was computed with and what it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartHeader {
    /// Always [`PART_FORMAT`].
    pub format: String,
    /// The build that wrote it (`poisongate VERSION`): parts of different builds never merge.
    pub tool: String,
    /// SHA-256 of the baseline.
    pub baseline_sha256: String,
    /// SHA-256 of the effective policy.
    pub policy_sha256: String,
    /// SHA-256 of the manifest's units.
    pub manifest_sha256: String,
    /// Units in the manifest.
    pub units_total: usize,
    /// Units covered, ascending.
    pub units: Vec<usize>,
}

/// One unit's small state (everything but the per-row arrays).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitBody {
    index: usize,
    meta: InputMeta,
    schema: Vec<(String, String)>,
    summary: BatchSummary,
    scan: Option<ScanCounts>,
    /// The rows of the file it covers, for a range unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<[u64; 2]>,
}

/// A unit's row-pass state: the accumulators' states, and the sizes of what follows in
/// binary (the per-row arrays and the label test's sample).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanCounts {
    rows: usize,
    states: States,
    /// Rows of the label test's sample (their bytes follow the unit's per-row arrays).
    sample: usize,
}

/// A unit's binary row-pass state: its label sample.
type UnitRows = Vec<LrRow>;

/// A part: a header and the states of its units, in unit order.
#[derive(Debug, Clone)]
pub struct Part {
    /// What it covers.
    pub header: PartHeader,
    units: Vec<(UnitBody, Option<UnitRows>)>,
}

/// The dtypes of a schema as text (for comparing parts and files).
#[must_use]
pub fn schema_text(schema: &[(String, DataType)]) -> Vec<(String, String)> {
    schema
        .iter()
        .map(|(n, t)| (n.clone(), format!("{t:?}")))
        .collect()
}

impl Part {
    /// A part of one shard from its units' summaries (in unit order).
    #[must_use]
    pub fn new(header: PartHeader, units: Vec<(usize, UnitSummary)>) -> Self {
        let units = units
            .into_iter()
            .map(|(index, u)| {
                let (counts, scan) = match u.scan {
                    Some(mut state) => {
                        let sample = state
                            .states
                            .label
                            .as_mut()
                            .map(|l| std::mem::take(&mut l.sample))
                            .unwrap_or_default();
                        let counts = ScanCounts {
                            rows: state.n,
                            states: state.states,
                            sample: sample.len(),
                        };
                        (Some(counts), Some(sample))
                    }
                    None => (None, None),
                };
                (
                    UnitBody {
                        index,
                        meta: u.meta,
                        schema: schema_text(&u.schema),
                        summary: u.summary,
                        scan: counts,
                        range: u.range,
                    },
                    scan,
                )
            })
            .collect();
        Self { header, units }
    }

    /// The columns and dtypes (as text) of the part's first unit.
    #[must_use]
    pub fn schema(&self) -> Option<&[(String, String)]> {
        self.units.first().map(|u| u.0.schema.as_slice())
    }

    /// Parts of different runs (the ledger's accepted batches, then the batch at hand) as one
    /// part of all their units, in the order given, renumbered: the header is the first
    /// part's, with `manifest` in place of its manifest digest. `None` for no parts.
    #[must_use]
    pub fn window(parts: Vec<Self>, manifest: &str) -> Option<Self> {
        let mut header = parts.first()?.header.clone();
        let mut units = Vec::new();
        for part in parts {
            units.extend(part.units);
        }
        for (i, u) in units.iter_mut().enumerate() {
            u.0.index = i;
            // Each batch is its own input: no range continues another batch's file.
            u.0.range = None;
        }
        header.manifest_sha256 = manifest.to_owned();
        header.units_total = units.len();
        header.units = (0..units.len()).collect();
        Some(Self { header, units })
    }

    /// Combines parts of one run into one. Exact, commutative and associative.
    ///
    /// # Errors
    /// Parts whose headers disagree (build, baseline, policy, manifest) or that cover a unit
    /// twice; `names` name the parts in errors.
    pub fn merge(parts: Vec<Self>, names: &[String]) -> Result<Self> {
        let mut parts = parts.into_iter().zip(names);
        let Some((first, _)) = parts.next() else {
            return Err(Error::Usage("merge: no parts given".into()));
        };
        let mut header = first.header.clone();
        let mut units: BTreeMap<usize, (UnitBody, Option<UnitRows>)> = BTreeMap::new();
        let first_name = names.first().cloned().unwrap_or_default();
        for u in first.units {
            units.insert(u.0.index, u);
        }
        for (part, name) in parts {
            let h = &part.header;
            let differs = [
                ("build", &h.tool, &header.tool),
                ("baseline", &h.baseline_sha256, &header.baseline_sha256),
                ("policy", &h.policy_sha256, &header.policy_sha256),
                ("manifest", &h.manifest_sha256, &header.manifest_sha256),
            ]
            .into_iter()
            .find(|(_, a, b)| a != b);
            if let Some((what, a, b)) = differs {
                return Err(Error::summary(
                    Path::new(name),
                    format!("its {what} ({a}) differs from {first_name}'s ({b})"),
                ));
            }
            if h.units_total != header.units_total {
                return Err(Error::summary(
                    Path::new(name),
                    "it was planned with another number of units",
                ));
            }
            for u in part.units {
                let index = u.0.index;
                if units.insert(index, u).is_some() {
                    return Err(Error::summary(
                        Path::new(name),
                        format!("unit {index} is covered twice (a retried or duplicated shard)"),
                    ));
                }
            }
        }
        header.units = units.keys().copied().collect();
        Ok(Self {
            header,
            units: units.into_values().collect(),
        })
    }

    /// Checks that the part covers every unit of its run, computed with `baseline_sha256` and
    /// `policy_sha256`, and returns the merged column summary, the schema, and per unit (in
    /// order) its provenance and row-pass state.
    ///
    /// # Errors
    /// A missing unit, other digests, or units whose schemas differ.
    #[allow(clippy::type_complexity)]
    pub fn complete(
        self,
        path: &Path,
        baseline_sha256: &str,
        policy_sha256: &str,
    ) -> Result<(
        BatchSummary,
        Vec<(String, String)>,
        Vec<InputMeta>,
        Vec<Option<ScanState>>,
    )> {
        let h = &self.header;
        if h.baseline_sha256 != baseline_sha256 {
            return Err(Error::summary(
                path,
                format!(
                    "summarised against baseline {}, not the given one ({baseline_sha256})",
                    h.baseline_sha256
                ),
            ));
        }
        if h.policy_sha256 != policy_sha256 {
            return Err(Error::summary(
                path,
                format!(
                    "summarised with policy {}, not the given one ({policy_sha256})",
                    h.policy_sha256
                ),
            ));
        }
        let missing: Vec<usize> = (0..h.units_total)
            .filter(|i| h.units.binary_search(i).is_err())
            .collect();
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(5).map(usize::to_string).collect();
            return Err(Error::summary(
                path,
                format!(
                    "{} of {} units are not covered (a lost shard?): unit {}",
                    missing.len(),
                    h.units_total,
                    shown.join(", ")
                ),
            ));
        }
        let mut summary: Option<BatchSummary> = None;
        let mut schema: Option<Vec<(String, String)>> = None;
        let mut metas = Vec::with_capacity(self.units.len());
        let mut scans = Vec::with_capacity(self.units.len());
        let mut prev_end: Option<u64> = None;
        for (body, rows) in self.units {
            match &schema {
                Some(s) if *s != body.schema => {
                    return Err(Error::SchemaMismatch {
                        first: metas
                            .first()
                            .map(|m: &InputMeta| m.path.clone())
                            .unwrap_or_default()
                            .into(),
                        second: body.meta.path.clone().into(),
                        cause: "the units' columns or dtypes differ".into(),
                    });
                }
                Some(_) => {}
                None => schema = Some(body.schema.clone()),
            }
            match &mut summary {
                Some(s) => s.merge(&body.summary)?,
                None => summary = Some(body.summary),
            }
            // The range units of one file become that file again, as the one-process check
            // saw it: one input with the rows of all its ranges.
            match body.range {
                Some([start, end]) => {
                    let continues = start > 0;
                    match metas.last_mut() {
                        Some(prev)
                            if continues
                                && prev_end == Some(start)
                                && prev.path == body.meta.path =>
                        {
                            if prev.sha256 != body.meta.sha256 || prev.bytes != body.meta.bytes {
                                return Err(Error::summary(
                                    path,
                                    format!(
                                        "the ranges of {} were read from different bytes",
                                        body.meta.path
                                    ),
                                ));
                            }
                            prev.rows += body.meta.rows;
                        }
                        _ if continues => {
                            return Err(Error::summary(
                                path,
                                format!(
                                    "rows {start}..{end} of {} do not follow the rows before them",
                                    body.meta.path
                                ),
                            ));
                        }
                        _ => metas.push(body.meta),
                    }
                    prev_end = Some(end);
                }
                None => {
                    metas.push(body.meta);
                    prev_end = None;
                }
            }
            scans.push(match (body.scan, rows) {
                (Some(c), Some(sample)) => {
                    let mut states = c.states;
                    match &mut states.label {
                        Some(l) => l.sample = sample,
                        None if !sample.is_empty() => {
                            return Err(Error::summary(
                                path,
                                "a label sample without a label test",
                            ));
                        }
                        None => {}
                    }
                    Some(ScanState { n: c.rows, states })
                }
                _ => None,
            });
        }
        match (summary, schema) {
            (Some(s), Some(schema)) => Ok((s, schema, metas, scans)),
            _ => Err(Error::summary(path, "it covers no units")),
        }
    }

    /// The part's bytes: the magic line, the header and unit states as length-prefixed JSON,
    /// then each unit's per-row arrays, little-endian.
    ///
    /// # Errors
    /// A serialisation failure (a bug).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        put_section(&mut out, &to_json(&self.header)?);
        let bodies: Vec<&UnitBody> = self.units.iter().map(|u| &u.0).collect();
        put_section(&mut out, &to_json(&bodies)?);
        for (_, scan) in &self.units {
            if let Some(s) = scan {
                write_sample(&mut out, s);
            }
        }
        Ok(out)
    }

    /// Reads a part written by [`Self::to_bytes`].
    ///
    /// # Errors
    /// Anything malformed or truncated, named by `path`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |cause: &str| Error::summary(path, cause);
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("not a poisongate.summary/4 part (bad magic)"))?;
        let mut r = Reader::new(rest, MAX_JSON);
        let header: PartHeader =
            serde_json::from_slice(r.section().ok_or_else(|| bad("truncated header"))?)
                .map_err(|e| Error::summary(path, format!("bad header: {e}")))?;
        if header.format != PART_FORMAT {
            return Err(bad("unknown part format"));
        }
        let bodies: Vec<UnitBody> =
            serde_json::from_slice(r.section().ok_or_else(|| bad("truncated unit states"))?)
                .map_err(|e| Error::summary(path, format!("bad unit states: {e}")))?;
        if bodies.iter().map(|b| b.index).collect::<Vec<_>>() != header.units
            || header.units.iter().any(|&u| u >= header.units_total)
        {
            return Err(bad("its units do not match its header"));
        }
        let mut units = Vec::with_capacity(bodies.len());
        for body in bodies {
            let scan = match &body.scan {
                Some(c) => Some(
                    read_sample(&mut r, c.sample)
                        .ok_or_else(|| bad("truncated or malformed label sample"))?,
                ),
                None => None,
            };
            units.push((body, scan));
        }
        if !r.at_end() {
            return Err(bad("trailing bytes after the last unit"));
        }
        Ok(Self { header, units })
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(e.to_string()))
}

fn write_sample(out: &mut Vec<u8>, sample: &[LrRow]) {
    for r in sample {
        out.extend_from_slice(&r.key.to_le_bytes());
        out.extend_from_slice(&r.label.to_le_bytes());
        out.extend(r.probs.iter().flat_map(|v| v.to_le_bytes()));
    }
}

/// Bytes of one row of the label test's sample: key, label, probabilities.
const SAMPLE_ROW: usize = 8 + 2 + 4 * crate::poison::inconsistency::MAX_LR_CLASSES;

fn read_sample(r: &mut Reader<'_>, sample: usize) -> Option<Vec<LrRow>> {
    if sample > 2 * crate::poison::LR_ROWS {
        return None;
    }
    let lr_sample = r
        .array(sample, SAMPLE_ROW)?
        .chunks_exact(SAMPLE_ROW)
        .map(|b| {
            let mut probs = [0f32; crate::poison::inconsistency::MAX_LR_CLASSES];
            for (p, c) in probs.iter_mut().zip(b[10..].chunks_exact(4)) {
                *p = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            LrRow {
                key: u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])),
                label: u16::from_le_bytes([b[8], b[9]]),
                probs,
            }
        })
        .collect();
    Some(lr_sample)
}
