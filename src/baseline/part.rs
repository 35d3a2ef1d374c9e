//! A shard's profile state as a file (`poisongate.profile-part/1`), so that `profile` runs
//! like a sharded `check`: `plan` cuts the trusted files into units, each shard folds its units
//! (`profile --manifest M --shard I/N -o PART`), and `profile --summaries PART...` merges the
//! parts in unit order and writes the baseline one process would have written, byte for byte.
//!
//! Layout: a magic line; the header and the state's small parts as length-prefixed JSON; then,
//! little-endian, the exact values (and their label ids) of every column still profiled
//! exactly and the hash of every sampled row; last, the sampled rows as one Arrow IPC file.
//! Every size comes from the JSON and is checked against the bytes before anything is read.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use polars::prelude::{DataFrame, IpcReader, IpcWriter, SerReader, SerWriter};
use serde::{Deserialize, Serialize};

use super::Baseline;
use super::accumulate::{ColumnState, LabelState, Limits, ProfileState, Sample, Values};
use super::build::{ProfileOptions, finish};
use super::sketch::{Sketch, SketchWire};
use crate::error::{Error, Result};
use crate::sections::{Reader, put_section};
use crate::source::InputMeta;
use crate::summary::{CategoricalSummary, Kind};

/// Format tag of a profile part.
pub const PROFILE_PART_FORMAT: &str = "poisongate.profile-part/1";
/// First bytes of a profile part.
const MAGIC: &[u8] = b"poisongate.profile-part/1\n";
/// Largest JSON section a part may hold.
const MAX_JSON: u64 = 1 << 31;

/// What a profile part was computed with and what it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePartHeader {
    /// Always [`PROFILE_PART_FORMAT`].
    pub format: String,
    /// The build that wrote it: parts of different builds never merge.
    pub tool: String,
    /// SHA-256 of the manifest's units.
    pub manifest_sha256: String,
    /// Units in the manifest.
    pub units_total: usize,
    /// Units covered, ascending.
    pub units: Vec<usize>,
    /// The options every shard and the final step must share.
    pub options: ProfileOptions,
    /// Per unit covered: what was read (rows of the range, for a range unit).
    pub inputs: Vec<(usize, InputMeta, Option<[u64; 2]>)>,
}

/// A profile part: its header and the folded state of its units (none for a shard with no
/// units, when there are more shards than units).
#[derive(Debug)]
pub struct ProfilePart {
    /// What it covers.
    pub header: ProfilePartHeader,
    /// The state.
    pub state: Option<ProfileState>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
enum StateWire {
    Exact { values: usize, labelled: bool },
    Sketched(SketchWire),
    Categorical(CategoricalSummary),
    Unsupported { nulls: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    columns: Vec<(String, Kind)>,
    states: Vec<StateWire>,
    /// (index of the label among the columns, class names by id, null labels).
    label: Option<(usize, Vec<String>, u64)>,
    rows: u64,
    seed: u64,
    limits: [usize; 3],
    sample_level: u32,
    sample_rows: usize,
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

impl ProfilePart {
    /// The part's bytes.
    ///
    /// # Errors
    /// A serialisation failure (a bug).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = MAGIC.to_vec();
        put_section(
            &mut out,
            &serde_json::to_vec(&self.header).map_err(internal)?,
        );
        let Some(st) = &self.state else {
            put_section(&mut out, b"null");
            return Ok(out);
        };
        let mut tail = Vec::new();
        let states = st
            .states
            .iter()
            .map(|s| match s {
                ColumnState::Numeric(Values::Exact { values, labels }) => {
                    tail.extend(values.iter().flat_map(|v| v.to_le_bytes()));
                    tail.extend(labels.iter().flat_map(|v| v.to_le_bytes()));
                    StateWire::Exact {
                        values: values.len(),
                        labelled: !labels.is_empty(),
                    }
                }
                ColumnState::Numeric(Values::Sketched(s)) => StateWire::Sketched(s.to_wire()),
                ColumnState::Categorical(c) => StateWire::Categorical(c.clone()),
                ColumnState::Unsupported { nulls } => StateWire::Unsupported { nulls: *nulls },
            })
            .collect();
        for hashes in &st.sample.rows {
            tail.extend(hashes.iter().flat_map(|h| h.to_le_bytes()));
        }
        let body = Body {
            columns: st.columns.iter().map(|(n, _, k)| (n.clone(), *k)).collect(),
            states,
            label: st
                .label
                .as_ref()
                .map(|(i, l)| (*i, l.names.clone(), l.nulls)),
            rows: st.rows,
            seed: st.seed,
            limits: [
                st.limits.exact_values,
                st.limits.sample_rows,
                st.limits.distinct_values,
            ],
            sample_level: st.sample.level,
            sample_rows: st.sample.kept(),
        };
        let mut sample = match &st.sample.empty {
            Some(e) => e.clone(),
            None => DataFrame::empty(),
        };
        for f in &st.sample.frames {
            sample.vstack_mut(f).map_err(internal)?;
        }
        let mut ipc = Vec::new();
        IpcWriter::new(&mut ipc)
            .finish(&mut sample)
            .map_err(internal)?;
        let mut out = MAGIC.to_vec();
        put_section(
            &mut out,
            &serde_json::to_vec(&self.header).map_err(internal)?,
        );
        put_section(&mut out, &serde_json::to_vec(&body).map_err(internal)?);
        out.extend_from_slice(&tail);
        put_section(&mut out, &ipc);
        Ok(out)
    }

    /// Reads a part written by [`Self::to_bytes`].
    ///
    /// # Errors
    /// Anything malformed or truncated, named by `path`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |cause: String| Error::summary(path, cause);
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad(format!("not a {PROFILE_PART_FORMAT} part (bad magic)")))?;
        let mut r = Reader::new(rest, MAX_JSON);
        let header: ProfilePartHeader =
            serde_json::from_slice(r.section().ok_or_else(|| bad("truncated header".into()))?)
                .map_err(|e| bad(format!("bad header: {e}")))?;
        if header.format != PROFILE_PART_FORMAT {
            return Err(bad("unknown part format".into()));
        }
        let body: Option<Body> =
            serde_json::from_slice(r.section().ok_or_else(|| bad("truncated state".into()))?)
                .map_err(|e| bad(format!("bad state: {e}")))?;
        let Some(body) = body else {
            if !r.at_end() || !header.units.is_empty() {
                return Err(bad("a part with units but no state".into()));
            }
            return Ok(Self {
                header,
                state: None,
            });
        };
        if header.units.is_empty() {
            return Err(bad("a part with a state but no units".into()));
        }
        if body.states.len() != body.columns.len()
            || body
                .label
                .as_ref()
                .is_some_and(|(i, _, _)| *i >= body.columns.len())
        {
            return Err(bad("its state does not fit its columns".into()));
        }
        let truncated = || bad("truncated values".into());
        let mut states = Vec::with_capacity(body.states.len());
        for w in body.states {
            states.push(match w {
                StateWire::Exact { values, labelled } => {
                    let v = r.array(values, 8).ok_or_else(truncated)?;
                    let values: Vec<f64> = v
                        .chunks_exact(8)
                        .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                        .collect();
                    let labels: Vec<u32> = if labelled {
                        r.array(values.len(), 4)
                            .ok_or_else(truncated)?
                            .chunks_exact(4)
                            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    if values.iter().any(|x| x.is_nan()) {
                        return Err(bad("a NaN among the exact values".into()));
                    }
                    ColumnState::Numeric(Values::Exact { values, labels })
                }
                StateWire::Sketched(s) => ColumnState::Numeric(Values::Sketched(Box::new(
                    Sketch::from_wire(s).map_err(bad)?,
                ))),
                StateWire::Categorical(c) => ColumnState::Categorical(c),
                StateWire::Unsupported { nulls } => ColumnState::Unsupported { nulls },
            });
        }
        let hashes: Vec<u64> = r
            .array(body.sample_rows, 8)
            .ok_or_else(truncated)?
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect();
        let ipc = r.section().ok_or_else(|| bad("truncated sample".into()))?;
        if !r.at_end() {
            return Err(bad("trailing bytes after the sample".into()));
        }
        let sample = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            IpcReader::new(Cursor::new(ipc)).finish()
        })) {
            Ok(Ok(df)) => df,
            Ok(Err(e)) => return Err(bad(format!("bad sample: {e}"))),
            Err(_) => return Err(bad("bad sample: decoder failed".into())),
        };
        if sample.height() != hashes.len() {
            return Err(bad("the sample's rows and hashes differ in number".into()));
        }
        let mut columns = Vec::with_capacity(body.columns.len());
        for (name, kind) in body.columns {
            let dtype = sample
                .column(&name)
                .map_err(|_| bad(format!("the sample lacks column `{name}`")))?
                .dtype()
                .clone();
            columns.push((name, dtype, kind));
        }
        let label = body.label.map(|(i, names, nulls)| {
            let ids = names
                .iter()
                .enumerate()
                .map(|(k, n)| (n.clone(), k as u32))
                .collect();
            (i, LabelState { ids, names, nulls })
        });
        let limits = Limits {
            exact_values: body.limits[0],
            sample_rows: body.limits[1],
            distinct_values: body.limits[2],
        };
        let empty = sample.clear();
        let sample = Sample {
            level: body.sample_level,
            frames: if hashes.is_empty() {
                Vec::new()
            } else {
                vec![sample]
            },
            rows: if hashes.is_empty() {
                Vec::new()
            } else {
                vec![hashes]
            },
            empty: Some(empty),
        };
        let state =
            ProfileState::restore(columns, states, label, body.rows, sample, body.seed, limits);
        Ok(Self {
            header,
            state: Some(state),
        })
    }
}

/// Writes the baseline from the parts of a sharded profile: the parts must come from one
/// manifest, one build and the same options (`opts`), and cover every unit once; they are
/// merged in unit order, so the baseline is the one a single process writes.
///
/// # Errors
/// Parts that do not fit together, named by `names`; as [`profile_files`] when finishing.
pub fn profile_parts(
    parts: Vec<ProfilePart>,
    names: &[String],
    opts: &ProfileOptions,
) -> Result<Baseline> {
    let named = |i: usize| PathBuf::from(names.get(i).map_or("part", String::as_str));
    let Some(lead) = parts.first().map(|p| p.header.clone()) else {
        return Err(Error::Usage("no profile parts given".into()));
    };
    let mut covered = vec![false; lead.units_total];
    for (i, p) in parts.iter().enumerate() {
        let h = &p.header;
        let refuse = |why: &str| Err(Error::summary(&named(i), why.to_owned()));
        if h.tool != lead.tool {
            return refuse("written by another build than the first part");
        }
        if h.manifest_sha256 != lead.manifest_sha256 || h.units_total != lead.units_total {
            return refuse("from another manifest than the first part");
        }
        if &h.options != opts {
            return refuse(&format!(
                "profiled with other options than given here (label {:?}, id {:?}, ignore {:?}, seed {}, prediction {:?}, score {:?}, model rows {:?})",
                h.options.label,
                h.options.id,
                h.options.ignore,
                h.options.seed,
                h.options.predictions,
                h.options.scores,
                h.options.model_rows
            ));
        }
        for &u in &h.units {
            match covered.get_mut(u) {
                Some(c) if !*c => *c = true,
                Some(_) => return refuse(&format!("unit {u} is in another part too")),
                None => return refuse(&format!("unit {u} is not in the manifest")),
            }
        }
    }
    if let Some(u) = covered.iter().position(|c| !c) {
        return Err(Error::Usage(format!(
            "no part covers unit {u} of {}: every shard's part is needed",
            lead.units_total
        )));
    }
    let mut parts = parts;
    parts.sort_by_key(|p| p.header.units.first().copied().unwrap_or(usize::MAX));
    let mut units: Vec<(usize, InputMeta, Option<[u64; 2]>)> = Vec::new();
    let mut state: Option<ProfileState> = None;
    for p in parts {
        units.extend(p.header.inputs);
        match (&mut state, p.state) {
            (Some(s), Some(o)) => s.merge(o)?,
            (None, o) => state = o,
            (Some(_), None) => {}
        }
    }
    units.sort_by_key(|u| u.0);
    // The units of one file (ranges) make one input, as a single read records it.
    let mut inputs: Vec<InputMeta> = Vec::new();
    let mut last_end: Option<u64> = None;
    for (_, meta, range) in units {
        match (inputs.last_mut(), range) {
            (Some(prev), Some([start, end]))
                if crate::source::continues_input(range)
                    && prev.path == meta.path
                    && last_end == Some(start) =>
            {
                prev.rows += meta.rows;
                last_end = Some(end);
            }
            _ => {
                last_end = range.map(|r| r[1]);
                inputs.push(meta);
            }
        }
    }
    let state = state.ok_or_else(|| Error::Internal("no profile state".into()))?;
    let first = inputs
        .first()
        .map(|m| PathBuf::from(&m.path))
        .unwrap_or_default();
    finish(state, opts, inputs, &first)
}
