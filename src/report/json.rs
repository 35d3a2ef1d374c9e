//! JSON rendering: pretty, stable field order, trailing newline.

use super::Report;
use crate::error::{Error, Result};

/// Serialises a report.
///
/// # Errors
/// Serialisation failure (a bug).
pub fn render(report: &Report) -> Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(report)
        .map_err(|e| Error::Internal(format!("serialising report: {e}")))?;
    out.push(b'\n');
    Ok(out)
}
