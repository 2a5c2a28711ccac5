//! `AEAD_AES_256_GCM`, the encryption of a notification's `resource` (RFC 5116).
//!
//! Key: the merchant's 32-byte APIv3 key. Nonce: `resource.nonce`, 12 bytes of text.
//! Associated data: `resource.associated_data` (may be empty). `resource.ciphertext` is the
//! base64 of the ciphertext followed by the 16-byte tag
//! (<https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_2.shtml>).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// The only `resource.algorithm` WeChat Pay uses.
pub const ALGORITHM: &str = "AEAD_AES_256_GCM";
/// Length of `resource.nonce`, bytes.
pub const NONCE_LEN: usize = 12;

/// Why a resource could not be decrypted or encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    /// `nonce` is not [`NONCE_LEN`] bytes.
    #[error("nonce must be {NONCE_LEN} bytes, got {0}")]
    NonceLength(usize),
    /// `ciphertext` is not base64.
    #[error("ciphertext is not base64")]
    Base64,
    /// Wrong key, nonce or associated data, or altered ciphertext: the tag did not verify.
    #[error("authentication tag did not verify")]
    Tag,
}

/// Decrypts a notification resource to its plaintext (JSON) bytes.
///
/// # Errors
/// [`AeadError`]: wrong nonce length, bad base64, or a tag that does not verify.
pub fn decrypt(key: &[u8; 32], nonce: &str, associated_data: &str, ciphertext: &str) -> Result<Vec<u8>, AeadError> {
    open::<Aes256Gcm>(key, nonce, associated_data, ciphertext)
}

/// Encrypts `plaintext` as WeChat Pay does: base64(ciphertext ‖ tag). Used by the simulator and
/// tests.
///
/// # Errors
/// [`AeadError::NonceLength`].
pub fn encrypt(key: &[u8; 32], nonce: &str, associated_data: &str, plaintext: &[u8]) -> Result<String, AeadError> {
    let nonce = nonce_of(nonce)?;
    let sealed = Aes256Gcm::new(key.into())
        .encrypt(
            nonce,
            Payload {
                msg: plaintext,
                aad: associated_data.as_bytes(),
            },
        )
        .map_err(|_| AeadError::Tag)?;
    Ok(BASE64.encode(sealed))
}

fn nonce_of(nonce: &str) -> Result<&Nonce<aes_gcm::aead::consts::U12>, AeadError> {
    let bytes = nonce.as_bytes();
    if bytes.len() != NONCE_LEN {
        return Err(AeadError::NonceLength(bytes.len()));
    }
    Ok(Nonce::from_slice(bytes))
}

/// The framing shared by every key size (generic so a test can check it against WeChat Pay's
/// published AES-128 vector).
fn open<C>(key: &[u8], nonce: &str, associated_data: &str, ciphertext: &str) -> Result<Vec<u8>, AeadError>
where
    C: Aead + KeyInit + aes_gcm::AeadCore<NonceSize = aes_gcm::aead::consts::U12>,
{
    let nonce = nonce_of(nonce)?;
    let sealed = BASE64.decode(ciphertext.trim()).map_err(|_| AeadError::Base64)?;
    let cipher = C::new_from_slice(key).map_err(|_| AeadError::Tag)?;
    cipher
        .decrypt(
            nonce,
            Payload {
                msg: &sealed,
                aad: associated_data.as_bytes(),
            },
        )
        .map_err(|_| AeadError::Tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn encrypt_then_decrypt_gives_the_plaintext() {
        let c = encrypt(KEY, "0123456789ab", "transaction", b"{\"a\":1}").unwrap();
        assert_eq!(decrypt(KEY, "0123456789ab", "transaction", &c).unwrap(), b"{\"a\":1}");
        let c = encrypt(KEY, "0123456789ab", "", b"x").unwrap();
        assert_eq!(decrypt(KEY, "0123456789ab", "", &c).unwrap(), b"x");
    }

    #[test]
    fn wrong_key_nonce_associated_data_or_tag_are_refused() {
        let c = encrypt(KEY, "0123456789ab", "transaction", b"{}").unwrap();
        let other = b"0123456789abcdef0123456789abcdeX";
        assert_eq!(decrypt(other, "0123456789ab", "transaction", &c), Err(AeadError::Tag));
        assert_eq!(decrypt(KEY, "0123456789aX", "transaction", &c), Err(AeadError::Tag));
        assert_eq!(decrypt(KEY, "0123456789ab", "refund", &c), Err(AeadError::Tag));
        let mut sealed = BASE64.decode(&c).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(
            decrypt(KEY, "0123456789ab", "transaction", &BASE64.encode(sealed)),
            Err(AeadError::Tag)
        );
        assert_eq!(decrypt(KEY, "short", "transaction", &c), Err(AeadError::NonceLength(5)));
        assert_eq!(
            decrypt(KEY, "0123456789ab", "transaction", "%%%"),
            Err(AeadError::Base64)
        );
    }

    /// WeChat Pay's own SDK (wechatpay-apiv3/wechatpay-go, `utils/aes_test.go`) publishes a
    /// vector with a 16-byte key, so AES-128-GCM; it checks the framing we share with AES-256:
    /// text nonce and associated data, base64 of ciphertext ‖ tag.
    #[test]
    fn framing_matches_wechatpay_published_vector() {
        let plain = open::<aes_gcm::Aes128Gcm>(
            b"testAPIv3Key0000",
            "wCq51qZv4Yfg",
            "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
            "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
        )
        .unwrap();
        assert_eq!(plain, b"Hello World");
        assert_eq!(
            open::<aes_gcm::Aes128Gcm>(
                b"testAPIv3Key1111",
                "wCq51qZv4Yfg",
                "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
                "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
            ),
            Err(AeadError::Tag)
        );
    }
}
