//! Reading request bodies: content type, size limits, JSON syntax.
//!
//! Bodies are read here (for [`Checked`](super::checked::Checked)) rather
//! than by actix's extractors so that every failure answers in the API's
//! error format: 413 over the limit, 400 for a wrong content type or
//! malformed JSON, 408 for a body not received within the body timeout.

use super::error::{ApiError, ErrorCode};
use actix_web::dev::Payload;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::HttpRequest;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// Body limit of ordinary routes (1 MiB).
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Body limit of the batch route (16 MiB).
pub const BATCH_BODY_BYTES_MAX: usize = 16 << 20;

/// How long a client has to send a whole body (`--http-body-timeout-ms`),
/// from when its handler starts reading it; in the application's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout(
    /// The time from the first read to the last byte.
    pub Duration,
);

impl Default for BodyTimeout {
    fn default() -> Self {
        Self(Duration::from_millis(
            super::edge::limits::BODY_TIMEOUT_MS_DEFAULT,
        ))
    }
}

fn timed_out(timeout: Duration) -> ApiError {
    ApiError::new(
        ErrorCode::RequestTimeout,
        format!(
            "The body was not received within {} ms.",
            timeout.as_millis()
        ),
    )
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("The body is larger than {} bytes.", limit),
    )
}

/// The 400 for a body that does not parse as JSON.
pub fn not_json(error: serde_json::Error) -> ApiError {
    ApiError::bad_request(format!("The body is not valid JSON: {error}"))
}

/// Reads the whole body, refusing it as soon as it is over `limit`, or when
/// it is not all received within the body timeout.
pub async fn read_bytes(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    let timeout = req.app_data::<BodyTimeout>().copied().unwrap_or_default().0;
    let read = async move {
        let mut body = BytesMut::with_capacity(declared.map_or(0, |len| len as usize).min(limit));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("Could not read the body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| Err(timed_out(timeout)))
}

/// Refuses a body whose `Content-Type` is not JSON (`application/json` or
/// any `+json` type).
fn require_json_type(req: &HttpRequest) -> Result<(), ApiError> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim();
            essence.eq_ignore_ascii_case("application/json")
                || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case("+json"))
        });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "The body must be JSON with Content-Type: application/json.",
        ))
    }
}

/// The body as JSON. An empty body is `{}` when `empty_is_object` (routes
/// whose fields are all optional), else malformed.
pub fn parse_json(
    req: &HttpRequest,
    body: &[u8],
    empty_is_object: bool,
) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) && empty_is_object {
        return Ok(Value::Object(Default::default()));
    }
    require_json_type(req)?;
    serde_json::from_slice(body).map_err(not_json)
}

/// A body that must be JSON but is left as text, for a handler that parses
/// it piece by piece. It is refused exactly as [`parse_json`] refuses it
/// (same statuses, same messages, same error positions), so what a client
/// is told does not depend on how the route parses.
pub fn json_text(req: &HttpRequest, body: BytesMut) -> Result<Bytes, ApiError> {
    require_json_type(req)?;
    serde_json::from_slice::<WellFormed>(&body).map_err(not_json)?;
    Ok(body.freeze())
}

/// Any JSON document, walked as parsing it into a [`Value`] walks it (every
/// number converted, every string unescaped, the same depth limit) and then
/// dropped. It therefore fails exactly where, and with the same error, as
/// parsing into a `Value` would, without building the tree. serde's
/// `IgnoredAny` is not enough: it skips numbers and strings without
/// checking that they convert.
struct WellFormed;

impl<'de> Deserialize<'de> for WellFormed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WellFormed)
    }
}

impl<'de> Visitor<'de> for WellFormed {
    type Value = WellFormed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self, A::Error> {
        while items.next_element::<WellFormed>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self, A::Error> {
        while entries.next_entry::<WellFormed, WellFormed>()?.is_some() {}
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_fails_as_parsing_into_a_value_fails() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let mut cases: Vec<Vec<u8>> = [
            "{\"a\": [1, 2.5, -3, true, null, \"x\\n\\u00e9\", {}]}",
            "{\"a\": 1e400}",
            "[\n  1,\n  -1e999]",
            "[\"\\ud800\"]",
            "{\"\\ud800\": 1}",
            "[\"\\q\"]",
            "[\"a\u{1}b\"]",
            "{\"a\": 1,}",
            "{\"a\": 1} x",
            "{\"a\" 1}",
            "{1: 2}",
            "[1, 2",
            "",
            " \n ",
            "18446744073709551616",
            "-0",
            "1.5e-400",
        ]
        .iter()
        .map(|text| text.as_bytes().to_vec())
        .collect();
        cases.push(deep(127).into_bytes());
        cases.push(deep(128).into_bytes());
        cases.push(b"[\"\xff\"]".to_vec());
        cases.push(b"{\"\xc3\": 1}".to_vec());
        for text in cases {
            let checked = serde_json::from_slice::<WellFormed>(&text).err();
            let parsed = serde_json::from_slice::<Value>(&text).err();
            assert_eq!(
                checked.map(|e| e.to_string()),
                parsed.map(|e| e.to_string()),
                "{}",
                String::from_utf8_lossy(&text)
            );
        }
    }
}
