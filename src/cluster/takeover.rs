//! Taking a shard over: rebuild its state from its subject, then append a
//! claim marker with the subject's last sequence as the expected one.
//!
//! The marker is what fences the previous owner: any append it still makes
//! expects the sequence before the marker and is refused. If the previous
//! owner appended after the replay read the tail (it may still believe it
//! holds the shard, e.g. just after a pause), the marker is refused instead;
//! the new owner replays what was added and tries again. Either way the new
//! owner serves only a state that includes every message the stream
//! acknowledged before its marker.

use super::catalog_log::{last_subject_sequence, CatalogReplica};
use super::message::{self, Claim, LogMessage};
use super::replicated_log::{self, Ended, Target};
use super::setup::Jet;
use crate::log::LogRecord;
use crate::shard::ShardState;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures_util::StreamExt;
use std::time::Duration;

/// Attempts at the claim marker before the takeover gives up (each failed
/// one means the previous owner appended in between).
const CLAIM_ATTEMPTS_MAX: usize = 20;
/// Longest wait for the next message of a replay.
const REPLAY_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A shard rebuilt and claimed.
pub struct TakenOver {
    /// Its state, as of the claim.
    pub state: ShardState,
    /// The sequence of the claim marker: the new owner's first expected
    /// sequence.
    pub claim_sequence: u64,
    /// Messages replayed.
    pub messages: u64,
}

/// Rebuilds shard `shard` and appends the claim of `node`, `epoch`.
pub async fn take_over(
    jet: &Jet,
    catalog: &CatalogReplica,
    shard: usize,
    node: &str,
    epoch: u64,
    retention_ms: i64,
) -> Result<TakenOver, String> {
    // Every collection a token record names was in the catalog subject
    // before the record was appended.
    catalog.catch_up().await.map_err(|e| e.to_string())?;
    let subject = jet.names.shard_subject(shard);
    let mut state = ShardState::new(retention_ms);
    let mut replayed_to = 0;
    let mut messages = 0;
    for _ in 0..CLAIM_ATTEMPTS_MAX {
        let tail = last_subject_sequence(jet, &subject).await?;
        if tail > replayed_to {
            messages += replay(jet, catalog, &subject, replayed_to + 1, tail, &mut state).await?;
            replayed_to = tail;
        }
        let target = Target {
            js: jet.js.clone(),
            subject: subject.clone(),
            id_prefix: String::new(),
            last_sequence: tail,
        };
        let marker = message::claim(&Claim {
            node: node.to_owned(),
            epoch,
        });
        let id = format!("{}.{shard}.{epoch}.claim.{node}", jet.names.cluster());
        match replicated_log::publish(&target, marker, &id, tail).await {
            Ok(claim_sequence) => {
                return Ok(TakenOver {
                    state,
                    claim_sequence,
                    messages,
                })
            }
            Err(Ended::Fenced(cause)) => {
                tracing::info!(shard, %cause, "the previous owner appended during takeover; replaying again");
            }
            Err(Ended::Failed(cause)) => return Err(cause),
        }
    }
    Err(format!(
        "shard {shard}: the claim lost {CLAIM_ATTEMPTS_MAX} races in a row"
    ))
}

/// Applies the subject's messages `from..=to` to `state`.
async fn replay(
    jet: &Jet,
    catalog: &CatalogReplica,
    subject: &str,
    from: u64,
    to: u64,
    state: &mut ShardState,
) -> Result<u64, String> {
    let consumer = jet
        .stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("replay of {subject}: {e}"))?;
    let mut stream = consumer
        .messages()
        .await
        .map_err(|e| format!("replay of {subject}: {e}"))?;
    let mut count = 0;
    loop {
        let next = tokio::time::timeout(REPLAY_MESSAGE_TIMEOUT, stream.next())
            .await
            .map_err(|_| format!("replay of {subject} stalled before sequence {to}"))?;
        let Some(next) = next else {
            return Err(format!("replay of {subject} ended before sequence {to}"));
        };
        let next = next.map_err(|e| format!("replay of {subject}: {e}"))?;
        let sequence = next
            .info()
            .map_err(|e| format!("replay of {subject}: {e}"))?
            .stream_sequence;
        if sequence > to {
            return Ok(count);
        }
        apply(catalog, state, sequence, &next.payload)?;
        count += 1;
        if sequence == to {
            return Ok(count);
        }
    }
}

/// Applies one message of a shard's subject.
fn apply(
    catalog: &CatalogReplica,
    state: &mut ShardState,
    sequence: u64,
    payload: &[u8],
) -> Result<(), String> {
    match message::decode(payload).map_err(|e| format!("message {sequence}: {e}"))? {
        LogMessage::Claim(_) => Ok(()),
        LogMessage::Batch(records) => {
            for record in records {
                let LogRecord::Shard { now_ms, command } = record else {
                    return Err(format!("message {sequence} holds a catalog record"));
                };
                if let Err(rejection) = state.apply(&command, now_ms, catalog.catalog()) {
                    // As on a single node: only a shorter tombstone retention
                    // makes a logged command refuse now.
                    tracing::warn!(sequence, %rejection, "logged command no longer applies; skipped");
                }
            }
            Ok(())
        }
    }
}
