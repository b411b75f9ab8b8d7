//! `X-Request-Id`: a unique id on every response, the same one in the error
//! body. The middleware runs the rest of the request inside a task-local
//! scope holding the id, so error rendering anywhere below can read it.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use uuid::Uuid;

/// The response header carrying the id.
pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served (a fresh one outside any request).
pub fn current() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| new_id())
}

/// A fresh id.
pub fn new_id() -> String {
    format!("req_{}", Uuid::new_v4().simple())
}

/// Middleware: assigns the id, scopes it, sets the header.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = new_id();
    let header = HeaderValue::from_str(&id);
    let mut response = REQUEST_ID.scope(id, next.call(req)).await?;
    if let Ok(value) = header {
        response
            .headers_mut()
            .insert(HeaderName::from_static(HEADER), value);
    }
    Ok(response)
}
