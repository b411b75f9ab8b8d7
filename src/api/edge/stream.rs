//! [`EdgeStream`]: a client connection as actix-http reads and writes it,
//! with the edge's limits enforced in between.
//!
//! Bytes from the client are sorted before actix-http gets them: a request
//! head is held back until it is complete and checked; body bytes pass
//! through as they come, followed only far enough to know where the body
//! ends. Each phase of the connection has one deadline:
//!
//! | phase | deadline | when it passes |
//! |-------|----------|----------------|
//! | head  | head timeout (from the connection's start, or from the head's first byte) | 408 in the API's shape, connection closed |
//! | body  | body timeout and a grace (from the end of the head) | connection closed (the handler answered 408 at the body timeout) |
//! | idle  | keep-alive (from the last byte either way) | connection closed |
//! | refused | the head timeout, at most [`REFUSAL_HEAD_WAIT`] | 503 in the API's shape, connection closed |
//!
//! A refused connection (over a connection cap) is answered 503 as soon as
//! its request head is complete, so that the client reads it as the answer
//! to its request.
//!
//! When the edge answers a request itself it writes the whole response,
//! ends its side of the connection, and reads and discards what the client
//! still sends for a short while (bounded in time and bytes) so that closing
//! does not reset the connection before the client has read the answer.
//! actix-http is then told the connection failed, which it handles silently.

use super::admission::{Admission, Permit, Refusal};
use super::chunked::ChunkedBody;
use super::head::{self, Framing};
use super::{reply, EdgeError, EdgeLimits};
use bytes::{Buf, Bytes, BytesMut};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 8 << 10;
/// How long past the body timeout a stalled body's connection is closed:
/// the handler reading it answers 408 at the body timeout; this is for a
/// body no handler reads.
pub const BODY_GRACE: Duration = Duration::from_secs(1);
/// How long, after the edge answered, it reads and drops what the client
/// still sends before closing (so the answer is not lost to a reset).
pub const LINGER: Duration = Duration::from_secs(1);
/// The most bytes dropped while lingering.
pub const LINGER_BYTES_MAX: usize = 256 << 10;
/// The longest a refused connection waits for its request head before it
/// is answered 503 anyway.
pub const REFUSAL_HEAD_WAIT: Duration = Duration::from_secs(1);

/// Where the connection is.
#[derive(Debug)]
enum Phase {
    /// Waiting for a request head, or receiving one.
    Head,
    /// Refused: waiting for the request head, to answer it 503.
    Refusing(Refusal),
    /// Passing a body through.
    Body(Body),
    /// Between requests.
    Idle,
    /// Writing the edge's own answer; `Bytes` is what is left of it.
    Replying(Bytes),
    /// The answer is written and the write side shut; dropping input.
    Lingering {
        /// Bytes dropped so far.
        dropped_bytes: usize,
    },
    /// actix-http has been told the connection failed (or ended).
    Finished {
        /// Whether to report an end of stream rather than a failure.
        eof: bool,
    },
}

/// How much body is left.
#[derive(Debug)]
enum Body {
    /// This many bytes.
    Length(u64),
    /// A chunked body, being followed.
    Chunked(ChunkedBody),
    /// Everything until the client closes.
    UntilClose,
}

/// A client connection with the edge's limits enforced.
pub struct EdgeStream<T> {
    /// The socket.
    io: T,
    /// The limits.
    limits: EdgeLimits,
    /// This connection's place among the open or the refused ones (none
    /// when it is closed unanswered); given back when the stream is dropped.
    _permit: Option<Permit>,
    /// Where the connection is.
    phase: Phase,
    /// Read from the client, not yet sorted (an incomplete head, or bytes
    /// past the end of a body).
    inbox: BytesMut,
    /// Sorted and ready for actix-http.
    outbox: BytesMut,
    /// The current phase's deadline.
    deadline: Pin<Box<Sleep>>,
}

impl<T> EdgeStream<T> {
    /// A new connection from `peer`: admitted, or set to answer its
    /// request 503 and close (or to close at once, when too many refused
    /// connections are open already).
    pub fn admit(
        io: T,
        peer: Option<SocketAddr>,
        admission: &Arc<Admission>,
        limits: EdgeLimits,
    ) -> Self {
        let client = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.ip());
        let (permit, phase, wait) = match admission.admit(client) {
            Ok(permit) => (Some(permit), Phase::Head, limits.head_timeout),
            Err((refusal, Some(place))) => (
                Some(place),
                Phase::Refusing(refusal),
                limits.head_timeout.min(REFUSAL_HEAD_WAIT),
            ),
            Err((refusal, None)) => {
                tracing::debug!(%refusal, "closing a connection unanswered");
                (None, Phase::Finished { eof: false }, Duration::ZERO)
            }
        };
        let deadline = Box::pin(tokio::time::sleep(wait));
        Self {
            io,
            limits,
            _permit: permit,
            phase,
            inbox: BytesMut::new(),
            outbox: BytesMut::new(),
            deadline,
        }
    }

    /// Sets the deadline `after` from now.
    fn deadline_in(&mut self, after: Duration) {
        self.deadline.as_mut().reset(Instant::now() + after);
    }

    /// Starts answering `error` in place of actix-http.
    fn answer(&mut self, error: EdgeError) {
        self.inbox = BytesMut::new();
        self.phase = Phase::Replying(reply::render(error));
        self.deadline_in(LINGER);
    }

    /// Sorts the inbox: completes heads, passes body bytes to the outbox.
    fn sort(&mut self) -> io::Result<()> {
        loop {
            match &mut self.phase {
                Phase::Idle if self.inbox.is_empty() => return Ok(()),
                Phase::Idle => {
                    self.phase = Phase::Head;
                    self.deadline_in(self.limits.head_timeout);
                }
                Phase::Refusing(refusal) => {
                    let refusal = *refusal;
                    match head::check(&self.inbox, self.limits.head_bytes_max) {
                        Ok(None) => return Ok(()),
                        Ok(Some(_)) | Err(_) => {
                            self.answer(refusal.into());
                            return Ok(());
                        }
                    }
                }
                Phase::Head => match head::check(&self.inbox, self.limits.head_bytes_max) {
                    Ok(None) => return Ok(()),
                    Ok(Some(head)) => {
                        let bytes = self.inbox.split_to(head.len);
                        self.outbox.extend_from_slice(&bytes);
                        self.phase = match head.framing {
                            Framing::None => Phase::Idle,
                            Framing::Length(len) => Phase::Body(Body::Length(len)),
                            Framing::Chunked => Phase::Body(Body::Chunked(ChunkedBody::default())),
                            Framing::UntilClose => Phase::Body(Body::UntilClose),
                        };
                        let after = match self.phase {
                            Phase::Idle => self.limits.keep_alive,
                            _ => self.limits.body_timeout + BODY_GRACE,
                        };
                        self.deadline_in(after);
                    }
                    Err(error) => {
                        self.answer(error);
                        return Ok(());
                    }
                },
                Phase::Body(_) if self.inbox.is_empty() => return Ok(()),
                Phase::Body(body) => {
                    let (taken, ended) = match body {
                        Body::Length(left) => {
                            let taken = usize::try_from(*left)
                                .unwrap_or(usize::MAX)
                                .min(self.inbox.len());
                            *left -= taken as u64;
                            (taken, *left == 0)
                        }
                        Body::Chunked(chunked) => match chunked.feed(&self.inbox) {
                            Ok(Some(end)) => (end, true),
                            Ok(None) => (self.inbox.len(), false),
                            Err(e) => {
                                tracing::debug!(error = %e, "closing the connection");
                                self.phase = Phase::Finished { eof: false };
                                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                            }
                        },
                        Body::UntilClose => (self.inbox.len(), false),
                    };
                    let bytes = self.inbox.split_to(taken);
                    self.outbox.extend_from_slice(&bytes);
                    if ended {
                        self.phase = Phase::Idle;
                        self.deadline_in(self.limits.keep_alive);
                    }
                }
                Phase::Replying(_) | Phase::Lingering { .. } | Phase::Finished { .. } => {
                    return Ok(())
                }
            }
        }
    }

    /// The current deadline passed.
    fn expired(&mut self) {
        match self.phase {
            Phase::Head => self.answer(EdgeError::HeadTimeout {
                after_ms: self.limits.head_timeout.as_millis(),
            }),
            Phase::Refusing(refusal) => self.answer(refusal.into()),
            Phase::Idle => self.phase = Phase::Finished { eof: true },
            Phase::Body(_) => {
                tracing::debug!("request body stalled past its timeout; closing the connection");
                self.phase = Phase::Finished { eof: false };
            }
            Phase::Replying(_) | Phase::Lingering { .. } => {
                self.phase = Phase::Finished { eof: false }
            }
            Phase::Finished { .. } => {}
        }
    }
}

/// The failure actix-http is given once the edge is done with a connection.
fn finished() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed at the connection edge",
    )
}

impl<T: AsyncRead + AsyncWrite + Unpin> EdgeStream<T> {
    /// Reads up to one chunk from the socket onto the end of the inbox;
    /// `Ok(0)` at its end. Straight into the inbox's spare room: no buffer
    /// is zeroed or copied on the way (an 8 KiB stack buffer zeroed on each
    /// call was 2% of a pinned redeem's CPU).
    fn read_into_inbox(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.inbox.reserve(READ_CHUNK_BYTES);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.inbox)
    }

    /// Writes the rest of the edge's answer, then shuts the write side.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Phase::Replying(rest) = &mut self.phase {
            if rest.is_empty() {
                ready!(Pin::new(&mut self.io).poll_shutdown(cx))?;
                self.phase = Phase::Lingering { dropped_bytes: 0 };
                break;
            }
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            rest.advance(written);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for EdgeStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.outbox.is_empty() {
                let n = this.outbox.len().min(buf.remaining());
                buf.put_slice(&this.outbox[..n]);
                this.outbox.advance(n);
                return Poll::Ready(Ok(()));
            }
            match this.phase {
                Phase::Finished { eof: true } => return Poll::Ready(Ok(())),
                Phase::Finished { eof: false } => return Poll::Ready(Err(finished())),
                Phase::Replying(_) => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        // The client does not read its answer.
                        this.phase = Phase::Finished { eof: false };
                        continue;
                    }
                    if let Err(e) = ready!(this.poll_answer(cx)) {
                        this.phase = Phase::Finished { eof: false };
                        return Poll::Ready(Err(e));
                    }
                    continue;
                }
                Phase::Lingering { dropped_bytes } => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        this.phase = Phase::Finished { eof: false };
                        continue;
                    }
                    // What a lingering client sends is dropped unread.
                    this.inbox.clear();
                    let read = ready!(this.read_into_inbox(cx));
                    this.inbox.clear();
                    match read {
                        Ok(n) if n > 0 && dropped_bytes + n <= LINGER_BYTES_MAX => {
                            this.phase = Phase::Lingering {
                                dropped_bytes: dropped_bytes + n,
                            };
                        }
                        _ => this.phase = Phase::Finished { eof: false },
                    }
                    continue;
                }
                Phase::Head | Phase::Refusing(_) | Phase::Body(_) | Phase::Idle => {}
            }
            if let Err(e) = this.sort() {
                return Poll::Ready(Err(e));
            }
            if !this.outbox.is_empty() || matches!(this.phase, Phase::Replying(_)) {
                continue;
            }
            match this.read_into_inbox(cx) {
                Poll::Ready(Ok(0)) => {
                    this.phase = Phase::Finished { eof: true };
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.phase = Phase::Finished { eof: false };
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    ready!(this.deadline.as_mut().poll(cx));
                    this.expired();
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for EdgeStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.phase {
            // The edge is answering on this connection itself.
            Phase::Refusing(_)
            | Phase::Replying(_)
            | Phase::Lingering { .. }
            | Phase::Finished { eof: false } => Poll::Ready(Err(finished())),
            Phase::Idle => {
                let written = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
                this.deadline_in(this.limits.keep_alive);
                Poll::Ready(Ok(written))
            }
            Phase::Head | Phase::Body(_) | Phase::Finished { eof: true } => {
                Pin::new(&mut this.io).poll_write(cx, buf)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
