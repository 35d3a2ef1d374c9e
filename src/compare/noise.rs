//! Pinned retraining noise (`poisongate.noise/1`): what a known-clean retrain moved.
//!
//! `compare --pin-noise F` records, for every statistic of every candidate finding, the value a
//! clean retrain produced. `compare --noise F` then gates a later retrain against it: a
//! statistic's warn and deny thresholds become `pinned + noise-scale x threshold`, so a noisy
//! task is judged against its own clean retrain rather than the defaults, and a quiet task gets
//! tighter thresholds than the defaults.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::baseline::Tool;
use crate::error::{Error, Result};
use crate::finding::Subject;
use crate::source::InputMeta;

/// Format tag of noise files.
pub const NOISE_FORMAT: &str = "poisongate.noise/1";

/// The statistics of a known-clean retrain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Noise {
    /// Always `poisongate.noise/1`.
    pub format: String,
    /// The tool that pinned it.
    pub tool: Tool,
    /// Rows compared when it was pinned.
    pub rows: u64,
    /// The classes, in order.
    pub classes: Vec<String>,
    /// The inputs compared, with digests.
    pub inputs: Vec<InputMeta>,
    /// `code|subject|statistic` to the value the clean retrain produced (never below 0).
    pub entries: BTreeMap<String, f64>,
}

/// The key of one statistic of one finding subject.
#[must_use]
pub fn key(code: &str, subject: &Subject, statistic: &str) -> String {
    format!("{code}|{}|{statistic}", subject.display())
}

impl Noise {
    /// An empty pin for these classes and inputs.
    #[must_use]
    pub fn new(rows: u64, classes: Vec<String>, inputs: Vec<InputMeta>) -> Self {
        Self {
            format: NOISE_FORMAT.to_owned(),
            tool: Tool::current(),
            rows,
            classes,
            inputs,
            entries: BTreeMap::new(),
        }
    }

    /// Reads and validates a noise file.
    ///
    /// # Errors
    /// Unreadable file, invalid JSON, unknown format, negative or non-finite values.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |cause: String| Error::input(path, format!("noise file: {cause}"));
        let bytes = std::fs::read(path).map_err(|e| bad(crate::source::io_cause(&e)))?;
        let noise: Self = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if noise.format != NOISE_FORMAT {
            return Err(bad(format!(
                "format `{}` is not {NOISE_FORMAT}",
                noise.format
            )));
        }
        if let Some((k, v)) = noise
            .entries
            .iter()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(bad(format!(
                "entry `{k}` holds {v}, not a non-negative number"
            )));
        }
        Ok(noise)
    }

    /// Serialises with a trailing newline.
    ///
    /// # Errors
    /// Serialisation failure (a bug).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut out =
            serde_json::to_vec_pretty(self).map_err(|e| Error::Internal(e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }
}
