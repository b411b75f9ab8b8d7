//! The catalog in a cluster: one subject of the stream, which every node
//! tails into its own replica (authentication and collections are read
//! locally, on every request).
//!
//! A write is decided by whichever node received it, against its replica,
//! and appended with the catalog subject's last sequence as that node has
//! applied it: if another node wrote in between, the append is refused, the
//! node catches up and decides again. So catalog changes are decided in one
//! order, the stream's, with no owner to elect; they are rare, and a retry
//! costs a round trip. A write answers once this node's replica has applied
//! it, so the next request to this node sees it.

use super::message::{self, LogMessage};
use super::replicated_log::{self, Ended, Target};
use super::setup::Jet;
use crate::catalog::Catalog;
use crate::command::CatalogCommand;
use crate::engine::{CatalogWriter, EngineError};
use crate::keyring::Keyring;
use crate::log::LogRecord;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How many times a write is decided again after losing a race.
const WRITE_ATTEMPTS_MAX: usize = 16;
/// How long a node waits for its replica to reach a sequence.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before the tail is resumed after an error.
const TAIL_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// This node's catalog replica and its writer.
pub struct CatalogReplica {
    /// The replica.
    catalog: Arc<Catalog>,
    /// The stream sequence of the last catalog message applied.
    applied: watch::Sender<u64>,
    /// NATS.
    jet: Jet,
    /// One local write at a time: they would only race each other.
    write_lock: tokio::sync::Mutex<()>,
    /// Catalog messages the server knew of and had not yet delivered to
    /// this replica, as of the last one applied: its lag behind the stream.
    lag: std::sync::atomic::AtomicU64,
}

impl CatalogReplica {
    /// An empty replica; [`CatalogReplica::tail`] fills it.
    pub fn new(jet: Jet) -> Arc<Self> {
        Arc::new(Self {
            catalog: Arc::new(Catalog::new()),
            applied: watch::channel(0).0,
            jet,
            write_lock: tokio::sync::Mutex::new(()),
            lag: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The replica.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The last catalog sequence applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Catalog messages not yet applied here, as of the last one applied.
    pub fn lag(&self) -> u64 {
        self.lag.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies the catalog subject's messages as they arrive, forever.
    pub async fn tail(self: Arc<Self>) {
        loop {
            if let Err(e) = self.tail_once().await {
                tracing::warn!(error = %e, "catalog tail interrupted; resuming");
            }
            tokio::time::sleep(TAIL_RETRY_PAUSE).await;
        }
    }

    async fn tail_once(&self) -> Result<(), String> {
        let start = self.applied() + 1;
        let consumer = self
            .jet
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: self.jet.names.catalog_subject(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| e.to_string())?;
            let info = message.info().map_err(|e| e.to_string())?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            self.lag
                .store(pending, std::sync::atomic::Ordering::Relaxed);
            if sequence <= self.applied() {
                continue;
            }
            self.apply(sequence, &message.payload)?;
        }
        Err("the catalog consumer ended".into())
    }

    fn apply(&self, sequence: u64, payload: &[u8]) -> Result<(), String> {
        // Catalog records carry no token values: nothing to open.
        match message::decode(payload, &Keyring::off())
            .map_err(|e| format!("catalog message {sequence}: {e}"))?
        {
            LogMessage::Batch(records) => {
                for record in records {
                    match record {
                        LogRecord::Catalog(command) => {
                            if let Err(e) = self.catalog.apply(&command) {
                                // Decided against the state before it, in the
                                // same order: only a bug gets here.
                                tracing::error!(sequence, error = %e, "catalog record does not apply; skipped");
                            }
                        }
                        LogRecord::Shard { .. } => {
                            return Err(format!("catalog message {sequence} holds a shard record"))
                        }
                    }
                }
            }
            LogMessage::Claim(_) => {}
        }
        self.applied.send_replace(sequence);
        Ok(())
    }

    /// The catalog subject's last sequence in the stream (0 when empty).
    async fn tail_sequence(&self) -> Result<u64, EngineError> {
        last_subject_sequence(&self.jet, &self.jet.names.catalog_subject())
            .await
            .map_err(EngineError::Storage)
    }

    /// Waits until the replica has applied `sequence`.
    pub async fn reach(&self, sequence: u64) -> Result<(), EngineError> {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(CATCH_UP_TIMEOUT, applied.wait_for(|a| *a >= sequence))
            .await
            .is_ok_and(|waited| waited.is_ok());
        match reached {
            true => Ok(()),
            false => Err(EngineError::NotReady {
                reason: format!("the catalog replica has not reached sequence {sequence}"),
                retry_after_secs: 1,
            }),
        }
    }

    /// Waits until the replica holds everything the stream held when called.
    pub async fn catch_up(&self) -> Result<(), EngineError> {
        let tail = self.tail_sequence().await?;
        self.reach(tail).await
    }

    async fn write_once(&self, command: &CatalogCommand) -> Result<Option<u64>, EngineError> {
        self.catch_up().await?;
        let expected = self.applied();
        self.catalog.check(command)?;
        let mut payload = message::batch_header();
        message::push_frame(
            &mut payload,
            &LogRecord::Catalog(command.clone()).encode(&Keyring::off()),
        );
        let target = Target {
            js: self.jet.js.clone(),
            subject: self.jet.names.catalog_subject(),
            id_prefix: String::new(),
            last_sequence: expected,
        };
        // A fresh id per attempt: a duplicate can only be this very write.
        let id = format!("catalog.{}", uuid::Uuid::new_v4());
        match replicated_log::publish(&target, payload, &id, expected).await {
            Ok(sequence) => Ok(Some(sequence)),
            // Another node wrote first: decide again on the newer state.
            Err(Ended::Fenced(_)) => Ok(None),
            Err(Ended::Failed(cause)) => Err(EngineError::Storage(cause)),
        }
    }
}

impl CatalogWriter for Arc<CatalogReplica> {
    fn write(&self, command: CatalogCommand) -> BoxFuture<'static, Result<(), EngineError>> {
        let replica = Arc::clone(self);
        Box::pin(async move {
            let _one_at_a_time = replica.write_lock.lock().await;
            for _ in 0..WRITE_ATTEMPTS_MAX {
                if let Some(sequence) = replica.write_once(&command).await? {
                    return replica.reach(sequence).await;
                }
            }
            Err(EngineError::NotReady {
                reason: "catalog writes keep racing; try again".into(),
                retry_after_secs: 1,
            })
        })
    }

    fn catch_up(&self) -> BoxFuture<'static, Result<(), EngineError>> {
        let replica = Arc::clone(self);
        // The inherent method (this trait's own of the same name is on the
        // `Arc`).
        Box::pin(async move { CatalogReplica::catch_up(&replica).await })
    }

    fn replicated(&self) -> bool {
        true
    }
}

/// The last sequence of `subject` in the stream, 0 when it has none.
pub async fn last_subject_sequence(jet: &Jet, subject: &str) -> Result<u64, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match jet.stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(message.sequence),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(format!("last message of {subject}: {e}")),
    }
}
