//! The connection edge: what stands between a TCP connection and
//! actix-http, so that slow or hostile clients cannot hold the server and
//! every error a client is sent has the API's shape.
//!
//! actix-http answers what it cannot parse (a garbage request line, a head
//! over its 128 KiB buffer, a head not sent in time) with empty-bodied
//! responses of its own, outside the application and its middleware: no
//! JSON, no `X-Request-Id`, and an ERROR log line each. Its limits are not
//! per client and its head buffer cannot be made smaller. So every
//! connection passes through an [`EdgeStream`] first, which:
//!
//! - admits the connection or refuses it (503) against a total and a
//!   per-client-address cap ([`admission`]);
//! - holds each request head back until it is complete, checks it as
//!   actix-http would ([`head`]) and answers 400 or 431 itself, in the API's
//!   shape, when actix-http would have refused it;
//! - answers 408 when a head is not complete in time, closes idle keep-alive
//!   connections, and closes a connection whose body stalls past its timeout
//!   (the handler reading the body answers 408 first, see
//!   [`body`](super::body));
//! - follows each body's framing ([`chunked`]) to know where the next head
//!   starts.
//!
//! [`server`] assembles the HTTP server from actix-web's parts around it.

pub mod admission;
pub mod chunked;
pub mod head;
pub mod limits;
pub mod reply;
pub mod server;
pub mod stream;

pub use admission::Refusal;
pub use limits::EdgeLimits;
pub use stream::EdgeStream;

/// What the edge refuses a client for, before actix-http sees the request;
/// mapped to a status and a code once, in [`super::error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    /// The request head does not parse, or has headers actix-http refuses.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The request head is over the cap.
    #[error("request head over {limit} bytes")]
    HeadTooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The request head was not complete in time.
    #[error("request head not complete within {after_ms} ms")]
    HeadTimeout {
        /// The timeout, in milliseconds.
        after_ms: u128,
    },
    /// A connection cap was reached.
    #[error(transparent)]
    Refused(#[from] Refusal),
}
