//! The pinned baseline: a versioned, hashed profile of trusted data (`poisongate.baseline/1`).
//!
//! Owns the artifact's types, its loading (format version, digest and invariants checked
//! before use) and its writing. Building one from data lives in [`build`].

pub mod accumulate;
mod build;
pub mod part;
mod sketch;
#[cfg(test)]
mod tests;
mod types;

pub use crate::pinned::tolerance;
pub use build::{ProfileOptions, fold_files, profile, profile_files};
pub use part::{ProfilePart, profile_parts};
pub use types::*;

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::limits::MAX_BASELINE_BYTES;

/// Format tag of the baseline this build reads and writes.
pub const BASELINE_FORMAT: &str = "poisongate.baseline/1";

/// A baseline loaded from disk with its digest.
#[derive(Debug, Clone)]
pub struct LoadedBaseline {
    /// The parsed, validated baseline.
    pub baseline: Baseline,
    /// Where it came from.
    pub path: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// ETag, version and encryption, when it was read from S3.
    pub object: Option<crate::source::ObjectRef>,
}

/// Reads, verifies and validates a baseline file.
///
/// The digest is checked on the raw bytes before parsing, so a tampered file is rejected
/// without being interpreted.
///
/// # Errors
/// Unreadable file, digest mismatch, invalid JSON, unknown format version, broken invariants.
pub fn load(path: &Path, expect_sha256: Option<&str>) -> Result<LoadedBaseline> {
    load_verified(path, expect_sha256, None)
}

/// [`load`], verifying a detached signature over the raw bytes first.
///
/// # Errors
/// As [`load`], and a signature that does not verify.
pub fn load_verified(
    path: &Path,
    expect_sha256: Option<&str>,
    signature: Option<&crate::digest::SignatureCheck>,
) -> Result<LoadedBaseline> {
    let size = std::fs::metadata(path)
        .map_err(|e| Error::baseline(path, crate::source::io_cause(&e)))?
        .len();
    if size > MAX_BASELINE_BYTES {
        return Err(too_big(path, size));
    }
    let bytes =
        std::fs::read(path).map_err(|e| Error::baseline(path, crate::source::io_cause(&e)))?;
    from_bytes(
        &path.display().to_string(),
        &bytes,
        expect_sha256,
        signature,
    )
}

/// [`load_verified`] on bytes already read (from S3, say); `name` is what errors and reports
/// call the baseline.
///
/// # Errors
/// As [`load_verified`].
pub fn from_bytes(
    name: &str,
    bytes: &[u8],
    expect_sha256: Option<&str>,
    signature: Option<&crate::digest::SignatureCheck>,
) -> Result<LoadedBaseline> {
    let path = Path::new(name);
    if bytes.len() as u64 > MAX_BASELINE_BYTES {
        return Err(too_big(path, bytes.len() as u64));
    }
    if let Some(sig) = signature
        && !sig.verify(bytes)?
    {
        return Err(Error::baseline(
            path,
            format!(
                "signature {} does not verify with public key {}",
                sig.signature.display(),
                sig.public_key.display()
            ),
        ));
    }
    let sha256 = hex::encode(Sha256::digest(bytes));
    if let Some(expected) = expect_sha256 {
        let expected = expected.trim().to_ascii_lowercase();
        if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Usage(format!(
                "--expect-baseline-sha256 must be 64 hex digits, got `{expected}`"
            )));
        }
        if expected != sha256 {
            return Err(Error::baseline(
                path,
                format!("SHA-256 mismatch: expected {expected}, file has {sha256}"),
            ));
        }
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::baseline(path, format!("not valid JSON: {e}")))?;
    match value.get("format").and_then(serde_json::Value::as_str) {
        Some(BASELINE_FORMAT) => {}
        Some(other) => {
            return Err(Error::baseline(
                path,
                format!("unknown format version `{other}` (this build reads {BASELINE_FORMAT})"),
            ));
        }
        None => {
            return Err(Error::baseline(
                path,
                "not a poisongate baseline (no `format` field)",
            ));
        }
    }
    let baseline: Baseline = serde_json::from_value(value)
        .map_err(|e| Error::baseline(path, format!("corrupt baseline: {e}")))?;
    baseline
        .validate()
        .map_err(|cause| Error::baseline(path, format!("corrupt baseline: {cause}")))?;
    Ok(LoadedBaseline {
        baseline,
        path: name.to_owned(),
        sha256,
        object: None,
    })
}

/// The error for a baseline past [`MAX_BASELINE_BYTES`] (see [`crate::limits`]).
fn too_big(path: &Path, size: u64) -> Error {
    Error::baseline(
        path,
        format!(
            "{size} bytes, more than the cap of {} MiB on a baseline",
            MAX_BASELINE_BYTES >> 20
        ),
    )
}

/// Serialises a baseline deterministically (sorted maps, fixed field order, trailing newline).
///
/// # Errors
/// Serialisation failure (a bug).
pub fn to_json(baseline: &Baseline) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(baseline)
        .map_err(|e| Error::Internal(format!("serialising baseline: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}
