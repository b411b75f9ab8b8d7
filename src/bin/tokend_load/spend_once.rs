//! The spend-once check: no token may get more than one successful
//! (non-replayed) 200 to a redeem. Counts come from the run, plus a probe that
//! redeems again, without idempotency key, tokens that already won: each
//! must answer 409.

use super::http::Method;
use super::http::{Call, Conn};
use super::tokens::TokenPool;
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Connections used by the probe.
const PROBE_CONNECTIONS: usize = 8;

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
    /// No violation.
    pub passed: bool,
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
        passed: violations == 0,
    }
}
