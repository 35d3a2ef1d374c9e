//! Writing outputs atomically: a temporary file in the destination's directory, then a rename,
//! so that a failed run never leaves a partial report or baseline behind.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically.
///
/// # Errors
/// The directory is missing or not writable, or the rename fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".poisongate-")
        .tempfile_in(dir)
        .map_err(|e| Error::output(path, crate::source::io_cause(&e)))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::output(path, crate::source::io_cause(&e)))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::output(path, crate::source::io_cause(&e)))?;
    tmp.persist(path)
        .map_err(|e| Error::output(path, crate::source::io_cause(&e.error)))?;
    Ok(())
}
