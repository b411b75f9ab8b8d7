//! An error answered by the edge itself: a complete HTTP/1.1 response in
//! the API's error shape, written straight to the socket, after which the
//! connection is closed.

use super::EdgeError;
use crate::api::error::ApiError;
use crate::api::request_id;
use bytes::Bytes;
use std::fmt::Write as _;

/// The bytes of the response to `error`: the API's error body, its
/// `X-Request-Id`, and `Connection: close`.
pub fn render(error: EdgeError) -> Bytes {
    let id = request_id::new_id();
    // A client's mistake or a cap doing its job: not an ERROR.
    tracing::debug!(request_id = %id, %error, "refused at the connection edge");
    let error = ApiError::from(error);
    let status = error.code.status();
    let body = error.body(&id);
    let mut head = String::with_capacity(256);
    // Writing to a String cannot fail.
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         {}: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        request_id::HEADER,
        id,
    );
    if let Some(secs) = error.retry_after_secs {
        let _ = write!(head, "retry-after: {secs}\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_a_complete_response_with_the_error_body() {
        let bytes = render(EdgeError::HeadTooLarge { limit: 16384 });
        let text = std::str::from_utf8(&bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["status"], 431);
        assert_eq!(json["code"], "HEADERS_TOO_LARGE");
        let id = json["requestId"].as_str().unwrap();
        assert!(head.contains(&format!("x-request-id: {id}\r\n")));
    }
}
