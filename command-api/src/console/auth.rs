//! The console's credentials: passwords (argon2id), TOTP second factors (RFC 6238), session
//! tokens and CSRF tokens. Libraries do the cryptography (`argon2`, `totp-rs`, `sha2`); this module
//! only chooses parameters and shapes.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Secret, TOTP};

/// The session cookie's name. Its value is a random token; the server keeps its SHA-256.
pub const SESSION_COOKIE: &str = "payledger_console";
/// The language preference cookie (`en`, `zh-CN`); not a credential.
pub const LANG_COOKIE: &str = "payledger_lang";
/// A session unused this long ends (PCI DSS 8.2.8: 15 minutes of idleness; we take 30 for the
/// console's read-mostly use and say so in docs/console.md).
pub const SESSION_IDLE_SECONDS: i64 = 30 * 60;
/// A session ends this long after its login, used or not.
pub const SESSION_ABSOLUTE_SECONDS: i64 = 12 * 60 * 60;
/// Shortest password a user may choose (NIST SP 800-63B §3.1.1.2 asks at least 8; PCI DSS 8.3.6
/// 12).
pub const PASSWORD_CHARS_MIN: usize = 12;
/// Longest password accepted (hashing is deliberately slow; no one types more).
pub const PASSWORD_CHARS_MAX: usize = 256;
/// TOTP parameters every authenticator app understands: SHA-1, 6 digits, 30-second steps; a code
/// of the step before or after is accepted (clock skew).
const TOTP_DIGITS: usize = 6;
const TOTP_STEP_SECONDS: u64 = 30;
const TOTP_SKEW: u8 = 1;
/// Bytes of a TOTP secret (RFC 4226 §4 recommends 160 bits).
const TOTP_SECRET_BYTES: usize = 20;
/// The issuer shown in authenticator apps.
pub const TOTP_ISSUER: &str = "payledger";

/// The PHC string of `password`'s argon2id hash (the `argon2` crate's defaults, which are
/// OWASP's: 19 MiB, 2 passes, 1 lane), salted at random.
///
/// # Errors
/// The hasher's error (only for parameters out of range: not with the defaults).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Whether `password` matches the PHC string `hash` (any argon2 variant and parameters it
/// names). A hash that does not parse matches nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// `text` as a console login: trimmed, lower case, one `@` with something before it and a dot
/// after it, at most 254 characters, no spaces or control characters; `None` otherwise.
pub fn normalise_email(text: &str) -> Option<String> {
    let email = text.trim().to_lowercase();
    let shaped = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.contains('@') && domain.contains('.'));
    shaped.then_some(email)
}

/// A one-time password for a new user: 18 random bytes, base64url (24 characters).
pub fn one_time_password() -> String {
    random_token(18)
}

/// A new session token (256 random bits, base64url), sent only in the cookie.
pub fn session_token() -> String {
    random_token(32)
}

/// A new CSRF token (128 random bits, base64url), one per session.
pub fn csrf_token() -> String {
    random_token(16)
}

fn random_token(bytes: usize) -> String {
    let mut raw = vec![0_u8; bytes];
    rand::thread_rng().fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

/// What the database keeps of a session token: hex SHA-256.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether two secrets are equal, in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh TOTP secret, base32 (RFC 4648, no padding), as authenticator apps take it.
pub fn new_totp_secret() -> String {
    let mut raw = [0_u8; TOTP_SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut raw);
    Secret::Raw(raw.to_vec()).to_encoded().to_string()
}

/// The `otpauth://` URI of `secret` for `email` (Google Authenticator's key URI format), for a
/// QR code or a manual entry.
pub fn otpauth_uri(email: &str, secret: &str) -> String {
    let label = url::form_urlencoded::byte_serialize(format!("{TOTP_ISSUER}:{email}").as_bytes()).collect::<String>();
    format!(
        "otpauth://totp/{label}?secret={secret}&issuer={TOTP_ISSUER}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECONDS}"
    )
}

fn totp(secret: &str) -> Option<TOTP> {
    let raw = Secret::Encoded(secret.to_string()).to_bytes().ok()?;
    TOTP::new(Algorithm::SHA1, TOTP_DIGITS, TOTP_SKEW, TOTP_STEP_SECONDS, raw).ok()
}

/// The step (unix time ÷ 30) of the code `code` for base32 `secret` at `now_unix`, if the code is
/// right for the step before, at or after now; `None` otherwise. The caller refuses a step not
/// newer than the last one accepted (a code is used once).
pub fn totp_step(secret: &str, code: &str, now_unix: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = totp(secret)?;
    let now_step = now_unix / TOTP_STEP_SECONDS;
    (now_step.saturating_sub(u64::from(TOTP_SKEW))..=now_step + u64::from(TOTP_SKEW))
        .find(|step| same_secret(&totp.generate(step * TOTP_STEP_SECONDS), code))
}

/// The code of base32 `secret` at `unix` (for tests and the simulator of an authenticator).
pub fn totp_code(secret: &str, unix: u64) -> Option<String> {
    totp(secret).map(|t| t.generate(unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse batterz"));
        assert!(!verify_password("not a hash", "correct horse battery"));
        assert_ne!(hash, hash_password("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn totp_accepts_the_neighbouring_steps_and_names_the_step() {
        let secret = new_totp_secret();
        assert_eq!(secret.len(), 32, "160 bits in base32");
        let now = 1_764_000_000_u64;
        let step = now / 30;
        let code = totp_code(&secret, now).unwrap();
        assert_eq!(totp_step(&secret, &code, now), Some(step));
        assert_eq!(totp_step(&secret, &code, now + 30), Some(step), "one step late");
        assert_eq!(totp_step(&secret, &code, now + 90), None, "three steps late");
        assert_eq!(totp_step(&secret, "12345", now), None);
        assert_eq!(totp_step(&secret, "abcdef", now), None);
        // RFC 6238 appendix B, SHA-1, T = 59: 94287082 (8 digits); its last 6 are what a
        // 6-digit code shows.
        let rfc_secret = Secret::Raw(b"12345678901234567890".to_vec()).to_encoded().to_string();
        assert_eq!(totp_code(&rfc_secret, 59).unwrap(), "287082");
    }

    #[test]
    fn e_mail_addresses_are_normalised_or_refused() {
        assert_eq!(normalise_email(" Ops@Example.COM "), Some("ops@example.com".into()));
        for bad in ["", "ops", "@example.com", "ops@example", "o ps@example.com", "a@b@c.d"] {
            assert_eq!(normalise_email(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, b) = (session_token(), session_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, &b));
        let uri = otpauth_uri("ops@example.com", "JBSWY3DPEHPK3PXP");
        assert!(
            uri.starts_with("otpauth://totp/payledger%3Aops%40example.com?secret=JBSWY3DPEHPK3PXP"),
            "{uri}"
        );
    }
}
