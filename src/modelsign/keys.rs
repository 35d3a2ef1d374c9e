//! EC keys of OpenSSF model signing: P-256, P-384 and P-521, each with the hash its size
//! implies (SHA-256, SHA-384, SHA-512), as the reference implementation pairs them
//! (`model_signing/_signing/sign_ec_key.py`, `get_ec_key_hash`) after Sigstore's protobuf
//! specs (`PublicKeyDetails`: `PKIX_ECDSA_P256_SHA_256`, `_P384_SHA_384`, `_P521_SHA_512`).
//! Signatures are ASN.1 DER `ECDSA-Sig-Value` (RFC 3279 §2.2.3).

use std::path::Path;

use p256::ecdsa::signature::{Signer, Verifier};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use sha2::Digest;

use crate::error::{Error, Result};

/// A public key that verifies model signatures.
#[derive(Clone)]
pub enum PublicKey {
    /// NIST P-256 with SHA-256.
    P256(p256::ecdsa::VerifyingKey),
    /// NIST P-384 with SHA-384.
    P384(p384::ecdsa::VerifyingKey),
    /// NIST P-521 with SHA-512.
    P521(p521::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// Reads a PEM `SubjectPublicKeyInfo` (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    /// An unreadable file, or a key that is not EC on one of the three curves.
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Error::signing(path, crate::error::io_cause(&e)))?;
        Self::from_pem(pem.trim()).map_err(|cause| Error::signing(path, cause))
    }

    /// Parses a PEM `SubjectPublicKeyInfo`.
    ///
    /// # Errors
    /// A key that is not EC on P-256, P-384 or P-521 (RSA and Ed25519 keys included).
    pub fn from_pem(pem: &str) -> std::result::Result<Self, String> {
        const NOT: &str =
            "not a PEM public key on P-256, P-384 or P-521 (-----BEGIN PUBLIC KEY-----, EC only)";
        match p256::pkcs8::der::pem::decode_vec(pem.as_bytes()) {
            Ok(("PUBLIC KEY", der)) => Self::from_spki_der(&der).map_err(|_| NOT.to_owned()),
            _ => Err(NOT.into()),
        }
    }

    /// Parses a DER `SubjectPublicKeyInfo` (a certificate's key).
    ///
    /// # Errors
    /// A key that is not EC on P-256, P-384 or P-521.
    pub fn from_spki_der(der: &[u8]) -> std::result::Result<Self, String> {
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(Self::P384(k));
        }
        if let Ok(k) = p521::PublicKey::from_public_key_der(der) {
            let k = p521::ecdsa::VerifyingKey::from_affine(*k.as_affine())
                .map_err(|e| format!("not a usable P-521 public key: {e}"))?;
            return Ok(Self::P521(k));
        }
        Err("not EC on P-256, P-384 or P-521 (the only keys model signing verifies)".into())
    }

    /// The curve and its hash, for messages.
    #[must_use]
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::P256(_) => "ECDSA P-256 / SHA-256",
            Self::P384(_) => "ECDSA P-384 / SHA-384",
            Self::P521(_) => "ECDSA P-521 / SHA-512",
        }
    }

    /// Whether `der` is a valid signature of `message` under this key. A signature that is not
    /// DER is a signature that does not verify (a flipped byte can break the encoding), not an
    /// error.
    #[must_use]
    pub fn verifies(&self, message: &[u8], der: &[u8]) -> bool {
        match self {
            Self::P256(k) => p256::ecdsa::Signature::from_der(der)
                .is_ok_and(|sig| k.verify(message, &sig).is_ok()),
            Self::P384(k) => p384::ecdsa::Signature::from_der(der)
                .is_ok_and(|sig| k.verify(message, &sig).is_ok()),
            Self::P521(k) => p521::ecdsa::Signature::from_der(der)
                .is_ok_and(|sig| k.verify(message, &sig).is_ok()),
        }
    }

    /// The PEM `SubjectPublicKeyInfo` with LF line ends, byte for byte as Python's
    /// `cryptography` writes it (`Encoding.PEM`, `PublicFormat.SubjectPublicKeyInfo`).
    ///
    /// # Errors
    /// Never for a valid key; an encoder failure is reported rather than hidden.
    pub fn to_pem(&self) -> Result<String> {
        let pem = match self {
            Self::P256(k) => k.to_public_key_pem(LineEnding::LF),
            Self::P384(k) => k.to_public_key_pem(LineEnding::LF),
            Self::P521(k) => p521::PublicKey::from_affine(*k.as_affine())
                .map_err(|e| Error::Internal(format!("P-521 public key: {e}")))?
                .to_public_key_pem(LineEnding::LF),
        };
        pem.map_err(|e| Error::Internal(format!("cannot encode a public key: {e}")))
    }

    /// The key hint of a model-signing bundle: SHA-256 of the PEM `SubjectPublicKeyInfo`, hex.
    /// Written when signing; never trusted when verifying (the key the user gives decides).
    ///
    /// # Errors
    /// As [`Self::to_pem`].
    pub fn hint(&self) -> Result<String> {
        Ok(hex::encode(sha2::Sha256::digest(self.to_pem()?.as_bytes())))
    }
}

/// A private key that signs model directories.
pub enum PrivateKey {
    /// NIST P-256; RFC 6979 deterministic signatures.
    P256(p256::ecdsa::SigningKey),
    /// NIST P-384; RFC 6979 deterministic signatures.
    P384(p384::ecdsa::SigningKey),
    /// NIST P-521; randomized signatures (the `p521` crate has no RFC 6979 signer).
    P521(p521::ecdsa::SigningKey),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.algorithm())
    }
}

/// Never prints the key itself.
impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.public_key().algorithm())
    }
}

impl PrivateKey {
    /// Reads an unencrypted PEM private key: PKCS#8 (`-----BEGIN PRIVATE KEY-----`) or SEC1
    /// (`-----BEGIN EC PRIVATE KEY-----`, as `openssl ecparam -genkey` writes it).
    ///
    /// # Errors
    /// An unreadable file, an encrypted key, or a key that is not EC on one of the curves.
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Error::signing(path, crate::error::io_cause(&e)))?;
        Self::from_pem(pem.trim()).map_err(|cause| Error::signing(path, cause))
    }

    /// Parses an unencrypted PEM EC private key (PKCS#8 or SEC1).
    ///
    /// # Errors
    /// An encrypted key, or a key that is not EC on P-256, P-384 or P-521.
    pub fn from_pem(pem: &str) -> std::result::Result<Self, String> {
        use p256::elliptic_curve::SecretKey;
        if pem.contains("ENCRYPTED") {
            return Err(
                "an encrypted private key; decrypt it first (openssl pkey -in K -out K2)".into(),
            );
        }
        // SEC1 keys name their curve inside the key; PKCS#8 keys in the algorithm parameters.
        // Each crate refuses the other curves' keys, so the first that parses is the curve.
        if let Ok(k) = SecretKey::<p256::NistP256>::from_pkcs8_pem(pem)
            .or_else(|_| SecretKey::<p256::NistP256>::from_sec1_pem(pem))
        {
            return Ok(Self::P256(k.into()));
        }
        if let Ok(k) = SecretKey::<p384::NistP384>::from_pkcs8_pem(pem)
            .or_else(|_| SecretKey::<p384::NistP384>::from_sec1_pem(pem))
        {
            return Ok(Self::P384(k.into()));
        }
        if let Ok(k) = SecretKey::<p521::NistP521>::from_pkcs8_pem(pem)
            .or_else(|_| SecretKey::<p521::NistP521>::from_sec1_pem(pem))
        {
            let k = p521::ecdsa::SigningKey::from_bytes(&k.to_bytes())
                .map_err(|e| format!("not a usable P-521 private key: {e}"))?;
            return Ok(Self::P521(k));
        }
        Err(
            "not an unencrypted PEM EC private key on P-256, P-384 or P-521 (PKCS#8 or SEC1)"
                .into(),
        )
    }

    /// The matching public key.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::P256(k) => PublicKey::P256(*k.verifying_key()),
            Self::P384(k) => PublicKey::P384(*k.verifying_key()),
            Self::P521(k) => PublicKey::P521(p521::ecdsa::VerifyingKey::from(k)),
        }
    }

    /// A DER signature of `message` with the curve's hash.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            Self::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            Self::P521(k) => {
                let sig: p521::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_curve_signs_and_verifies_with_its_own_hash_only() {
        let keys = [
            PrivateKey::P256(p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap()),
            PrivateKey::P384(p384::ecdsa::SigningKey::from_slice(&[7; 48]).unwrap()),
            PrivateKey::P521(p521::ecdsa::SigningKey::from_slice(&[1; 66]).unwrap()),
        ];
        for key in &keys {
            let public = key.public_key();
            let sig = key.sign(b"payload");
            assert!(public.verifies(b"payload", &sig), "{}", public.algorithm());
            assert!(!public.verifies(b"payloae", &sig), "{}", public.algorithm());
            let mut flipped = sig.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert!(!public.verifies(b"payload", &flipped));
            assert!(!public.verifies(b"payload", b"not der"));
            // The PEM round-trips to the same curve.
            let again = PublicKey::from_pem(&public.to_pem().unwrap()).unwrap();
            assert_eq!(again.algorithm(), public.algorithm());
            assert_eq!(again.hint().unwrap(), public.hint().unwrap());
        }
        // A P-256 signature never verifies under a P-384 key.
        let sig = keys[0].sign(b"payload");
        assert!(!keys[1].public_key().verifies(b"payload", &sig));
    }

    #[test]
    fn refuses_keys_it_cannot_use() {
        assert!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----";
        assert!(
            PrivateKey::from_pem(encrypted)
                .unwrap_err()
                .contains("encrypted")
        );
    }
}
