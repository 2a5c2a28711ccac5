//! RSASSA-PKCS1-v1_5 with SHA-256 signing, shared by both channels: WeChat Pay API v3's
//! `WECHATPAY2-SHA256-RSA2048` request signature
//! (<https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_0.shtml>) and Alipay's RSA2
//! (SHA256withRSA, <https://opendocs.alipay.com/common/02kf5q>) are the same algorithm.
//!
//! Every private-key operation goes through *ring* ([`ring::signature::RsaKeyPair`],
//! [`ring::signature::RSA_PKCS1_SHA256`]), which is constant-time. The `rsa` crate is used here
//! only to *parse* key files (PEM labels, the PKCS#8 wrapper, the PKCS#1 structure) and to hold
//! the public half for verification; it never computes with a private key (`rsa` 0.9 carries
//! RUSTSEC-2023-0071, a timing side channel in its private-key arithmetic).

use std::fmt;
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rsa::pkcs1::der::asn1::Null;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::{PrivateKeyInfo, SecretDocument};
use rsa::RsaPublicKey;

/// The smallest modulus we sign with, bits. Both channels mandate RSA-2048 and *ring* refuses
/// anything shorter.
pub const RSA_SIGNING_BITS_MIN: usize = 2048;

/// PEM label of a PKCS#8 private key.
const PKCS8_LABEL: &str = "PRIVATE KEY";
/// PEM label of a PKCS#1 RSA private key.
const PKCS1_LABEL: &str = "RSA PRIVATE KEY";
/// Signed at load time, so that a key whose components do not fit together fails when the
/// configuration is read rather than at the first payment.
const SELF_TEST_MESSAGE: &[u8] = b"payledger signing key self-test";

/// Why a private key cannot be used to sign. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    /// Not a PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`) RSA private key,
    /// or a multi-prime one.
    #[error("not a PKCS#8 or PKCS#1 RSA private key")]
    Format,
    /// A well-formed RSA key shorter than [`RSA_SIGNING_BITS_MIN`].
    #[error("{bits}-bit RSA key; at least {RSA_SIGNING_BITS_MIN} bits are needed")]
    TooShort {
        /// The modulus size, bits (whole bytes, as `rsa`'s `size() * 8` counts them).
        bits: usize,
    },
    /// A well-formed RSA key of a usable size that *ring* refuses: a modulus over 4096 bits or
    /// not a multiple of 512, a public exponent under 65537, components that do not
    /// fit together, or a failed test signature. The reason is *ring*'s word for it.
    #[error("RSA key refused ({0}); use a 2048-, 3072- or 4096-bit key with public exponent 65537")]
    Rejected(String),
}

/// A signature could not be made. *ring* says only that it failed (`Unspecified`); with a key
/// that passed [`SigningKey`]'s load-time test signature this is not expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RSA signing failed: {0}")]
pub struct SignError(pub(crate) String);

/// An RSA private key that makes RSASSA-PKCS1-v1_5 SHA-256 signatures (WeChat Pay
/// `SHA256-RSA2048`, Alipay RSA2), held by *ring* ([`RsaKeyPair`]), with its public half.
///
/// Built from PEM ([`SigningKey::from_pem`]: `BEGIN PRIVATE KEY` PKCS#8 or `BEGIN RSA PRIVATE
/// KEY` PKCS#1) or DER ([`SigningKey::from_pkcs8_der`], [`SigningKey::from_pkcs1_der`]); the
/// modulus is 2048 to 4096 bits (a multiple of 512), the public exponent at least 65537. Loading
/// signs a test message, so a key that loads can sign. Errors: [`SigningKeyError`].
///
/// Cloning shares the key. `Debug` shows the modulus size only, never key material.
#[derive(Clone)]
pub struct SigningKey {
    pair: Arc<RsaKeyPair>,
    public: RsaPublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from PEM text: PKCS#8 (`-----BEGIN PRIVATE KEY-----`) or PKCS#1
    /// (`-----BEGIN RSA PRIVATE KEY-----`). The PEM is decoded exactly as `rsa`'s
    /// `from_pkcs8_pem` / `from_pkcs1_pem` decode it (RFC 7468, strict).
    ///
    /// # Errors
    /// [`SigningKeyError::Format`] for anything else (other labels, encrypted keys, bad base64),
    /// else as [`SigningKey::from_pkcs8_der`] / [`SigningKey::from_pkcs1_der`].
    pub fn from_pem(pem: &str) -> Result<Self, SigningKeyError> {
        let (label, der) = SecretDocument::from_pem(pem).map_err(|_| SigningKeyError::Format)?;
        match label {
            PKCS8_LABEL => Self::from_pkcs8_der(der.as_bytes()),
            PKCS1_LABEL => Self::from_pkcs1_der(der.as_bytes()),
            _ => Err(SigningKeyError::Format),
        }
    }

    /// A key from PKCS#8 DER (`PrivateKeyInfo`, algorithm `rsaEncryption` with NULL parameters).
    ///
    /// The wrapper is read with the `pkcs8` crate, which accepts what `rsa` accepted before
    /// (PKCS#8 v1 and v2, with or without attributes; *ring*'s own `from_pkcs8` takes v1 only),
    /// and the RSA key inside goes to [`RsaKeyPair::from_der`].
    ///
    /// # Errors
    /// [`SigningKeyError::Format`], [`SigningKeyError::TooShort`], [`SigningKeyError::Rejected`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SigningKeyError> {
        let info = PrivateKeyInfo::try_from(der).map_err(|_| SigningKeyError::Format)?;
        info.algorithm
            .assert_algorithm_oid(rsa::pkcs1::ALGORITHM_OID)
            .map_err(|_| SigningKeyError::Format)?;
        if info.algorithm.parameters_any().map_err(|_| SigningKeyError::Format)? != Null.into() {
            return Err(SigningKeyError::Format);
        }
        Self::from_pkcs1_der(info.private_key)
    }

    /// A key from PKCS#1 DER (`RSAPrivateKey`, two primes), handed to [`RsaKeyPair::from_der`].
    ///
    /// # Errors
    /// [`SigningKeyError::Format`] if it is not a two-prime `RSAPrivateKey`,
    /// [`SigningKeyError::TooShort`] under [`RSA_SIGNING_BITS_MIN`] bits,
    /// [`SigningKeyError::Rejected`] if *ring* refuses it or the test signature fails.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, SigningKeyError> {
        // Only the structure is read here (for a clear error before ring's), no arithmetic.
        let structure = rsa::pkcs1::RsaPrivateKey::try_from(der).map_err(|_| SigningKeyError::Format)?;
        if structure.version() != rsa::pkcs1::Version::TwoPrime {
            return Err(SigningKeyError::Format);
        }
        let bits = structure.modulus.as_bytes().len() * 8;
        if bits < RSA_SIGNING_BITS_MIN {
            return Err(SigningKeyError::TooShort { bits });
        }
        let pair = RsaKeyPair::from_der(der).map_err(|rejected| SigningKeyError::Rejected(rejected.to_string()))?;
        // ring serialises the public half as a PKCS#1 `RSAPublicKey`.
        let public = RsaPublicKey::from_pkcs1_der(pair.public().as_ref())
            .map_err(|_| SigningKeyError::Rejected("public key not readable".into()))?;
        let key = Self {
            pair: Arc::new(pair),
            public,
        };
        key.sign_pkcs1_sha256(SELF_TEST_MESSAGE)
            .map_err(|_| SigningKeyError::Rejected("test signature failed".into()))?;
        Ok(key)
    }

    /// The modulus size, bits (whole bytes: 2048 for an RSA-2048 key).
    pub fn bits(&self) -> usize {
        self.pair.public().modulus_len() * 8
    }

    /// The public half, for verifying this key's signatures (e.g. a simulator checking ours).
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }

    /// The RSASSA-PKCS1-v1_5 SHA-256 signature of `message` (SHA-256 is computed here), as many
    /// bytes as the modulus. Deterministic: the same key and message give the same bytes.
    ///
    /// # Errors
    /// [`SignError`] when *ring* fails (it does not say why); never panics.
    pub fn sign_pkcs1_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut signature = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut signature)
            .map_err(|ring::error::Unspecified| SignError("ring could not sign with the key".into()))?;
        Ok(signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WECHAT_PKCS1: &str = include_str!("../tests/fixtures/wechatpay/wechatpay_doc_test_key.pem");
    const WECHAT_PKCS8: &str = include_str!("../tests/fixtures/wechatpay/wechatpay_doc_test_key_pkcs8.pem");
    const ALIPAY_PKCS1: &str = include_str!("../tests/fixtures/alipay/app_private_pkcs1.pem");
    const ALIPAY_PKCS8: &str = include_str!("../tests/fixtures/alipay/app_private_pkcs8.pem");
    const SHORT_1024: &str = include_str!("../tests/fixtures/alipay/short_1024_private.pem");

    #[test]
    fn pkcs1_and_pkcs8_pem_of_one_key_sign_identically() {
        for (pkcs1, pkcs8) in [(WECHAT_PKCS1, WECHAT_PKCS8), (ALIPAY_PKCS1, ALIPAY_PKCS8)] {
            assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY") && pkcs8.contains("BEGIN PRIVATE KEY"));
            let a = SigningKey::from_pem(pkcs1).unwrap();
            let b = SigningKey::from_pem(pkcs8).unwrap();
            assert_eq!(a.public_key(), b.public_key());
            assert_eq!(a.bits(), 2048);
            let message = b"GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n";
            let signature = a.sign_pkcs1_sha256(message).unwrap();
            assert_eq!(signature.len(), 256);
            assert_eq!(b.sign_pkcs1_sha256(message).unwrap(), signature);
            // Deterministic, and a different message gives a different signature.
            assert_eq!(a.sign_pkcs1_sha256(message).unwrap(), signature);
            assert_ne!(a.sign_pkcs1_sha256(b"other").unwrap(), signature);
        }
    }

    #[test]
    fn a_1024_bit_key_is_refused_with_its_size() {
        let err = SigningKey::from_pem(SHORT_1024).unwrap_err();
        assert_eq!(err, SigningKeyError::TooShort { bits: 1024 });
        assert_eq!(err.to_string(), "1024-bit RSA key; at least 2048 bits are needed");
    }

    #[test]
    fn other_pem_and_der_are_format_errors() {
        let public = include_str!("../tests/fixtures/alipay/app_public_spki.pem");
        for bad in [
            "",
            "not a key",
            public,
            &ALIPAY_PKCS8.replace("PRIVATE KEY", "EC PRIVATE KEY"),
        ] {
            assert_eq!(SigningKey::from_pem(bad).unwrap_err(), SigningKeyError::Format, "{bad}");
        }
        assert_eq!(
            SigningKey::from_pkcs8_der(b"\x30\x00").unwrap_err(),
            SigningKeyError::Format
        );
        assert_eq!(SigningKey::from_pkcs1_der(&[]).unwrap_err(), SigningKeyError::Format);
    }

    #[test]
    fn inconsistent_components_are_rejected_not_misread() {
        // The PKCS#1 structure of the fixture key with one byte of the private exponent changed:
        // well-formed, right size, wrong maths.
        let (_, der) = SecretDocument::from_pem(ALIPAY_PKCS1).unwrap();
        let mut der = der.as_bytes().to_vec();
        let structure = rsa::pkcs1::RsaPrivateKey::try_from(der.as_slice()).unwrap();
        let d = structure.private_exponent.as_bytes();
        let offset = d.as_ptr() as usize - der.as_ptr() as usize + d.len() / 2;
        der[offset] ^= 0x01;
        // ring checks d only loosely; CRT values are intact, so flip one in dP as well.
        let structure = rsa::pkcs1::RsaPrivateKey::try_from(der.as_slice()).unwrap();
        let dp = structure.exponent1.as_bytes();
        let offset = dp.as_ptr() as usize - der.as_ptr() as usize + dp.len() / 2;
        der[offset] ^= 0x01;
        assert!(matches!(
            SigningKey::from_pkcs1_der(&der),
            Err(SigningKeyError::Rejected(_))
        ));
    }

    #[test]
    fn debug_shows_the_size_only() {
        let key = SigningKey::from_pem(ALIPAY_PKCS8).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey { bits: 2048, .. }");
    }
}
