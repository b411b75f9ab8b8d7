//! A sealed value: a token's `data` or `encryption` encrypted and
//! authenticated (XChaCha20-Poly1305) under one data key, self-describing so
//! that the keyring can tell which key opens it.
//!
//! ```text
//! sealed = 1   format (1)
//!          1   key id length n (1..=32)
//!          n   key id (ASCII)
//!          24  nonce
//!          ..  ciphertext (as long as the plaintext), then the 16-byte tag
//! associated data = "tokend-sealed" 0x00 field 0x00 token id (16 bytes) header
//!   (field: "data" or "encryption"; header: the format, length and key id
//!   bytes above)
//! ```
//!
//! The associated data binds a value to its token and field: a value copied
//! onto another token, or from `data` to `encryption`, does not open. The
//! key id is authenticated too.
//!
//! Nonces are 192 bits (XChaCha): 128 random bits drawn once per keyring,
//! then a 64-bit counter. Values sealed by one keyring never share a nonce;
//! keyrings (processes, restarts) differ in their random part, and at 128
//! bits two of them collide with negligible probability however many values
//! a key seals over its life — which a 96-bit random nonce (ChaCha20 or
//! AES-GCM) cannot promise past a few billion values per key. The counter
//! also spares a system call per sealed value.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::sync::atomic::{AtomicU64, Ordering};

/// The sealed-value format this build writes and reads.
const FORMAT: u8 = 1;
/// Bytes of a nonce.
const NONCE_BYTES: usize = 24;
/// Bytes of the random part of a nonce.
const NONCE_RANDOM_BYTES: usize = 16;
/// Bytes of the authentication tag.
const TAG_BYTES: usize = 16;
/// First bytes of the associated data: these keys seal nothing else.
const DOMAIN: &[u8] = b"tokend-sealed";

/// Which of a token's values is sealed (part of the associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The tokenized value (JSON text).
    Data,
    /// The envelope-encryption metadata (JSON text).
    Encryption,
}

impl Field {
    /// The name bound into the associated data.
    fn label(self) -> &'static [u8] {
        match self {
            Field::Data => b"data",
            Field::Encryption => b"encryption",
        }
    }

    /// The name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Data => "data",
            Field::Encryption => "encryption",
        }
    }
}

/// Why a sealed value does not open. Every variant about a key names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Sealed under a key the keyring does not hold.
    #[error(
        "a value is sealed under data key {key_id:?}, which {}; \
         add that key to TOKEND_DATA_KEY (nothing was changed)",
        if *keyring_off { "is missing: TOKEND_DATA_KEY is not set" } else { "TOKEND_DATA_KEY does not hold" }
    )]
    MissingKey {
        /// The key id found in the value.
        key_id: String,
        /// Whether the keyring is empty (`TOKEND_DATA_KEY` unset).
        keyring_off: bool,
    },
    /// The key of that id does not open it: another key under the same id,
    /// or the value was altered.
    #[error(
        "data key {key_id:?} does not open a value sealed under that id: the key is \
         not the one that sealed it, or the value was altered (nothing was changed)"
    )]
    DoesNotOpen {
        /// The key id.
        key_id: String,
    },
    /// Not a sealed value of a format this build reads.
    #[error("malformed sealed value: {0}")]
    Malformed(&'static str),
}

/// Nonces for one keyring: a random part drawn once, then a counter.
#[derive(Debug)]
pub struct NonceSource {
    /// Drawn from the OS when the keyring was made.
    random: [u8; NONCE_RANDOM_BYTES],
    /// Values sealed so far.
    counter: AtomicU64,
}

impl NonceSource {
    /// A source with a fresh random part.
    pub fn new() -> Result<Self, getrandom::Error> {
        let mut random = [0u8; NONCE_RANDOM_BYTES];
        getrandom::fill(&mut random)?;
        Ok(Self {
            random,
            counter: AtomicU64::new(0),
        })
    }

    /// The next nonce, never returned before by this source.
    pub fn next(&self) -> [u8; NONCE_BYTES] {
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        assert!(count != u64::MAX, "nonce counter exhausted");
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..NONCE_RANDOM_BYTES].copy_from_slice(&self.random);
        nonce[NONCE_RANDOM_BYTES..].copy_from_slice(&count.to_le_bytes());
        nonce
    }
}

/// The associated data of a value with header `header`.
fn associated_data(field: Field, token: &[u8; 16], header: &[u8]) -> Vec<u8> {
    let label = field.label();
    let mut ad = Vec::with_capacity(DOMAIN.len() + label.len() + 18 + header.len());
    ad.extend_from_slice(DOMAIN);
    ad.push(0);
    ad.extend_from_slice(label);
    ad.push(0);
    ad.extend_from_slice(token);
    ad.extend_from_slice(header);
    ad
}

/// Seals `plaintext` with `cipher` (the key `key_id`).
pub fn seal(
    cipher: &XChaCha20Poly1305,
    key_id: &str,
    nonce: [u8; NONCE_BYTES],
    field: Field,
    token: &[u8; 16],
    plaintext: &[u8],
) -> Vec<u8> {
    assert!(
        super::valid_key_id(key_id),
        "key ids are checked when parsed"
    );
    let mut out = Vec::with_capacity(2 + key_id.len() + NONCE_BYTES + plaintext.len() + TAG_BYTES);
    out.push(FORMAT);
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    let ad = associated_data(field, token, &out);
    out.extend_from_slice(&nonce);
    let sealed = cipher.encrypt(
        XNonce::from_slice(&nonce),
        Payload {
            msg: plaintext,
            aad: &ad,
        },
    );
    // XChaCha20-Poly1305 fails only past 256 GiB of plaintext; a value is
    // bounded by the WAL's record limit far below that.
    match sealed {
        Ok(ciphertext) => out.extend_from_slice(&ciphertext),
        Err(_) => panic!("sealing {} bytes failed", plaintext.len()),
    }
    out
}

/// The header of `sealed`: its length and key id.
fn header(sealed: &[u8]) -> Result<(usize, &str), SealError> {
    let (&format, rest) = sealed.split_first().ok_or(SealError::Malformed("empty"))?;
    if format != FORMAT {
        return Err(SealError::Malformed("unknown sealed-value format"));
    }
    let (&len, rest) = rest
        .split_first()
        .ok_or(SealError::Malformed("cut short in the key id"))?;
    let id = rest
        .get(..usize::from(len))
        .ok_or(SealError::Malformed("cut short in the key id"))?;
    let id = std::str::from_utf8(id)
        .ok()
        .filter(|id| super::valid_key_id(id))
        .ok_or(SealError::Malformed("not a key id"))?;
    Ok((2 + id.len(), id))
}

/// The id of the key `sealed` was sealed under.
pub fn key_id(sealed: &[u8]) -> Result<&str, SealError> {
    header(sealed).map(|(_, id)| id)
}

/// Opens `sealed` with `cipher`.
pub fn open(
    cipher: &XChaCha20Poly1305,
    sealed: &[u8],
    field: Field,
    token: &[u8; 16],
) -> Result<Vec<u8>, SealError> {
    let (header_len, key_id) = header(sealed)?;
    let (head, rest) = sealed.split_at(header_len);
    if rest.len() < NONCE_BYTES + TAG_BYTES {
        return Err(SealError::Malformed("cut short in the nonce or tag"));
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
    let ad = associated_data(field, token, head);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &ad,
            },
        )
        .map_err(|_| SealError::DoesNotOpen {
            key_id: key_id.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::KeyInit;

    fn cipher(byte: u8) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(&[byte; 32]).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_token_field_and_bytes() {
        let nonces = NonceSource::new().unwrap();
        let token = [9u8; 16];
        let plain = br#"{"number":"4242424242424242"}"#;
        let sealed = seal(&cipher(1), "k1", nonces.next(), Field::Data, &token, plain);
        assert_eq!(key_id(&sealed), Ok("k1"));
        assert!(!sealed.windows(plain.len()).any(|w| w == plain));
        assert_eq!(
            open(&cipher(1), &sealed, Field::Data, &token).unwrap(),
            plain
        );
        let does_not_open = Err(SealError::DoesNotOpen {
            key_id: "k1".into(),
        });
        assert_eq!(
            open(&cipher(2), &sealed, Field::Data, &token),
            does_not_open
        );
        assert_eq!(
            open(&cipher(1), &sealed, Field::Encryption, &token),
            does_not_open
        );
        assert_eq!(
            open(&cipher(1), &sealed, Field::Data, &[8; 16]),
            does_not_open
        );
        for at in 4..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[at] ^= 0x01;
            assert_eq!(
                open(&cipher(1), &tampered, Field::Data, &token),
                does_not_open,
                "byte {at}"
            );
        }
        for cut in 0..sealed.len() {
            assert!(open(&cipher(1), &sealed[..cut], Field::Data, &token).is_err());
        }
    }

    #[test]
    fn nonces_never_repeat_within_a_source_and_differ_between_sources() {
        let (a, b) = (NonceSource::new().unwrap(), NonceSource::new().unwrap());
        let first = a.next();
        assert_ne!(first, a.next());
        assert_ne!(first, b.next());
    }

    #[test]
    fn an_altered_key_id_or_format_is_an_error_not_a_panic() {
        let token = [3u8; 16];
        let sealed = seal(&cipher(1), "k1", [0; 24], Field::Data, &token, b"x");
        let mut renamed = sealed.clone();
        renamed[3] = b'2';
        assert_eq!(
            open(&cipher(1), &renamed, Field::Data, &token),
            Err(SealError::DoesNotOpen {
                key_id: "k2".into()
            })
        );
        let mut newer = sealed.clone();
        newer[0] = 2;
        assert!(matches!(key_id(&newer), Err(SealError::Malformed(_))));
        let mut bad_id = sealed;
        bad_id[2] = b' ';
        assert!(matches!(key_id(&bad_id), Err(SealError::Malformed(_))));
    }
}
