//! Input formats and how they are told apart.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A columnar or row format poisongate reads.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values with a header row.
    Csv,
    /// Arrow IPC file format (Feather v2).
    Ipc,
    /// Newline-delimited JSON, one object per row.
    Ndjson,
}

impl Format {
    /// The format implied by a file's extension, if any.
    #[must_use]
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "arrow" | "ipc" | "feather" => Some(Self::Ipc),
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            _ => None,
        }
    }

    /// Lowercase name, as in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Csv => "csv",
            Self::Ipc => "ipc",
            Self::Ndjson => "ndjson",
        }
    }
}
