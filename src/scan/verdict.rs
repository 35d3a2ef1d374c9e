//! The verdict of `verify --scan` over several files, as text and JSON.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use super::{Allowlist, ImportPin, Limits, PinnedSource, Scanned, Unsafe};

/// One file's scan and judgement.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct FileVerdict {
    /// As given on the command line.
    pub path: String,
    /// SHA-256 of the bytes scanned.
    pub sha256: String,
    /// The format recognised.
    pub format: String,
    /// Every callable a load would import, `module.name`, sorted.
    pub imports: BTreeSet<String>,
    /// What would be unsafe to load.
    pub findings: Vec<Unsafe>,
}

/// The scan of every file given.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ScanReport {
    /// Always `poisongate.model-scan/1`.
    pub format: &'static str,
    /// `pass` or `blocked`.
    pub verdict: &'static str,
    /// Entries of the built-in allowlist, and the `--allow` additions.
    pub allowlist: usize,
    /// `--allow` additions.
    pub allowed_extra: Vec<String>,
    /// The pin the imports were held to, if any.
    pub pinned: Option<usize>,
    /// Per file, in the order given.
    pub files: Vec<FileVerdict>,
    /// Other refusals of the same run (`integrity-sse-kms-missing: ...` under
    /// `--require-sse-kms`): each blocks like an unsafe file.
    pub refused: Vec<String>,
}

/// Scans `files` (`(as given, local path)`) and judges them.
pub fn scan_all(
    files: &[(String, std::path::PathBuf)],
    allow_extra: &[String],
    pin: Option<&ImportPin>,
    limits: &Limits,
) -> crate::Result<ScanReport> {
    let allow = Allowlist::built_in().with_extra(allow_extra.iter().cloned());
    let mut out = Vec::with_capacity(files.len());
    for (given, path) in files {
        let scanned: Scanned = super::scan_file(path, limits)?;
        let (sha256, _) = crate::digest::sha256_file(path)?;
        let findings = scanned.judge(&allow, pin.map(|p| &p.imports));
        out.push(FileVerdict {
            path: given.clone(),
            sha256,
            format: scanned.format.clone(),
            imports: scanned.imports(),
            findings,
        });
    }
    let blocked = out.iter().any(|f| !f.findings.is_empty());
    let mut extra = allow_extra.to_vec();
    extra.sort();
    extra.dedup();
    Ok(ScanReport {
        format: "poisongate.model-scan/1",
        verdict: if blocked { "blocked" } else { "pass" },
        allowlist: allow.len(),
        allowed_extra: extra,
        pinned: pin.map(|p| p.imports.len()),
        files: out,
        refused: Vec::new(),
    })
}

impl ScanReport {
    /// Whether every file is safe to load and nothing else was refused.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.verdict == "pass"
    }

    /// Adds refusals of the run besides the scan (`code: message`); any blocks it.
    pub fn refuse(&mut self, lines: impl IntoIterator<Item = String>) {
        self.refused.extend(lines);
        if !self.refused.is_empty() {
            self.verdict = "blocked";
        }
    }

    /// The pin of these files' imports (only of a report that passed).
    #[must_use]
    pub fn pin(&self) -> ImportPin {
        ImportPin {
            format: ImportPin::FORMAT.to_owned(),
            sources: self
                .files
                .iter()
                .map(|f| PinnedSource {
                    path: f.path.clone(),
                    sha256: f.sha256.clone(),
                })
                .collect(),
            imports: self
                .files
                .iter()
                .flat_map(|f| f.imports.iter().cloned())
                .collect(),
        }
    }

    /// One line per file (and per finding), then the verdict.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            if f.findings.is_empty() {
                let _ = writeln!(
                    out,
                    "{}: OK: {}, {} global(s) imported, all allowed{}",
                    f.path,
                    f.format,
                    f.imports.len(),
                    if self.pinned.is_some() {
                        " and pinned"
                    } else {
                        ""
                    }
                );
                continue;
            }
            let _ = writeln!(
                out,
                "{}: UNSAFE: {} ({} finding(s))",
                f.path,
                f.format,
                f.findings.len()
            );
            for u in &f.findings {
                let member = if u.member.is_empty() {
                    String::new()
                } else {
                    format!("member {}, ", u.member)
                };
                let place = if u.opcode == super::formats::KERAS_OBJECT {
                    format!("object #{} of the config", u.offset + 1)
                } else {
                    format!("{} at offset {}", u.opcode, u.offset)
                };
                let _ = writeln!(
                    out,
                    "  {}: {} ({member}{place}): {}",
                    u.code, u.callable, u.why
                );
            }
        }
        for line in &self.refused {
            let _ = writeln!(out, "FAILED: {line}");
        }
        let unsafe_files = self.files.iter().filter(|f| !f.findings.is_empty()).count();
        let refused = if self.refused.is_empty() {
            String::new()
        } else {
            format!(", {} other refusal(s)", self.refused.len())
        };
        let _ = writeln!(
            out,
            "poisongate verify --scan: {} ({} of {} file(s) unsafe{refused})",
            if self.passed() {
                "PASS (exit 0)"
            } else {
                "BLOCKED (exit 1)"
            },
            unsafe_files,
            self.files.len()
        );
        out
    }
}

/// Reads a pin file.
pub fn load_pin(path: &Path) -> crate::Result<ImportPin> {
    let bytes =
        std::fs::read(path).map_err(|e| crate::Error::input(path, crate::error::io_cause(&e)))?;
    ImportPin::load(path, &bytes)
}
