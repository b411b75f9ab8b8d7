//! Identifiers and the routing of a token to its shard.
//!
//! Every object id is a UUID rendered in its hyphenated form. Token ids are
//! random (v4), or — when the client supplies an `idempotencyKey` — derived
//! from the account and the key (v5), so a retried create lands on the same
//! shard and that shard alone decides whether it is a replay.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Parses the hyphenated form; anything else is `None`.
            pub fn parse(text: &str) -> Option<Self> {
                // Only the canonical 36-character form is an id, so a path
                // like `/tokens/{32 hex}` cannot alias a real token.
                if text.len() != 36 {
                    return None;
                }
                Uuid::try_parse(text).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }
    };
}

id_type!(
    /// Identifies an account: the tenant that owns keys, collections and tokens.
    AccountId
);
id_type!(
    /// Identifies an API key (the public half of the key string).
    KeyId
);
id_type!(
    /// Identifies a collection.
    CollectionId
);
id_type!(
    /// Identifies a token; also decides which shard owns it.
    TokenId
);
id_type!(
    /// Identifies a hold on a token (random; the token's shard keeps it).
    HoldId
);

/// Namespace for ids derived from idempotency keys (an arbitrary fixed UUID:
/// changing it would break idempotent replays across an upgrade).
const IDEMPOTENT_TOKEN_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b0e_8d4a_4c3e_9a57_1d2e_3f40_5b61);

impl TokenId {
    /// The id of the token that `account` creates with `idempotency_key`.
    pub fn for_idempotency_key(account: AccountId, idempotency_key: &str) -> Self {
        let mut name = Vec::with_capacity(16 + idempotency_key.len());
        name.extend_from_slice(account.0.as_bytes());
        name.extend_from_slice(idempotency_key.as_bytes());
        Self(Uuid::new_v5(&IDEMPOTENT_TOKEN_NAMESPACE, &name))
    }

    /// The id of child `index` of the idempotent token `parent`: replaying
    /// the parent's create names the same children.
    pub fn child_of(parent: TokenId, index: usize) -> Self {
        Self(Uuid::new_v5(&parent.0, &(index as u64).to_be_bytes()))
    }

    /// The index of the shard, out of `shard_count`, that owns this token.
    ///
    /// Both halves of the id are mixed so that the fixed version and variant
    /// bits of UUIDs do not bias the choice; ids are random or SHA-1 derived,
    /// so one hot collection spreads evenly over every shard.
    pub fn shard(&self, shard_count: usize) -> usize {
        debug_assert!(shard_count > 0);
        let (hi, lo) = self.0.as_u64_pair();
        let mixed = (hi ^ lo.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((mixed >> 32) % shard_count.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_hyphenated_uuids() {
        let id = TokenId::random();
        assert_eq!(TokenId::parse(&id.to_string()), Some(id));
        assert_eq!(TokenId::parse(&id.0.simple().to_string()), None);
        assert_eq!(TokenId::parse("not-an-id"), None);
    }

    #[test]
    fn idempotent_ids_are_stable_and_scoped_by_account() {
        let a = AccountId::random();
        let b = AccountId::random();
        assert_eq!(
            TokenId::for_idempotency_key(a, "k1"),
            TokenId::for_idempotency_key(a, "k1")
        );
        assert_ne!(
            TokenId::for_idempotency_key(a, "k1"),
            TokenId::for_idempotency_key(b, "k1")
        );
        assert_ne!(
            TokenId::for_idempotency_key(a, "k1"),
            TokenId::for_idempotency_key(a, "k2")
        );
    }

    #[test]
    fn child_ids_are_stable_and_distinct() {
        let parent = TokenId::for_idempotency_key(AccountId::random(), "k");
        assert_eq!(TokenId::child_of(parent, 0), TokenId::child_of(parent, 0));
        assert_ne!(TokenId::child_of(parent, 0), TokenId::child_of(parent, 1));
        assert_ne!(TokenId::child_of(parent, 0), parent);
    }

    #[test]
    fn shards_are_evenly_used() {
        for shards in [1usize, 2, 3, 8] {
            let mut counts = vec![0usize; shards];
            for _ in 0..80_000 {
                counts[TokenId::random().shard(shards)] += 1;
            }
            let expected = 80_000 / shards;
            for count in counts {
                // 5% tolerance is > 10 standard deviations at these sizes.
                assert!(
                    count.abs_diff(expected) < expected / 20,
                    "{shards}: {count}"
                );
            }
        }
    }
}
