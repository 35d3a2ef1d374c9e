//! The Sigstore bundle (v0.3, protobuf JSON) that OpenSSF model signing writes, reduced to what
//! a key-based verifier reads, and the DSSE envelope inside it.
//!
//! - Bundle: <https://github.com/sigstore/protobuf-specs/blob/main/protos/sigstore_bundle.proto>
//! - DSSE v1.0 and its pre-authentication encoding (PAE):
//!   <https://github.com/secure-systems-lab/dsse/blob/v1.0.0/protocol.md>

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The media type the reference implementation writes and requires.
pub const MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The same version in the newer spelling (sigstore-python 3+ writes it for keyless bundles).
const MEDIA_TYPE_ALT: &str = "application/vnd.dev.sigstore.bundle+json;version=0.3";
/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A Sigstore bundle.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// The bundle's media type (its version).
    pub media_type: String,
    /// Keys, certificates and transparency-log entries.
    #[serde(default)]
    pub verification_material: Material,
    /// The signed envelope (absent in a bundle that signs a message digest instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsse_envelope: Option<Envelope>,
    /// A signature over a message digest: never used here (the digest is not trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_signature: Option<serde_json::Value>,
}

/// `VerificationMaterial`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Material {
    /// A hint naming the public key; written, never trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<KeyHint>,
    /// Certificate mode: the signing certificate first, then intermediates
    /// ([`CertificateChain`]); read only when verifying in certificate mode, so that its shape
    /// never decides whether a key-signed bundle parses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509_certificate_chain: Option<serde_json::Value>,
    /// Keyless mode (Fulcio): one short-lived certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<serde_json::Value>,
    /// Transparency-log (Rekor) entries.
    #[serde(default)]
    pub tlog_entries: Vec<serde_json::Value>,
}

/// `X509CertificateChain`: the signing certificate first, then the certificates that link it
/// to a trust anchor (never trusted themselves).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CertificateChain {
    /// The certificates, in order.
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
}

/// `X509Certificate`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawCertificate {
    /// Base64 of the DER certificate.
    pub raw_bytes: String,
}

/// `PublicKeyIdentifier`.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyHint {
    /// SHA-256 of the PEM public key, hex (the reference implementation's convention).
    #[serde(default)]
    pub hint: Option<String>,
}

/// A DSSE envelope.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the payload bytes.
    pub payload: String,
    /// The payload's type.
    pub payload_type: String,
    /// Signatures over `PAE(payload_type, payload)`.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Base64 of the DER signature.
    pub sig: String,
    /// Unused by key-based verification.
    #[serde(default)]
    pub keyid: Option<String>,
}

/// DSSE's pre-authentication encoding: `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`,
/// lengths in ASCII decimal. What is signed is this, never the bare payload, so that a payload
/// cannot be replayed under another type.
#[must_use]
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let head = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    );
    let mut out = Vec::with_capacity(head.len() + payload.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Base64 in either alphabet: protobuf JSON writes the standard one with padding, but its
/// parsers accept URL-safe and unpadded input, so a conforming writer may use them.
///
/// # Errors
/// Text that is base64 in neither alphabet.
pub fn decode_b64(text: &str) -> std::result::Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let trimmed = text.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .or_else(|_| STANDARD.decode(text))
        .or_else(|_| URL_SAFE.decode(text))
        .map_err(|_| "not base64".to_owned())
}

/// Standard base64 with padding, as protobuf JSON writes bytes.
#[must_use]
pub fn encode_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Bundle {
    /// Parses a bundle and checks what every key-based verification needs: a v0.3 media type
    /// and a DSSE envelope with an in-toto payload and at least one signature.
    ///
    /// # Errors
    /// A message on what is missing or of an unsupported kind.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let bundle: Self = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a Sigstore bundle (JSON): {e}"))?;
        if bundle.media_type != MEDIA_TYPE && bundle.media_type != MEDIA_TYPE_ALT {
            return Err(format!(
                "media type {:?} is not a v0.3 Sigstore bundle ({MEDIA_TYPE})",
                bundle.media_type
            ));
        }
        let Some(envelope) = &bundle.dsse_envelope else {
            return Err(
                "the bundle has no DSSE envelope (a message-digest bundle is not a model signature)"
                    .into(),
            );
        };
        if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(format!(
                "DSSE payload type {:?} is not an in-toto statement ({IN_TOTO_PAYLOAD_TYPE})",
                envelope.payload_type
            ));
        }
        if envelope.signatures.is_empty() {
            return Err("the DSSE envelope carries no signature".into());
        }
        Ok(bundle)
    }

    /// Whether this is a keyless Sigstore bundle: a Fulcio certificate with a transparency-log
    /// entry, which only a verifier holding the Sigstore trust root can check.
    #[must_use]
    pub fn is_keyless(&self) -> bool {
        let m = &self.verification_material;
        m.certificate.is_some() || (!m.tlog_entries.is_empty() && m.public_key.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // protocol.md, "Test vectors": type "http://example.com/HelloWorld", body "hello world".
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn base64_in_either_alphabet() {
        assert_eq!(decode_b64("+/8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_b64("-_8").unwrap(), vec![0xfb, 0xff]);
        assert!(decode_b64("!!").is_err());
    }

    #[test]
    fn refuses_bundles_that_are_not_key_signed_dsse() {
        let base = |media: &str, payload_type: &str| {
            format!(
                r#"{{"mediaType":"{media}","verificationMaterial":{{"publicKey":{{"hint":"x"}}}},
                "dsseEnvelope":{{"payload":"e30=","payloadType":"{payload_type}","signatures":[{{"sig":"AA=="}}]}}}}"#
            )
        };
        assert!(Bundle::parse(base(MEDIA_TYPE, IN_TOTO_PAYLOAD_TYPE).as_bytes()).is_ok());
        let old = base(
            "application/vnd.dev.sigstore.bundle+json;version=0.2",
            IN_TOTO_PAYLOAD_TYPE,
        );
        assert!(Bundle::parse(old.as_bytes()).unwrap_err().contains("v0.3"));
        let other = base(MEDIA_TYPE, "text/plain");
        assert!(
            Bundle::parse(other.as_bytes())
                .unwrap_err()
                .contains("in-toto")
        );
        assert!(
            Bundle::parse(br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#)
                .unwrap_err()
                .contains("no DSSE envelope")
        );
        assert!(Bundle::parse(b"[").is_err());
    }
}
