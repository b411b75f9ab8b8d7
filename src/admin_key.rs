//! The admin key: given in `TOKEND_ADMIN_KEY`, or generated on first start.
//!
//! Only the SHA-256 digest is kept — in memory, and in `admin-key.sha256` in
//! the data dir when generated — and presented keys are compared against it
//! in constant time. A generated key is printed once on stderr.

use crate::model::api_key;
use crate::storage::private;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use subtle::ConstantTimeEq;

/// File in the data dir holding the hex digest of a generated admin key.
pub const FILE_NAME: &str = "admin-key.sha256";
/// Shortest admin key accepted from the environment: a short one is guessable.
pub const KEY_CHARS_MIN: usize = 16;

/// The admin key's digest.
#[derive(Clone)]
pub struct AdminKey {
    /// SHA-256 of the key string.
    sha256: [u8; 32],
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

/// Where the admin key came from.
pub enum Bootstrap {
    /// From the environment.
    FromEnv(AdminKey),
    /// The digest stored by an earlier start.
    Stored(AdminKey),
    /// Generated now: the key string must be shown once.
    Generated(AdminKey, String),
}

impl AdminKey {
    /// The digest of `key`.
    pub fn from_key(key: &str) -> Self {
        Self {
            sha256: api_key::digest(key),
        }
    }

    /// Whether `presented` is the admin key (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(api_key::digest(presented).ct_eq(&self.sha256))
    }

    /// Resolves the admin key for `data_dir`: the environment's when given,
    /// else the stored digest, else a new key whose digest is stored durably.
    pub fn bootstrap(data_dir: &Path, from_env: Option<String>) -> io::Result<Bootstrap> {
        if let Some(key) = from_env {
            if key.chars().count() < KEY_CHARS_MIN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("TOKEND_ADMIN_KEY must be at least {KEY_CHARS_MIN} characters"),
                ));
            }
            return Ok(Bootstrap::FromEnv(Self::from_key(&key)));
        }
        let path = data_dir.join(FILE_NAME);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let sha256 = decode_hex(text.trim()).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not a SHA-256 hex digest", path.display()),
                    )
                })?;
                Ok(Bootstrap::Stored(Self { sha256 }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key =
                    api_key::generate_admin_key().map_err(|e| io::Error::other(e.to_string()))?;
                let admin = Self::from_key(&key);
                write_durably(data_dir, FILE_NAME, encode_hex(&admin.sha256).as_bytes())?;
                Ok(Bootstrap::Generated(admin, key))
            }
            Err(e) => Err(e),
        }
    }
}

/// Writes `name` in `dir` so that it survives a crash: temp file, fsync,
/// rename, fsync of the directory.
fn write_durably(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let temp = dir.join(format!("{name}.tmp"));
    {
        let mut file = private::file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    fs::rename(&temp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_stored_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let Bootstrap::Generated(first, key) = AdminKey::bootstrap(dir.path(), None).unwrap()
        else {
            panic!("first start generates");
        };
        assert!(first.matches(&key));
        let Bootstrap::Stored(second) = AdminKey::bootstrap(dir.path(), None).unwrap() else {
            panic!("second start reuses");
        };
        assert!(second.matches(&key));
        assert!(!second.matches("something else"));
        let stored = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(!stored.contains(&key), "only the digest is stored");
    }

    #[test]
    fn env_key_wins_and_must_be_long() {
        let dir = tempfile::tempdir().unwrap();
        assert!(AdminKey::bootstrap(dir.path(), Some("short".into())).is_err());
        let Bootstrap::FromEnv(admin) =
            AdminKey::bootstrap(dir.path(), Some("a-long-enough-admin-key".into())).unwrap()
        else {
            panic!("env key used");
        };
        assert!(admin.matches("a-long-enough-admin-key"));
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn corrupt_digest_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "zz").unwrap();
        assert!(AdminKey::bootstrap(dir.path(), None).is_err());
    }
}
