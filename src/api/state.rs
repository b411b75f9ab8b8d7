//! What every handler shares.

use super::error::{ApiError, ErrorCode};
use super::rate_limit::RateLimit;
use crate::admin_key::AdminKey;
use crate::engine::Engine;
use crate::metrics::cluster::ClusterReadings;
use crate::metrics::Metrics;
use std::sync::{Arc, OnceLock};

/// Shared by all HTTP workers.
pub struct AppState {
    /// The engine every route talks to; set once restore is done, so the
    /// server can answer health checks (503 not ready) while it restores.
    pub engine: Arc<OnceLock<Engine>>,
    /// Digest of the admin key.
    pub admin_key: AdminKey,
    /// The application's metrics, encoded by `GET /metrics`.
    pub metrics: Metrics,
    /// Cluster mode: what this node holds (for `/health/ready`).
    pub cluster: OnceLock<Arc<dyn ClusterReadings>>,
    /// Per-API-key rate limits (`None`: off).
    pub rate_limit: Option<RateLimit>,
}

impl AppState {
    /// The engine, or 503 while restore runs.
    pub fn engine(&self) -> Result<&Engine, ApiError> {
        self.engine.get().ok_or_else(|| {
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The engine is restoring its state; retry shortly.",
            )
        })
    }

    /// The state of the application serving `req`.
    pub fn of(req: &actix_web::HttpRequest) -> Result<&AppState, ApiError> {
        req.app_data::<actix_web::web::Data<AppState>>()
            .map(|data| data.get_ref())
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "Application state missing."))
    }

    /// Whether the engine serves requests.
    pub fn is_ready(&self) -> bool {
        self.engine.get().is_some()
    }
}
