//! OpenSSF model signing (ossf/model-signing-spec v1.0; reference implementation
//! sigstore/model-transparency, the `model-signing` package): verifying a model directory
//! against a key-signed Sigstore bundle, offline, and signing one.
//!
//! Verification follows the spec's rules and closes the reference verifier's known gaps:
//! the signature is checked with the key the user gives (the bundle's key hint is never
//! trusted), the signed payload is the only source of the manifest (no message digest is
//! trusted), every file under the directory must be signed, resource names that are absolute,
//! hold `..` or are not canonical are refused, only walked paths are opened, and the signed
//! serialization (ignore paths, symbolic links, shards) is followed with no flag to widen it.

pub mod bundle;
pub mod certs;
pub mod keys;
pub mod manifest;
pub mod tree;

use std::collections::BTreeMap;
use std::path::Path;

use bundle::Bundle;
use keys::{PrivateKey, PublicKey};
use manifest::{Key, Manifest, Refusal, Serialization};

use crate::error::{Error, Result};

/// The paths `model_signing` ignores by default when signing (its `hashing.Config`); they are
/// written into the signed `ignore_paths`, so a verifier follows them from there.
pub const GIT_PATHS: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];

/// Whom a verification trusts: one public key (key mode), or CA certificates that the
/// bundle's signing certificate must chain to (certificate mode).
#[derive(Debug)]
pub enum Trust {
    /// `--public-key`.
    Key(PublicKey),
    /// `--certificate-chain`.
    Cas(certs::TrustedCas),
}

/// Options of a verification beyond the signed policy.
#[derive(Debug, Default, Clone, Copy)]
pub struct VerifyOptions {
    /// Files under the directory that the manifest does not list are not a failure (the
    /// reference tool's `--ignore_unsigned_files`). Signed files must still all be present
    /// and unchanged.
    pub ignore_unsigned_files: bool,
}

/// What a verification found.
#[derive(Debug)]
pub struct Verification {
    /// The signed model name.
    pub model_name: String,
    /// Who signed: the key's algorithm, and in certificate mode the certificate and its CA.
    pub signer: String,
    /// The signed serialization (`None` when the signature did not verify: nothing in the
    /// payload is believed then).
    pub serialization: Option<Serialization>,
    /// Files (or shards) signed.
    pub signed: usize,
    /// Files hashed.
    pub files: usize,
    /// Bytes hashed.
    pub bytes: u64,
    /// Files present but not signed and skipped under `ignore_unsigned_files`.
    pub unsigned_ignored: usize,
    /// One line per problem; empty means verified.
    pub problems: Vec<String>,
}

/// Verifies `dir` against `bundle_path`, trusting `trust`.
///
/// # Errors
/// Exit 2: an unreadable or malformed bundle, a keyless bundle, a statement of another kind,
/// a hash or method not implemented, an unreadable directory or file. A signature that does not
/// verify, an untrusted certificate and every mismatch are problems in the result (exit 1), not
/// errors.
pub fn verify(
    dir: &Path,
    bundle_path: &Path,
    trust: &Trust,
    options: VerifyOptions,
) -> Result<Verification> {
    let (payload, signer) = read_signed(bundle_path, trust)?;
    let mut problems = Vec::new();
    let signer = match signer {
        Ok(signer) => signer,
        Err(why) => {
            // Nothing in an unverified payload may be believed, not even its file list.
            problems.push(format!("{}: {why}", bundle_path.display()));
            return Ok(Verification {
                model_name: String::new(),
                signer: String::new(),
                serialization: None,
                signed: 0,
                files: 0,
                bytes: 0,
                unsigned_ignored: 0,
                problems,
            });
        }
    };
    let manifest = Manifest::from_payload(&payload)
        .map_err(|Refusal::Unsupported(cause)| Error::signing(bundle_path, cause))?;
    problems.extend(manifest.problems.iter().cloned());

    let mut skip = tree::Skip::default();
    for p in &manifest.serialization.ignore_paths {
        skip.add(p);
    }
    if let Some(rel) = relative_inside(dir, bundle_path) {
        skip.add(&rel);
    }
    let walk = tree::walk(dir, &skip, manifest.serialization.allow_symlinks)?;
    let shard = manifest
        .serialization
        .shard_size
        .filter(|_| manifest.serialization.method == "shards");
    let signed_paths: std::collections::BTreeSet<&[String]> = manifest
        .resources
        .keys()
        .map(|k| k.path.as_slice())
        .collect();
    let (files, unsigned): (Vec<_>, Vec<_>) = walk
        .files
        .into_iter()
        .partition(|f| !options.ignore_unsigned_files || signed_paths.contains(f.path.as_slice()));
    problems.extend(walk.problems);
    let bytes_hashed = files.iter().map(|f| f.size).sum();
    let actual = tree::hash(&files, shard)?;
    problems.extend(diff(&manifest.resources, &actual, shard.is_some()));
    Ok(Verification {
        model_name: manifest.model_name,
        signer,
        serialization: Some(manifest.serialization),
        signed: manifest.resources.len(),
        files: files.len(),
        bytes: bytes_hashed,
        unsigned_ignored: unsigned.len(),
        problems,
    })
}

/// Reads a key- or certificate-signed Sigstore bundle: its DSSE payload, and who signed it when
/// one of its signatures over `PAE(payloadType, payload)` verifies with the trusted key or
/// certificate (or why not, in one line). Nothing in a payload whose signature does not verify
/// may be believed.
///
/// # Errors
/// An unreadable or malformed bundle, a keyless one, or in certificate mode a bundle without a
/// certificate chain or with a certificate that cannot be evaluated.
pub fn read_signed(
    path: &Path,
    trust: &Trust,
) -> Result<(Vec<u8>, std::result::Result<String, String>)> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::signing(path, crate::error::io_cause(&e)))?;
    let bundle = Bundle::parse(&bytes).map_err(|cause| Error::signing(path, cause))?;
    if bundle.is_keyless() {
        return Err(Error::signing(
            path,
            "a keyless Sigstore bundle (Fulcio certificate and Rekor entry): verifying it needs the Sigstore trust root and transparency log, which this offline verifier does not implement; sign with a key or a certificate (model_signing sign key|certificate, poisongate sign)",
        ));
    }
    let Some(envelope) = &bundle.dsse_envelope else {
        return Err(Error::Internal(
            "a parsed bundle without an envelope".into(),
        ));
    };
    let payload = bundle::decode_b64(&envelope.payload)
        .map_err(|_| Error::signing(path, "the DSSE payload is not base64"))?;
    let message = bundle::pae(&envelope.payload_type, &payload);
    let signed_by = |key: &PublicKey| {
        envelope
            .signatures
            .iter()
            .any(|s| bundle::decode_b64(&s.sig).is_ok_and(|der| key.verifies(&message, &der)))
    };
    let not_verified = |key: &PublicKey, whose: &str| {
        format!(
            "the signature does not verify with {whose} ({}); the bundle was not signed by it or was altered",
            key.algorithm()
        )
    };
    let signer = match trust {
        Trust::Key(key) => {
            if signed_by(key) {
                Ok(key.algorithm().to_owned())
            } else {
                Err(not_verified(key, "this public key"))
            }
        }
        Trust::Cas(cas) => {
            let Some(chain) = &bundle.verification_material.x509_certificate_chain else {
                return Err(Error::signing(
                    path,
                    "signed with a key, not a certificate (no x509CertificateChain): verify it with --public-key",
                ));
            };
            let chain: bundle::CertificateChain =
                serde_json::from_value(chain.clone()).map_err(|e| {
                    Error::signing(
                        path,
                        format!("the x509CertificateChain does not parse: {e}"),
                    )
                })?;
            if chain.certificates.len() > certs::MAX_CHAIN {
                return Err(Error::signing(
                    path,
                    format!(
                        "the certificate chain holds {} certificates; at most {} are read",
                        chain.certificates.len(),
                        certs::MAX_CHAIN
                    ),
                ));
            }
            let der: std::result::Result<Vec<Vec<u8>>, String> = chain
                .certificates
                .iter()
                .map(|c| bundle::decode_b64(&c.raw_bytes))
                .collect();
            let der =
                der.map_err(|_| Error::signing(path, "a certificate of the chain is not base64"))?;
            match cas.signer(path, &der)? {
                Err(why) => Err(why),
                Ok((key, subject)) if signed_by(&key) => Ok(format!(
                    "{}, certificate {subject} chained to {}",
                    key.algorithm(),
                    cas.describe()
                )),
                Ok((key, _)) => Err(not_verified(&key, "the signing certificate's key")),
            }
        }
    };
    Ok((payload, signer))
}

/// The path of `file` relative to `dir`, `/`-separated, when `file` lies inside `dir`.
fn relative_inside(dir: &Path, file: &Path) -> Option<String> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let file = std::fs::canonicalize(file).ok()?;
    let rel = file.strip_prefix(&dir).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// A file's byte range (`None`: the whole file) and its digest.
type Piece = (Option<(u64, u64)>, Vec<u8>);

/// One line per difference between the signed and the actual manifest: a changed file, a
/// missing one, one not signed, a renamed one (a new name holding a missing file's content),
/// and for shards a changed size or changed bytes.
fn diff(
    signed: &BTreeMap<Key, Vec<u8>>,
    actual: &BTreeMap<Key, Vec<u8>>,
    shards: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    // Whole files by path: for shards, a path's shard set differs when its size changed.
    let by_path = |m: &BTreeMap<Key, Vec<u8>>| {
        let mut paths: BTreeMap<String, Vec<Piece>> = BTreeMap::new();
        for (k, d) in m {
            paths
                .entry(k.path_str())
                .or_default()
                .push((k.range, d.clone()));
        }
        paths
    };
    let (s, a) = (by_path(signed), by_path(actual));
    // A file not signed whose content is that of a signed file that is missing: renamed. One
    // line names both; each missing file pairs with at most one new name.
    let mut renamed: BTreeMap<&String, &String> = BTreeMap::new();
    for (path, content) in a.iter().filter(|(p, _)| !s.contains_key(*p)) {
        let from = s.iter().find(|(m, c)| {
            !a.contains_key(*m) && *c == content && !renamed.values().any(|v| v == m)
        });
        if let Some((from, _)) = from {
            renamed.insert(path, from);
        }
    }
    let renamed_from: std::collections::BTreeSet<&String> = renamed.values().copied().collect();
    for (path, shards_signed) in &s {
        let Some(shards_actual) = a.get(path) else {
            if !renamed_from.contains(path) {
                out.push(format!(
                    "{path}: FAILED: signed but missing from the model directory"
                ));
            }
            continue;
        };
        if shards_signed == shards_actual {
            continue;
        }
        if !shards {
            out.push(format!(
                "{path}: FAILED: changed (sha256 {} differs from the signed {})",
                hex::encode(&shards_actual[0].1),
                hex::encode(&shards_signed[0].1)
            ));
        } else if shards_signed
            .iter()
            .map(|x| x.0)
            .ne(shards_actual.iter().map(|x| x.0))
        {
            out.push(format!(
                "{path}: FAILED: changed (its size differs from the signed shards)"
            ));
        } else {
            for ((range, want), (_, got)) in shards_signed.iter().zip(shards_actual) {
                if want != got {
                    let (st, en) = range.unwrap_or_default();
                    out.push(format!(
                        "{path}: FAILED: bytes {st}..{en} changed (shard digest differs)"
                    ));
                }
            }
        }
    }
    for path in a.keys().filter(|p| !s.contains_key(*p)) {
        match renamed.get(path) {
            Some(from) => out.push(format!(
                "{path}: FAILED: renamed from the signed {from} (same content; {from} is missing)"
            )),
            None => out.push(format!(
                "{path}: FAILED: not signed (an extra file; --ignore-unsigned-files accepts extra files)"
            )),
        }
    }
    out
}

/// Options of `poisongate sign`.
#[derive(Debug, Default, Clone)]
pub struct SignOptions {
    /// Paths relative to the model directory left out of the signature (besides the git
    /// paths and the signature file itself).
    pub ignore_paths: Vec<String>,
    /// Follow symbolic links to files (recorded in the signed policy).
    pub allow_symlinks: bool,
    /// Certificate mode: the signing certificate and the chain to write in the bundle, DER
    /// ([`certs::signing_chain`]); empty for key mode.
    pub certificates: Vec<Vec<u8>>,
}

/// Signs `dir` with `key` and returns the bundle's JSON, as `model_signing sign key` writes it
/// (`files` serialization, SHA-256, the git paths and the signature file ignored).
///
/// # Errors
/// An unreadable directory or file, or a problem the walk finds (a symbolic link without
/// `allow_symlinks`, a special file): a model that cannot be verified is not signed.
pub fn sign(
    dir: &Path,
    key: &PrivateKey,
    signature_path: &Path,
    options: &SignOptions,
) -> Result<Vec<u8>> {
    let mut ignore: Vec<String> = GIT_PATHS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(options.ignore_paths.iter().cloned())
        .collect();
    // The signature file is written after hashing; name it wherever it will lie inside.
    let sig_parent = signature_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let (Ok(d), Ok(p), Some(name)) = (
        std::fs::canonicalize(dir),
        std::fs::canonicalize(sig_parent),
        signature_path.file_name(),
    ) && let Ok(rel) = p.join(name).strip_prefix(&d)
        && let Some(rel) = rel.to_str()
    {
        ignore.push(rel.replace(std::path::MAIN_SEPARATOR, "/"));
    }
    ignore.sort();
    ignore.dedup();
    let mut skip = tree::Skip::default();
    for p in &ignore {
        skip.add(p);
    }
    let walk = tree::walk(dir, &skip, options.allow_symlinks)?;
    if let Some(first) = walk.problems.first() {
        return Err(Error::signing(dir, format!("cannot sign: {first}")));
    }
    let resources = tree::hash(&walk.files, None)?;
    let serialization = Serialization {
        method: "files".into(),
        hash_type: "sha256".into(),
        allow_symlinks: options.allow_symlinks,
        ignore_paths: ignore,
        shard_size: None,
    };
    let name = model_name(dir)?;
    let statement = manifest::statement(&name, serialization, &resources);
    let payload =
        serde_json::to_vec_pretty(&statement).map_err(|e| Error::Internal(e.to_string()))?;
    envelope_bundle(&payload, key, &options.certificates)
}

/// A Sigstore bundle (v0.3) of a DSSE envelope over the in-toto `payload`, signed with `key`:
/// the JSON written to disk. With no `certificates`, it carries the key hint `model_signing sign
/// key` writes; with them (DER, the signing certificate first), the certificate chain `model_signing
/// sign certificate` writes.
///
/// # Errors
/// An encoder failure (never for a valid key).
pub fn envelope_bundle(
    payload: &[u8],
    key: &PrivateKey,
    certificates: &[Vec<u8>],
) -> Result<Vec<u8>> {
    let sig = key.sign(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, payload));
    let (public_key, x509_certificate_chain) = if certificates.is_empty() {
        let hint = Some(key.public_key().hint()?);
        (Some(bundle::KeyHint { hint }), None)
    } else {
        let certificates = certificates
            .iter()
            .map(|der| bundle::RawCertificate {
                raw_bytes: bundle::encode_b64(der),
            })
            .collect();
        let chain = serde_json::to_value(bundle::CertificateChain { certificates })
            .map_err(|e| Error::Internal(e.to_string()))?;
        (None, Some(chain))
    };
    let out = Bundle {
        media_type: bundle::MEDIA_TYPE.into(),
        verification_material: bundle::Material {
            public_key,
            x509_certificate_chain,
            tlog_entries: Vec::new(),
            ..Default::default()
        },
        dsse_envelope: Some(bundle::Envelope {
            payload: bundle::encode_b64(payload),
            payload_type: bundle::IN_TOTO_PAYLOAD_TYPE.into(),
            signatures: vec![bundle::EnvelopeSignature {
                sig: bundle::encode_b64(&sig),
                keyid: Some(String::new()),
            }],
        }),
        message_signature: None,
    };
    let mut json = serde_json::to_vec(&out).map_err(|e| Error::Internal(e.to_string()))?;
    json.push(b'\n');
    Ok(json)
}

/// The model's name: its directory's name (the reference resolves `.` and `..` first).
fn model_name(dir: &Path) -> Result<String> {
    let resolved =
        std::fs::canonicalize(dir).map_err(|e| Error::signing(dir, crate::error::io_cause(&e)))?;
    Ok(resolved
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model")
        .to_owned())
}
