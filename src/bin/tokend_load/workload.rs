//! What each request of a phase is: the request mix of a profile.

use super::tokens::{token_body, TokenPool};
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A kind of request, reported separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    /// `GET /health/live`.
    Live,
    /// `POST /api/tokens/{id}/redeem`.
    Redeem,
    /// `POST /api/tokens`.
    Create,
    /// `GET /api/tokens/{id}`.
    Read,
}

impl Kind {
    /// Name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "health/live",
            Self::Redeem => "redeem",
            Self::Create => "create",
            Self::Read => "read",
        }
    }
}

/// The request mix of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Only `GET /health/live`.
    Live,
    /// Only redeems of distinct tokens.
    Redeem,
    /// Only creates.
    Create,
    /// 80% redeem, 15% create, 5% read.
    Mixed,
}

/// Everything the requests of a phase draw from.
pub struct Workload {
    /// The request mix.
    pub mix: Mix,
    /// Pre-created tokens (redeemed once each, read at random).
    pub pool: Arc<TokenPool>,
    /// Collections new tokens go to.
    pub collections: Vec<String>,
    /// Tokens created during the run (numbers their metadata).
    created: AtomicU64,
}

/// One request to send.
pub struct Next {
    /// Its kind.
    pub kind: Kind,
    /// Method.
    pub method: Method,
    /// Path.
    pub path: String,
    /// JSON body.
    pub body: Option<Bytes>,
    /// The pool token it redeems, if any.
    pub token: Option<usize>,
}

/// Cheap per-connection random numbers (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

impl Workload {
    /// A workload of this mix.
    pub fn new(mix: Mix, pool: Arc<TokenPool>, collections: Vec<String>) -> Self {
        Self {
            mix,
            pool,
            collections,
            created: AtomicU64::new(0),
        }
    }

    /// The next request, or `None` when the mix needs a fresh token and none
    /// is left.
    pub fn next(&self, rng: &mut Rng) -> Option<Next> {
        match self.mix {
            Mix::Live => Some(Next {
                kind: Kind::Live,
                method: Method::GET,
                path: "/health/live".to_owned(),
                body: None,
                token: None,
            }),
            Mix::Redeem => self.redeem(),
            Mix::Create => Some(self.create()),
            Mix::Mixed => match rng.below(100) {
                0..80 => self.redeem(),
                80..95 => Some(self.create()),
                _ => Some(self.read(rng)),
            },
        }
    }

    /// A redeem of a token never used before.
    fn redeem(&self) -> Option<Next> {
        let i = self.pool.take()?;
        Some(Next {
            kind: Kind::Redeem,
            method: Method::POST,
            path: format!("/api/tokens/{}/redeem", self.pool.id(i)),
            body: Some(Bytes::from(format!(
                r#"{{"merchantId":"m-load","idempotencyKey":"load-{i}"}}"#
            ))),
            token: Some(i),
        })
    }

    /// A new token in the next collection.
    fn create(&self) -> Next {
        let n = self.created.fetch_add(1, Ordering::Relaxed);
        let collection = &self.collections[(n % self.collections.len() as u64) as usize];
        let mut body = String::with_capacity(160);
        token_body(&mut body, collection, n);
        Next {
            kind: Kind::Create,
            method: Method::POST,
            path: "/api/tokens".to_owned(),
            body: Some(Bytes::from(body)),
            token: None,
        }
    }

    /// A read of a random pre-created token (falls back to a create when
    /// there are none).
    fn read(&self, rng: &mut Rng) -> Next {
        if self.pool.is_empty() {
            return self.create();
        }
        let i = rng.below(self.pool.len() as u64) as usize;
        Next {
            kind: Kind::Read,
            method: Method::GET,
            path: format!("/api/tokens/{}", self.pool.id(i)),
            body: None,
            token: None,
        }
    }
}
