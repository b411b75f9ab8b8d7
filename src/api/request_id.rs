//! `X-Request-Id`: an id on every response, the same one in the error body
//! and in the request log. The middleware runs the rest of the request
//! inside a task-local scope holding the id, so error rendering anywhere
//! below can read it.
//!
//! A client (or a proxy in front) may send its own `X-Request-Id` to tie its
//! logs to ours: it is kept when well-formed — 1 to [`ID_CHARS_MAX`]
//! characters of `A-Z a-z 0-9 . _ -` — and replaced by a fresh
//! `req_<32 hex>` otherwise, so a log line never carries arbitrary client
//! text.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use uuid::Uuid;

/// The request and response header carrying the id.
pub const HEADER: &str = "x-request-id";

/// Longest incoming id kept.
pub const ID_CHARS_MAX: usize = 64;

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

/// Whether a client's id is kept: 1 to [`ID_CHARS_MAX`] characters of
/// letters, digits, `.`, `_` and `-`.
pub fn is_well_formed(id: &[u8]) -> bool {
    (1..=ID_CHARS_MAX).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The request's own id when it sent a single well-formed one.
fn incoming(req: &ServiceRequest) -> Option<String> {
    let mut values = req.headers().get_all(HEADER);
    let value = values.next()?;
    if values.next().is_some() || !is_well_formed(value.as_bytes()) {
        return None;
    }
    value.to_str().ok().map(str::to_owned)
}

/// Middleware: takes or makes the id, scopes it, sets the header.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = incoming(&req).unwrap_or_else(new_id);
    let header = HeaderValue::from_str(&id);
    let mut response = REQUEST_ID.scope(id, next.call(req)).await?;
    if let Ok(value) = header {
        response
            .headers_mut()
            .insert(HeaderName::from_static(HEADER), value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_ids() {
        assert!(is_well_formed(b"a"));
        assert!(is_well_formed(b"req_0123abcd"));
        assert!(is_well_formed(b"trace-1.2_3"));
        assert!(is_well_formed(&[b'x'; ID_CHARS_MAX]));
        assert!(!is_well_formed(b""));
        assert!(!is_well_formed(&[b'x'; ID_CHARS_MAX + 1]));
        for bad in [
            &b"a b"[..],
            b"a\"b",
            b"a/b",
            b"a\nb",
            b"caf\xc3\xa9",
            b"{id}",
        ] {
            assert!(!is_well_formed(bad), "{bad:?}");
        }
    }
}
