//! What each request of a phase is (the request mix of a profile), and how a
//! connection sends it and classifies the answer.

use super::http::{Conn, Head, Method, TransportError};
use super::tokens::{token_body, TokenPool};
use serde::Serialize;
use std::fmt::Write as _;
use std::future::Future;
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
    /// Redis `GETDEL key` (the comparison).
    Getdel,
}

impl Kind {
    /// Name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "health/live",
            Self::Redeem => "redeem",
            Self::Create => "create",
            Self::Read => "read",
            Self::Getdel => "redis GETDEL",
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
    /// Only Redis `GETDEL` of distinct existing keys.
    Getdel,
}

/// Everything the requests of a phase draw from.
pub struct Workload {
    /// The request mix.
    pub mix: Mix,
    /// Pre-created tokens (redeemed once each, read at random), or the
    /// numbers of the pre-populated Redis keys.
    pub pool: Arc<TokenPool>,
    /// Collections new tokens go to.
    pub collections: Vec<String>,
    /// Tokens created during the run (numbers their metadata).
    created: AtomicU64,
}

/// One request to send. It holds numbers only: the connection writes the
/// path and body straight into its own buffer, so choosing a request
/// allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Next {
    /// Its kind.
    pub kind: Kind,
    /// The pool token (or Redis key) it redeems or reads, if any.
    pub token: Option<usize>,
    /// Create: the number of the token created (its metadata and
    /// collection follow from it).
    pub created: u64,
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
            Mix::Live => Some(Self::plain(Kind::Live)),
            Mix::Redeem => self.take(Kind::Redeem),
            Mix::Getdel => self.take(Kind::Getdel),
            Mix::Create => Some(self.create()),
            Mix::Mixed => match rng.below(100) {
                0..80 => self.take(Kind::Redeem),
                80..95 => Some(self.create()),
                _ => Some(self.read(rng)),
            },
        }
    }

    /// A request that needs no token.
    fn plain(kind: Kind) -> Next {
        Next {
            kind,
            token: None,
            created: 0,
        }
    }

    /// A request on a token never used before.
    fn take(&self, kind: Kind) -> Option<Next> {
        let i = self.pool.take()?;
        Some(Next {
            kind,
            token: Some(i),
            created: 0,
        })
    }

    /// A new token in the next collection.
    fn create(&self) -> Next {
        Next {
            kind: Kind::Create,
            token: None,
            created: self.created.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A read of a random pre-created token (falls back to a create when
    /// there are none).
    fn read(&self, rng: &mut Rng) -> Next {
        if self.pool.is_empty() {
            return self.create();
        }
        Next {
            kind: Kind::Read,
            token: Some(rng.below(self.pool.len() as u64) as usize),
            created: 0,
        }
    }
}

/// How an answered request is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A success (2xx, or a Redis value).
    Ok {
        /// A first, non-replayed redeem (or delete) of the token: counts
        /// toward the spend-once check.
        win: bool,
        /// A 200 marked `Idempotent-Replayed`.
        replayed: bool,
    },
    /// Not a success, named `STATUS CODE` (HTTP) or by the Redis reply.
    Error(String),
}

/// A connection the driver can send a workload's requests over.
pub trait Client: Send + 'static {
    /// Sends `next` (using `scratch` for any text it needs to build) and
    /// classifies the answer.
    fn call<'a>(
        &'a mut self,
        workload: &'a Workload,
        next: Next,
        scratch: &'a mut String,
    ) -> impl Future<Output = Result<Answer, TransportError>> + Send + 'a;
}

/// The error name of an HTTP answer that is not a 2xx: `STATUS CODE`, the
/// code read from the error body when it has one.
pub fn error_name(status: u16, body: &[u8]) -> String {
    /// The part of an error body that names the error.
    #[derive(serde::Deserialize)]
    struct Body {
        /// `TOKEN_ALREADY_REDEEMED`, …
        code: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body { code: Some(code) }) => format!("{status} {code}"),
        _ => status.to_string(),
    }
}

/// Classifies an HTTP answer to a request of `kind`.
fn classify(conn: &Conn, kind: Kind, head: &Head) -> Answer {
    if (200..300).contains(&head.status) {
        let redeemed = kind == Kind::Redeem && head.status == 200;
        Answer::Ok {
            win: redeemed && !head.replayed,
            replayed: redeemed && head.replayed,
        }
    } else {
        Answer::Error(error_name(head.status, conn.body(head)))
    }
}

impl Client for Conn {
    async fn call<'a>(
        &'a mut self,
        workload: &'a Workload,
        next: Next,
        scratch: &'a mut String,
    ) -> Result<Answer, TransportError> {
        scratch.clear();
        let pool = &workload.pool;
        let head = match (next.kind, next.token) {
            (Kind::Live, _) => self.exchange(Method::Get, &["/health/live"], None).await?,
            (Kind::Redeem, Some(i)) => {
                // Writing into a String cannot fail.
                let _ = write!(
                    scratch,
                    r#"{{"merchantId":"m-load","idempotencyKey":"load-{i}"}}"#
                );
                let path = ["/api/tokens/", pool.id(i), "/redeem"];
                self.exchange(Method::Post, &path, Some(scratch.as_bytes()))
                    .await?
            }
            (Kind::Read, Some(i)) => {
                self.exchange(Method::Get, &["/api/tokens/", pool.id(i)], None)
                    .await?
            }
            (Kind::Create, _) => {
                let collections = &workload.collections;
                let Some(collection) =
                    collections.get((next.created % collections.len().max(1) as u64) as usize)
                else {
                    return Err(TransportError::new("request", "no collection to create in"));
                };
                token_body(scratch, collection, next.created);
                self.exchange(Method::Post, &["/api/tokens"], Some(scratch.as_bytes()))
                    .await?
            }
            (kind, _) => {
                return Err(TransportError::new(
                    "request",
                    format!("{} cannot be sent over HTTP", kind.name()),
                ))
            }
        };
        Ok(classify(self, next.kind, &head))
    }
}
