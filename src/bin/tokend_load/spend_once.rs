//! The spend-once check: no token may get more than one successful
//! (non-replayed) 200 to a redeem. Counts come from the run, plus a probe that
//! redeems again, without idempotency key, tokens that already won: each
//! must answer 409. The lifecycle profiles also read back every token that
//! won: each must read `redeemed`, a captured one with its hold's id.

use super::http::Method;
use super::http::{Call, Conn};
use super::tokens::TokenPool;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Connections used by the probe and the read-back.
const PROBE_CONNECTIONS: usize = 8;
/// Tokens read back per `GET /api/tokens?id=…` request.
const READBACK_IDS: usize = 100;

/// What the probe saw.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Redeems sent again.
    pub sent: u64,
    /// Answers by `status CODE`; all should be `409 TOKEN_ALREADY_REDEEMED`.
    pub answers: BTreeMap<String, u64>,
}

/// The check's result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpendOnce {
    /// Tokens a redeem was sent for.
    pub tokens_tried: u64,
    /// Tokens with exactly one non-replayed 200.
    pub tokens_redeemed: u64,
    /// Tokens with more than one non-replayed 200: must be 0.
    pub violations: u64,
    /// 200 answers marked `Idempotent-Replayed` (not counted as wins).
    pub replayed: u64,
    /// The second-redeem probe.
    pub probe: Probe,
    /// The read-back of every token that won (`batch-redeem`,
    /// `hold-capture`).
    pub readback: Option<Readback>,
    /// No violation, and the read-back (if any) found every token as
    /// expected.
    pub passed: bool,
}

impl SpendOnce {
    /// Adds a read-back to the check.
    pub fn with_readback(mut self, readback: Readback) -> Self {
        self.passed &= readback.passed;
        self.readback = Some(readback);
        self
    }
}

/// How the tokens that won should read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `redeemed`, with no `redemption.holdId` (a redeem, not a capture).
    Redeemed,
    /// `redeemed`, with `redemption.holdId` the id of the hold the run
    /// placed on the token.
    Captured,
}

/// What reading back the tokens that won found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readback {
    /// `redeemed` (a redeem) or `captured` (`redeemed` with the hold's id).
    pub expected: &'static str,
    /// Tokens read back: every token with exactly one win.
    pub tokens: u64,
    /// `GET /api/tokens?id=…` requests sent.
    pub requests: u64,
    /// Tokens that read back as expected.
    pub matched: u64,
    /// The others, by what was found (`missing`, `status active`, `holdId
    /// differs`, `read 503`, …): must be empty.
    pub mismatches: BTreeMap<String, u64>,
    /// Every token read back as expected.
    pub passed: bool,
}

/// The part of a list answer the read-back looks at (borrowed from the
/// answer: the read-back parses every token that won).
#[derive(Deserialize)]
struct Listed<'a> {
    /// The tokens.
    #[serde(borrow)]
    data: Vec<ListedToken<'a>>,
}

/// A token of a list answer.
#[derive(Deserialize)]
struct ListedToken<'a> {
    /// Its id.
    #[serde(borrow)]
    id: Cow<'a, str>,
    /// `redeemed`, …
    #[serde(borrow)]
    status: Cow<'a, str>,
    /// Its redemption, once redeemed.
    #[serde(borrow)]
    redemption: Option<ListedRedemption<'a>>,
}

/// A redemption of a list answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedRedemption<'a> {
    /// The captured hold, for a capture.
    #[serde(borrow)]
    hold_id: Option<Cow<'a, str>>,
}

/// Reads back, `READBACK_IDS` at a time through `GET /api/tokens?id=…`,
/// every token of the pool with exactly one win, and checks that each is
/// as `expect` says.
pub async fn read_back(pool: &Arc<TokenPool>, conns: &mut [Conn], expect: Expect) -> Readback {
    let winners: Vec<usize> = (0..pool.taken()).filter(|&i| pool.wins(i) == 1).collect();
    let chunks: Vec<&[usize]> = winners.chunks(READBACK_IDS).collect();
    let width = PROBE_CONNECTIONS.min(conns.len()).max(1);
    let mut mismatches: BTreeMap<String, u64> = BTreeMap::new();
    let (mut matched, mut requests) = (0u64, 0u64);
    for group in chunks.chunks(width) {
        let mut reads = Vec::new();
        for (conn, &chunk) in conns.iter_mut().zip(group) {
            let mut path = format!("/api/tokens?limit={READBACK_IDS}");
            for &i in chunk {
                path.push_str("&id=");
                path.push_str(pool.id(i));
            }
            reads.push(async move {
                let call = Call {
                    method: Method::Get,
                    path: &path,
                    body: None,
                };
                (chunk, conn.send(call).await)
            });
        }
        for (chunk, outcome) in futures_util::future::join_all(reads).await {
            requests += 1;
            let reply = match outcome {
                Ok(reply) if reply.status == 200 => reply,
                other => {
                    let why = match other {
                        Ok(reply) => format!("read {}", reply.status),
                        Err(e) => format!("read transport {}", e.kind),
                    };
                    *mismatches.entry(why).or_default() += chunk.len() as u64;
                    continue;
                }
            };
            let Ok(listed) = serde_json::from_slice::<Listed<'_>>(&reply.body) else {
                *mismatches
                    .entry("read 200 unreadable".to_owned())
                    .or_default() += chunk.len() as u64;
                continue;
            };
            let by_id: std::collections::HashMap<&str, &ListedToken> =
                listed.data.iter().map(|t| (t.id.as_ref(), t)).collect();
            for &i in chunk {
                let found = match by_id.get(pool.id(i)) {
                    None => Some("missing".to_owned()),
                    Some(t) if t.status != "redeemed" => Some(format!("status {}", t.status)),
                    Some(t) => {
                        let hold_id = t.redemption.as_ref().and_then(|r| r.hold_id.as_deref());
                        match (expect, hold_id) {
                            (Expect::Redeemed, None) => None,
                            (Expect::Redeemed, Some(_)) => Some("holdId set".to_owned()),
                            (Expect::Captured, None) => Some("no holdId".to_owned()),
                            (Expect::Captured, Some(id)) => (pool.hold(i).as_deref() != Some(id))
                                .then(|| "holdId differs".to_owned()),
                        }
                    }
                };
                match found {
                    None => matched += 1,
                    Some(why) => *mismatches.entry(why).or_default() += 1,
                }
            }
        }
    }
    Readback {
        expected: match expect {
            Expect::Redeemed => "redeemed",
            Expect::Captured => "captured",
        },
        tokens: winners.len() as u64,
        requests,
        matched,
        passed: mismatches.is_empty(),
        mismatches,
    }
}

/// Runs the probe on up to `limit` winning tokens (spread over the run) and
/// tallies the check.
pub async fn check(pool: &Arc<TokenPool>, conns: &mut [Conn], limit: u64) -> SpendOnce {
    let tried = pool.taken();
    let winners: Vec<usize> = (0..tried).filter(|&i| pool.wins(i) == 1).collect();
    let step = (winners.len() as u64).div_ceil(limit.max(1)).max(1) as usize;
    let chosen: Vec<usize> = if limit == 0 {
        Vec::new()
    } else {
        winners.iter().copied().step_by(step).collect()
    };
    let mut probe = Probe::default();
    let width = PROBE_CONNECTIONS.min(conns.len()).max(1);
    let body = Bytes::from_static(br#"{"merchantId":"m-load-probe"}"#);
    for group in chosen.chunks(width) {
        let mut sends = Vec::new();
        for (conn, &i) in conns.iter_mut().zip(group) {
            let path = format!("/api/tokens/{}/redeem", pool.id(i));
            let body = body.clone();
            sends.push(async move {
                let outcome = conn
                    .send(Call {
                        method: Method::Post,
                        path: &path,
                        body: Some(body),
                    })
                    .await;
                (i, outcome)
            });
        }
        for (i, outcome) in futures_util::future::join_all(sends).await {
            probe.sent += 1;
            let name = match outcome {
                Ok(reply) => {
                    if reply.status == 200 {
                        pool.record_ok(i, reply.replayed);
                    }
                    let code = serde_json::from_slice::<serde_json::Value>(&reply.body)
                        .ok()
                        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned));
                    match code {
                        Some(code) => format!("{} {code}", reply.status),
                        None => reply.status.to_string(),
                    }
                }
                Err(e) => format!("transport {}", e.kind),
            };
            *probe.answers.entry(name).or_default() += 1;
        }
    }
    let (mut redeemed, mut violations) = (0u64, 0u64);
    for i in 0..tried {
        match pool.wins(i) {
            0 => {}
            1 => redeemed += 1,
            _ => violations += 1,
        }
    }
    SpendOnce {
        tokens_tried: tried as u64,
        tokens_redeemed: redeemed,
        violations,
        replayed: pool.replayed(),
        probe,
        readback: None,
        passed: violations == 0,
    }
}
