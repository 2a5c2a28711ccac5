//! Protocol simulators: in-process stand-ins for payment channels that verify our signed
//! requests and send signed (and, for WeChat Pay, encrypted) notifications as the channel does.
//!
//! Behind the `simulators` feature of this crate; never part of a production build.

pub mod alipay;
pub mod wechatpay;

use rsa::pkcs8::EncodePrivateKey;
use rsa::RsaPrivateKey;

use crate::rsa_sign::SigningKey;

/// A fresh `bits`-bit RSA key. Key *generation* stays on the `rsa` crate (test-only: *ring* does
/// not generate RSA keys); signing with it goes through *ring* ([`signing_key_of`]).
///
/// # Panics
/// If the operating system's random source fails (start-up of a test tool).
pub fn generate_key(bits: usize) -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).expect("RSA key generation with the OS generator")
}

/// `key` loaded into *ring* (through its PKCS#8 DER), so that simulators sign exactly as the
/// adapters do.
///
/// # Panics
/// If *ring* refuses the key (never for a key of [`generate_key`] with 2048, 3072 or 4096 bits).
pub fn signing_key_of(key: &RsaPrivateKey) -> SigningKey {
    let der = key.to_pkcs8_der().expect("PKCS#8 encoding of a generated key");
    SigningKey::from_pkcs8_der(der.as_bytes()).expect("ring loads a generated RSA key")
}
