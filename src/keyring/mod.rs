//! The data keys that seal token `data` and `encryption` at rest, and the
//! one place they are parsed from `TOKEND_DATA_KEY`.
//!
//! Memory keeps plaintext (reads need it); values are sealed only when they
//! are encoded for disk (WAL records, snapshot sections) and opened when
//! those are decoded. The keyring is passed explicitly to every encoder and
//! decoder, never kept in a global, so engines with different keys can run
//! in one process (tests do).
//!
//! ```text
//! TOKEND_DATA_KEY = entry ("," entry)*
//! entry           = key id ":" base64 (standard alphabet, padded) of exactly 32 bytes
//! key id          = 1 to 32 of [A-Za-z0-9_-], no id twice
//! ```
//!
//! The first key seals every new value; the others only open values sealed
//! under them, so a key is rotated by putting a new one first, and an old
//! one is dropped once `tokend compact` has re-sealed everything under the
//! first. Key bytes are wiped from memory when the keyring drops and are
//! never printed: [`Keyring`]'s `Debug` shows key ids only.
//!
//! - [`seal`]: the sealed-value format, its nonces and associated data.

pub mod seal;

use base64::Engine as _;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use seal::NonceSource;
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

pub use seal::{Field, SealError};

/// The environment variable holding the keys (never a flag: flags show in
/// `ps`).
pub const DATA_KEY_ENV: &str = "TOKEND_DATA_KEY";
/// Bytes of one data key (XChaCha20-Poly1305).
pub const KEY_BYTES: usize = 32;
/// Longest key id, in bytes; it is stored in every sealed value.
pub const KEY_ID_BYTES_MAX: usize = 32;
/// Most keys one keyring holds: a rotation needs two; a few more cover
/// rotations not yet compacted.
pub const KEYS_MAX: usize = 16;

/// Why `TOKEND_DATA_KEY` is not a keyring. Messages never contain key
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// An entry is not `keyId:base64`.
    #[error("{DATA_KEY_ENV} entry {position} is not `keyId:base64-of-32-bytes`")]
    NotAnEntry {
        /// 1-based position of the entry.
        position: usize,
    },
    /// A key id of the wrong length or characters.
    #[error(
        "{DATA_KEY_ENV} entry {position}: key id must be 1 to {KEY_ID_BYTES_MAX} of \
         A-Z a-z 0-9 _ -"
    )]
    BadKeyId {
        /// 1-based position of the entry.
        position: usize,
    },
    /// A key that is not standard base64.
    #[error("{DATA_KEY_ENV} key {key_id:?} is not standard base64")]
    NotBase64 {
        /// The key id.
        key_id: String,
    },
    /// A key of the wrong length.
    #[error(
        "{DATA_KEY_ENV} key {key_id:?} decodes to {bytes} bytes, not {KEY_BYTES} \
         (generate one with `openssl rand -base64 32`)"
    )]
    BadLength {
        /// The key id.
        key_id: String,
        /// The decoded length.
        bytes: usize,
    },
    /// The same id twice.
    #[error("{DATA_KEY_ENV} names key id {key_id:?} twice")]
    Duplicate {
        /// The key id.
        key_id: String,
    },
    /// More keys than [`KEYS_MAX`].
    #[error("{DATA_KEY_ENV} holds {count} keys, more than the limit of {KEYS_MAX}")]
    TooMany {
        /// How many.
        count: usize,
    },
    /// The OS gave no random bytes for the nonces.
    #[error("no random bytes for data-key nonces: {0}")]
    Random(String),
    /// Set but empty.
    #[error("{DATA_KEY_ENV} is set but empty: unset it to run without encryption at rest")]
    Empty,
}

/// One data key.
struct DataKey {
    /// Its id, stored in every value it seals.
    id: String,
    /// The cipher keyed with it (wipes the key bytes when dropped).
    cipher: XChaCha20Poly1305,
    /// Values opened with it since the keyring was made (`tokend inspect`).
    opened: AtomicU64,
}

/// The data keys: the first seals, every one opens. Empty: encryption at
/// rest is off (values are written plain; sealed ones fail to open).
#[derive(Default)]
pub struct Keyring {
    /// The keys, the sealing one first.
    keys: Vec<DataKey>,
    /// Nonces for values sealed through this keyring (`None` when off).
    nonces: Option<NonceSource>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Keyrings are equal when they hold the same key ids in the same order
/// (options holding one compare by configuration, never by key bytes).
impl PartialEq for Keyring {
    fn eq(&self, other: &Self) -> bool {
        self.key_ids().eq(other.key_ids())
    }
}

impl Eq for Keyring {}

impl Keyring {
    /// No keys: encryption at rest off.
    pub fn off() -> Self {
        Self::default()
    }

    /// The keyring `TOKEND_DATA_KEY` holds: off when unset, an error when
    /// it is set but not a valid keyring (or not Unicode).
    pub fn from_env() -> Result<Self, KeyringError> {
        match std::env::var_os(DATA_KEY_ENV) {
            None => Ok(Self::off()),
            Some(value) => {
                let value = Zeroizing::new(
                    value
                        .into_string()
                        .map_err(|_| KeyringError::NotAnEntry { position: 1 })?,
                );
                Self::parse(&value)
            }
        }
    }

    /// Parses the `TOKEND_DATA_KEY` format (see the module docs).
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        if text.trim().is_empty() {
            return Err(KeyringError::Empty);
        }
        let entries: Vec<&str> = text.split(',').map(str::trim).collect();
        if entries.len() > KEYS_MAX {
            return Err(KeyringError::TooMany {
                count: entries.len(),
            });
        }
        let mut keys: Vec<DataKey> = Vec::with_capacity(entries.len());
        for (at, entry) in entries.iter().enumerate() {
            let position = at + 1;
            let (id, encoded) = entry
                .split_once(':')
                .ok_or(KeyringError::NotAnEntry { position })?;
            if !valid_key_id(id) {
                return Err(KeyringError::BadKeyId { position });
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyringError::Duplicate { key_id: id.into() });
            }
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| KeyringError::NotBase64 { key_id: id.into() })?,
            );
            if bytes.len() != KEY_BYTES {
                return Err(KeyringError::BadLength {
                    key_id: id.into(),
                    bytes: bytes.len(),
                });
            }
            let cipher =
                XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| KeyringError::BadLength {
                    key_id: id.into(),
                    bytes: bytes.len(),
                })?;
            keys.push(DataKey {
                id: id.into(),
                cipher,
                opened: AtomicU64::new(0),
            });
        }
        let nonces = NonceSource::new().map_err(|e| KeyringError::Random(e.to_string()))?;
        Ok(Self {
            keys,
            nonces: Some(nonces),
        })
    }

    /// Whether new values are sealed.
    pub fn is_on(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The id of the key that seals new values.
    pub fn sealing_key_id(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    /// Every key id, the sealing one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Per key id (sealing one first), how many values were opened with it
    /// through this keyring.
    pub fn opened_counts(&self) -> Vec<(&str, u64)> {
        self.keys
            .iter()
            .map(|k| (k.id.as_str(), k.opened.load(Ordering::Relaxed)))
            .collect()
    }

    /// `plaintext` sealed under the first key for `field` of token `token`;
    /// `None` when the keyring is off (the value is stored plain).
    pub fn seal(&self, field: Field, token: &[u8; 16], plaintext: &[u8]) -> Option<Vec<u8>> {
        let (key, nonces) = (self.keys.first()?, self.nonces.as_ref()?);
        Some(seal::seal(
            &key.cipher,
            &key.id,
            nonces.next(),
            field,
            token,
            plaintext,
        ))
    }

    /// Opens a value sealed for `field` of token `token`; the error names
    /// the key id (missing key, or a key that does not open it).
    pub fn open(
        &self,
        field: Field,
        token: &[u8; 16],
        sealed: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let key_id = seal::key_id(sealed)?;
        let key =
            self.keys
                .iter()
                .find(|k| k.id == key_id)
                .ok_or_else(|| SealError::MissingKey {
                    key_id: key_id.into(),
                    keyring_off: self.keys.is_empty(),
                })?;
        let plaintext = seal::open(&key.cipher, sealed, field, token)?;
        key.opened.fetch_add(1, Ordering::Relaxed);
        Ok(plaintext)
    }
}

/// Whether `id` is a key id: 1 to [`KEY_ID_BYTES_MAX`] of `[A-Za-z0-9_-]`.
pub fn valid_key_id(id: &str) -> bool {
    (1..=KEY_ID_BYTES_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const B: &str = "HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

    #[test]
    fn a_keyring_parses_in_order_and_debug_shows_ids_only() {
        let ring = Keyring::parse(&format!("k2:{B}, k1:{A}")).unwrap();
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["k2", "k1"]);
        assert_eq!(ring.sealing_key_id(), Some("k2"));
        let shown = format!("{ring:?}");
        assert!(shown.contains("k2") && !shown.contains(B) && !shown.contains(A));
        assert!(!Keyring::off().is_on());
    }

    #[test]
    fn malformed_keyrings_are_refused_with_their_reason() {
        let cases = [
            ("", KeyringError::Empty),
            ("k1", KeyringError::NotAnEntry { position: 1 }),
            (
                &format!("k1:{A},bad id:{B}"),
                KeyringError::BadKeyId { position: 2 },
            ),
            (&format!(":{A}"), KeyringError::BadKeyId { position: 1 }),
            (
                &format!("{}:{A}", "x".repeat(33)),
                KeyringError::BadKeyId { position: 1 },
            ),
            (
                "k1:not*base64",
                KeyringError::NotBase64 {
                    key_id: "k1".into(),
                },
            ),
            (
                "k1:AAAA",
                KeyringError::BadLength {
                    key_id: "k1".into(),
                    bytes: 3,
                },
            ),
            (
                &format!("k1:{A},k1:{B}"),
                KeyringError::Duplicate {
                    key_id: "k1".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Keyring::parse(text).err(), Some(expected), "{text:?}");
        }
        let many: Vec<String> = (0..=KEYS_MAX).map(|i| format!("k{i}:{A}")).collect();
        assert_eq!(
            Keyring::parse(&many.join(",")).err(),
            Some(KeyringError::TooMany {
                count: KEYS_MAX + 1
            })
        );
        let message = Keyring::parse(&format!("k1:{A}="))
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("k1") && !message.contains(A), "{message}");
    }

    #[test]
    fn values_round_trip_and_the_old_key_still_opens_after_rotation() {
        let old = Keyring::parse(&format!("k1:{A}")).unwrap();
        let token = [7u8; 16];
        let sealed = old.seal(Field::Data, &token, b"{\"pan\":1}").unwrap();
        assert_eq!(
            old.open(Field::Data, &token, &sealed).unwrap(),
            b"{\"pan\":1}"
        );
        let rotated = Keyring::parse(&format!("k2:{B},k1:{A}")).unwrap();
        assert_eq!(
            rotated.open(Field::Data, &token, &sealed).unwrap(),
            b"{\"pan\":1}"
        );
        assert_eq!(rotated.opened_counts(), [("k2", 0), ("k1", 1)]);
        let resealed = rotated.seal(Field::Data, &token, b"x").unwrap();
        assert_eq!(seal::key_id(&resealed), Ok("k2"));
        assert!(Keyring::off().seal(Field::Data, &token, b"x").is_none());
    }

    #[test]
    fn a_missing_or_wrong_key_is_an_error_naming_the_key_id() {
        let token = [1u8; 16];
        let sealed = Keyring::parse(&format!("k1:{A}"))
            .unwrap()
            .seal(Field::Encryption, &token, b"{}")
            .unwrap();
        let other_id = Keyring::parse(&format!("k2:{A}")).unwrap();
        let err = other_id
            .open(Field::Encryption, &token, &sealed)
            .unwrap_err();
        assert!(
            matches!(&err, SealError::MissingKey { key_id, keyring_off: false } if key_id == "k1")
        );
        assert!(err.to_string().contains("\"k1\""), "{err}");
        let err = Keyring::off()
            .open(Field::Encryption, &token, &sealed)
            .unwrap_err();
        assert!(
            err.to_string().contains("TOKEND_DATA_KEY is not set"),
            "{err}"
        );
        let wrong_bytes = Keyring::parse(&format!("k1:{B}")).unwrap();
        let err = wrong_bytes
            .open(Field::Encryption, &token, &sealed)
            .unwrap_err();
        assert_eq!(
            err,
            SealError::DoesNotOpen {
                key_id: "k1".into()
            }
        );
    }
}
