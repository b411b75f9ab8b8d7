//! The connection edge's limits, in one value: `tokend serve` fills it from
//! its flags, tests set the timeouts short and the caps small.
//!
//! Each default is chosen for a production server facing clients it does
//! not control; the reasons are on the constants.

use std::time::Duration;

/// Default time a client has to send a whole request head (5 s): a real
/// client sends its head in one packet; a slow-loris client drips it.
pub const HEAD_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default time a client has to send a whole request body (30 s): enough
/// for the 16 MiB batch limit at about 4 Mbit/s, short enough that a client
/// that stops mid-body frees its connection soon.
pub const BODY_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default time an idle keep-alive connection stays open (5 s, as
/// actix-web's): long enough for a client's next request, short enough that
/// idle connections do not pile up.
pub const KEEP_ALIVE_MS_DEFAULT: u64 = 5_000;
/// Default cap on open connections in all (10 000): each costs a few tens of
/// KiB at most, so the cap bounds their memory to a few hundred MiB.
pub const CONNECTIONS_MAX_DEFAULT: u32 = 10_000;
/// Default cap on open connections from one client IP address (256): far
/// more than a pool of keep-alive connections needs, far fewer than it takes
/// one client to exhaust the total. Behind a proxy every client has the
/// proxy's address: raise it to the total there.
pub const CONNECTIONS_PER_CLIENT_MAX_DEFAULT: u32 = 256;
/// Default cap on a request head, the request line and all headers (16 KiB).
pub const HEAD_BYTES_MAX_DEFAULT: usize = 16 << 10;
/// The largest head cap accepted: actix-http's own head buffer is 128 KiB
/// and answers an empty-bodied 431 past it, so the edge's cap must fire
/// first.
pub const HEAD_BYTES_MAX_LIMIT: usize = 64 << 10;
/// The smallest head cap accepted: below this, ordinary requests with an
/// API key and a few headers would be refused.
pub const HEAD_BYTES_MAX_FLOOR: usize = 1 << 10;

/// The limits the edge enforces on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// A request head not complete this long after the connection opened (or
    /// after its first byte, on a reused connection) is answered 408.
    pub head_timeout: Duration,
    /// A request body not read in full this long after its head is answered
    /// 408; the connection is closed.
    pub body_timeout: Duration,
    /// A connection with no request under way and no traffic for this long
    /// is closed.
    pub keep_alive: Duration,
    /// Connections open at once in all; the next one is answered 503.
    pub connections_max: u32,
    /// Connections open at once from one IP address; the next one from that
    /// address is answered 503.
    pub connections_per_client_max: u32,
    /// Bytes of one request head (request line and headers, with their line
    /// ends); a larger head is answered 431.
    pub head_bytes_max: usize,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_millis(HEAD_TIMEOUT_MS_DEFAULT),
            body_timeout: Duration::from_millis(BODY_TIMEOUT_MS_DEFAULT),
            keep_alive: Duration::from_millis(KEEP_ALIVE_MS_DEFAULT),
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_client_max: CONNECTIONS_PER_CLIENT_MAX_DEFAULT,
            head_bytes_max: HEAD_BYTES_MAX_DEFAULT,
        }
    }
}

impl EdgeLimits {
    /// Asserts the limits are usable: the flags' ranges guarantee it for
    /// `tokend serve`, so a failure here is a bug in the caller.
    pub fn assert_valid(&self) {
        assert!(!self.head_timeout.is_zero(), "a head timeout");
        assert!(!self.body_timeout.is_zero(), "a body timeout");
        assert!(!self.keep_alive.is_zero(), "a keep-alive timeout");
        assert!(self.connections_max >= 1, "at least one connection");
        assert!(
            self.connections_per_client_max >= 1,
            "at least one connection per client"
        );
        assert!(
            (HEAD_BYTES_MAX_FLOOR..=HEAD_BYTES_MAX_LIMIT).contains(&self.head_bytes_max),
            "the head cap is within {HEAD_BYTES_MAX_FLOOR}..={HEAD_BYTES_MAX_LIMIT}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        EdgeLimits::default().assert_valid();
    }

    #[test]
    #[should_panic(expected = "head cap")]
    fn a_head_cap_past_actix_http_s_own_is_refused() {
        EdgeLimits {
            head_bytes_max: 128 << 10,
            ..EdgeLimits::default()
        }
        .assert_valid();
    }
}
