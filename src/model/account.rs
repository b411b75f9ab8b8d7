//! Accounts: the tenants that own API keys, collections and tokens.

use crate::clock::Millis;
use crate::ids::AccountId;
use serde::{Deserialize, Serialize};

/// Whether an account deals in test or real value. Tokens and collections
/// always carry their account's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Test tokens: no real value.
    Test,
    /// Live tokens.
    Main,
}

impl Liveness {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Test => "test",
            Liveness::Main => "main",
        }
    }

    /// Parses the wire name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "test" => Some(Liveness::Test),
            "main" => Some(Liveness::Main),
            _ => None,
        }
    }
}

/// An account, as created by the admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Stable identifier, part of every `createdBy` CRN.
    pub id: AccountId,
    /// Human-readable name, for operators.
    pub name: String,
    /// Test or main; every collection and token of the account inherits it.
    pub liveness: Liveness,
    /// When the admin created it.
    pub created_at_ms: Millis,
}
