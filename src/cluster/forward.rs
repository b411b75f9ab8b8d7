//! Forwarding: any node accepts any request; what it asks of a shard held
//! elsewhere goes as a NATS request to the shard's request subject, where
//! only its owner listens, and comes back as if decided here.
//!
//! The owner decides it like a local request and replies once its records
//! are durable; a node that does not hold the shard when a request arrives
//! stays silent. No listener means no node serves the shard right now (a
//! takeover is under way): 503 `NOT_READY` with `Retry-After`. A request
//! that times out may or may not have taken effect: 503 `SHARD_MOVED`, as for
//! a request in flight when the shard moved.

use super::catalog_log::CatalogReplica;
use super::setup::Jet;
use crate::engine::{Engine, EngineError, Remote};
use crate::shard::wire::{ShardReply, ShardRequest};
use async_nats::RequestErrorKind;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Requests a node has in flight for the shards it owns: bounds the tasks a
/// burst of forwarded requests can start.
const SERVING_IN_FLIGHT_MAX: usize = 8_192;

/// Why the owner did not answer with a reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Failure {
    /// The shard is not (or no longer) held by the node that got the request.
    Moved,
    /// Not available yet.
    NotReady {
        /// Why.
        reason: String,
        /// When to retry.
        retry_after_secs: u32,
    },
    /// The owner's log failed.
    Storage(String),
    /// The owner is shutting down.
    Unavailable,
    /// The owner's shard holds as many requests as it may; nothing was done.
    Overloaded,
}

impl Failure {
    fn of(error: EngineError) -> Self {
        match error {
            EngineError::ShardMoved => Failure::Moved,
            EngineError::NotReady {
                reason,
                retry_after_secs,
            } => Failure::NotReady {
                reason,
                retry_after_secs,
            },
            EngineError::Unavailable => Failure::Unavailable,
            EngineError::Overloaded => Failure::Overloaded,
            other => Failure::Storage(other.to_string()),
        }
    }

    fn into_error(self) -> EngineError {
        match self {
            Failure::Moved => EngineError::ShardMoved,
            Failure::NotReady {
                reason,
                retry_after_secs,
            } => EngineError::NotReady {
                reason,
                retry_after_secs,
            },
            Failure::Storage(cause) => EngineError::Storage(cause),
            Failure::Unavailable => EngineError::NotReady {
                reason: "the shard's owner is shutting down".into(),
                retry_after_secs: 1,
            },
            Failure::Overloaded => EngineError::Overloaded,
        }
    }
}

/// The answer on the wire.
type Answer = Result<ShardReply, Failure>;

/// A request on the wire, with the catalog sequence its sender had applied:
/// the owner decides it only once its own replica has applied as much, so
/// a collection the sender knows is never "not found" at the owner.
#[derive(Debug, Serialize, Deserialize)]
struct Forwarded {
    /// The sender's catalog sequence.
    catalog_sequence: u64,
    /// The request.
    request: ShardRequest,
}

/// Counts of forwarding, for `/metrics`.
#[derive(Debug, Default)]
pub struct ForwardCounts {
    /// Requests this node sent to other owners.
    pub sent: AtomicU64,
    /// Requests other nodes sent to this node's shards.
    pub served: AtomicU64,
}

/// Sends requests to the owners of shards not held here.
pub struct Forwarder {
    /// NATS.
    jet: Jet,
    /// This node's catalog replica (its sequence goes with each request).
    catalog: Arc<CatalogReplica>,
    /// Counts.
    counts: Arc<ForwardCounts>,
}

impl Forwarder {
    /// A forwarder over `jet`.
    pub fn new(jet: Jet, catalog: Arc<CatalogReplica>, counts: Arc<ForwardCounts>) -> Self {
        Self {
            jet,
            catalog,
            counts,
        }
    }
}

impl Remote for Forwarder {
    fn call(
        &self,
        shard: usize,
        request: ShardRequest,
    ) -> BoxFuture<'static, Result<ShardReply, EngineError>> {
        let client = self.jet.client.clone();
        let subject = self.jet.names.rpc_subject(shard);
        self.counts.sent.fetch_add(1, Ordering::Relaxed);
        let forwarded = Forwarded {
            catalog_sequence: self.catalog.applied(),
            request,
        };
        Box::pin(async move {
            let payload = rmp_serde::to_vec_named(&forwarded)
                .map_err(|e| EngineError::Storage(format!("encoding a forwarded request: {e}")))?;
            let reply = match client.request(subject, payload.into()).await {
                Ok(reply) => reply,
                Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                    return Err(EngineError::NotReady {
                        reason: format!("no node serves shard {shard} at the moment"),
                        retry_after_secs: 1,
                    })
                }
                Err(e) => {
                    tracing::debug!(shard, error = %e, "forwarded request failed");
                    return Err(EngineError::ShardMoved);
                }
            };
            let answer: Answer = rmp_serde::from_slice(&reply.payload).map_err(|e| {
                EngineError::Storage(format!(
                    "undecodable answer from shard {shard}'s owner: {e}"
                ))
            })?;
            answer.map_err(Failure::into_error)
        })
    }
}

/// Answers the requests for `shard` that other nodes send, until aborted
/// (the node stops holding the shard).
pub async fn serve_shard(
    jet: Jet,
    engine: Engine,
    catalog: Arc<CatalogReplica>,
    shard: usize,
    counts: Arc<ForwardCounts>,
) {
    let subject = jet.names.rpc_subject(shard);
    // Every listener gets every request, and the requester takes the first
    // answer: a node that stopped holding the shard stays silent, so a
    // listener the server still counts but that cannot answer (a node cut
    // off by a partition, until the server notices) delays nothing. A
    // queue group would hand it some of the requests, to time out.
    let mut requests = match jet.client.subscribe(subject.clone()).await {
        Ok(requests) => requests,
        Err(e) => {
            tracing::error!(shard, error = %e, "cannot listen for forwarded requests");
            return;
        }
    };
    let in_flight = Arc::new(tokio::sync::Semaphore::new(SERVING_IN_FLIGHT_MAX));
    while let Some(message) = requests.next().await {
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        if !engine.serves(shard) {
            continue;
        }
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        counts.served.fetch_add(1, Ordering::Relaxed);
        let engine = engine.clone();
        let catalog = Arc::clone(&catalog);
        let client = jet.client.clone();
        // Each request its own task: answers wait for group commits, which
        // only fill up when requests are decided concurrently.
        actix_web::rt::spawn(async move {
            let answer: Answer = match rmp_serde::from_slice::<Forwarded>(&message.payload) {
                Ok(forwarded) => {
                    let decided = async {
                        catalog.reach(forwarded.catalog_sequence).await?;
                        engine.serve_remote(shard, forwarded.request).await
                    };
                    decided.await.map_err(Failure::of)
                }
                Err(e) => Err(Failure::Storage(format!("undecodable request: {e}"))),
            };
            match rmp_serde::to_vec_named(&answer) {
                Ok(bytes) => {
                    if let Err(e) = client.publish(reply_to, bytes.into()).await {
                        tracing::debug!(shard, error = %e, "could not answer a forwarded request");
                    }
                }
                Err(e) => tracing::error!(shard, error = %e, "could not encode an answer"),
            }
            drop(permit);
        });
    }
}
