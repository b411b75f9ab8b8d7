//! API keys: the credentials of an account, with the scopes they grant.
//!
//! A key string is `tk_` + the key id (32 hex digits) + a 256-bit secret
//! (43 base64url characters). The id locates the key; only the SHA-256 digest
//! of the secret is kept, and it is compared in constant time. The secret is
//! shown once, in the create response, and never reaches a log or the disk.

use crate::clock::Millis;
use crate::ids::{AccountId, KeyId};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Prefix of every account key string; lets operators spot leaked keys.
const KEY_PREFIX: &str = "tk_";
/// Hex digits of the key id in the key string.
const KEY_ID_HEX_LEN: usize = 32;
/// Bytes of randomness in a secret: 256 bits, out of reach of guessing.
const SECRET_BYTES: usize = 32;
/// base64url characters of an encoded secret.
const SECRET_ENCODED_LEN: usize = 43;

/// One permission an API key can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read collections.
    CollectionRead,
    /// Create collections.
    CollectionWrite,
    /// Create tokens (single and batch).
    TokenCreate,
    /// Read tokens (GET, HEAD, list).
    TokenRead,
    /// Redeem tokens.
    TokenRedeem,
    /// Delete tokens.
    TokenDelete,
}

impl Scope {
    /// Every scope, in wire-name order.
    pub const ALL: [Scope; 6] = [
        Scope::CollectionRead,
        Scope::CollectionWrite,
        Scope::TokenCreate,
        Scope::TokenRead,
        Scope::TokenRedeem,
        Scope::TokenDelete,
    ];

    /// The wire name, e.g. `token:redeem`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::CollectionRead => "collection:read",
            Scope::CollectionWrite => "collection:write",
            Scope::TokenCreate => "token:create",
            Scope::TokenRead => "token:read",
            Scope::TokenRedeem => "token:redeem",
            Scope::TokenDelete => "token:delete",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes; `*` is kept as its own flag so it is echoed back as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Scopes {
    /// One bit per [`Scope`].
    bits: u8,
    /// Whether the key was granted `*` (every scope, including future ones).
    all: bool,
}

impl Scopes {
    /// Parses one wire name into the set; `false` when the name is unknown.
    pub fn insert_named(&mut self, name: &str) -> bool {
        if name == "*" {
            self.all = true;
            return true;
        }
        match Scope::ALL.iter().find(|s| s.as_str() == name) {
            Some(scope) => {
                self.bits |= scope.bit();
                true
            }
            None => false,
        }
    }

    /// Whether the set grants `scope`.
    pub fn grants(&self, scope: Scope) -> bool {
        self.all || self.bits & scope.bit() != 0
    }

    /// The wire names, `*` first when granted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.all {
            names.push("*");
        }
        names.extend(
            Scope::ALL
                .iter()
                .filter(|s| self.bits & s.bit() != 0)
                .map(|s| s.as_str()),
        );
        names
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        !self.all && self.bits == 0
    }
}

/// A stored API key: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public identifier, embedded in the key string to find the record.
    pub id: KeyId,
    /// The account the key acts for.
    pub account_id: AccountId,
    /// Shown in `createdBy`/`redeemedBy` CRNs of what the key does.
    pub name: String,
    /// What the key may do.
    pub scopes: Scopes,
    /// SHA-256 of the secret; the secret itself is never stored.
    pub secret_sha256: [u8; 32],
    /// When the key was created.
    pub created_at_ms: Millis,
}

impl ApiKey {
    /// Checks `secret` against the stored digest in constant time.
    pub fn secret_matches(&self, secret: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        bool::from(digest.ct_eq(&self.secret_sha256))
    }

    /// The CRN naming this key as an actor: `crn:<accountId>:api-key:<name>`.
    pub fn crn(account_id: AccountId, key_name: &str) -> String {
        format!("crn:{account_id}:api-key:{key_name}")
    }
}

/// A freshly generated key: its full string (shown once) and the digest to store.
pub struct GeneratedKey {
    /// The id to store the record under.
    pub id: KeyId,
    /// The string the client sends; never stored.
    pub key: String,
    /// Digest of the secret part.
    pub secret_sha256: [u8; 32],
}

/// Generates a key with 256 random bits.
pub fn generate_key() -> Result<GeneratedKey, getrandom::Error> {
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret)?;
    let secret = URL_SAFE_NO_PAD.encode(secret);
    debug_assert_eq!(secret.len(), SECRET_ENCODED_LEN);
    let id = KeyId(Uuid::new_v4());
    let key = format!("{KEY_PREFIX}{}{secret}", id.0.simple());
    Ok(GeneratedKey {
        id,
        secret_sha256: Sha256::digest(secret.as_bytes()).into(),
        key,
    })
}

/// Splits a presented key string into its id and secret; `None` when it is
/// not shaped like an account key.
pub fn split_key(presented: &str) -> Option<(KeyId, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    if rest.len() != KEY_ID_HEX_LEN + SECRET_ENCODED_LEN || !rest.is_ascii() {
        return None;
    }
    let (id_hex, secret) = rest.split_at(KEY_ID_HEX_LEN);
    let id = Uuid::try_parse(id_hex).ok()?;
    Some((KeyId(id), secret))
}

/// Generates an admin key string (shown once on first start).
pub fn generate_admin_key() -> Result<String, getrandom::Error> {
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret)?;
    Ok(format!("tkadmin_{}", URL_SAFE_NO_PAD.encode(secret)))
}

/// SHA-256 of a whole key string (used for the admin key).
pub fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_split_and_match() {
        let generated = generate_key().unwrap();
        let (id, secret) = split_key(&generated.key).unwrap();
        assert_eq!(id, generated.id);
        let record = ApiKey {
            id,
            account_id: AccountId::random(),
            name: "k".into(),
            scopes: Scopes::default(),
            secret_sha256: generated.secret_sha256,
            created_at_ms: 0,
        };
        assert!(record.secret_matches(secret));
        assert!(!record.secret_matches("x"));
        assert!(split_key("tk_short").is_none());
        assert!(split_key(&generated.key[1..]).is_none());
    }

    #[test]
    fn scopes_parse_and_grant() {
        let mut scopes = Scopes::default();
        assert!(scopes.insert_named("token:redeem"));
        assert!(!scopes.insert_named("token:fly"));
        assert!(scopes.grants(Scope::TokenRedeem));
        assert!(!scopes.grants(Scope::TokenRead));
        assert_eq!(scopes.names(), vec!["token:redeem"]);
        let mut all = Scopes::default();
        all.insert_named("*");
        assert!(Scope::ALL.iter().all(|s| all.grants(*s)));
        assert_eq!(all.names(), vec!["*"]);
    }
}
