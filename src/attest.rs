//! Signed verdicts: a `check`, `compare` or `profile` decision as an in-toto Statement v1 with SLSA's
//! Verification Summary Attestation predicate (`https://slsa.dev/verification_summary/v1`),
//! in a DSSE envelope inside a Sigstore bundle (v0.3), signed with the gate's EC key, so that
//! the training step can refuse data the gate did not pass.
//!
//! The subjects are the SHA-256 digests of every data input the run read (S3 objects carry
//! their ETag and version id as annotations). The VSA fields say who verified (`verifier`),
//! against what (`policy` with the effective policy's digest, `inputAttestations` with the
//! baseline's), and the result (`verificationResult` PASSED or FAILED; an error is FAILED).
//! What VSA has no field for (the command, the exit code, the finding counts) travels in a
//! `poisongate` object inside the predicate, which consumers that do not know it ignore, as
//! in-toto requires of unknown fields (the README's "Signed verdicts" lists them).
//!
//! - VSA v1: <https://slsa.dev/spec/v1.0/verification_summary>
//! - in-toto Statement v1: <https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md>

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::baseline::Tool;
use crate::error::{Error, Result};
use crate::modelsign::keys::{PrivateKey, PublicKey};
use crate::report::{Report, Verdict};
use crate::source::InputMeta;

/// The VSA predicate type.
pub const VSA: &str = "https://slsa.dev/verification_summary/v1";
/// The verifier id written into every attestation.
pub const VERIFIER_ID: &str = "https://github.com/poisongate/poisongate";

/// One subject: an input and its digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subject {
    /// The input as the run named it.
    pub name: String,
    /// `{"sha256": hex}`.
    pub digest: BTreeMap<String, String>,
    /// S3 ETag and version id, when the input was an object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The subjects of a run: every input it read, with its SHA-256 and, for S3 objects, the
/// ETag and version id that name the exact object version.
fn subjects(inputs: &[InputMeta]) -> Vec<Subject> {
    inputs
        .iter()
        .map(|i| {
            let mut annotations = BTreeMap::new();
            if let Some(o) = &i.object {
                if let Some(v) = &o.version_id {
                    annotations.insert("s3VersionId".to_owned(), v.clone());
                }
                if let Some(e) = &o.etag {
                    annotations.insert("s3ETag".to_owned(), e.clone());
                }
            }
            Subject {
                name: i.path.clone(),
                digest: BTreeMap::from([("sha256".to_owned(), i.sha256.clone())]),
                annotations,
            }
        })
        .collect()
}

/// A VSA statement over `inputs`. `policy` is VSA's `policy` (what the inputs were verified
/// against), `input_attestations` the artifacts the decision relied on, and `details` the
/// `poisongate` object (command, verdict, exit code and what the command counted).
fn vsa(
    inputs: &[InputMeta],
    passed: bool,
    command: &str,
    policy: serde_json::Value,
    input_attestations: Vec<serde_json::Value>,
    details: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "_type": crate::modelsign::manifest::STATEMENT_TYPE,
        "subject": subjects(inputs),
        "predicateType": VSA,
        "predicate": {
            "verifier": {"id": VERIFIER_ID, "version": {"poisongate": Tool::current().version}},
            "resourceUri": inputs.first().map_or("", |i| i.path.as_str()),
            "policy": policy,
            "inputAttestations": input_attestations,
            "verificationResult": if passed { "PASSED" } else { "FAILED" },
            "verifiedLevels": if passed { vec![format!("POISONGATE_{}_PASSED", command.to_uppercase())] } else { Vec::new() },
            "slsaVersion": "1.0",
            "poisongate": details,
        },
    })
}

/// The statement of a `check` or `compare` report's verdict.
#[must_use]
pub fn statement(report: &Report) -> serde_json::Value {
    let mut input_attestations = Vec::new();
    if let Some(b) = &report.baseline {
        input_attestations.push(serde_json::json!({"uri": b.path, "digest": {"sha256": b.sha256}}));
    }
    let policy = report.policy.as_ref().map_or_else(
        || serde_json::json!({"uri": "poisongate:none"}),
        |p| {
            serde_json::json!({
                "uri": p.path.clone().unwrap_or_else(|| "poisongate:default-policy".into()),
                "digest": {"sha256": p.sha256},
            })
        },
    );
    vsa(
        &report.inputs,
        report.verdict == Verdict::Pass,
        &report.command,
        policy,
        input_attestations,
        serde_json::json!({
            "command": report.command,
            "verdict": report.verdict,
            "exitCode": report.exit_code,
            "deny": report.counts.deny,
            "warn": report.counts.warn,
            "waived": report.counts.waived,
            "tests": report.counts.tests,
            "rows": report.rows,
        }),
    )
}

/// The statement of a `profile` run: its subjects are the trusted inputs it read, and the
/// baseline it wrote (`baseline`: path and SHA-256, on a pass) is named in the `poisongate`
/// object, so that a later step can check both that the baseline it pins came from this run
/// and that the trusted files are the ones profiled. No policy applies to a profile
/// (`poisongate:none`). `verdict` is the run's outcome: a pass, a block (`--require-sse-kms`
/// refused an input) or an error (no inputs are known then).
#[must_use]
pub fn profile_statement(
    inputs: &[InputMeta],
    rows: u64,
    baseline: Option<(&str, &str)>,
    verdict: Verdict,
) -> serde_json::Value {
    let mut details = serde_json::json!({
        "command": "profile",
        "verdict": verdict,
        "exitCode": verdict.exit_code(),
        "rows": rows,
    });
    if let Some((path, sha256)) = baseline {
        details["baseline"] = serde_json::json!({"uri": path, "digest": {"sha256": sha256}});
    }
    vsa(
        inputs,
        verdict == Verdict::Pass,
        "profile",
        serde_json::json!({"uri": "poisongate:none"}),
        Vec::new(),
        details,
    )
}

/// Signs `statement` into a Sigstore bundle's JSON.
///
/// # Errors
/// An encoder failure (never for a valid key).
pub fn sign(statement: &serde_json::Value, key: &PrivateKey) -> Result<Vec<u8>> {
    let payload = serde_json::to_vec(statement).map_err(|e| Error::Internal(e.to_string()))?;
    crate::modelsign::envelope_bundle(&payload, key, &[])
}

/// How a file stands against an attestation's subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Its digest is a subject, matched by no other file.
    Subject,
    /// Its digest is no subject: bytes the gate did not read.
    NotSubject,
    /// Its digest is a subject that other files given already match: the same bytes under
    /// more names than the gate read them (rows that would count more than once).
    Repeated,
}

/// One file checked against an attestation.
#[derive(Debug)]
pub struct Covered {
    /// The file as named.
    pub name: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Whether that digest is a subject.
    pub coverage: Coverage,
}

/// What `verify --attestation` found.
#[derive(Debug)]
pub struct AttestationCheck {
    /// The signature verified with the key.
    pub signed: bool,
    /// `verificationResult` (when signed).
    pub result: Option<String>,
    /// The command the gate recorded.
    pub command: Option<String>,
    /// The exit code it recorded.
    pub exit_code: Option<i64>,
    /// Whether the recorded command is the one asked for.
    pub command_matches: bool,
    /// Each file.
    pub files: Vec<Covered>,
    /// Subjects (name, SHA-256) that no file given matches: inputs the gate read that are
    /// missing from what the training step is about to read.
    pub missing: Vec<(String, String)>,
}

impl AttestationCheck {
    /// Whether the training step may go on: signed by the key, a PASSED verdict of the command
    /// asked for, and the files exactly the subjects (every file one, every subject one file).
    #[must_use]
    pub fn passes(&self) -> bool {
        self.signed
            && self.command_matches
            && self.result.as_deref() == Some("PASSED")
            && self.files.iter().all(|f| f.coverage == Coverage::Subject)
            && self.missing.is_empty()
    }
}

/// Checks `files` (name, SHA-256) against the attestation at `path`: signed by `key`, a verdict
/// of `command`, and its subjects' digests equal, as a multiset, to the files' digests.
///
/// # Errors
/// An unreadable or malformed bundle, or a signed statement that is not a VSA.
pub fn verify(
    path: &Path,
    key: &PublicKey,
    command: &str,
    files: Vec<(String, String)>,
) -> Result<AttestationCheck> {
    let (payload, refused) =
        crate::modelsign::read_signed(path, &crate::modelsign::Trust::Key(key.clone()))?;
    if refused.is_err() {
        let files = files
            .into_iter()
            .map(|(name, sha256)| Covered {
                name,
                sha256,
                coverage: Coverage::NotSubject,
            })
            .collect();
        return Ok(AttestationCheck {
            signed: false,
            result: None,
            command: None,
            exit_code: None,
            command_matches: false,
            files,
            missing: Vec::new(),
        });
    }
    let st: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| Error::signing(path, format!("the signed payload is not JSON: {e}")))?;
    if st["predicateType"] != VSA {
        return Err(Error::signing(
            path,
            format!(
                "predicate type {} is not a SLSA verification summary ({VSA})",
                st["predicateType"]
            ),
        ));
    }
    // Subjects by digest, each with the names the gate read under it (a multiset).
    let mut subjects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in st["subject"].as_array().into_iter().flatten() {
        if let Some(d) = s["digest"]["sha256"].as_str() {
            subjects
                .entry(d.to_ascii_lowercase())
                .or_default()
                .push(s["name"].as_str().unwrap_or("").to_owned());
        }
    }
    let files = files
        .into_iter()
        .map(|(name, sha256)| {
            let coverage = match subjects.get_mut(&sha256) {
                Some(names) if !names.is_empty() => {
                    names.pop();
                    Coverage::Subject
                }
                Some(_) => Coverage::Repeated,
                None => Coverage::NotSubject,
            };
            Covered {
                name,
                sha256,
                coverage,
            }
        })
        .collect();
    let missing = subjects
        .into_iter()
        .flat_map(|(d, names)| names.into_iter().map(move |n| (n, d.clone())))
        .collect();
    let recorded = st["predicate"]["poisongate"]["command"]
        .as_str()
        .map(str::to_owned);
    Ok(AttestationCheck {
        signed: true,
        result: st["predicate"]["verificationResult"]
            .as_str()
            .map(str::to_owned),
        command_matches: recorded.as_deref() == Some(command),
        command: recorded,
        exit_code: st["predicate"]["poisongate"]["exitCode"].as_i64(),
        files,
        missing,
    })
}
