//! What each request of a phase is (the request mix of a profile), and how a
//! connection sends it and classifies the answer.

use super::http::{Conn, Head, Method, TransportError};
use super::tokens::{token_body, TokenPool};
use serde::Serialize;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// `POST /api/tokens/redeem` of several tokens.
    BatchRedeem,
    /// A hold, then its capture (one unit of work, two requests).
    HoldCapture,
    /// `POST /api/tokens/{id}/holds` (a step of [`Kind::HoldCapture`]).
    Hold,
    /// `POST /api/tokens/{id}/holds/{holdId}/capture` (a step of
    /// [`Kind::HoldCapture`]).
    Capture,
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
            Self::BatchRedeem => "batch redeem",
            Self::HoldCapture => "hold+capture",
            Self::Hold => "hold",
            Self::Capture => "capture",
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
    /// Only batch redeems of this many distinct tokens each.
    BatchRedeem(u32),
    /// Only hold-then-capture pairs, each on a distinct token.
    HoldCapture,
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
    /// Whether new tokens carry data (`--token-data`).
    token_data: bool,
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
    /// The pool token (or Redis key) it redeems or reads, if any; the
    /// first of `count` consecutive ones for a batch redeem.
    pub token: Option<usize>,
    /// Tokens it redeems: the items of a batch redeem, else 1.
    pub count: u32,
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
    /// A workload of this mix; new tokens carry no data.
    pub fn new(mix: Mix, pool: Arc<TokenPool>, collections: Vec<String>) -> Self {
        Self {
            mix,
            pool,
            collections,
            token_data: false,
            created: AtomicU64::new(0),
        }
    }

    /// The same, new tokens carrying data when `token_data`.
    pub fn with_token_data(mut self, token_data: bool) -> Self {
        self.token_data = token_data;
        self
    }

    /// The next request, or `None` when the mix needs a fresh token and none
    /// is left.
    pub fn next(&self, rng: &mut Rng) -> Option<Next> {
        match self.mix {
            Mix::Live => Some(Self::plain(Kind::Live)),
            Mix::Redeem => self.take(Kind::Redeem),
            Mix::Getdel => self.take(Kind::Getdel),
            Mix::BatchRedeem(n) => {
                let (first, count) = self.pool.take_many(n as usize)?;
                Some(Next {
                    kind: Kind::BatchRedeem,
                    token: Some(first),
                    count: count as u32,
                    created: 0,
                })
            }
            Mix::HoldCapture => self.take(Kind::HoldCapture),
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
            count: 1,
            created: 0,
        }
    }

    /// A request on a token never used before.
    fn take(&self, kind: Kind) -> Option<Next> {
        let i = self.pool.take()?;
        Some(Next {
            kind,
            token: Some(i),
            count: 1,
            created: 0,
        })
    }

    /// A new token in the next collection.
    fn create(&self) -> Next {
        Next {
            kind: Kind::Create,
            token: None,
            count: 1,
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
            count: 1,
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
    /// A batch redeem answered 200: how its items fared (the tokens that
    /// got a 200 are already recorded in the pool).
    Items {
        /// Items answered 200.
        ok: u32,
        /// The others, named `STATUS CODE`.
        errors: Vec<String>,
    },
    /// A hold and then its capture (the capture's 200 is already recorded
    /// in the pool).
    Pair {
        /// Time of the hold's exchange.
        hold: Duration,
        /// Time of the capture's exchange, when the hold succeeded.
        capture: Option<Duration>,
        /// Why the pair failed (`hold STATUS CODE` or `capture STATUS
        /// CODE`), if it did.
        error: Option<String>,
    },
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
            (Kind::BatchRedeem, Some(first)) => {
                return batch_redeem(self, pool, first, next.count as usize, scratch).await
            }
            (Kind::HoldCapture, Some(i)) => return hold_capture(self, pool, i, scratch).await,
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
                token_body(scratch, collection, next.created, workload.token_data);
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

/// The part of a batch redeem's answer the profiler reads.
#[derive(serde::Deserialize)]
struct BatchAnswer<'a> {
    /// One per item, in request order.
    #[serde(borrow)]
    data: Vec<BatchItem<'a>>,
}

/// One item of a batch redeem's answer (its token is skipped).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchItem<'a> {
    /// As sent.
    #[serde(borrow)]
    token_id: std::borrow::Cow<'a, str>,
    /// The status a single redeem would have got.
    status: u16,
    /// Why not, when not 200.
    #[serde(borrow)]
    error: Option<ItemError<'a>>,
}

/// The error of a batch item.
#[derive(serde::Deserialize)]
struct ItemError<'a> {
    /// `TOKEN_ALREADY_REDEEMED`, …
    #[serde(borrow)]
    code: std::borrow::Cow<'a, str>,
}

/// Sends one `POST /api/tokens/redeem` of pool tokens `first..first +
/// count` (each with a merchant and an idempotency key, as the redeem
/// profile sends them) and tallies its items, recording each 200 in the
/// pool.
async fn batch_redeem(
    conn: &mut Conn,
    pool: &TokenPool,
    first: usize,
    count: usize,
    scratch: &mut String,
) -> Result<Answer, TransportError> {
    scratch.push_str(r#"{"redemptions":["#);
    for i in first..first + count {
        if i > first {
            scratch.push(',');
        }
        // Writing into a String cannot fail.
        let _ = write!(
            scratch,
            r#"{{"tokenId":"{}","merchantId":"m-load","idempotencyKey":"load-{i}"}}"#,
            pool.id(i)
        );
    }
    scratch.push_str("]}");
    let head = conn
        .exchange(
            Method::Post,
            &["/api/tokens/redeem"],
            Some(scratch.as_bytes()),
        )
        .await?;
    let body = conn.body(&head);
    if head.status != 200 {
        return Ok(Answer::Error(error_name(head.status, body)));
    }
    let Ok(answer) = serde_json::from_slice::<BatchAnswer<'_>>(body) else {
        return Ok(Answer::Error("200 unreadable batch answer".to_owned()));
    };
    if answer.data.len() != count {
        return Ok(Answer::Error(
            "200 with the wrong number of items".to_owned(),
        ));
    }
    let (mut ok, mut errors) = (0u32, Vec::new());
    for (i, item) in (first..).zip(&answer.data) {
        if item.token_id != pool.id(i) {
            errors.push("item out of request order".to_owned());
        } else if item.status == 200 {
            pool.record_ok(i, false);
            ok += 1;
        } else {
            errors.push(match &item.error {
                Some(e) => format!("{} {}", item.status, e.code),
                None => item.status.to_string(),
            });
        }
    }
    Ok(Answer::Items { ok, errors })
}

/// The part of a hold's answer the profiler reads.
#[derive(serde::Deserialize)]
struct Held<'a> {
    /// The hold.
    #[serde(borrow)]
    hold: Option<HoldRef<'a>>,
}

/// The hold of a held token.
#[derive(serde::Deserialize)]
struct HoldRef<'a> {
    /// Its id, which the capture names.
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

/// Holds pool token `i` (with a merchant and an idempotency key, as the
/// redeem profile sends them), then captures that hold on the same
/// connection; records the hold's id, and the capture's 200, in the pool.
async fn hold_capture(
    conn: &mut Conn,
    pool: &TokenPool,
    i: usize,
    scratch: &mut String,
) -> Result<Answer, TransportError> {
    // Writing into a String cannot fail.
    let _ = write!(
        scratch,
        r#"{{"merchantId":"m-load","idempotencyKey":"load-{i}"}}"#
    );
    let started = Instant::now();
    let path = ["/api/tokens/", pool.id(i), "/holds"];
    let head = conn
        .exchange(Method::Post, &path, Some(scratch.as_bytes()))
        .await?;
    let hold = started.elapsed();
    let body = conn.body(&head);
    if !(200..300).contains(&head.status) {
        return Ok(Answer::Pair {
            hold,
            capture: None,
            error: Some(format!("hold {}", error_name(head.status, body))),
        });
    }
    let held = serde_json::from_slice::<Held<'_>>(body);
    let Some(hold_ref) = held.as_ref().ok().and_then(|h| h.hold.as_ref()) else {
        return Ok(Answer::Pair {
            hold,
            capture: None,
            error: Some(format!("hold {} without hold.id", head.status)),
        });
    };
    scratch.clear();
    scratch.push_str(&hold_ref.id);
    pool.record_hold(i, scratch);
    let started = Instant::now();
    let path = ["/api/tokens/", pool.id(i), "/holds/", scratch, "/capture"];
    let head = conn.exchange(Method::Post, &path, Some(b"{}")).await?;
    let capture = Some(started.elapsed());
    if head.status == 200 {
        pool.record_ok(i, head.replayed);
        return Ok(Answer::Pair {
            hold,
            capture,
            error: None,
        });
    }
    Ok(Answer::Pair {
        hold,
        capture,
        error: Some(format!(
            "capture {}",
            error_name(head.status, conn.body(&head))
        )),
    })
}
