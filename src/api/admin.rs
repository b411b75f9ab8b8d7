//! Admin operations: a snapshot on demand (single node), for the admin key
//! only.

use super::auth::Caller;
use super::error::{ApiError, ErrorCode};
use super::respond::json;
use super::shapes;
use super::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

/// `POST /api/admin/snapshot`: answers once a snapshot is durable.
#[utoipa::path(
    post, path = "/api/admin/snapshot", tag = "operations", security(("adminKey" = []), ("adminBearer" = [])),
    responses((status = 200, description = "The snapshot is durable (single node; 404 in cluster mode).", body = shapes::SnapshotShape)),
)]
pub async fn snapshot(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let engine = state.engine()?;
    if engine.snapshotter().is_none() {
        // A cluster node has no data dir: each owner snapshots the shards
        // it holds into the cluster's object store on its own schedule.
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "No snapshot on demand in cluster mode: each node snapshots the shards it holds \
             every --snapshot-interval-secs into the cluster's object store.",
        ));
    }
    let info = engine.snapshot().await?;
    let file = info
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "lsn": info.lsn,
            "file": file,
            "tokens": info.tokens,
            "bytes": info.bytes,
        }),
    )
}
