//! Digests and signatures over bytes: the SHA-256 every input and artifact is recorded by, and
//! the detached ECDSA P-256 signature a baseline or a file may carry. The lowest layer: it
//! imports nothing of the gate but its errors.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, io_cause};

/// SHA-256 of `bytes`, lowercase hex.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 and size of the bytes `read` yields, 1 MiB at a time; `read` gets the buffer and
/// the offset reached so far. `path` names the file in errors.
fn sha256_chunks(
    path: &Path,
    mut read: impl FnMut(&mut [u8], u64) -> std::io::Result<usize>,
) -> Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = read(&mut buf, size).map_err(|e| Error::input(path, io_cause(&e)))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// SHA-256 of a file's bytes, read in 1 MiB blocks, with its size.
///
/// # Errors
/// An unreadable file.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::input(path, io_cause(&e)))?;
    sha256_chunks(path, |buf, _| f.read(buf))
}

/// SHA-256 of an open file's bytes with its size, read by position (`pread`), so that the
/// same open file can be decoded at the same time without sharing a file offset. `path`
/// names the file in errors.
///
/// # Errors
/// An unreadable file.
#[cfg(unix)]
pub fn sha256_open(file: &std::fs::File, path: &Path) -> Result<(String, u64)> {
    use std::os::unix::fs::FileExt;
    crate::fault::point("hash-thread");
    sha256_chunks(path, |buf, at| file.read_at(buf, at))
}

/// SHA-256 of an open file's bytes with its size (elsewhere than on Unix: the file is opened
/// again by `path`).
///
/// # Errors
/// An unreadable file.
#[cfg(not(unix))]
pub fn sha256_open(_: &std::fs::File, path: &Path) -> Result<(String, u64)> {
    sha256_file(path)
}

/// A public key and a detached signature read from files.
#[derive(Debug, Clone)]
pub struct SignatureCheck {
    /// The signature file (base64 of DER, or raw DER).
    pub signature: PathBuf,
    /// The PEM public key.
    pub public_key: PathBuf,
}

impl SignatureCheck {
    /// Verifies `bytes` (the content of `what`). `Ok(false)` is a signature that does not
    /// match; malformed keys and signatures are errors.
    ///
    /// # Errors
    /// Unreadable files, a key that is not a P-256 public key, a signature that is not DER.
    pub fn verify(&self, bytes: &[u8]) -> Result<bool> {
        let pem = std::fs::read_to_string(&self.public_key)
            .map_err(|e| Error::input(&self.public_key, io_cause(&e)))?;
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            Error::input(
                &self.public_key,
                format!("not a PEM P-256 (ECDSA) public key: {e}"),
            )
        })?;
        let raw = std::fs::read(&self.signature)
            .map_err(|e| Error::input(&self.signature, io_cause(&e)))?;
        let text: Vec<u8> = raw
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .unwrap_or(raw);
        let sig = Signature::from_der(&der).map_err(|_| {
            Error::input(
                &self.signature,
                "not an ECDSA signature (base64 of DER, as cosign sign-blob writes)",
            )
        })?;
        Ok(key.verify(bytes, &sig).is_ok())
    }
}
