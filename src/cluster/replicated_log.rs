//! A shard's log in a cluster: its subject of the JetStream stream, written
//! by one owner at a time.
//!
//! The shard appends records as on a single node ([`Log::append`] never
//! waits). One committer task sends what accumulated as one message (group
//! commit) with `Nats-Expected-Last-Subject-Sequence` set to the subject's
//! last sequence as this owner knows it, and resolves the waits once
//! JetStream has acknowledged it (the stream runs with three replicas and
//! `sync_interval: always`, so an acknowledged message is on the disks of a
//! majority).
//!
//! If anyone else appended to the subject — a new owner's claim marker —
//! the append is refused (error 10071; 10164 when the other message is
//! still in flight, which is retried a few times since the server also
//! answers it right after this writer's own append), and this log is
//! *fenced*:
//! nothing after its last acknowledged message was appended, every waiting
//! answer fails with [`LogError::Fenced`] (503 `SHARD_MOVED`, never a 2xx),
//! and the node drops its copy of the shard.
//!
//! A publish that fails for want of a stream leader, or whose ack is lost
//! to a reconnect, is retried with backoff (same message id, same expected
//! sequence) for [`PUBLISH_RETRY_MAX`]. An acknowledgement marked
//! `duplicate` means the message id was stored before: message ids are
//! unique to one owner's log and batch, so after a retry it is this batch's
//! earlier attempt, stored right after the expected sequence, and it counts
//! as the append. On a first attempt it cannot be ours, and it fences.

use super::message::{self, MESSAGE_BYTES_MAX};
use crate::keyring::Keyring;
use crate::log::{Durable, Log, LogError, LogRecord, Lsn};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, ErrorCode};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// How long a batch is retried while JetStream has no leader for the
/// stream (a leader election takes about 5 s) before the log gives up.
pub const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(15);
/// Bytes waiting to be sent before appends are refused: bounds memory while
/// JetStream is unreachable.
pub const PENDING_BYTES_MAX: usize = 64 << 20;
/// First pause between retries; doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(25);
/// Longest pause between retries.
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);

/// How a replicated log ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Another owner appended: the shard is elsewhere now.
    Fenced(String),
    /// JetStream stayed unreachable, or refused a message for good.
    Failed(String),
}

/// One shard's replicated log, for one ownership epoch.
#[derive(Clone)]
pub struct ReplicatedLog {
    /// Shared with the committer task.
    shared: Arc<Shared>,
}

struct Shared {
    /// Seals token values in the records appended.
    keyring: Arc<Keyring>,
    /// Records and waits.
    state: Mutex<State>,
    /// Wakes the committer when the first record of a batch arrives.
    wake: Notify,
}

struct State {
    /// The next LSN to assign (LSNs start at 1 for each epoch).
    next_lsn: Lsn,
    /// Frames of records appended but not yet sent.
    pending: Vec<u8>,
    /// LSN of the last record sent and acknowledged.
    durable_lsn: Lsn,
    /// `(lsn, frame end in pending)` of each pending record, to cut batches
    /// at record boundaries.
    frames: VecDeque<(Lsn, usize)>,
    /// Set once: why nothing more is acknowledged.
    ended: Option<LogError>,
    /// Closed by a hand-off: appends are refused, pending records are still
    /// sent.
    closing: bool,
    /// Answers waiting for their LSN, in LSN order.
    waiters: VecDeque<(Lsn, oneshot::Sender<Result<(), LogError>>)>,
    /// The claim marker's sequence: where this epoch's records start.
    claim_sequence: u64,
    /// `(first LSN, last LSN, stream sequence)` of the recent acknowledged
    /// messages, so that a snapshot at an LSN can say which message it
    /// covers ([`ReplicatedLog::stamp`]).
    acknowledged: VecDeque<(Lsn, Lsn, u64)>,
}

/// Where a shard's snapshot stands in its subject: it includes the records
/// of every message before `sequence` and the first `skip` records of
/// message `sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    /// The message.
    pub sequence: u64,
    /// Records of that message included.
    pub skip: u64,
}

/// Acknowledged messages remembered for [`ReplicatedLog::stamp`] (24 bytes
/// each): a snapshot stamps the LSN it captured right after waiting for it,
/// so only the newest few messages are ever asked for.
const ACKNOWLEDGED_MAX: usize = 1_024;

/// Where the committer appends.
pub struct Target {
    /// JetStream.
    pub js: jetstream::Context,
    /// The shard's subject.
    pub subject: String,
    /// Prefix of message ids: cluster, shard and the owner's epoch, so that
    /// no other owner's message can be taken as a duplicate of ours.
    pub id_prefix: String,
    /// The subject's last sequence when this owner took over (its claim).
    pub last_sequence: u64,
}

impl ReplicatedLog {
    /// A log whose committer runs [`ReplicatedLog::run`]; token values are
    /// sealed with `keyring`.
    pub fn new(keyring: Arc<Keyring>) -> Self {
        Self {
            shared: Arc::new(Shared {
                keyring,
                state: Mutex::new(State {
                    next_lsn: 1,
                    pending: Vec::new(),
                    durable_lsn: 0,
                    frames: VecDeque::new(),
                    ended: None,
                    closing: false,
                    waiters: VecDeque::new(),
                    claim_sequence: 0,
                    acknowledged: VecDeque::new(),
                }),
                wake: Notify::new(),
            }),
        }
    }

    /// Refuses appends from now on (a hand-off); what is pending is still
    /// sent, and the committer stops once it is.
    pub fn close(&self) {
        self.shared.state.lock().closing = true;
        self.shared.wake.notify_one();
    }

    /// Ends the log (fenced, failed or dropped): every wait fails.
    /// The first end is kept: later ones (a drop after a fence) change
    /// nothing.
    pub fn end(&self, error: LogError) {
        let (waiters, ended) = {
            let mut state = self.shared.state.lock();
            let ended = state.ended.get_or_insert(error).clone();
            (std::mem::take(&mut state.waiters), ended)
        };
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(ended.clone()));
        }
        self.shared.wake.notify_one();
    }

    /// Sends batches until the log is closed and empty, fenced or failed;
    /// returns how it ended.
    pub async fn run(self, target: Target) -> Ended {
        let mut last_sequence = target.last_sequence;
        self.shared.state.lock().claim_sequence = last_sequence;
        let mut batch_number: u64 = 0;
        loop {
            let wake = self.shared.wake.notified();
            let batch = {
                let mut state = self.shared.state.lock();
                if let Some(ended) = &state.ended {
                    return Ended::Failed(ended.to_string());
                }
                take_batch(&mut state)
            };
            let Some((payload, first_lsn, last_lsn)) = batch else {
                if self.shared.state.lock().closing {
                    self.end(LogError::Closed);
                    return Ended::Failed("closed".into());
                }
                wake.await;
                continue;
            };
            batch_number += 1;
            let id = format!("{}.{batch_number}", target.id_prefix);
            match publish(&target, payload, &id, last_sequence).await {
                Ok(sequence) => {
                    last_sequence = sequence;
                    self.acknowledge(first_lsn, last_lsn, sequence);
                }
                Err(ended) => {
                    let error = match &ended {
                        Ended::Fenced(cause) => LogError::Fenced {
                            cause: Arc::from(cause.as_str()),
                        },
                        Ended::Failed(cause) => LogError::Poisoned {
                            cause: Arc::from(cause.as_str()),
                        },
                    };
                    self.end(error);
                    return ended;
                }
            }
        }
    }

    /// Where a snapshot that includes the records up to `lsn` (durable)
    /// stands in the subject; `None` when that message is no longer
    /// remembered.
    pub fn stamp(&self, lsn: Lsn) -> Option<Stamp> {
        let state = self.shared.state.lock();
        if lsn == 0 {
            return Some(Stamp {
                sequence: state.claim_sequence,
                skip: 0,
            });
        }
        let at = state
            .acknowledged
            .partition_point(|(_, last, _)| *last < lsn);
        let &(first, _, sequence) = state.acknowledged.get(at)?;
        (first <= lsn).then_some(Stamp {
            sequence,
            skip: lsn - first + 1,
        })
    }

    /// The message `sequence` holding records `first..=last` is
    /// acknowledged: resolves their waits.
    fn acknowledge(&self, first: Lsn, lsn: Lsn, sequence: u64) {
        let mut resolved = Vec::new();
        {
            let mut state = self.shared.state.lock();
            debug_assert!(lsn > state.durable_lsn, "acknowledgements in order");
            state.durable_lsn = lsn;
            if state.acknowledged.len() == ACKNOWLEDGED_MAX {
                state.acknowledged.pop_front();
            }
            state.acknowledged.push_back((first, lsn, sequence));
            while state.waiters.front().is_some_and(|(l, _)| *l <= lsn) {
                if let Some((_, waiter)) = state.waiters.pop_front() {
                    resolved.push(waiter);
                }
            }
        }
        for waiter in resolved {
            let _ = waiter.send(Ok(()));
        }
    }
}

/// Takes the pending records, up to [`MESSAGE_BYTES_MAX`] at a record
/// boundary, as one message: the payload and the LSNs of its first and last
/// records.
fn take_batch(state: &mut State) -> Option<(Vec<u8>, Lsn, Lsn)> {
    let (mut last_lsn, mut end) = *state.frames.front()?;
    let first_lsn = last_lsn;
    // One record always goes, whatever its size (append bounds it).
    state.frames.pop_front();
    while let Some(&(lsn, frame_end)) = state.frames.front() {
        if frame_end > MESSAGE_BYTES_MAX {
            break;
        }
        last_lsn = lsn;
        end = frame_end;
        state.frames.pop_front();
    }
    let mut payload = message::batch_header();
    payload.extend_from_slice(&state.pending[..end]);
    state.pending.drain(..end);
    for frame in &mut state.frames {
        frame.1 -= end;
    }
    Some((payload, first_lsn, last_lsn))
}

/// How JetStream refused an append for its expected sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WrongSequence {
    /// 10071: the subject's last sequence is another one: someone else
    /// appended.
    Moved,
    /// 10164 (async-nats reports it as `Other`): the leader refused because
    /// a message to the subject was still in flight. Another writer's, or
    /// this writer's own previous one just acknowledged (seen with a single
    /// writer on nats-server 2.15.1): retrying is safe, since the server
    /// checks the expected sequence again.
    InFlight,
}

fn wrong_sequence(error: &jetstream::context::PublishError) -> Option<WrongSequence> {
    if error.kind() == PublishErrorKind::WrongLastSequence {
        return Some(WrongSequence::Moved);
    }
    let code = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .map(|e| e.error_code())?;
    if code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE {
        Some(WrongSequence::Moved)
    } else if code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT {
        Some(WrongSequence::InFlight)
    } else {
        None
    }
}

/// Times a 10164 refusal is retried before the log counts itself fenced.
const IN_FLIGHT_RETRIES_MAX: u32 = 20;

/// Appends `payload` if the subject's last sequence is `expected`: its
/// sequence, or how the log ends.
pub async fn publish(
    target: &Target,
    payload: Vec<u8>,
    id: &str,
    expected: u64,
) -> Result<u64, Ended> {
    let payload = bytes::Bytes::from(payload);
    let started = tokio::time::Instant::now();
    let mut pause = RETRY_PAUSE_MIN;
    let mut in_flight = 0;
    // Whether an earlier attempt may have been stored without its ack
    // reaching us.
    let mut retried = false;
    loop {
        let message = PublishMessage::build()
            .payload(payload.clone())
            .message_id(id)
            .expected_last_subject_sequence(expected);
        let sent = match target
            .js
            .send_publish(target.subject.clone(), message)
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let error = match sent {
            // Our own earlier attempt of this very message was stored (the
            // id is unique to this log and batch, and the server only keeps
            // ids of stored messages): the batch is in the subject at the
            // sequence the ack names, right after `expected`, since that
            // attempt carried the same expected sequence.
            Ok(ack) if ack.duplicate && retried && ack.sequence > expected => {
                return Ok(ack.sequence)
            }
            Ok(ack) if ack.duplicate => {
                return Err(Ended::Fenced(format!(
                    "message {id} was acknowledged as a duplicate of sequence {} \
                     without an earlier attempt after {expected}",
                    ack.sequence
                )))
            }
            Ok(ack) => return Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                return Err(Ended::Failed(format!("message {id} too large: {e}")))
            }
            Err(e) => match wrong_sequence(&e) {
                Some(WrongSequence::Moved) => {
                    return Err(Ended::Fenced(format!(
                        "{} moved past sequence {expected}: another node owns the shard",
                        target.subject
                    )))
                }
                Some(WrongSequence::InFlight) if in_flight >= IN_FLIGHT_RETRIES_MAX => {
                    return Err(Ended::Fenced(format!(
                        "{} kept another message in flight past sequence {expected}",
                        target.subject
                    )))
                }
                Some(WrongSequence::InFlight) => {
                    retried = true;
                    in_flight += 1;
                    tokio::time::sleep(RETRY_PAUSE_MIN * in_flight).await;
                    continue;
                }
                None => e,
            },
        };
        if started.elapsed() > PUBLISH_RETRY_MAX {
            return Err(Ended::Failed(format!(
                "JetStream did not acknowledge {id} for {} s: {error}",
                PUBLISH_RETRY_MAX.as_secs()
            )));
        }
        tracing::debug!(%error, id, "append not acknowledged; retrying");
        retried = true;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_PAUSE_MAX);
    }
}

impl Log for ReplicatedLog {
    fn append(&self, record: &LogRecord) -> Result<Lsn, LogError> {
        let mut state = self.shared.state.lock();
        if let Some(ended) = &state.ended {
            return Err(ended.clone());
        }
        if state.closing {
            return Err(LogError::Fenced {
                cause: Arc::from("the shard is being handed to another node"),
            });
        }
        let encoded = record.encode(&self.shared.keyring);
        if encoded.len() + 8 > MESSAGE_BYTES_MAX || state.pending.len() > PENDING_BYTES_MAX {
            let error = LogError::Poisoned {
                cause: Arc::from(format!(
                    "record of {} bytes with {} bytes pending exceeds the replicated log's limits",
                    encoded.len(),
                    state.pending.len()
                )),
            };
            drop(state);
            self.end(error.clone());
            return Err(error);
        }
        let first = state.frames.is_empty();
        message::push_frame(&mut state.pending, &encoded);
        let lsn = state.next_lsn;
        state.next_lsn += 1;
        let end = state.pending.len();
        state.frames.push_back((lsn, end));
        drop(state);
        if first {
            self.shared.wake.notify_one();
        }
        Ok(lsn)
    }

    fn durable(&self, lsn: Lsn) -> Durable {
        let mut state = self.shared.state.lock();
        if lsn <= state.durable_lsn {
            return Durable::ready(Ok(()));
        }
        if let Some(ended) = &state.ended {
            return Durable::ready(Err(ended.clone()));
        }
        if lsn >= state.next_lsn {
            return Durable::ready(Err(LogError::NotAppended {
                lsn,
                next_lsn: state.next_lsn,
            }));
        }
        let (sender, receiver) = oneshot::channel();
        // Waits arrive in nearly LSN order; keep the queue sorted.
        let at = state.waiters.partition_point(|(l, _)| *l <= lsn);
        state.waiters.insert(at, (lsn, sender));
        Durable::pending(receiver)
    }

    fn check_writable(&self) -> Result<(), LogError> {
        let state = self.shared.state.lock();
        match &state.ended {
            Some(ended) => Err(ended.clone()),
            None if state.closing => Err(LogError::Fenced {
                cause: Arc::from("the shard is being handed to another node"),
            }),
            None => Ok(()),
        }
    }

    fn last_lsn(&self) -> Lsn {
        self.shared.state.lock().next_lsn - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Delete, ShardCommand};
    use crate::ids::{AccountId, TokenId};
    use futures_util::FutureExt;

    fn record() -> LogRecord {
        LogRecord::Shard {
            now_ms: 1,
            command: ShardCommand::Delete(Delete {
                account_id: AccountId::random(),
                id: TokenId::random(),
            }),
        }
    }

    #[test]
    fn batches_cut_at_record_boundaries_and_acknowledgements_resolve_waits_in_order() {
        let log = ReplicatedLog::new(Arc::new(Keyring::off()));
        let first = log.append(&record()).unwrap();
        let second = log.append(&record()).unwrap();
        assert_eq!((first, second, log.last_lsn()), (1, 2, 2));
        let wait_second = log.durable(second);
        let mut wait_first = log.durable(first);
        let (payload, first, last) = take_batch(&mut log.shared.state.lock()).unwrap();
        assert_eq!((first, last), (1, 2));
        match message::decode(&payload, &Keyring::off()).unwrap() {
            message::LogMessage::Batch(records) => assert_eq!(records.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(take_batch(&mut log.shared.state.lock()).is_none());
        assert_eq!((&mut wait_first).now_or_never(), None);
        log.acknowledge(1, 2, 40);
        assert_eq!(wait_first.now_or_never(), Some(Ok(())));
        assert_eq!(
            log.stamp(1),
            Some(Stamp {
                sequence: 40,
                skip: 1
            })
        );
        assert_eq!(
            log.stamp(2),
            Some(Stamp {
                sequence: 40,
                skip: 2
            })
        );
        assert_eq!(
            log.stamp(0),
            Some(Stamp {
                sequence: 0,
                skip: 0
            })
        );
        assert_eq!(wait_second.now_or_never(), Some(Ok(())));
        assert_eq!(log.durable(2).now_or_never(), Some(Ok(())));
        assert!(matches!(
            log.durable(3).now_or_never(),
            Some(Err(LogError::NotAppended { .. }))
        ));
    }

    #[test]
    fn a_fenced_log_fails_its_waits_and_refuses_appends() {
        let log = ReplicatedLog::new(Arc::new(Keyring::off()));
        let lsn = log.append(&record()).unwrap();
        let wait = log.durable(lsn);
        log.end(LogError::Fenced {
            cause: Arc::from("moved"),
        });
        assert!(matches!(
            wait.now_or_never(),
            Some(Err(LogError::Fenced { .. }))
        ));
        assert!(matches!(
            log.append(&record()),
            Err(LogError::Fenced { .. })
        ));
        assert!(log.check_writable().is_err());
    }

    #[test]
    fn a_closing_log_refuses_appends_but_keeps_what_is_pending() {
        let log = ReplicatedLog::new(Arc::new(Keyring::off()));
        log.append(&record()).unwrap();
        log.close();
        assert!(matches!(
            log.append(&record()),
            Err(LogError::Fenced { .. })
        ));
        assert!(take_batch(&mut log.shared.state.lock()).is_some());
    }
}
