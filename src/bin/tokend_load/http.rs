//! One keep-alive HTTP/1.1 client connection over a `TcpStream`, reopened
//! after a transport error.
//!
//! Hand-written rather than a general client because the profiler shares
//! the machine's cores with the server it measures: every microsecond of
//! client CPU per request is taken from the server. A request is encoded
//! into a buffer the connection keeps (no per-request allocation, no header
//! map), sent with one `write`, and the answer is parsed in place with
//! `httparse`; the body stays in the read buffer until the next request.

use super::error::{LoadError, Result};
use bytes::{Buf, Bytes, BytesMut};
use std::fmt;
use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Headers parsed per answer; tokend sends about six.
const MAX_HEADERS: usize = 32;
/// Read buffer space ensured before each read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Largest answer head accepted (a longer one is a protocol error).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The request methods the profiler sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
}

impl Method {
    /// The method as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server being profiled.
#[derive(Debug, Clone)]
pub struct Target {
    /// Address connected to.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
}

/// Whether `value` can be sent as a header value (no control characters
/// that would end the header or the head early).
fn valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

impl Target {
    /// Parses `http://host:port` (a trailing `/` is allowed; https is not
    /// supported).
    pub fn from_url(url: &str) -> Result<Self> {
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(|| LoadError::new(format!("--target {url}: only http:// URLs work")))?
            .trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || !valid_header_value(authority) {
            return Err(LoadError::new(format!(
                "--target {url}: expected http://host:port with no path"
            )));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| {
                LoadError::new(format!("--target {url}: cannot resolve {with_port}: {e}"))
            })?
            .next()
            .ok_or_else(|| LoadError::new(format!("--target {url}: no address for {with_port}")))?;
        Ok(Self {
            addr,
            host: authority.to_owned(),
        })
    }

    /// The target at a socket address.
    pub fn from_addr(addr: SocketAddr) -> Result<Self> {
        Ok(Self {
            addr,
            host: addr.to_string(),
        })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A request that never reached an answer: the connection failed.
#[derive(Debug, Clone)]
pub struct TransportError {
    /// Short class used to group errors: `connect`, `send`, `recv`,
    /// `protocol`, `timeout`.
    pub kind: &'static str,
    /// The underlying error.
    pub detail: String,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl TransportError {
    /// An error of this class.
    pub fn new(kind: &'static str, detail: impl fmt::Display) -> Self {
        Self {
            kind,
            detail: detail.to_string(),
        }
    }
}

/// An answer, body copied out of the connection (setup and checks).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Whether `Idempotent-Replayed: true` was set.
    pub replayed: bool,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request to send: method, path and optional JSON body, with the
/// connection's key and host.
pub struct Call<'a> {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: &'a str,
    /// JSON body, if any.
    pub body: Option<Bytes>,
}

/// Where an answer's body is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyAt {
    /// These bytes of the read buffer.
    Buffer(Range<usize>),
    /// The de-chunked copy (`Transfer-Encoding: chunked`).
    Dechunked,
}

/// The head of an answer whose body is still held by the connection (read
/// it with [`Conn::body`] before the next request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// HTTP status.
    pub status: u16,
    /// Whether `Idempotent-Replayed: true` was set.
    pub replayed: bool,
    /// Where the body is.
    body: BodyAt,
}

/// How the length of an answer's body is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` (or an empty body by status).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ends when the server closes the connection.
    UntilClose,
}

/// A parsed answer head.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedHead {
    /// Bytes of the head, blank line included.
    len: usize,
    /// Status.
    status: u16,
    /// `Idempotent-Replayed: true`.
    replayed: bool,
    /// `Connection: close`.
    close: bool,
    /// How the body is framed.
    framing: Framing,
}

/// Parses an answer head at the start of `buf`; `None` while incomplete.
fn parse_head(buf: &[u8]) -> std::result::Result<Option<ParsedHead>, TransportError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(TransportError::new(
                "protocol",
                format!("answer head over {MAX_HEAD_BYTES} bytes"),
            ))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(TransportError::new("protocol", e)),
    };
    let status = response.code.unwrap_or(0);
    let (mut replayed, mut close, mut length, mut chunked) = (false, false, None, false);
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).unwrap_or("");
            length = Some(text.trim().parse::<usize>().map_err(|_| {
                TransportError::new("protocol", format!("bad Content-Length {text:?}"))
            })?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .split(|&b| b == b',')
                .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h
                .value
                .split(|&b| b == b',')
                .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if h.name.eq_ignore_ascii_case("idempotent-replayed") {
            replayed = h.value.eq_ignore_ascii_case(b"true");
        }
    }
    // RFC 9112 §6.3: 1xx, 204 and 304 have no body; chunked wins over a
    // length; with neither the body runs to the end of the connection.
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(ParsedHead {
        len,
        status,
        replayed,
        close,
        framing,
    }))
}

/// Decodes a chunked body starting at `buf[0]` into `out`; returns the bytes
/// of `buf` it spans (trailers included) once complete, `None` while
/// incomplete (`out` is then left partly filled and is cleared by the caller
/// on the next try).
fn dechunk(buf: &[u8], out: &mut Vec<u8>) -> std::result::Result<Option<usize>, TransportError> {
    let mut at = 0;
    loop {
        let Some(eol) = find_crlf(&buf[at..]) else {
            return Ok(None);
        };
        let line = &buf[at..at + eol];
        let size_text = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|t| usize::from_str_radix(t.trim(), 16).ok())
            .ok_or_else(|| {
                TransportError::new(
                    "protocol",
                    format!("bad chunk size {:?}", String::from_utf8_lossy(line)),
                )
            })?;
        at += eol + 2;
        if size == 0 {
            // Trailer lines, then a blank line.
            loop {
                let Some(eol) = find_crlf(&buf[at..]) else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(TransportError::new("protocol", "chunk not ended by CRLF"));
        }
        at += size + 2;
    }
}

/// Index of the first `\r\n` in `buf`.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// One keep-alive connection.
pub struct Conn {
    /// The server.
    target: Target,
    /// `X-Api-Key` sent with every request, if any.
    key: Option<String>,
    /// The open connection; `None` after a transport error (or a
    /// `Connection: close` answer) until the next request reopens it.
    stream: Option<TcpStream>,
    /// The request being sent, encoded; reused so that sending allocates
    /// nothing once it has grown to the largest request.
    out: Vec<u8>,
    /// Bytes read and not yet consumed; the last answer's body stays here
    /// until the next request.
    read: BytesMut,
    /// Bytes of `read` taken by the last answer, dropped at the next request.
    consumed: usize,
    /// The last answer's body when it came chunked.
    dechunked: Vec<u8>,
}

impl Conn {
    /// A connection to `target` sending `key`; opened lazily.
    pub fn new(target: &Target, key: Option<&str>) -> Result<Self> {
        if let Some(k) = key.filter(|k| !valid_header_value(k)) {
            return Err(LoadError::new(format!(
                "the API key is not a valid header value ({} bytes)",
                k.len()
            )));
        }
        Ok(Self {
            target: target.clone(),
            key: key.map(str::to_owned),
            stream: None,
            out: Vec::with_capacity(512),
            read: BytesMut::with_capacity(READ_CHUNK_BYTES),
            consumed: 0,
            dechunked: Vec::new(),
        })
    }

    /// Opens the connection now (so that connecting is not measured).
    pub async fn open(&mut self) -> std::result::Result<(), TransportError> {
        if self.stream.is_none() {
            self.stream = Some(connect(self.target.addr).await?);
            self.read.clear();
            self.consumed = 0;
        }
        Ok(())
    }

    /// Sends a request and copies out the whole answer. After a transport
    /// error the connection is dropped and the next call reconnects.
    pub async fn send(&mut self, call: Call<'_>) -> std::result::Result<Reply, TransportError> {
        let body = call.body.as_deref();
        let head = self.exchange(call.method, &[call.path], body).await?;
        Ok(Reply {
            status: head.status,
            replayed: head.replayed,
            body: Bytes::copy_from_slice(self.body(&head)),
        })
    }

    /// Like [`Conn::send`], giving up after `limit`.
    pub async fn send_within(
        &mut self,
        call: Call<'_>,
        limit: Duration,
    ) -> std::result::Result<Reply, TransportError> {
        match tokio::time::timeout(limit, self.send(call)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.stream = None;
                Err(TransportError::new(
                    "timeout",
                    format!("no answer within {} s", limit.as_secs()),
                ))
            }
        }
    }

    /// The body of the last answer.
    pub fn body(&self, head: &Head) -> &[u8] {
        match &head.body {
            BodyAt::Buffer(range) => self.read.get(range.clone()).unwrap_or(&[]),
            BodyAt::Dechunked => &self.dechunked,
        }
    }

    /// Sends one request — its path given in pieces, written one after the
    /// other, so that callers need not allocate it — and reads the answer's
    /// head and body. The body stays in the connection: see [`Conn::body`].
    pub async fn exchange(
        &mut self,
        method: Method,
        path: &[&str],
        body: Option<&[u8]>,
    ) -> std::result::Result<Head, TransportError> {
        self.encode(method, path, body);
        self.open().await?;
        let outcome = self.round_trip().await;
        if outcome.is_err() {
            self.stream = None;
        }
        outcome
    }

    /// Encodes the request into `out`.
    fn encode(&mut self, method: Method, path: &[&str], body: Option<&[u8]>) {
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        for piece in path {
            out.extend_from_slice(piece.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(self.target.host.as_bytes());
        if let Some(key) = &self.key {
            out.extend_from_slice(b"\r\nx-api-key: ");
            out.extend_from_slice(key.as_bytes());
        }
        if let Some(body) = body {
            out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{}", body.len());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(body);
        } else {
            out.extend_from_slice(b"\r\n\r\n");
        }
    }

    /// Writes `out` and reads one answer.
    async fn round_trip(&mut self) -> std::result::Result<Head, TransportError> {
        let stream = send(
            self.stream.as_mut(),
            &mut self.read,
            &mut self.consumed,
            &self.out,
        )
        .await?;
        let head = loop {
            match parse_head(&self.read)? {
                // An interim answer (100 Continue): skip it.
                Some(h) if (100..200).contains(&h.status) => self.read.advance(h.len),
                Some(h) => break h,
                None => {
                    if !fill(stream, &mut self.read, "recv").await? {
                        return Err(TransportError::new(
                            "recv",
                            "connection closed before the answer",
                        ));
                    }
                }
            }
        };
        let body = match head.framing {
            Framing::Length(n) => {
                while self.read.len() < head.len + n {
                    if !fill(stream, &mut self.read, "recv").await? {
                        return Err(TransportError::new("recv", "connection closed in the body"));
                    }
                }
                self.consumed = head.len + n;
                BodyAt::Buffer(head.len..head.len + n)
            }
            Framing::Chunked => loop {
                self.dechunked.clear();
                if let Some(n) = dechunk(&self.read[head.len..], &mut self.dechunked)? {
                    self.consumed = head.len + n;
                    break BodyAt::Dechunked;
                }
                if !fill(stream, &mut self.read, "recv").await? {
                    return Err(TransportError::new("recv", "connection closed in the body"));
                }
            },
            Framing::UntilClose => {
                while fill(stream, &mut self.read, "recv").await? {}
                self.consumed = self.read.len();
                BodyAt::Buffer(head.len..self.read.len())
            }
        };
        if head.close || head.framing == Framing::UntilClose {
            // The body stays readable: only the socket goes.
            self.stream = None;
        }
        Ok(Head {
            status: head.status,
            replayed: head.replayed,
            body,
        })
    }
}

/// Reads more bytes into `buf`; `false` at end of stream.
/// Opens a connection for one client (Nagle off: requests are written whole).
pub async fn connect(addr: SocketAddr) -> std::result::Result<TcpStream, TransportError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| TransportError::new("connect", e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| TransportError::new("connect", e))?;
    Ok(stream)
}

/// Starts a request/answer exchange on `stream`: drops the previous answer
/// (`consumed` bytes of `read`), checks that nothing else is left (one
/// request in flight: anything more is a protocol error) and writes `out`.
/// Hands the stream back for reading the answer.
pub async fn send<'a>(
    stream: Option<&'a mut TcpStream>,
    read: &mut BytesMut,
    consumed: &mut usize,
    out: &[u8],
) -> std::result::Result<&'a mut TcpStream, TransportError> {
    let Some(stream) = stream else {
        return Err(TransportError::new("connect", "no connection"));
    };
    read.advance((*consumed).min(read.len()));
    *consumed = 0;
    if !read.is_empty() {
        return Err(TransportError::new(
            "protocol",
            format!("{} unexpected bytes before the answer", read.len()),
        ));
    }
    stream
        .write_all(out)
        .await
        .map_err(|e| TransportError::new("send", e))?;
    Ok(stream)
}

/// Reads more of an answer into `buf`; `false` when the peer closed.
pub async fn fill(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    kind: &'static str,
) -> std::result::Result<bool, TransportError> {
    buf.reserve(READ_CHUNK_BYTES);
    let n = stream
        .read_buf(buf)
        .await
        .map_err(|e| TransportError::new(kind, e))?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_head_with_length_and_replay() {
        let text = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nIdempotent-Replayed: true\r\n\r\n{}";
        let head = parse_head(text).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert!(head.replayed && !head.close);
        assert_eq!(head.framing, Framing::Length(2));
        assert_eq!(&text[head.len..], b"{}");
        // Any prefix is incomplete, never an error.
        for cut in 0..head.len {
            assert_eq!(parse_head(&text[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn framing_follows_the_status_and_headers() {
        let no_content = b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n";
        assert_eq!(
            parse_head(no_content).unwrap().unwrap().framing,
            Framing::Length(0)
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(
            parse_head(chunked).unwrap().unwrap().framing,
            Framing::Chunked
        );
        let close = b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n";
        let head = parse_head(close).unwrap().unwrap();
        assert!(head.close);
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(parse_head(b"SMTP ready\r\n\r\n").is_err());
    }

    #[test]
    fn dechunks_split_bodies_and_trailers() {
        let body = b"4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let mut out = Vec::new();
        let n = dechunk(body, &mut out).unwrap().unwrap();
        assert_eq!(out, b"{\"a\":1}");
        assert_eq!(&body[n..], b"NEXT");
        for cut in 0..n {
            out.clear();
            assert_eq!(dechunk(&body[..cut], &mut out).unwrap(), None, "cut {cut}");
        }
        out.clear();
        assert!(dechunk(b"zz\r\n", &mut out).is_err());
        out.clear();
        assert!(dechunk(b"1\r\nabc", &mut out).is_err());
    }

    #[test]
    fn encodes_a_request_with_key_and_body() {
        let target = Target::from_addr("127.0.0.1:9".parse().unwrap()).unwrap();
        let mut conn = Conn::new(&target, Some("k1")).unwrap();
        conn.encode(
            Method::Post,
            &["/api/tokens/", "t1", "/redeem"],
            Some(b"{}"),
        );
        assert_eq!(
            String::from_utf8(conn.out.clone()).unwrap(),
            "POST /api/tokens/t1/redeem HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-api-key: k1\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        );
        conn.encode(Method::Get, &["/health/live"], None);
        assert!(conn.out.ends_with(b"x-api-key: k1\r\n\r\n"));
        assert!(Conn::new(&target, Some("a\r\nb")).is_err());
    }
}
