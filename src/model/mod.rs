//! The domain objects: accounts, API keys, collections and tokens.

pub mod account;
pub mod api_key;
pub mod collection;
pub mod lifecycle;
pub mod metadata;
pub mod token;

pub use account::{Account, Liveness};
pub use api_key::{ApiKey, Scope, Scopes};
pub use collection::{Collection, Money};
pub use lifecycle::{EndedHold, Hold, HoldEnd, Lifecycle, VoidedRedemption};
pub use metadata::Metadata;
pub use token::{Encryption, EncryptionKey, Redemption, Status, Token, TokenExtra, TokenType};
