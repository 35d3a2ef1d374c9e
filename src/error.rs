//! Errors: every way poisongate can fail to evaluate a batch.
//!
//! An error is a failure to evaluate, never a verdict on the data: every variant maps to exit
//! code 2. Poisoned or drifted data is `Ok(findings)`. Messages follow the contract
//! `<what> (<file>): <cause>` so that the binary prints them as one line.

use std::path::{Path, PathBuf};

/// Convenience alias used across the library.
pub type Result<T> = std::result::Result<T, Error>;

/// Why poisongate could not evaluate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A data input could not be found, read or decoded, or holds no rows.
    #[error("cannot read input ({path}): {cause}")]
    Input {
        /// The offending file.
        path: PathBuf,
        /// What went wrong.
        cause: String,
    },
    /// An input was read but cannot be used as asked (a repeated CSV header, a label column
    /// that is not a classification label); the hint says what to do instead.
    #[error("cannot use input ({path}): {cause}")]
    Unusable {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        cause: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// Several inputs of one batch disagree on their schema.
    #[error("inputs disagree on schema ({first} vs {second}): {cause}")]
    SchemaMismatch {
        /// The first file, whose schema the batch takes.
        first: PathBuf,
        /// The file that disagrees.
        second: PathBuf,
        /// The difference.
        cause: String,
    },
    /// An S3 location could not be listed or read.
    #[error("cannot read S3 object ({uri}): {cause}")]
    S3 {
        /// `s3://bucket/key`.
        uri: String,
        /// What went wrong, without request or credential details.
        cause: String,
    },
    /// A model endpoint (Open Inference Protocol) refused, failed or answered in a way that
    /// cannot be used. The URL never carries the token.
    #[error("cannot query model endpoint ({url}): {cause}")]
    Endpoint {
        /// The model's URL as given, without credentials.
        url: String,
        /// What went wrong (the status and the server's own message).
        cause: String,
    },
    /// The baseline is missing, corrupt, of an unknown format version or fails its digest.
    #[error("cannot use baseline ({path}): {cause}")]
    Baseline {
        /// The baseline file.
        path: PathBuf,
        /// What went wrong.
        cause: String,
    },
    /// The policy file is unreadable or invalid.
    #[error("invalid policy ({path}): {cause}")]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// What went wrong.
        cause: String,
    },
    /// A sharded run's manifest or summary part is unreadable, inconsistent or incomplete.
    #[error("cannot use summary ({path}): {cause}")]
    Summary {
        /// The manifest or part.
        path: PathBuf,
        /// What went wrong.
        cause: String,
    },
    /// A model artifact that `verify --scan` cannot judge: unreadable, malformed, of an
    /// unknown format, or past a limit of the scan.
    #[error("cannot scan model ({path}): {cause}")]
    Model {
        /// The artifact.
        path: PathBuf,
        /// What went wrong (the archive member and the offset, where there is one).
        cause: String,
    },
    /// A signature bundle, key or attestation that cannot be used: unreadable, malformed, of a
    /// mode this verifier refuses (keyless Sigstore), or a hash it does not implement. A
    /// signature that does not verify is not this error: it is a blocked verdict.
    #[error("cannot use signature material ({path}): {cause}")]
    Signing {
        /// The bundle, key or model directory.
        path: PathBuf,
        /// What is wrong with it.
        cause: String,
    },
    /// An argument is invalid in a way the argument parser cannot see.
    #[error("invalid arguments: {0}")]
    Usage(String),
    /// An output could not be written.
    #[error("cannot write output ({path}): {cause}")]
    Output {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        cause: String,
    },
    /// A bug: an invariant did not hold. Still exit 2, never 0.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An input error for `path`.
    pub fn input(path: &Path, cause: impl std::fmt::Display) -> Self {
        Self::Input {
            path: path.to_path_buf(),
            cause: one_line(cause),
        }
    }

    /// An input that was read but cannot be used as asked, with what to do about it.
    pub fn unusable(path: &Path, cause: impl std::fmt::Display, hint: &'static str) -> Self {
        Self::Unusable {
            path: path.to_path_buf(),
            cause: one_line(cause),
            hint,
        }
    }

    /// An S3 error for `uri`.
    pub fn s3(uri: impl std::fmt::Display, cause: impl std::fmt::Display) -> Self {
        Self::S3 {
            uri: uri.to_string(),
            cause: one_line(cause),
        }
    }

    /// An endpoint error for `url`.
    pub fn endpoint(url: impl std::fmt::Display, cause: impl std::fmt::Display) -> Self {
        Self::Endpoint {
            url: url.to_string(),
            cause: one_line(cause),
        }
    }

    /// A baseline error for `path`.
    pub fn baseline(path: &Path, cause: impl std::fmt::Display) -> Self {
        Self::Baseline {
            path: path.to_path_buf(),
            cause: one_line(cause),
        }
    }

    /// A summary (manifest or part) error for `path`.
    pub fn summary(path: &Path, cause: impl std::fmt::Display) -> Self {
        Self::Summary {
            path: path.to_path_buf(),
            cause: one_line(cause),
        }
    }

    /// A model artifact `path` that cannot be judged.
    pub fn model(path: &Path, cause: impl std::fmt::Display) -> Self {
        Self::Model {
            path: path.to_path_buf(),
            cause: one_line(cause),
        }
    }

    /// Signature material (`path`: a bundle, key or model directory) that cannot be used.
    pub fn signing(path: &Path, cause: impl std::fmt::Display) -> Self {
        Self::Signing {
            path: path.to_path_buf(),
            cause: one_line(cause),
        }
    }

    /// A policy error for `path`.
    pub fn policy(path: &Path, cause: impl std::fmt::Display) -> Self {
        Self::Policy {
            path: path.to_path_buf(),
            cause: one_line(cause),
        }
    }

    /// An output error for `path`.
    pub fn output(path: &Path, cause: impl std::fmt::Display) -> Self {
        Self::Output {
            path: path.to_path_buf(),
            cause: one_line(cause),
        }
    }

    /// An optional second line telling the user how to fix the problem.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Input { .. } => Some(
                "check the path and format; --format overrides the extension (parquet, csv, ipc, ndjson)",
            ),
            Self::Unusable { hint, .. } => Some(hint),
            Self::SchemaMismatch { .. } => {
                Some("all inputs of one batch must have the same columns and dtypes")
            }
            Self::Baseline { .. } => Some(
                "re-pin the baseline with `poisongate profile`, or check --expect-baseline-sha256",
            ),
            Self::Policy { .. } => Some("`poisongate policy --init` prints a valid template"),
            Self::Model { .. } => Some(
                "the scan judges pickle, joblib, PyTorch zip, NumPy .npy/.npz, safetensors and Keras .keras files; a file it cannot judge never passes",
            ),
            Self::Signing { .. } => Some(
                "keys are PEM EC keys on P-256, P-384 or P-521; bundles are Sigstore bundles (v0.3, DSSE) as `model_signing sign key` or `poisongate sign` write them",
            ),
            Self::Summary { .. } => Some(
                "plan once, summarize (or `profile --manifest`) every shard with the same build and the same baseline and policy (or profile flags), and use every part exactly once",
            ),
            Self::Endpoint { .. } => Some(
                "check the model URL ({base}/v2/models/{name}[/versions/{v}]), the token (--token-file, --token-env), and that the model is loaded and ready",
            ),
            Self::S3 { .. } => Some(
                "check the URI, the AWS credentials and region in the environment, and the endpoint (--s3-endpoint, AWS_ENDPOINT_URL)",
            ),
            _ => None,
        }
    }
}

/// Error causes from libraries can span lines; the contract is one line.
fn one_line(cause: impl std::fmt::Display) -> String {
    let text = cause.to_string();
    let mut out = String::with_capacity(text.len());
    for (i, line) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(line);
    }
    if out.is_empty() {
        "unknown cause".to_owned()
    } else {
        out
    }
}

/// A short, stable cause for an I/O error (no OS error numbers).
pub fn io_cause(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_causes_become_one_line() {
        let e = Error::input(Path::new("a.csv"), "first\n\n  second  \n");
        assert_eq!(e.to_string(), "cannot read input (a.csv): first; second");
    }
}
