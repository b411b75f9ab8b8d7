//! One keep-alive HTTP/1.1 client connection (hyper's `client::conn::http1`
//! over a `TcpStream`), reopened after a transport error.

use super::error::{Context, LoadError, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, Connection, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::future::{poll_fn, Future};
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::{pin, Pin};
use std::time::Duration;
use tokio::net::TcpStream;

/// Header carrying the API key.
const API_KEY: &str = "x-api-key";
/// Header marking an idempotent replay.
const REPLAYED: &str = "idempotent-replayed";

/// The server being profiled.
#[derive(Debug, Clone)]
pub struct Target {
    /// Address connected to.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: HeaderValue,
}

impl Target {
    /// Parses `http://host:port` (a trailing `/` is allowed; https is not
    /// supported).
    pub fn from_url(url: &str) -> Result<Self> {
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(|| LoadError::new(format!("--target {url}: only http:// URLs work")))?
            .trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
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
            .context(|| format!("--target {url}: cannot resolve {with_port}"))?
            .next()
            .ok_or_else(|| LoadError::new(format!("--target {url}: no address for {with_port}")))?;
        let host = HeaderValue::from_str(authority)
            .context(|| format!("--target {url}: not a valid Host header"))?;
        Ok(Self { addr, host })
    }

    /// The target at a socket address.
    pub fn from_addr(addr: SocketAddr) -> Result<Self> {
        let host = HeaderValue::from_str(&addr.to_string())
            .context(|| format!("{addr}: not a valid Host header"))?;
        Ok(Self { addr, host })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A request that never reached an answer: the connection failed.
#[derive(Debug, Clone)]
pub struct TransportError {
    /// Short class used to group errors: `connect`, `send`, `body`,
    /// `timeout`, `request`.
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
    fn new(kind: &'static str, detail: impl fmt::Display) -> Self {
        Self {
            kind,
            detail: detail.to_string(),
        }
    }
}

/// An answer.
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

/// The I/O half of a connection: polled by the task that sends, while it
/// waits for an answer (no extra task, no cross-task wake-up per request).
type Driver = Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

/// An open connection: the request half and the I/O half.
struct Open {
    /// Sends requests.
    sender: SendRequest<Full<Bytes>>,
    /// Does the I/O; `None` once it has finished (the connection closed).
    driver: Option<Driver>,
}

/// One keep-alive connection.
pub struct Conn {
    /// The server.
    target: Target,
    /// `X-Api-Key` sent with every request, if any.
    key: Option<HeaderValue>,
    /// The open connection; `None` after a transport error until the next
    /// request reopens it.
    open: Option<Open>,
}

impl Conn {
    /// A connection to `target` sending `key`; opened lazily.
    pub fn new(target: &Target, key: Option<&str>) -> Result<Self> {
        let key = key
            .map(HeaderValue::from_str)
            .transpose()
            .context(|| "the API key is not a valid header value".to_owned())?;
        Ok(Self {
            target: target.clone(),
            key,
            open: None,
        })
    }

    /// Opens the connection now (so that connecting is not measured).
    pub async fn open(&mut self) -> std::result::Result<(), TransportError> {
        if self.open.is_none() {
            self.open = Some(connect(self.target.addr).await?);
        }
        Ok(())
    }

    /// Sends a request and reads the whole answer. After a transport error
    /// the connection is dropped and the next call reconnects.
    pub async fn send(&mut self, call: Call<'_>) -> std::result::Result<Reply, TransportError> {
        let request = self.request(call)?;
        self.open().await?;
        let Some(Open { sender, driver }) = self.open.as_mut() else {
            return Err(TransportError::new("connect", "no connection"));
        };
        let exchange = async {
            sender
                .ready()
                .await
                .map_err(|e| TransportError::new("send", e))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| TransportError::new("send", e))?;
            let status = response.status().as_u16();
            let replayed = response
                .headers()
                .get(REPLAYED)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| TransportError::new("body", e))?
                .to_bytes();
            Ok(Reply {
                status,
                replayed,
                body,
            })
        };
        let outcome = drive(driver, exchange).await;
        if outcome.is_err() {
            self.open = None;
        }
        outcome
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
                self.open = None;
                Err(TransportError::new(
                    "timeout",
                    format!("no answer within {} s", limit.as_secs()),
                ))
            }
        }
    }

    /// Builds the hyper request.
    fn request(&self, call: Call<'_>) -> std::result::Result<Request<Full<Bytes>>, TransportError> {
        let uri = Uri::try_from(call.path).map_err(|e| TransportError::new("request", e))?;
        let has_body = call.body.is_some();
        let mut request = Request::new(Full::new(call.body.unwrap_or_default()));
        *request.method_mut() = call.method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(HOST, self.target.host.clone());
        if let Some(key) = &self.key {
            headers.insert(API_KEY, key.clone());
        }
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(request)
    }
}

/// Awaits `exchange` while polling the connection's I/O half, until the
/// exchange ends (after the connection finished, the exchange sees the error).
async fn drive<F: Future>(driver: &mut Option<Driver>, exchange: F) -> F::Output {
    let mut exchange = pin!(exchange);
    poll_fn(|cx| {
        if let Some(io) = driver.as_mut() {
            if io.as_mut().poll(cx).is_ready() {
                *driver = None;
            }
        }
        exchange.as_mut().poll(cx)
    })
    .await
}

/// Opens a TCP connection (no Nagle) and runs the HTTP/1.1 handshake.
async fn connect(addr: SocketAddr) -> std::result::Result<Open, TransportError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| TransportError::new("connect", e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| TransportError::new("connect", e))?;
    let (sender, connection) = handshake(TokioIo::new(stream))
        .await
        .map_err(|e| TransportError::new("connect", e))?;
    Ok(Open {
        sender,
        driver: Some(Box::pin(connection)),
    })
}
