//! Secrets at rest: merchants' webhook secrets and the sandbox's callback secret are stored
//! sealed, never in plain text, on both backends.
//!
//! Envelope encryption with ChaCha20-Poly1305 (*ring*'s AEAD):
//! - each secret is encrypted with its own random 256-bit data key, with the place it is
//!   stored as associated data (e.g. `merchants.webhook_secret/shop1`), so a sealed value
//!   copied to another row or setting does not open;
//! - the data key is wrapped (encrypted) with the operator's key-encryption key, named by a key
//!   id. Rotating the operator's key re-wraps data keys only ([`Keyring::rewrap`]).
//!
//! Stored form: `sealed1:<key id>:<base64url(nonce ‖ wrapped data key)>:<base64url(nonce ‖
//! ciphertext ‖ tag)>` (base64url without padding; nonces are 96-bit random, never reused
//! under one data key since each data key seals one value once).
//!
//! The operator's keys come from a key file or the `PAYLEDGER_SECRETS_KEY` environment variable
//! ([`Keyring::parse`]: one `<key id> <base64 of 32 bytes>` per line or `;`-separated, the first
//! is current, the others only open older values). A key file others may read or write, or its
//! group may write, is refused ([`Keyring::load_file`]); a missing key file is created with mode
//! 0600 ([`Keyring::load_or_create`]) only while the database holds no sealed secret yet.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of a sealed value (format version 1).
pub const SEALED_PREFIX: &str = "sealed1:";
/// Bytes of a key-encryption or data key.
pub const KEY_BYTES: usize = 32;

/// Why a keyring could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("secrets key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secrets key file {path} is open to other users (mode {mode:o}: others may read or write \
         it, or its group may write it); make it private: chmod 600 {path}"
    )]
    Exposed { path: String, mode: u32 },
    #[error("secrets key {0}: expected `<key id> <base64 of 32 bytes>` per line")]
    Malformed(String),
    #[error("the secrets key names no key")]
    Empty,
}

/// Where the process's secrets key comes from: `serve`/`merchants add` flag
/// `--secrets-key-file` (`PAYLEDGER_SECRETS_KEY_FILE`, default [`KEY_FILE_DEFAULT`], created
/// when missing) or the key text itself in `PAYLEDGER_SECRETS_KEY`, which wins when set.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A key file ([`Keyring::load_or_create`]).
    File(std::path::PathBuf),
    /// The key text ([`Keyring::parse`]).
    Inline(String),
}

/// The default key file, in the working directory (beside the default SQLite database).
pub const KEY_FILE_DEFAULT: &str = "payledger.key";
/// The environment variable holding the key text itself ([`KeySource::Inline`]).
pub const SECRETS_KEY_ENV: &str = "PAYLEDGER_SECRETS_KEY";

impl Default for KeySource {
    fn default() -> Self {
        Self::File(KEY_FILE_DEFAULT.into())
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Inline(_) => f.write_str("Inline(..)"),
        }
    }
}

impl KeySource {
    /// The keyring of an installation that already holds sealed secrets: a missing key file is
    /// an error here, never created (a new key could open none of them).
    ///
    /// # Errors
    /// As [`Keyring::load_file`] or [`Keyring::parse`].
    pub fn load_existing(&self) -> Result<Keyring, KeyringError> {
        match self {
            Self::Inline(text) => Keyring::parse(text),
            Self::File(path) => Keyring::load_file(path),
        }
    }

    /// The keyring; a missing key file is created, which is logged (warning): its owner must
    /// keep it and give it to every process of the installation. For a new installation only
    /// (see [`KeySource::load_existing`]).
    ///
    /// # Errors
    /// As [`Keyring::load_or_create`] or [`Keyring::parse`].
    pub fn load(&self) -> Result<Keyring, KeyringError> {
        match self {
            Self::Inline(text) => Keyring::parse(text),
            Self::File(path) => {
                let (keyring, created) = Keyring::load_or_create(path)?;
                if created {
                    tracing::warn!(
                        path = %path.display(),
                        "created a new secrets key file; back it up apart from the database, and give every \
                         payledger process of this installation the same file"
                    );
                }
                Ok(keyring)
            }
        }
    }
}

/// Why a stored secret could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "a secret is sealed with key id {0:?}, which this process does not have: give every \
         process the same secrets key (--secrets-key-file / PAYLEDGER_SECRETS_KEY), old key ids too"
    )]
    UnknownKey(String),
    #[error("a sealed secret does not open (tampered, moved, or the wrong key under its id)")]
    Corrupt,
}

/// The operator's key-encryption keys: one current (seals), any number of older ones (open).
pub struct Keyring {
    current: String,
    keys: HashMap<String, LessSafeKey>,
    rng: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("ids", &ids)
            .finish()
    }
}

impl Keyring {
    /// A keyring from its text: `<key id> <base64 of 32 bytes>` entries separated by newlines
    /// or `;`; blank lines and `#` comments are skipped; the first entry is current. Key ids
    /// are 1–32 characters of `[A-Za-z0-9_-]`.
    ///
    /// # Errors
    /// [`KeyringError::Malformed`] naming the entry (never the key), [`KeyringError::Empty`].
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let mut current = None;
        let mut keys = HashMap::new();
        for (n, entry) in text.split(['\n', ';']).map(str::trim).enumerate() {
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let malformed = || KeyringError::Malformed(format!("entry {}", n + 1));
            let (id, key) = entry.split_once(char::is_whitespace).ok_or_else(malformed)?;
            let valid_id =
                (1..=32).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            let bytes = STANDARD.decode(key.trim()).map_err(|_| malformed())?;
            if !valid_id || bytes.len() != KEY_BYTES || keys.contains_key(id) {
                return Err(malformed());
            }
            let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| malformed())?;
            keys.insert(id.to_string(), LessSafeKey::new(key));
            current.get_or_insert_with(|| id.to_string());
        }
        Ok(Self {
            current: current.ok_or(KeyringError::Empty)?,
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// A keyring from the file at `path`.
    ///
    /// # Errors
    /// [`KeyringError::Exposed`] when others may read or write it, or its group may write it
    /// (and so put in a key of its own);
    /// [`KeyringError::Io`] when it cannot be read; else as [`Keyring::parse`].
    pub fn load_file(path: &Path) -> Result<Self, KeyringError> {
        let io = |source| KeyringError::Io {
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o027 != 0 {
                return Err(KeyringError::Exposed {
                    path: path.display().to_string(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        Self::parse(&std::fs::read_to_string(path).map_err(io)?)
    }

    /// As [`Keyring::load_file`]; when the file does not exist, it is created (mode 0600) with
    /// one new random key, id `k<unix seconds>`, and `true` is returned with the keyring.
    /// Processes starting at once on a shared volume agree: the file appears whole or not at
    /// all (written aside, then linked into place), and a process that loses the race reads
    /// the winner's.
    ///
    /// # Errors
    /// As [`Keyring::load_file`]; [`KeyringError::Io`] when the file cannot be created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyringError> {
        match Self::load_file(path) {
            Err(KeyringError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let text = format!(
                    "# payledger secrets key: keep it private and back it up apart from the database.\n{}\n",
                    Self::new_entry(&format!("k{}", chrono::Utc::now().timestamp()))
                );
                let io = |source| KeyringError::Io {
                    path: path.display().to_string(),
                    source,
                };
                match create_whole(path, &text) {
                    Ok(()) => Ok((Self::parse(&text)?, true)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((Self::load_file(path)?, false)),
                    Err(e) => Err(io(e)),
                }
            }
            other => other.map(|k| (k, false)),
        }
    }

    /// A new keyring entry `<id> <base64 of 32 random bytes>`, for a key file or the
    /// environment variable.
    pub fn new_entry(id: &str) -> String {
        let mut key = [0_u8; KEY_BYTES];
        SystemRandom::new().fill(&mut key).expect("the system's random source");
        format!("{id} {}", STANDARD.encode(key))
    }

    /// The current key's id (the one [`Keyring::seal`] uses).
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// Seals `secret` for the place `context` (e.g. `merchants.webhook_secret/shop1`).
    pub fn seal(&self, secret: &str, context: &str) -> String {
        let mut data_key = [0_u8; KEY_BYTES];
        self.rng.fill(&mut data_key).expect("the system's random source");
        let sealed_value = self.encrypt(&data_key_of(&data_key), secret.as_bytes(), context.as_bytes());
        let wrapped = self.encrypt(&self.keys[&self.current], &data_key, self.current.as_bytes());
        format!(
            "{SEALED_PREFIX}{}:{}:{}",
            self.current,
            URL_SAFE_NO_PAD.encode(wrapped),
            URL_SAFE_NO_PAD.encode(sealed_value)
        )
    }

    /// Opens a stored secret sealed for `context`. A value without the [`SEALED_PREFIX`] is
    /// one stored before sealing existed and is returned as it is ([`Keyring::seal_legacy`]
    /// seals those at start).
    ///
    /// # Errors
    /// [`SealError::UnknownKey`] for a key id this keyring lacks; [`SealError::Corrupt`] when it
    /// does not open.
    pub fn open(&self, stored: &str, context: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_string());
        };
        let (data_key, body) = self.unwrap_data_key(rest)?;
        let plain = decrypt(&data_key_of(&data_key), &body, context.as_bytes())?;
        String::from_utf8(plain).map_err(|_| SealError::Corrupt)
    }

    /// `stored` as it should be stored now: a legacy plain value sealed, a value sealed under
    /// an older key re-wrapped under the current one (the data key and ciphertext unchanged);
    /// `None` when it already is.
    ///
    /// # Errors
    /// As [`Keyring::open`].
    pub fn rewrap(&self, stored: &str, context: &str) -> Result<Option<String>, SealError> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(Some(self.seal(stored, context)));
        };
        if rest.split(':').next() == Some(self.current.as_str()) {
            // Opened anyway, so a value that would not open is reported now.
            self.open(stored, context)?;
            return Ok(None);
        }
        let (data_key, body) = self.unwrap_data_key(rest)?;
        decrypt(&data_key_of(&data_key), &body, context.as_bytes())?;
        let wrapped = self.encrypt(&self.keys[&self.current], &data_key, self.current.as_bytes());
        Ok(Some(format!(
            "{SEALED_PREFIX}{}:{}:{}",
            self.current,
            URL_SAFE_NO_PAD.encode(wrapped),
            URL_SAFE_NO_PAD.encode(body)
        )))
    }

    fn unwrap_data_key(&self, rest: &str) -> Result<([u8; KEY_BYTES], Vec<u8>), SealError> {
        let mut parts = rest.splitn(3, ':');
        let (Some(id), Some(wrapped), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::Corrupt);
        };
        let kek = self.keys.get(id).ok_or_else(|| SealError::UnknownKey(id.to_string()))?;
        let wrapped = URL_SAFE_NO_PAD.decode(wrapped).map_err(|_| SealError::Corrupt)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| SealError::Corrupt)?;
        let data_key: [u8; KEY_BYTES] = decrypt(kek, &wrapped, id.as_bytes())?
            .try_into()
            .map_err(|_| SealError::Corrupt)?;
        Ok((data_key, body))
    }

    /// `nonce ‖ ciphertext ‖ tag` of `plain` under `key` with `aad`.
    fn encrypt(&self, key: &LessSafeKey, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0_u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("the system's random source");
        let mut out = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out)
            .expect("ChaCha20-Poly1305 seals any input under 256 GiB");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&out);
        sealed
    }
}

fn data_key_of(bytes: &[u8; KEY_BYTES]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32 bytes is a ChaCha20 key"))
}

fn decrypt(key: &LessSafeKey, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < NONCE_LEN {
        return Err(SealError::Corrupt);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Corrupt)?;
    let mut body = body.to_vec();
    let plain_len = key
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| SealError::Corrupt)?
        .len();
    body.truncate(plain_len);
    Ok(body)
}

/// Creates `path` with `text`, readable and writable by its owner only (0600 on Unix), whole or
/// not at all: written to a file beside it, then hard-linked into place, which fails with
/// `AlreadyExists` when another process was first.
fn create_whole(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".new-{}", uuid::Uuid::new_v4().simple()));
    let aside = std::path::PathBuf::from(aside);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options.open(&aside).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&aside, path));
    let _ = std::fs::remove_file(&aside);
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(text: &str) -> Keyring {
        Keyring::parse(text).expect("keyring")
    }

    #[test]
    fn a_sealed_secret_opens_only_in_its_place_and_never_shows_in_the_stored_text() {
        let k = ring(&Keyring::new_entry("k1"));
        let stored = k.seal("whsec_abc", "merchants.webhook_secret/shop1");
        assert!(stored.starts_with("sealed1:k1:"), "{stored}");
        assert!(!stored.contains("whsec_abc"));
        assert_ne!(
            stored,
            k.seal("whsec_abc", "merchants.webhook_secret/shop1"),
            "fresh keys"
        );
        assert_eq!(k.open(&stored, "merchants.webhook_secret/shop1").unwrap(), "whsec_abc");
        assert_eq!(
            k.open(&stored, "merchants.webhook_secret/shop2"),
            Err(SealError::Corrupt)
        );
        let mut tampered = stored.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(
            k.open(&tampered, "merchants.webhook_secret/shop1"),
            Err(SealError::Corrupt)
        );
        let other = ring(&Keyring::new_entry("k1"));
        assert_eq!(
            other.open(&stored, "merchants.webhook_secret/shop1"),
            Err(SealError::Corrupt)
        );
        let stranger = ring(&Keyring::new_entry("k9"));
        assert_eq!(
            stranger.open(&stored, "merchants.webhook_secret/shop1"),
            Err(SealError::UnknownKey("k1".into()))
        );
        // A value stored before sealing existed reads as it is.
        assert_eq!(k.open("whsec_legacy", "x").unwrap(), "whsec_legacy");
    }

    #[test]
    fn rotation_rewraps_under_the_new_key_and_the_old_key_can_then_go() {
        let old = Keyring::new_entry("k1");
        let new = Keyring::new_entry("k2");
        let before = ring(&old);
        let stored = before.seal("s3cret", "settings/sandbox");
        let both = ring(&format!("{new}\n{old}"));
        assert_eq!(both.current_id(), "k2");
        assert_eq!(both.open(&stored, "settings/sandbox").unwrap(), "s3cret");
        let rewrapped = both.rewrap(&stored, "settings/sandbox").unwrap().expect("re-wrapped");
        assert!(rewrapped.starts_with("sealed1:k2:"));
        assert_eq!(
            both.rewrap(&rewrapped, "settings/sandbox").unwrap(),
            None,
            "already current"
        );
        let only_new = ring(&new);
        assert_eq!(only_new.open(&rewrapped, "settings/sandbox").unwrap(), "s3cret");
        let legacy = both.rewrap("plain", "settings/sandbox").unwrap().expect("sealed");
        assert_eq!(only_new.open(&legacy, "settings/sandbox").unwrap(), "plain");
    }

    #[test]
    fn malformed_keys_are_refused_without_showing_them() {
        for text in ["", "# only a comment", "k1", "k1 notbase64!", "k1 AAAA", "bad id! AAAA"] {
            let err = Keyring::parse(text).expect_err(text);
            assert!(!err.to_string().contains("AAAA"), "{err}");
        }
        let entry = Keyring::new_entry("k1");
        assert!(Keyring::parse(&format!("{entry};{entry}")).is_err(), "duplicate id");
        assert!(Keyring::parse(&format!("  {entry} ; ")).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_open_to_others_is_refused_and_a_missing_one_is_created_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("payledger-keyring-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("payledger.key");
        let (created, fresh) = Keyring::load_or_create(&path).unwrap();
        assert!(fresh);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, fresh) = Keyring::load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(again.current_id(), created.current_id());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keyring::load_file(&path).expect_err("world-readable");
        assert!(matches!(err, KeyringError::Exposed { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
