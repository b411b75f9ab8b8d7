//! Admin operations: a snapshot on demand, for the admin key only.

use super::auth::Caller;
use super::error::ApiError;
use super::respond::json;
use super::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

/// `POST /api/admin/snapshot`: answers once a snapshot is durable.
pub async fn snapshot(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let info = state.engine()?.snapshot().await?;
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
