//! Taking a shard over: rebuild its state from its newest snapshot and the
//! messages of its subject after it, then append a claim marker with the
//! subject's last sequence as the expected one.
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
use super::replicated_log::{self, Ended, Stamp, Target};
use super::setup::Jet;
use super::snapshots::ShardSnapshots;
use crate::keyring::Keyring;
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
    /// The stamp of the snapshot it started from, if any.
    pub snapshot: Option<Stamp>,
}

/// Rebuilds shard `shard` and appends the claim of `node`, `epoch`.
pub async fn take_over(
    jet: &Jet,
    catalog: &CatalogReplica,
    snapshots: &ShardSnapshots,
    shard: usize,
    node: &str,
    epoch: u64,
    retention_ms: i64,
) -> Result<TakenOver, String> {
    // Every collection a token record names was in the catalog subject
    // before the record was appended.
    catalog.catch_up().await.map_err(|e| e.to_string())?;
    let subject = jet.names.shard_subject(shard);
    let (mut state, mut replayed_to, mut skip) = match snapshots
        .load_newest(shard, catalog.catalog(), retention_ms)
        .await?
    {
        Some((state, stamp)) => (state, stamp.sequence - 1, Some(stamp)),
        None => (ShardState::new(retention_ms), 0, None),
    };
    let snapshot = skip;
    let mut messages = 0;
    for attempt in 0..CLAIM_ATTEMPTS_MAX {
        let tail = last_subject_sequence(jet, &subject).await?;
        if tail > replayed_to {
            let range = (replayed_to + 1, tail);
            messages += replay(
                jet,
                catalog,
                &subject,
                range,
                skip.take(),
                &mut state,
                snapshots.keyring(),
            )
            .await?;
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
        // One id per attempt: a retried attempt whose first try landed is
        // acknowledged as a duplicate (and refused), the next one is not.
        let id = format!(
            "{}.{shard}.{epoch}.claim.{node}.{attempt}",
            jet.names.cluster()
        );
        match replicated_log::publish(&target, marker, &id, tail).await {
            Ok(claim_sequence) => {
                return Ok(TakenOver {
                    state,
                    claim_sequence,
                    messages,
                    snapshot,
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

/// Applies the subject's messages `from..=to` to `state`; of the message
/// a snapshot stamp names, only the records after those it includes.
async fn replay(
    jet: &Jet,
    catalog: &CatalogReplica,
    subject: &str,
    (from, to): (u64, u64),
    snapshot: Option<Stamp>,
    state: &mut ShardState,
    keyring: &Keyring,
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
        let skip = snapshot
            .filter(|stamp| stamp.sequence == sequence)
            .map_or(0, |stamp| stamp.skip);
        apply(catalog, state, sequence, &next.payload, skip, keyring)?;
        count += 1;
        if sequence == to {
            return Ok(count);
        }
    }
}

/// Applies one message of a shard's subject but its first `skip` records.
fn apply(
    catalog: &CatalogReplica,
    state: &mut ShardState,
    sequence: u64,
    payload: &[u8],
    skip: u64,
    keyring: &Keyring,
) -> Result<(), String> {
    match message::decode(payload, keyring).map_err(|e| format!("message {sequence}: {e}"))? {
        LogMessage::Claim(_) => Ok(()),
        LogMessage::Batch(records) => {
            let skip = usize::try_from(skip).unwrap_or(usize::MAX);
            for record in records.into_iter().skip(skip) {
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
