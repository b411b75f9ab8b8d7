//! What every handler shares.

use crate::admin_key::AdminKey;
use crate::engine::Engine;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared by all HTTP workers.
pub struct AppState {
    /// The engine every route talks to.
    pub engine: Engine,
    /// Digest of the admin key.
    pub admin_key: AdminKey,
    /// Set once restore is done and the shards run (`/health/ready`).
    pub ready: Arc<AtomicBool>,
}

impl AppState {
    /// Whether the engine serves requests.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
