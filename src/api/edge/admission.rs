//! Admission: how many connections are open, in all and per client IP
//! address, and whether one more may be. A connection holds a [`Permit`]
//! for as long as it is open; dropping the permit gives its place back.
//!
//! The counts are shared by every HTTP worker, so the caps hold for the
//! server as a whole, not per worker thread.
//!
//! A refused connection is answered 503 once its request head arrives (an
//! HTTP client cannot use an answer sent before its request), so refused
//! connections are open for a moment too: they are counted apart, up to
//! [`REFUSING_MAX`]; past that a refused connection is closed at once.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Refused connections being answered at once; more are closed unanswered.
pub const REFUSING_MAX: u32 = 1024;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The server holds its cap of connections.
    #[error("the server holds its maximum of {0} connections")]
    Total(u32),
    /// This client holds its cap of connections.
    #[error("this client holds its maximum of {0} connections")]
    PerClient(u32),
}

/// The open connections, counted.
#[derive(Debug)]
pub struct Admission {
    /// Cap on the total.
    connections_max: u32,
    /// Cap per client address.
    connections_per_client_max: u32,
    /// The counts, under one lock: admitting is a map lookup, once per
    /// connection, never per request.
    counts: Mutex<Counts>,
}

/// What [`Admission`] counts.
#[derive(Debug, Default)]
struct Counts {
    /// Connections open in all.
    total: u32,
    /// Connections open per client address; an address leaves the map when
    /// its last connection closes, so the map never outgrows `total`.
    per_client: HashMap<IpAddr, u32>,
    /// Refused connections still open to be answered.
    refusing: u32,
}

impl Admission {
    /// Counts against these caps (each at least 1).
    pub fn new(connections_max: u32, connections_per_client_max: u32) -> Arc<Self> {
        assert!(connections_max >= 1 && connections_per_client_max >= 1);
        Arc::new(Self {
            connections_max,
            connections_per_client_max,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A place for one more connection from `client`, or why not, with a
    /// place to stay open while it is told so (none when [`REFUSING_MAX`]
    /// refused connections are open already).
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Permit, (Refusal, Option<Permit>)> {
        let mut counts = self.counts.lock();
        let refusal = if counts.total >= self.connections_max {
            Refusal::Total(self.connections_max)
        } else {
            let held = counts.per_client.get(&client).copied().unwrap_or(0);
            if held < self.connections_per_client_max {
                counts.total += 1;
                counts.per_client.insert(client, held + 1);
                return Ok(Permit {
                    admission: Arc::clone(self),
                    place: Place::Open(client),
                });
            }
            Refusal::PerClient(self.connections_per_client_max)
        };
        if counts.refusing >= REFUSING_MAX {
            return Err((refusal, None));
        }
        counts.refusing += 1;
        let place = Permit {
            admission: Arc::clone(self),
            place: Place::Refusing,
        };
        Err((refusal, Some(place)))
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.counts.lock().total
    }

    /// Gives back a place.
    fn release(&self, place: Place) {
        let mut counts = self.counts.lock();
        let client = match place {
            Place::Open(client) => client,
            Place::Refusing => {
                assert!(counts.refusing >= 1, "a refusal was counted");
                counts.refusing -= 1;
                return;
            }
        };
        let held = counts.per_client.get(&client).copied().unwrap_or(0);
        assert!(held >= 1 && counts.total >= 1, "a permit was counted");
        counts.total -= 1;
        if held == 1 {
            counts.per_client.remove(&client);
        } else {
            counts.per_client.insert(client, held - 1);
        }
    }
}

/// One connection's place; dropped when the connection closes.
#[derive(Debug)]
pub struct Permit {
    /// Where the place is given back.
    admission: Arc<Admission>,
    /// Which place it is.
    place: Place,
}

/// The kinds of place.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// An admitted connection from this address.
    Open(IpAddr),
    /// A refused connection, open until it is answered.
    Refusing,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release(self.place);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_client_past_its_cap_is_refused_and_others_are_not() {
        let admission = Admission::new(10, 2);
        let a1 = admission.admit(ip(1)).unwrap();
        let _a2 = admission.admit(ip(1)).unwrap();
        assert_eq!(admission.admit(ip(1)).unwrap_err().0, Refusal::PerClient(2));
        let _b1 = admission.admit(ip(2)).unwrap();
        drop(a1);
        assert!(
            admission.admit(ip(1)).is_ok(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn the_total_cap_holds_across_clients_and_places_come_back() {
        let admission = Admission::new(3, 3);
        let permits: Vec<_> = (1..=3).map(|i| admission.admit(ip(i)).unwrap()).collect();
        assert_eq!(admission.admit(ip(9)).unwrap_err().0, Refusal::Total(3));
        assert_eq!(admission.open(), 3);
        drop(permits);
        assert_eq!(admission.open(), 0);
        assert!(admission.counts.lock().per_client.is_empty());
    }

    #[test]
    fn refused_connections_are_counted_apart_and_capped() {
        let admission = Admission::new(1, 1);
        let _open = admission.admit(ip(1)).unwrap();
        let refusing: Vec<_> = (0..REFUSING_MAX)
            .map(|_| {
                admission
                    .admit(ip(2))
                    .unwrap_err()
                    .1
                    .expect("a place to refuse")
            })
            .collect();
        assert!(admission.admit(ip(2)).unwrap_err().1.is_none());
        drop(refusing);
        assert_eq!(admission.counts.lock().refusing, 0);
        assert_eq!(admission.open(), 1);
    }
}
