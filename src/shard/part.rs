//! A part (`poisongate.summary/4`): its header, the per-unit bodies (provenance, schema,
//! column summaries and the row pass's state), their merge, and their bytes on disk.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::DataType;
use serde::{Deserialize, Serialize};

use super::PART_FORMAT;
use crate::check::UnitSummary;
use crate::error::{Error, Result};
use crate::poison::{LrRow, ScanState, States};
use crate::sections::{Reader, put_section};
use crate::source::InputMeta;
use crate::summary::BatchSummary;

/// First bytes of a part file.
const MAGIC: &[u8] = b"poisongate.summary/4\n";

/// Largest JSON section a part may hold (the column summaries of wide batches).
const MAX_JSON: u64 = 1 << 30;

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
