//! Signed verdicts: a `check` or `compare` decision as an in-toto Statement v1 with SLSA's
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

use crate::error::{Error, Result};
use crate::modelsign::keys::{PrivateKey, PublicKey};
use crate::report::{Report, Verdict};

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

/// The statement of a report's verdict.
#[must_use]
pub fn statement(report: &Report) -> serde_json::Value {
    let subjects: Vec<Subject> = report
        .inputs
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
        .collect();
    let passed = report.verdict == Verdict::Pass;
    let mut input_attestations = Vec::new();
    if let Some(b) = &report.baseline {
        input_attestations.push(serde_json::json!({"uri": b.path, "digest": {"sha256": b.sha256}}));
    }
    let policy = report.policy.as_ref().map(|p| {
        serde_json::json!({
            "uri": p.path.clone().unwrap_or_else(|| "poisongate:default-policy".into()),
            "digest": {"sha256": p.sha256},
        })
    });
    serde_json::json!({
        "_type": crate::modelsign::manifest::STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": VSA,
        "predicate": {
            "verifier": {"id": VERIFIER_ID, "version": {"poisongate": report.tool.version}},
            "resourceUri": report.inputs.first().map_or("", |i| i.path.as_str()),
            "policy": policy.unwrap_or_else(|| serde_json::json!({"uri": "poisongate:none"})),
            "inputAttestations": input_attestations,
            "verificationResult": if passed { "PASSED" } else { "FAILED" },
            "verifiedLevels": if passed { vec![format!("POISONGATE_{}_PASSED", report.command.to_uppercase())] } else { Vec::new() },
            "slsaVersion": "1.0",
            "poisongate": {
                "command": report.command,
                "verdict": report.verdict,
                "exitCode": report.exit_code,
                "deny": report.counts.deny,
                "warn": report.counts.warn,
                "waived": report.counts.waived,
                "tests": report.counts.tests,
                "rows": report.rows,
            },
        },
    })
}

/// Signs `statement` into a Sigstore bundle's JSON.
///
/// # Errors
/// An encoder failure (never for a valid key).
pub fn sign(statement: &serde_json::Value, key: &PrivateKey) -> Result<Vec<u8>> {
    let payload = serde_json::to_vec(statement).map_err(|e| Error::Internal(e.to_string()))?;
    crate::modelsign::envelope_bundle(&payload, key, &[])
}

/// One file checked against an attestation.
#[derive(Debug)]
pub struct Covered {
    /// The file as named.
    pub name: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Whether that digest is a subject.
    pub covered: bool,
}

/// What `verify --attestation` found.
#[derive(Debug)]
pub struct AttestationCheck {
    /// The signature verified with the key.
    pub signed: bool,
    /// `verificationResult` (when signed).
    pub result: Option<String>,
    /// The command and exit code the gate recorded.
    pub command: Option<String>,
    /// Each file.
    pub files: Vec<Covered>,
}

impl AttestationCheck {
    /// Whether the training step may go on: signed, PASSED, and every file a subject.
    #[must_use]
    pub fn passes(&self) -> bool {
        self.signed
            && self.result.as_deref() == Some("PASSED")
            && self.files.iter().all(|f| f.covered)
    }
}

/// Checks `files` (name, SHA-256) against the attestation at `path`.
///
/// # Errors
/// An unreadable or malformed bundle, or a signed statement that is not a VSA.
pub fn verify(
    path: &Path,
    key: &PublicKey,
    files: Vec<(String, String)>,
) -> Result<AttestationCheck> {
    let (payload, refused) =
        crate::modelsign::read_signed(path, &crate::modelsign::Trust::Key(key.clone()))?;
    let signed = refused.is_ok();
    if !signed {
        let files = files
            .into_iter()
            .map(|(name, sha256)| Covered {
                name,
                sha256,
                covered: false,
            })
            .collect();
        return Ok(AttestationCheck {
            signed,
            result: None,
            command: None,
            files,
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
    let digests: std::collections::BTreeSet<String> = st["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["digest"]["sha256"].as_str().map(str::to_ascii_lowercase))
        .collect();
    let files = files
        .into_iter()
        .map(|(name, sha256)| {
            let covered = digests.contains(&sha256);
            Covered {
                name,
                sha256,
                covered,
            }
        })
        .collect();
    Ok(AttestationCheck {
        signed,
        result: st["predicate"]["verificationResult"]
            .as_str()
            .map(str::to_owned),
        command: st["predicate"]["poisongate"]["command"]
            .as_str()
            .map(|c| format!("{c}, exit {}", st["predicate"]["poisongate"]["exitCode"])),
        files,
    })
}
