//! Certificate mode of OpenSSF model signing: the bundle carries the signing certificate and
//! the certificates that link it to a CA (`verificationMaterial.x509CertificateChain`), and
//! the verifier trusts only the CA certificates the user gives.
//!
//! The rules are the reference verifier's (`model_signing/_signing/sign_certificate.py`,
//! `Verifier._verify_certificates`, model-signing 1.1.1):
//! - the chain is built from the signing certificate (the bundle's first certificate) through
//!   the bundle's other certificates, which are never trusted themselves, to one of the user's
//!   CA certificates, and validated at the signing certificate's `notBefore`, not at the time
//!   of verification (a bundle carries no trusted timestamp: the certificate's start is the
//!   latest time the signature can be known to predate);
//! - the signing certificate must allow signing: key usage `digitalSignature`, or extended key
//!   usage `codeSigning`;
//! - its public key, EC on P-256, P-384 or P-521, verifies the DSSE signature with the hash the
//!   curve implies.
//!
//! Path building and validation are rustls-webpki's (RFC 5280 §6 as browsers apply it: issuer
//! signatures, validity, basic constraints and path length of intermediates, name
//! constraints). What webpki leaves to the caller and OpenSSL checks is checked here: every CA
//! certificate given must be a CA (basic constraints `cA`, `keyCertSign` when it states key
//! usages), valid at the signing time, with a path length the chain respects, and every
//! intermediate must allow `keyCertSign` when it states key usages. Known differences from the
//! reference's OpenSSL store: a CA certificate given need not be self-signed (OpenSSL's default
//! wants the chain to end at one; the user chose to trust it), critical extensions are judged by
//! webpki's list rather than OpenSSL's, and extended key usages of the CAs are not checked (as
//! with OpenSSL when no purpose is set).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage};

use super::keys::PublicKey;
use crate::error::{Error, Result};

/// `id-kp-codeSigning` (RFC 5280 §4.2.1.12).
const CODE_SIGNING: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

/// Most certificates a bundle's chain may hold (the signing certificate included); a longer one
/// is refused before any is parsed, so that path building stays cheap on a hostile bundle.
pub const MAX_CHAIN: usize = 10;

/// One trusted CA certificate: its anchor for path building, and what webpki does not check of
/// an anchor (its validity and path length), read from the certificate itself.
struct Ca {
    anchor: TrustAnchor<'static>,
    not_before: std::time::Duration,
    not_after: std::time::Duration,
    path_len: Option<u8>,
}

/// The CA certificates a verifier trusts (`--certificate-chain`, PEM, one or more files).
pub struct TrustedCas {
    cas: Vec<Ca>,
    /// The files, for messages.
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for TrustedCas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedCas({} certificates)", self.cas.len())
    }
}

impl TrustedCas {
    /// Reads every PEM certificate of `files`; each must be a CA certificate (basic constraints
    /// `cA`, and `keyCertSign` when it states key usages), as OpenSSL requires of an issuer.
    ///
    /// # Errors
    /// An unreadable file, one with no certificate, a certificate that does not parse, or one
    /// that is not a CA.
    pub fn from_pem_files(files: &[PathBuf]) -> Result<Self> {
        let mut cas = Vec::new();
        for path in files {
            for der in read_pem_certificates(path)? {
                let bad = |cause: String| Error::signing(path, cause);
                let anchor =
                    webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                        .map_err(|e| bad(format!("a certificate that does not parse: {e}")))?
                        .to_owned();
                let cert = x509_cert::Certificate::from_der(&der)
                    .map_err(|e| bad(format!("a certificate that does not parse: {e}")))?;
                let tbs = &cert.tbs_certificate;
                let constraints = tbs
                    .get::<BasicConstraints>()
                    .map_err(|e| bad(format!("{}: malformed basic constraints: {e}", tbs.subject)))?
                    .map(|(_, bc)| bc);
                let Some(constraints) = constraints.filter(|bc| bc.ca) else {
                    return Err(bad(format!(
                        "{} is not a CA certificate (no basic constraints cA); give the CA that issued the signing certificate",
                        tbs.subject
                    )));
                };
                if !usage_allows(tbs, KeyUsage::key_cert_sign)
                    .map_err(|e| bad(format!("{}: {e}", tbs.subject)))?
                {
                    return Err(bad(format!(
                        "{} may not issue certificates (its key usage lacks keyCertSign)",
                        tbs.subject
                    )));
                }
                cas.push(Ca {
                    anchor,
                    not_before: tbs.validity.not_before.to_unix_duration(),
                    not_after: tbs.validity.not_after.to_unix_duration(),
                    path_len: constraints.path_len_constraint,
                });
            }
        }
        Ok(Self {
            cas,
            files: files.to_vec(),
        })
    }

    /// The CA files, for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        names.join(", ")
    }

    /// Validates `chain` (DER, the signing certificate first) and returns the signing key and
    /// the certificate's subject, or the one line that says why the chain is not trusted.
    ///
    /// # Errors
    /// Exit 2 for what cannot be evaluated: an empty chain, a signing certificate that does not
    /// parse, a signature algorithm not implemented, or a key other than EC on the three curves.
    pub fn signer(
        &self,
        bundle: &Path,
        chain: &[Vec<u8>],
    ) -> Result<std::result::Result<(PublicKey, String), String>> {
        let Some((leaf, rest)) = chain.split_first() else {
            return Err(Error::signing(
                bundle,
                "the bundle's certificate chain is empty",
            ));
        };
        let unusable =
            |what: String| Error::signing(bundle, format!("the signing certificate {what}"));
        let parsed = x509_cert::Certificate::from_der(leaf)
            .map_err(|e| unusable(format!("does not parse: {e}")))?;
        let tbs = &parsed.tbs_certificate;
        let at = UnixTime::since_unix_epoch(tbs.validity.not_before.to_unix_duration());
        let leaf_der = CertificateDer::from(leaf.as_slice());
        let end_entity = webpki::EndEntityCert::try_from(&leaf_der)
            .map_err(|e| unusable(format!("does not parse: {e}")))?;
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let anchors: Vec<TrustAnchor<'_>> = self.cas.iter().map(|c| c.anchor.clone()).collect();
        // What webpki leaves to the caller, checked on each candidate path: the anchor's
        // validity at the signing time and its path length, and keyCertSign on every
        // intermediate. The first reason a path failed is kept for the message.
        let why = std::cell::RefCell::new(None::<String>);
        let check_path = |path: &webpki::VerifiedPath<'_>| {
            let reason = self.path_problem(path, at);
            match reason {
                None => Ok(()),
                Some(r) => {
                    why.borrow_mut().get_or_insert(r);
                    Err(webpki::Error::UnknownIssuer)
                }
            }
        };
        let verified = end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            at,
            AnyPurpose,
            None,
            Some(&check_path),
        );
        if let Err(e) = verified {
            if matches!(
                e,
                webpki::Error::UnsupportedSignatureAlgorithmContext(_)
                    | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
                    | webpki::Error::UnsupportedCertVersion
            ) {
                return Err(unusable(format!(
                    "or its chain uses what this verifier does not implement ({e:?}); ECDSA on P-256, P-384 or P-521, RSA of 2048 bits or more and Ed25519 are"
                )));
            }
            let cause = why.into_inner().unwrap_or_else(|| chain_cause(&e));
            return Ok(Err(format!(
                "the signing certificate ({}) does not chain to the CA certificates of {} at its notBefore {}: {cause}",
                tbs.subject,
                self.describe(),
                tbs.validity.not_before,
            )));
        }
        // The reference's rule: key usage digitalSignature (stated, not implied by its absence),
        // or extended key usage codeSigning. A malformed extension is a refusal, never ignored.
        let may_sign = match tbs.get::<KeyUsage>() {
            Ok(ku) => Ok(ku.is_some_and(|(_, ku)| ku.digital_signature())),
            Err(e) => Err(format!("key usage: {e}")),
        };
        let code_signing = tbs
            .get::<ExtendedKeyUsage>()
            .map(|e| e.is_some_and(|(_, eku)| eku.0.contains(&CODE_SIGNING)))
            .map_err(|e| format!("extended key usage: {e}"));
        match (may_sign, code_signing) {
            (Err(e), _) | (_, Err(e)) => {
                return Ok(Err(format!(
                    "the signing certificate ({}) has a malformed usage extension: {e}",
                    tbs.subject
                )));
            }
            (Ok(false), Ok(false)) => {
                return Ok(Err(format!(
                    "the signing certificate ({}) may not sign: its key usage lacks digitalSignature and its extended key usage lacks codeSigning",
                    tbs.subject
                )));
            }
            _ => {}
        }
        let key = certificate_key(tbs).map_err(|cause| unusable(format!("key is {cause}")))?;
        Ok(Ok((key, tbs.subject.to_string())))
    }

    /// Why a path webpki built is not trusted, or `None`.
    fn path_problem(&self, path: &webpki::VerifiedPath<'_>, at: UnixTime) -> Option<String> {
        let anchor = path.anchor();
        // Fails closed: an anchor that is not one of ours, or an intermediate that does not
        // parse here, is a problem, never a skipped check.
        let Some(ca) = self.cas.iter().find(|c| {
            c.anchor.subject == anchor.subject
                && c.anchor.subject_public_key_info == anchor.subject_public_key_info
        }) else {
            return Some(
                "the chain ends at an anchor that is not among the CA certificates".into(),
            );
        };
        let at = std::time::Duration::from_secs(at.as_secs());
        if at < ca.not_before || at > ca.not_after {
            return Some("the CA certificate was not valid at that time".into());
        }
        let intermediates: Vec<_> = path.intermediate_certificates().collect();
        if let Some(n) = ca.path_len
            && intermediates.len() > usize::from(n)
        {
            return Some(format!(
                "the CA's path length constraint ({n}) is exceeded by {} intermediate certificate(s)",
                intermediates.len()
            ));
        }
        intermediates
            .into_iter()
            .find_map(|cert| intermediate_problem(cert.der().as_ref()))
    }
}

/// Why an intermediate certificate (DER) may not issue: it does not parse here, or its key
/// usage lacks keyCertSign. `None` when it may.
fn intermediate_problem(der: &[u8]) -> Option<String> {
    let parsed = match x509_cert::Certificate::from_der(der) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("an intermediate certificate does not parse: {e}")),
    };
    match usage_allows(&parsed.tbs_certificate, KeyUsage::key_cert_sign) {
        Ok(true) => None,
        _ => Some(format!(
            "the intermediate {} may not issue certificates (key usage without keyCertSign)",
            parsed.tbs_certificate.subject
        )),
    }
}

/// Whether the certificate's key usage allows `bit`: true when it states no key usage (RFC 5280
/// §4.2.1.3 leaves the key unrestricted then).
///
/// # Errors
/// A malformed key usage extension.
fn usage_allows(
    tbs: &x509_cert::TbsCertificate,
    bit: fn(&KeyUsage) -> bool,
) -> std::result::Result<bool, String> {
    match tbs.get::<KeyUsage>() {
        Ok(None) => Ok(true),
        Ok(Some((_, ku))) => Ok(bit(&ku)),
        Err(e) => Err(format!("malformed key usage: {e}")),
    }
}

/// Chain validation checks no purpose on any certificate (the reference's OpenSSL store sets
/// none); the signing certificate's usages are checked after, by the reference's rule. The
/// purposes are still read, so that a malformed extension fails.
struct AnyPurpose;

impl webpki::ExtendedKeyUsageValidator for AnyPurpose {
    fn validate(
        &self,
        iter: webpki::KeyPurposeIdIter<'_, '_>,
    ) -> std::result::Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

/// A chain error in words.
fn chain_cause(e: &webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer => {
            "no path to a trusted CA (an issuer is neither among the CA certificates given nor in the bundle's chain)".into()
        }
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            "a certificate of the chain was not valid at that time".into()
        }
        webpki::Error::InvalidSignatureForPublicKey => {
            "a signature in the chain does not verify".into()
        }
        webpki::Error::CaUsedAsEndEntity => "the signing certificate is a CA".into(),
        webpki::Error::EndEntityUsedAsCa => {
            "a certificate that is not a CA issued another".into()
        }
        webpki::Error::PathLenConstraintViolated => {
            "a CA's path length constraint is exceeded".into()
        }
        other => format!("{other:?}"),
    }
}

/// The certificate chain a certificate-mode bundle carries: the signing certificate (whose key
/// must be `key`'s) and then every certificate of `chain_files`, as `model_signing sign
/// certificate` writes it.
///
/// # Errors
/// An unreadable file, one with no PEM certificate, or a signing certificate whose public key
/// is not the private key's.
pub fn signing_chain(
    key: &super::keys::PrivateKey,
    signing_certificate: &Path,
    chain_files: &[PathBuf],
) -> Result<Vec<Vec<u8>>> {
    let mut out = read_pem_certificates(signing_certificate)?;
    out.truncate(1);
    let parsed = x509_cert::Certificate::from_der(&out[0]).map_err(|e| {
        Error::signing(
            signing_certificate,
            format!("the certificate does not parse: {e}"),
        )
    })?;
    let cert_key = certificate_key(&parsed.tbs_certificate)
        .map_err(|cause| Error::signing(signing_certificate, format!("its key is {cause}")))?;
    if cert_key.to_pem()? != key.public_key().to_pem()? {
        return Err(Error::signing(
            signing_certificate,
            "the certificate's public key is not the signing key's (--key)",
        ));
    }
    for file in chain_files {
        out.extend(read_pem_certificates(file)?);
    }
    Ok(out)
}

/// The certificate's subject public key, as a verifying key.
///
/// # Errors
/// The cause, to follow "key is": an encoding error or a key other than EC on the three curves.
fn certificate_key(tbs: &x509_cert::TbsCertificate) -> std::result::Result<PublicKey, String> {
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("not encodable: {e}"))?;
    PublicKey::from_spki_der(&spki)
}

/// Every PEM certificate of `path`, DER; at least one.
fn read_pem_certificates(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::signing(path, crate::error::io_cause(&e)))?;
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert =
            cert.map_err(|e| Error::signing(path, format!("not a PEM certificate file: {e}")))?;
        out.push(cert.to_vec());
    }
    if out.is_empty() {
        return Err(Error::signing(
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/modelsign/certs")
            .join(name);
        read_pem_certificates(&path).unwrap().remove(0)
    }

    #[test]
    fn an_intermediate_that_does_not_parse_or_may_not_issue_is_a_problem() {
        assert_eq!(intermediate_problem(&der("intermediate.pem")), None);
        let nosign = intermediate_problem(&der("leaf-nosign.pem")).unwrap();
        assert!(nosign.contains("may not issue"), "{nosign}");
        // A certificate truncated after webpki's parse would be skipped by a lenient check;
        // here it is a problem.
        let mut cut = der("intermediate.pem");
        cut.truncate(cut.len() / 2);
        let broken = intermediate_problem(&cut).unwrap();
        assert!(broken.contains("does not parse"), "{broken}");
    }
}
