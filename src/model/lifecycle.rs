//! The redemption lifecycle beyond a plain redeem: holds (reserve, then
//! capture or release), and voids that undo a redemption.
//!
//! It is the rarely present part of a rarely present part: a token that was
//! never held or voided carries none of it (the field in
//! [`TokenExtra`](super::TokenExtra) is one `None` pointer). Every list is
//! bounded so a token's size stays bounded however often it cycles.

use crate::clock::Millis;
use crate::ids::HoldId;
use serde::{Deserialize, Serialize};

/// Voided redemptions a token keeps; a void beyond it is refused
/// (`VOID_LIMIT_REACHED`), so a token cannot be recycled without bound.
pub const VOIDS_MAX: usize = 20;
/// Ended holds a token remembers, so that capturing or releasing one again
/// is answered as a replay or `HOLD_NOT_ACTIVE`; older ones are forgotten
/// (then `HOLD_NOT_FOUND`).
pub const ENDED_HOLDS_MAX: usize = 20;

/// A live reservation of a token: nobody else may hold or redeem it until
/// it is captured, released, or `expires_at_ms` passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Its id, named by capture and release.
    pub id: HoldId,
    /// The merchant holding it; a capture redeems for it.
    pub merchant_id: Option<Box<str>>,
    /// The hold request's key: repeating the request is a replay.
    pub idempotency_key: Option<Box<str>>,
    /// When it was placed.
    pub held_at_ms: Millis,
    /// When it lapses (exclusive): never after the token's own expiry.
    pub expires_at_ms: Millis,
    /// Name of the API key that placed it (rendered as a CRN).
    pub held_by: Box<str>,
}

impl Hold {
    /// Whether the hold still reserves the token at `now`.
    pub fn is_live(&self, now: Millis) -> bool {
        now < self.expires_at_ms
    }
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldEnd {
    /// Released by a client, or by a delete of the token.
    Released,
    /// Reached its `expires_at_ms`.
    Expired,
    /// Captured: the token was redeemed for it.
    Captured,
}

/// A hold that no longer reserves the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedHold {
    /// The hold's id.
    pub id: HoldId,
    /// How it ended.
    pub end: HoldEnd,
    /// When (for an expiry: the hold's `expires_at_ms`).
    pub ended_at_ms: Millis,
}

/// A redemption undone by a void (a refund), kept for audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidedRedemption {
    /// The merchant of the redemption.
    pub merchant_id: Option<Box<str>>,
    /// The redemption's idempotency key.
    pub idempotency_key: Option<Box<str>>,
    /// When it was redeemed.
    pub redeemed_at_ms: Millis,
    /// Name of the API key that redeemed (or captured) it.
    pub redeemed_by: Box<str>,
    /// The hold it captured, when it was a capture.
    pub hold_id: Option<HoldId>,
    /// When it was voided.
    pub voided_at_ms: Millis,
    /// Name of the API key that voided it.
    pub voided_by: Box<str>,
    /// The client's reason, ≤ 200 characters.
    pub reason: Option<Box<str>>,
    /// The void request's key: repeating the request is a replay.
    pub void_idempotency_key: Option<Box<str>>,
}

/// A token's holds and voids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// The current hold: the token's stored status is `held` exactly while
    /// this is set. It may have lapsed (`now ≥ expires_at_ms`) before the
    /// timer ended it; every reader judges it against `now`.
    pub hold: Option<Hold>,
    /// The hold the current redemption captured (cleared by a void).
    pub captured: Option<HoldId>,
    /// Ended holds, oldest first, at most [`ENDED_HOLDS_MAX`].
    pub ended_holds: Vec<EndedHold>,
    /// Voided redemptions, oldest first, at most [`VOIDS_MAX`].
    pub voided: Vec<VoidedRedemption>,
}

impl Lifecycle {
    /// Whether nothing is set (then the token carries no lifecycle at all).
    pub fn is_empty(&self) -> bool {
        self.hold.is_none()
            && self.captured.is_none()
            && self.ended_holds.is_empty()
            && self.voided.is_empty()
    }

    /// The hold if it is live at `now`.
    pub fn live_hold(&self, now: Millis) -> Option<&Hold> {
        self.hold.as_ref().filter(|h| h.is_live(now))
    }

    /// Records that a hold ended, forgetting the oldest beyond the bound.
    pub fn push_ended(&mut self, ended: EndedHold) {
        if self.ended_holds.len() == ENDED_HOLDS_MAX {
            self.ended_holds.remove(0);
        }
        self.ended_holds.push(ended);
    }

    /// Ends the current hold (if any) as `end` at `at_ms`; a hold that had
    /// lapsed by then ended by expiry at its own deadline instead.
    pub fn end_hold(&mut self, end: HoldEnd, at_ms: Millis) -> Option<Hold> {
        let hold = self.hold.take()?;
        let ended = if hold.is_live(at_ms) {
            EndedHold {
                id: hold.id,
                end,
                ended_at_ms: at_ms,
            }
        } else {
            EndedHold {
                id: hold.id,
                end: HoldEnd::Expired,
                ended_at_ms: hold.expires_at_ms,
            }
        };
        self.push_ended(ended);
        Some(hold)
    }

    /// How the hold `id` stands at `now`: live, ended (and how), or unknown.
    pub fn hold_state(&self, id: HoldId, now: Millis) -> HoldState {
        if let Some(hold) = self.hold.as_ref().filter(|h| h.id == id) {
            return if hold.is_live(now) {
                HoldState::Live
            } else {
                HoldState::Ended(HoldEnd::Expired)
            };
        }
        self.ended_holds
            .iter()
            .rev()
            .find(|e| e.id == id)
            .map_or(HoldState::Unknown, |e| HoldState::Ended(e.end))
    }
}

/// How one hold stands, as capture and release see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    /// It reserves the token now.
    Live,
    /// It ended.
    Ended(HoldEnd),
    /// Never placed on this token, or forgotten.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(expires_at_ms: Millis) -> Hold {
        Hold {
            id: HoldId::random(),
            merchant_id: None,
            idempotency_key: None,
            held_at_ms: 0,
            expires_at_ms,
            held_by: "k".into(),
        }
    }

    #[test]
    fn a_hold_is_live_until_its_expiry_exclusive() {
        let h = hold(100);
        assert!(h.is_live(99));
        assert!(!h.is_live(100));
    }

    #[test]
    fn ending_a_lapsed_hold_records_an_expiry_at_its_deadline() {
        let mut life = Lifecycle {
            hold: Some(hold(100)),
            ..Lifecycle::default()
        };
        let id = life
            .hold
            .as_ref()
            .map(|h| h.id)
            .unwrap_or_else(HoldId::random);
        assert_eq!(life.hold_state(id, 100), HoldState::Ended(HoldEnd::Expired));
        life.end_hold(HoldEnd::Released, 150);
        assert_eq!(
            life.ended_holds,
            vec![EndedHold {
                id,
                end: HoldEnd::Expired,
                ended_at_ms: 100
            }]
        );
    }

    #[test]
    fn ended_holds_are_bounded_oldest_first() {
        let mut life = Lifecycle::default();
        let ids: Vec<HoldId> = (0..ENDED_HOLDS_MAX + 1).map(|_| HoldId::random()).collect();
        for (i, id) in ids.iter().enumerate() {
            life.push_ended(EndedHold {
                id: *id,
                end: HoldEnd::Released,
                ended_at_ms: i as Millis,
            });
        }
        assert_eq!(life.ended_holds.len(), ENDED_HOLDS_MAX);
        assert_eq!(life.hold_state(ids[0], 0), HoldState::Unknown);
        assert_eq!(
            life.hold_state(ids[ENDED_HOLDS_MAX], 0),
            HoldState::Ended(HoldEnd::Released)
        );
    }
}
