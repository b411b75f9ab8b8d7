//! Checking a request head before actix-http sees it.
//!
//! actix-http answers a head it cannot use with an empty-bodied 400 (or 431)
//! of its own, outside the application. The edge therefore parses every head
//! first, with the parser actix-http uses (`httparse`, same header count) and
//! the same checks of `Content-Length`, `Transfer-Encoding` and `Host`, and
//! answers any head actix-http would refuse itself, in the API's shape. A
//! head that passes here is one actix-http accepts.
//!
//! The check also tells how the body is framed, so that the edge knows where
//! the next head on the connection begins.

use super::EdgeError;
use actix_web::http::{Method, Uri};

/// Headers one head may carry: actix-http's own limit (it answers 431 past
/// it), so a head within it is never refused there.
pub const HEADERS_MAX: usize = 96;

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: the next head follows at once.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// The rest of the connection (a `CONNECT` or a WebSocket upgrade).
    UntilClose,
}

/// A complete head that actix-http will accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, its final blank line included.
    pub len: usize,
    /// How its body is delimited.
    pub framing: Framing,
}

/// Checks the start of `buf` as a request head: `Ok(None)` while it is
/// incomplete and within `head_bytes_max`.
pub fn check(buf: &[u8], head_bytes_max: usize) -> Result<Option<Head>, EdgeError> {
    let too_large = EdgeError::HeadTooLarge {
        limit: head_bytes_max,
    };
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > head_bytes_max => return Err(too_large),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > head_bytes_max => return Err(too_large),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(too_large),
        Err(e) => return Err(malformed(format!("the request head does not parse ({e})"))),
    };
    let (Some(method), Some(path), Some(version)) = (request.method, request.path, request.version)
    else {
        return Err(malformed("the request line is incomplete"));
    };
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| malformed("the method is invalid"))?;
    Uri::try_from(path).map_err(|_| malformed("the request target is not a valid URI"))?;
    let http_11 = version == 1;
    let framing = framing(&method, http_11, request.headers)?;
    Ok(Some(Head { len, framing }))
}

/// The body's framing, refusing the header combinations actix-http refuses.
fn framing(
    method: &Method,
    http_11: bool,
    headers: &[httparse::Header<'_>],
) -> Result<Framing, EdgeError> {
    let mut content_length = None;
    let mut transfer_encoding = None;
    let mut host = false;
    let mut websocket = false;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(malformed("more than one Content-Length header"));
            }
            let value = visible_ascii(header.value)
                .map(str::trim)
                .filter(|v| !v.starts_with('+'))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| malformed("the Content-Length header is not a number"))?;
            content_length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding.is_some() {
                return Err(malformed("more than one Transfer-Encoding header"));
            }
            let value = visible_ascii(header.value)
                .ok_or_else(|| malformed("the Transfer-Encoding header is not ASCII"))?;
            transfer_encoding = Some(value.trim());
        } else if name.eq_ignore_ascii_case("host") {
            if host {
                return Err(malformed("more than one Host header"));
            }
            host = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            websocket |= visible_ascii(header.value)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
        }
    }
    if http_11 && !host {
        return Err(malformed("an HTTP/1.1 request needs a Host header"));
    }
    if let Some(encoding) = transfer_encoding {
        if !http_11 {
            return Err(malformed("Transfer-Encoding is not allowed in HTTP/1.0"));
        }
        if !encoding.eq_ignore_ascii_case("chunked") {
            return Err(malformed("the only Transfer-Encoding accepted is chunked"));
        }
        if content_length.is_some() {
            return Err(malformed(
                "Content-Length and Transfer-Encoding cannot both be set",
            ));
        }
        return Ok(Framing::Chunked);
    }
    if !http_11 && method == Method::POST && content_length.is_none() {
        return Err(malformed("an HTTP/1.0 POST needs a Content-Length header"));
    }
    Ok(match content_length {
        _ if websocket => Framing::UntilClose,
        Some(0) | None if method == Method::CONNECT => Framing::UntilClose,
        Some(0) | None => Framing::None,
        Some(len) => Framing::Length(len),
    })
}

/// The value as text if every byte is visible ASCII or a tab (what
/// `HeaderValue::to_str` accepts).
fn visible_ascii(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

fn malformed(message: impl Into<String>) -> EdgeError {
    EdgeError::Malformed(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 << 10;

    fn framing_of(head: &str) -> Result<Option<Framing>, EdgeError> {
        check(head.as_bytes(), MAX).map(|h| h.map(|h| h.framing))
    }

    #[test]
    fn framings() {
        let get = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(framing_of(get), Ok(Some(Framing::None)));
        let post = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(framing_of(post), Ok(Some(Framing::Length(12))));
        let chunked = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(framing_of(chunked), Ok(Some(Framing::Chunked)));
        let connect = "CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(framing_of(connect), Ok(Some(Framing::UntilClose)));
        let old = "GET /x HTTP/1.0\r\n\r\n";
        assert_eq!(framing_of(old), Ok(Some(Framing::None)));
        assert_eq!(framing_of("GET /x HTTP/1.1\r\nHo"), Ok(None));
    }

    #[test]
    fn the_length_of_a_head_is_its_final_blank_line() {
        let text = "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET";
        let head = check(text.as_bytes(), MAX).unwrap().unwrap();
        assert_eq!(head.len, text.len() - 3);
    }

    #[test]
    fn heads_actix_http_refuses_are_refused() {
        for head in [
            "garbage\r\n\r\n",
            "GET /x HTTP/1.1\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            "POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /x HTTP/1.0\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(
                matches!(framing_of(head), Err(EdgeError::Malformed(_))),
                "{head:?}"
            );
        }
    }

    #[test]
    fn a_head_over_the_cap_is_too_large_complete_or_not() {
        let filler = "x".repeat(MAX);
        let partial = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Filler: {filler}");
        let complete = format!("{partial}\r\n\r\n");
        for head in [partial, complete] {
            assert_eq!(
                framing_of(&head),
                Err(EdgeError::HeadTooLarge { limit: MAX })
            );
        }
        let many: String = (0..=HEADERS_MAX).map(|i| format!("X-{i}: 1\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(
            framing_of(&head),
            Err(EdgeError::HeadTooLarge { limit: MAX })
        );
    }
}
