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
//! signatures, validity, basic constraints and path length, name constraints). Two differences
//! from the reference's OpenSSL store, both stricter or equal for a forged chain: any
//! certificate in the user's CA files is an anchor (OpenSSL's default wants the chain to end
//! at a self-signed one), and extended key usages of the CAs are not checked (as with OpenSSL
//! when no purpose is set).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage};

use super::keys::PublicKey;
use crate::error::{Error, Result};

/// `id-kp-codeSigning` (RFC 5280 §4.2.1.12).
const CODE_SIGNING: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

/// The CA certificates a verifier trusts (`--certificate-chain`, PEM, one or more files).
pub struct TrustedCas {
    anchors: Vec<TrustAnchor<'static>>,
    /// The files, for messages.
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for TrustedCas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedCas({} certificates)", self.anchors.len())
    }
}

impl TrustedCas {
    /// Reads every PEM certificate of `files`.
    ///
    /// # Errors
    /// An unreadable file, one with no certificate, or a certificate that does not parse.
    pub fn from_pem_files(files: &[PathBuf]) -> Result<Self> {
        let mut anchors = Vec::new();
        for path in files {
            for der in read_pem_certificates(path)? {
                let anchor =
                    webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                        .map_err(|e| {
                            Error::signing(path, format!("a certificate that does not parse: {e}"))
                        })?
                        .to_owned();
                anchors.push(anchor);
            }
        }
        Ok(Self {
            anchors,
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
    /// parse, or a key other than EC on the three curves.
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
        let parsed = x509_cert::Certificate::from_der(leaf).map_err(|e| {
            Error::signing(
                bundle,
                format!("the signing certificate does not parse: {e}"),
            )
        })?;
        let tbs = &parsed.tbs_certificate;
        let spki = tbs
            .subject_public_key_info
            .to_der()
            .map_err(|e| Error::signing(bundle, format!("the signing certificate's key: {e}")))?;
        let key = PublicKey::from_spki_der(&spki).map_err(|cause| {
            Error::signing(bundle, format!("the signing certificate's key is {cause}"))
        })?;
        let not_before = tbs.validity.not_before.to_unix_duration();
        let at = UnixTime::since_unix_epoch(not_before);
        let leaf_der = CertificateDer::from(leaf.as_slice());
        let end_entity = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| {
            Error::signing(
                bundle,
                format!("the signing certificate does not parse: {e}"),
            )
        })?;
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        if let Err(e) = end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &intermediates,
            at,
            AnyPurpose,
            None,
            None,
        ) {
            return Ok(Err(format!(
                "the signing certificate ({}) does not chain to the CA certificates of {} at its notBefore {}: {}",
                tbs.subject,
                self.describe(),
                tbs.validity.not_before,
                chain_cause(&e)
            )));
        }
        let digital_signature = tbs
            .get::<KeyUsage>()
            .ok()
            .flatten()
            .is_some_and(|(_, ku)| ku.digital_signature());
        let code_signing = tbs
            .get::<ExtendedKeyUsage>()
            .ok()
            .flatten()
            .is_some_and(|(_, eku)| eku.0.contains(&CODE_SIGNING));
        if !digital_signature && !code_signing {
            return Ok(Err(format!(
                "the signing certificate ({}) may not sign: its key usage lacks digitalSignature and its extended key usage lacks codeSigning",
                tbs.subject
            )));
        }
        Ok(Ok((key, tbs.subject.to_string())))
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
    let spki = parsed
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| Error::signing(signing_certificate, e.to_string()))?;
    let cert_key = PublicKey::from_spki_der(&spki)
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
