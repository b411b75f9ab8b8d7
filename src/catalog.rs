//! The catalog: accounts, API keys and collections.
//!
//! These change rarely and are read on every request (authentication, the
//! collection of a new token), so reads are lock-free lookups in concurrent
//! maps, while every change goes through one writer: [`Catalog::execute`]
//! decides and applies a [`CatalogCommand`] under a mutex, in one order. The
//! same `apply` replays logged commands on restart. For a snapshot the
//! catalog captures itself ([`Catalog::capture_at`]) as a [`CatalogImage`],
//! from which [`CatalogImage::restore`] rebuilds it.

use crate::command::CatalogCommand;
use crate::ids::{AccountId, CollectionId, KeyId};
use crate::model::collection::CollectionRecord;
use crate::model::{Account, ApiKey, Collection};
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// At most this many accounts: bounds memory against a runaway admin script.
pub const ACCOUNTS_MAX: usize = 1_000_000;
/// At most this many live API keys per account.
pub const KEYS_PER_ACCOUNT_MAX: usize = 1_000;
/// At most this many collections per account.
pub const COLLECTIONS_PER_ACCOUNT_MAX: usize = 100_000;

/// Why the catalog refused a command; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The account does not exist.
    #[error("account not found")]
    AccountNotFound,
    /// The key does not exist in that account.
    #[error("API key not found")]
    ApiKeyNotFound,
    /// An id collided with an existing object (random ids: a logic error).
    #[error("duplicate id")]
    DuplicateId,
    /// A limit of the catalog was reached.
    #[error("limit reached: {0}")]
    LimitReached(&'static str),
    /// A logged collection no longer compiles (restore only).
    #[error("invalid collection: {0}")]
    InvalidCollection(String),
}

/// Accounts, keys and collections, with lock-free reads.
#[derive(Default)]
pub struct Catalog {
    /// Every account by id.
    accounts: DashMap<AccountId, Arc<Account>>,
    /// Every live API key by id (the id is embedded in the key string).
    keys: DashMap<KeyId, Arc<ApiKey>>,
    /// Key ids per account in creation order, for listing.
    account_keys: DashMap<AccountId, Vec<KeyId>>,
    /// Every collection by id.
    collections: DashMap<CollectionId, Arc<Collection>>,
    /// Collection ids per account in creation order, for listing.
    account_collections: DashMap<AccountId, Vec<CollectionId>>,
    /// The single writer: held while a command is decided and applied, so
    /// changes happen (and will be logged) in one order.
    writer: Mutex<()>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides and applies `command` as the single writer; `Err` changes
    /// nothing. `log` runs under the writer lock after a successful apply, so
    /// the log order is the apply order.
    pub fn execute<T>(
        &self,
        command: CatalogCommand,
        log: impl FnOnce(&CatalogCommand) -> T,
    ) -> Result<T, CatalogError> {
        let _writer = self.writer.lock();
        self.check(&command)?;
        self.apply(&command)?;
        Ok(log(&command))
    }

    /// Validates a command against the current state without changing it.
    pub fn check(&self, command: &CatalogCommand) -> Result<(), CatalogError> {
        match command {
            CatalogCommand::CreateAccount(account) => {
                if self.accounts.len() >= ACCOUNTS_MAX {
                    return Err(CatalogError::LimitReached("accounts"));
                }
                if self.accounts.contains_key(&account.id) {
                    return Err(CatalogError::DuplicateId);
                }
            }
            CatalogCommand::CreateApiKey(key) => {
                if !self.accounts.contains_key(&key.account_id) {
                    return Err(CatalogError::AccountNotFound);
                }
                let count = self
                    .account_keys
                    .get(&key.account_id)
                    .map_or(0, |keys| keys.len());
                if count >= KEYS_PER_ACCOUNT_MAX {
                    return Err(CatalogError::LimitReached("API keys per account"));
                }
                if self.keys.contains_key(&key.id) {
                    return Err(CatalogError::DuplicateId);
                }
            }
            CatalogCommand::DeleteApiKey { account_id, key_id } => {
                if !self.accounts.contains_key(account_id) {
                    return Err(CatalogError::AccountNotFound);
                }
                let owned = self
                    .keys
                    .get(key_id)
                    .is_some_and(|key| key.account_id == *account_id);
                if !owned {
                    return Err(CatalogError::ApiKeyNotFound);
                }
            }
            CatalogCommand::CreateCollection(record) => {
                if !self.accounts.contains_key(&record.account_id) {
                    return Err(CatalogError::AccountNotFound);
                }
                let count = self
                    .account_collections
                    .get(&record.account_id)
                    .map_or(0, |c| c.len());
                if count >= COLLECTIONS_PER_ACCOUNT_MAX {
                    return Err(CatalogError::LimitReached("collections per account"));
                }
                if self.collections.contains_key(&record.id) {
                    return Err(CatalogError::DuplicateId);
                }
            }
        }
        Ok(())
    }

    /// Applies a command that was checked (live) or logged (replay).
    pub fn apply(&self, command: &CatalogCommand) -> Result<(), CatalogError> {
        match command {
            CatalogCommand::CreateAccount(account) => {
                self.accounts.insert(account.id, Arc::new(account.clone()));
            }
            CatalogCommand::CreateApiKey(key) => {
                self.keys.insert(key.id, Arc::new(key.clone()));
                self.account_keys
                    .entry(key.account_id)
                    .or_default()
                    .push(key.id);
            }
            CatalogCommand::DeleteApiKey { account_id, key_id } => {
                self.keys.remove(key_id);
                if let Some(mut keys) = self.account_keys.get_mut(account_id) {
                    keys.retain(|k| k != key_id);
                }
            }
            CatalogCommand::CreateCollection(record) => {
                let collection = Collection::from_record((**record).clone())
                    .map_err(CatalogError::InvalidCollection)?;
                self.collections.insert(record.id, Arc::new(collection));
                self.account_collections
                    .entry(record.account_id)
                    .or_default()
                    .push(record.id);
            }
        }
        Ok(())
    }

    /// Every object, for a snapshot, captured under the writer lock so it is
    /// one consistent state; `at` runs under the same lock (to read the LSN
    /// of the last change included).
    pub fn capture_at<T>(&self, at: impl FnOnce() -> T) -> (CatalogImage, T) {
        let _writer = self.writer.lock();
        let image = CatalogImage {
            accounts: self
                .accounts
                .iter()
                .map(|a| a.value().as_ref().clone())
                .collect(),
            api_keys: self
                .keys
                .iter()
                .map(|k| k.value().as_ref().clone())
                .collect(),
            collections: self
                .collections
                .iter()
                .map(|c| c.value().record.clone())
                .collect(),
        };
        (image, at())
    }

    /// Every object, for a snapshot.
    pub fn capture(&self) -> CatalogImage {
        self.capture_at(|| ()).0
    }

    /// The account with `id`.
    pub fn account(&self, id: AccountId) -> Option<Arc<Account>> {
        self.accounts.get(&id).map(|a| Arc::clone(a.value()))
    }

    /// The live API key with `id`.
    pub fn api_key(&self, id: KeyId) -> Option<Arc<ApiKey>> {
        self.keys.get(&id).map(|k| Arc::clone(k.value()))
    }

    /// The account's live keys, in creation order.
    pub fn api_keys_of(&self, account: AccountId) -> Vec<Arc<ApiKey>> {
        // Copy the ids out first: no map guard is held while reading another map.
        let ids = self
            .account_keys
            .get(&account)
            .map(|ids| ids.clone())
            .unwrap_or_default();
        ids.into_iter().filter_map(|id| self.api_key(id)).collect()
    }

    /// The collection with `id`, if `account` owns it.
    pub fn collection_of(&self, account: AccountId, id: CollectionId) -> Option<Arc<Collection>> {
        self.collection(id)
            .filter(|c| c.record.account_id == account)
    }

    /// The collection with `id`, whoever owns it (shards and restore).
    pub fn collection(&self, id: CollectionId) -> Option<Arc<Collection>> {
        self.collections.get(&id).map(|c| Arc::clone(c.value()))
    }

    /// The account's collections, in creation order.
    pub fn collections_of(&self, account: AccountId) -> Vec<Arc<Collection>> {
        let ids = self
            .account_collections
            .get(&account)
            .map(|ids| ids.clone())
            .unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| self.collection(id))
            .collect()
    }
}

/// The catalog's objects, as a snapshot holds them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CatalogImage {
    /// Every account.
    pub accounts: Vec<Account>,
    /// Every live key (digests only).
    pub api_keys: Vec<ApiKey>,
    /// Every collection.
    pub collections: Vec<CollectionRecord>,
}

impl CatalogImage {
    /// Rebuilds a catalog from the image.
    pub fn restore(self) -> Result<Catalog, CatalogError> {
        let catalog = Catalog::new();
        let commands = self
            .accounts
            .into_iter()
            .map(CatalogCommand::CreateAccount)
            .chain(
                self.collections
                    .into_iter()
                    .map(|c| CatalogCommand::CreateCollection(Box::new(c))),
            )
            .chain(self.api_keys.into_iter().map(CatalogCommand::CreateApiKey));
        for command in commands {
            catalog.apply(&command)?;
        }
        Ok(catalog)
    }
}
