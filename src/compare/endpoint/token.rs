//! The bearer token: read from a file (re-read when the file changes, as projected
//! service-account tokens rotate) or from an environment variable, never printed.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::error::{Error, Result};

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A file, re-read whenever its modification time or size changes.
    File(PathBuf),
    /// An environment variable, read once.
    Env(String),
}

/// The token with the file state it was read at.
#[derive(Debug)]
pub(super) struct Token {
    source: TokenSource,
    cached: Mutex<Option<(Option<SystemTime>, u64, String)>>,
}

impl Token {
    /// A token not yet read.
    pub(super) fn new(source: TokenSource) -> Self {
        Self {
            source,
            cached: Mutex::new(None),
        }
    }

    pub(super) fn get(&self) -> Result<String> {
        match &self.source {
            TokenSource::Env(var) => {
                let t = std::env::var(var).map_err(|_| {
                    Error::Usage(format!("--token-env {var}: the variable is not set"))
                })?;
                let t = t.trim().to_owned();
                if t.is_empty() {
                    return Err(Error::Usage(format!(
                        "--token-env {var}: the variable is empty"
                    )));
                }
                Ok(t)
            }
            TokenSource::File(path) => {
                let bad = |cause: String| {
                    Error::Usage(format!("--token-file {}: {cause}", path.display()))
                };
                let meta = std::fs::metadata(path).map_err(|e| bad(crate::error::io_cause(&e)))?;
                let stamp = (meta.modified().ok(), meta.len());
                let mut cached = self
                    .cached
                    .lock()
                    .map_err(|_| Error::Internal("token cache poisoned".into()))?;
                if let Some((m, l, t)) = cached.as_ref()
                    && (*m, *l) == stamp
                    && stamp.0.is_some()
                {
                    return Ok(t.clone());
                }
                let text =
                    std::fs::read_to_string(path).map_err(|e| bad(crate::error::io_cause(&e)))?;
                let t = text.trim().to_owned();
                if t.is_empty() {
                    return Err(bad("the file is empty".into()));
                }
                *cached = Some((stamp.0, stamp.1, t.clone()));
                Ok(t)
            }
        }
    }

    /// The token as last read, for scrubbing messages.
    pub(super) fn last(&self) -> Option<String> {
        match &self.source {
            TokenSource::Env(var) => std::env::var(var).ok().map(|t| t.trim().to_owned()),
            TokenSource::File(_) => self
                .cached
                .lock()
                .ok()
                .and_then(|c| c.as_ref().map(|(_, _, t)| t.clone())),
        }
    }
}
