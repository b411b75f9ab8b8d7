//! Health routes: no key needed, so that probes need no secret.

use super::error::{ApiError, ErrorCode};
use super::shapes;
use super::state::AppState;
use actix_web::{web, HttpResponse};

/// `GET /health/live`: 200 while the process runs.
#[utoipa::path(
    get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "The process runs.", body = shapes::HealthShape)),
)]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"live"}"#)
}

/// `GET /health/ready`: 200 once restore is done and the shards run.
#[utoipa::path(
    get, path = "/health/ready", tag = "operations",
    responses((status = 200, description = "Restore is done and the shards run (in cluster mode: the node joined).", body = shapes::HealthShape)),
)]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "Not ready yet.",
        ));
    }
    let Some(cluster) = state.cluster.get() else {
        return Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"status":"ready"}"#));
    };
    // A cluster node is ready once it has joined and its catalog replica
    // caught up; the body says which shards it holds.
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "cluster": cluster.cluster_status(),
    })))
}
