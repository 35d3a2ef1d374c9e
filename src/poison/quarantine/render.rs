//! The quarantine and the row scores as Parquet or CSV bytes.

use std::collections::BTreeMap;

use super::QuarantineRow;
use crate::error::Result;

/// File format of the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineFormat {
    /// Apache Parquet.
    Parquet,
    /// CSV with a header.
    Csv,
}

impl QuarantineFormat {
    /// The format named by a path's extension.
    ///
    /// # Errors
    /// An extension other than `.parquet` or `.csv`.
    pub fn from_path(flag: &str, path: &std::path::Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("parquet") => Ok(Self::Parquet),
            Some(e) if e.eq_ignore_ascii_case("csv") => Ok(Self::Csv),
            _ => Err(crate::Error::Usage(format!(
                "{flag} {} must end in .parquet or .csv",
                path.display()
            ))),
        }
    }
}

/// The quarantine as file bytes: columns `row` (u64), `id` (text, null without an id column),
/// `codes` (`;`-separated) and `score`.
///
/// # Errors
/// A failure of the writer (a bug).
pub fn render_quarantine(rows: &[QuarantineRow], format: QuarantineFormat) -> Result<Vec<u8>> {
    use polars::prelude::Column;
    frame_bytes(
        rows.len(),
        vec![
            Column::new(
                "row".into(),
                rows.iter().map(|r| r.row).collect::<Vec<u64>>(),
            ),
            Column::new(
                "id".into(),
                rows.iter()
                    .map(|r| r.id.clone())
                    .collect::<Vec<Option<String>>>(),
            ),
            Column::new(
                "codes".into(),
                rows.iter()
                    .map(|r| r.codes.join(";"))
                    .collect::<Vec<String>>(),
            ),
            Column::new(
                "score".into(),
                rows.iter().map(|r| r.score).collect::<Vec<f64>>(),
            ),
        ],
        format,
    )
}

/// Writes columns as Parquet or CSV (with a header) into memory.
fn frame_bytes(
    height: usize,
    columns: Vec<polars::prelude::Column>,
    format: QuarantineFormat,
) -> Result<Vec<u8>> {
    use polars::prelude::*;
    let internal = |e: PolarsError| crate::Error::Internal(format!("writing rows: {e}"));
    let mut df = DataFrame::new(height, columns).map_err(internal)?;
    let mut buf = Vec::new();
    match format {
        QuarantineFormat::Parquet => {
            ParquetWriter::new(&mut buf)
                .finish(&mut df)
                .map_err(internal)?;
        }
        QuarantineFormat::Csv => {
            CsvWriter::new(&mut buf)
                .include_header(true)
                .finish(&mut df)
                .map_err(internal)?;
        }
    }
    Ok(buf)
}

/// Every row's score as file bytes: columns `row`, `id` and `score`.
///
/// # Errors
/// A failure of the writer (a bug).
pub fn render_scores(
    scores: &[f64],
    ids: Option<&BTreeMap<u64, String>>,
    format: QuarantineFormat,
) -> Result<Vec<u8>> {
    use polars::prelude::Column;
    let n = scores.len();
    frame_bytes(
        n,
        vec![
            Column::new("row".into(), (0..n as u64).collect::<Vec<u64>>()),
            Column::new(
                "id".into(),
                (0..n as u64)
                    .map(|i| ids.and_then(|m| m.get(&i).cloned()))
                    .collect::<Vec<Option<String>>>(),
            ),
            Column::new("score".into(), scores.to_vec()),
        ],
        format,
    )
}
