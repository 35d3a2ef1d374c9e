//! Artifact integrity: `sha256sum` files and cosign-compatible blob signatures.
//!
//! An attacker who can write to the bucket can swap a batch, a baseline or a model file, and
//! nothing errors. Two checks close that gap:
//!
//! - digests pinned in `sha256sum` format (GNU coreutils: `HEX  NAME` in text mode, `HEX *NAME`
//!   in binary mode, and a leading `\` when the name holds a backslash or newline, which are
//!   then escaped as `\\` and `\n`);
//! - ECDSA P-256 signatures over SHA-256 of the file's bytes (FIPS 186-4), as `cosign
//!   sign-blob` writes them: the base64 of the DER-encoded signature, verified against a
//!   PEM `PUBLIC KEY` (SubjectPublicKeyInfo). `openssl dgst -sha256 -sign key.pem FILE | base64`
//!   makes the same kind of signature.

use std::path::{Path, PathBuf};

pub use crate::digest::{SignatureCheck, sha256_file, sha256_hex};
use crate::error::{Error, Result};

/// One line of a `sha256sum` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Lowercase hex digest.
    pub sha256: String,
    /// The file name as written (unescaped).
    pub name: String,
    /// Whether the binary marker (`*`) was used.
    pub binary: bool,
}

/// Parses a `sha256sum` file. Empty lines are skipped; any other line that is not an entry is
/// an error naming its line number.
///
/// # Errors
/// A malformed line.
pub fn parse_sha256sum(text: &str) -> std::result::Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let bad = || {
            format!(
                "line {}: not a sha256sum entry (`HEX  NAME` or `HEX *NAME`)",
                i + 1
            )
        };
        let (hex, rest) = line.split_at_checked(64).ok_or_else(bad)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let (binary, name) = match rest.as_bytes() {
            [b' ', b'*', ..] => (true, &rest[2..]),
            [b' ', b' ', ..] => (false, &rest[2..]),
            _ => return Err(bad()),
        };
        if name.is_empty() {
            return Err(bad());
        }
        let name = if escaped {
            unescape(name).ok_or_else(bad)?
        } else {
            name.to_owned()
        };
        out.push(Entry {
            sha256: hex.to_ascii_lowercase(),
            name,
            binary,
        });
    }
    Ok(out)
}

/// Undoes coreutils' name escaping (`\\` and `\n`).
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// A file's bytes; an unreadable file is an input error naming it.
///
/// # Errors
/// An unreadable file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::input(path, crate::source::io_cause(&e)))
}

/// The outcome of checking one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The file or `s3://` object, as named.
    pub path: String,
    /// Its SHA-256.
    pub sha256: String,
    /// The digest it was checked against (sha256sum mode).
    pub expected: Option<String>,
    /// Whether it matched (digest or signature).
    pub ok: bool,
}

/// Checks files against a `sha256sum` file. With no files, every entry is checked, its name
/// taken relative to the checksum file's directory (or `s3://` prefix); with files, each must
/// be listed (by the name as given or by its file name). `open` gives a local path for a name
/// (downloading an S3 object first).
///
/// # Errors
/// A malformed or empty checksum file, a file that is not listed, or one that cannot be read.
pub fn check_sha256sum(
    sums: &str,
    text: &str,
    files: &[String],
    mut open: impl FnMut(&str) -> Result<PathBuf>,
) -> Result<Vec<Checked>> {
    let sums_path = Path::new(sums);
    let entries = parse_sha256sum(text).map_err(|cause| Error::input(sums_path, cause))?;
    if entries.is_empty() {
        return Err(Error::input(sums_path, "no sha256sum entries"));
    }
    let basename = |name: &str| name.rsplit('/').next().unwrap_or(name).to_owned();
    let targets: Vec<(String, &Entry)> = if files.is_empty() {
        let dir = sums.rfind('/').map_or("", |i| &sums[..=i]);
        entries
            .iter()
            .map(|e| {
                let name = if e.name.starts_with('/') {
                    e.name.clone()
                } else {
                    format!("{dir}{}", e.name)
                };
                (name, e)
            })
            .collect()
    } else {
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            let base = basename(f);
            let entry = entries
                .iter()
                .find(|e| e.name == *f)
                .or_else(|| entries.iter().find(|e| basename(&e.name) == base))
                .ok_or_else(|| Error::input(Path::new(f), format!("not listed in {sums}")))?;
            out.push((f.clone(), entry));
        }
        out
    };
    let mut out = Vec::with_capacity(targets.len());
    for (name, entry) in targets {
        let local = open(&name)?;
        let (sha256, _) = sha256_file(&local).map_err(|e| match e {
            Error::Input { cause, .. } => Error::input(Path::new(&name), cause),
            other => other,
        })?;
        out.push(Checked {
            ok: sha256 == entry.sha256,
            expected: Some(entry.sha256.clone()),
            sha256,
            path: name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256sum_lines_in_text_binary_and_escaped_form() {
        let h = "a".repeat(64);
        let text = format!("{h}  plain.csv\n{h} *bin.parquet\n\\{h}  back\\\\slash\\nnl\n\n");
        let e = parse_sha256sum(&text).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].name.as_str(), e[0].binary), ("plain.csv", false));
        assert_eq!((e[1].name.as_str(), e[1].binary), ("bin.parquet", true));
        assert_eq!(e[2].name, "back\\slash\nnl");
        assert!(parse_sha256sum(&format!("{h} one-space")).is_err());
        assert!(parse_sha256sum("abc  short").is_err());
        assert!(
            parse_sha256sum(&format!("{}  x", "g".repeat(64)))
                .unwrap_err()
                .contains("line 1")
        );
    }
}

/// The code of an input that is not SSE-KMS encrypted when `--require-sse-kms` asks for it.
pub const SSE_KMS_MISSING: &str = "integrity-sse-kms-missing";

/// Code of a baseline pinned by neither digest nor signature.
pub const BASELINE_UNPINNED: &str = "integrity-baseline-unpinned";
/// Code of a policy not pinned by `--expect-policy-sha256` under the strict profile.
pub const POLICY_UNPINNED: &str = "integrity-policy-unpinned";

/// A finding about one trusted file or object: nothing is measured (value 0 of 1).
fn trust_finding(
    code: &str,
    severity: crate::finding::Severity,
    value: &str,
    statistic: &str,
    message: String,
) -> crate::finding::Finding {
    crate::finding::Finding {
        code: code.to_owned(),
        severity,
        subject: crate::finding::Subject {
            column: None,
            value: Some(value.to_owned()),
            label: None,
        },
        statistic: statistic.to_owned(),
        value: 0.0,
        threshold: 1.0,
        p_value: None,
        n: 1,
        n_baseline: 0,
        message,
        evidence: std::collections::BTreeMap::new(),
        rows: Vec::new(),
        tag: None,
    }
}

/// Findings about what the run trusts without proof: a baseline pinned by neither
/// `--expect-baseline-sha256` nor a signature (warn; deny under the strict profile), and under
/// the strict profile a policy not pinned by `--expect-policy-sha256` (deny).
#[must_use]
pub fn trust_findings(
    baseline: &str,
    baseline_pinned: bool,
    policy: &str,
    policy_pinned: bool,
    strict: bool,
) -> Vec<crate::finding::Finding> {
    use crate::finding::Severity;
    let mut out = Vec::new();
    if !baseline_pinned {
        let (severity, tail) = if strict {
            (Severity::Deny, " The strict profile requires the pin.")
        } else {
            (Severity::Warn, "")
        };
        out.push(trust_finding(
            BASELINE_UNPINNED,
            severity,
            baseline,
            "pinned",
            format!(
                "the baseline {baseline} is pinned by neither --expect-baseline-sha256 nor --baseline-signature: the gate trusts whatever file is at that path, and whoever can replace it decides what counts as clean.{tail}"
            ),
        ));
    }
    if strict && !policy_pinned {
        out.push(trust_finding(
            POLICY_UNPINNED,
            Severity::Deny,
            policy,
            "pinned",
            format!(
                "the strict profile requires --expect-policy-sha256: the policy ({policy}) sets every level and threshold, and an edited one can turn any check off."
            ),
        ));
    }
    out
}

/// One input as `--require-sse-kms` sees it: its name and, for S3 objects, what S3 reported.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The `s3://` URI or local path.
    pub name: &'a str,
    /// What S3 reported; `None` for a local file.
    pub object: Option<&'a crate::source::ObjectRef>,
}

impl<'a> From<&'a crate::source::InputMeta> for Stored<'a> {
    fn from(input: &'a crate::source::InputMeta) -> Self {
        Self {
            name: &input.path,
            object: input.object.as_ref(),
        }
    }
}

/// Findings for every input that `--require-sse-kms [KEY]` rejects: an S3 object without
/// SSE-KMS, one encrypted under another key, and a local file (whose encryption at rest
/// cannot be verified: the requirement fails closed).
#[must_use]
pub fn sse_kms_findings(
    required_key: Option<&str>,
    inputs: &[Stored<'_>],
) -> Vec<crate::finding::Finding> {
    let mut out = Vec::new();
    for input in inputs {
        let message = match input.object {
            None => format!(
                "{} is a local file, not an S3 object, so SSE-KMS encryption cannot be verified.",
                input.name
            ),
            Some(o) if o.sse_kms_matches(required_key) => continue,
            Some(o) => match (o.sse.as_deref(), required_key) {
                (Some("aws:kms" | "aws:kms:dsse"), Some(want)) => format!(
                    "{} is encrypted with KMS key {}, not the required {want}.",
                    input.name,
                    o.sse_kms_key_id.as_deref().unwrap_or("(not reported)")
                ),
                (Some(other), _) => {
                    format!("{} is encrypted with {other}, not SSE-KMS.", input.name)
                }
                (None, _) => format!(
                    "{} reports no server-side encryption; SSE-KMS is required.",
                    input.name
                ),
            },
        };
        out.push(trust_finding(
            SSE_KMS_MISSING,
            crate::finding::Severity::Deny,
            input.name,
            "sse-kms",
            message,
        ));
    }
    out
}
