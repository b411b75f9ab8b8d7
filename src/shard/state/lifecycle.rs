//! Holds, captures, releases, voids and validation: the redemption
//! lifecycle beyond a plain redeem, decided by the shard like every other
//! change (same `now`, same replay, nothing changed on a refusal).

use super::{RedeemPlan, ShardState};
use crate::clock::Millis;
use crate::command::{Capture, Hold, Redeem, Release, Void};
use crate::ids::{AccountId, TokenId};
use crate::model::lifecycle::{HoldState, VOIDS_MAX};
use crate::model::token::NEVER;
use crate::model::{self, HoldEnd, Redemption, Status, VoidedRedemption};
use crate::shard::outcome::{Changed, Checked, Rejection};
use crate::shard::table::{Slot, SlotId};

impl ShardState {
    /// The token `id` as `account` sees it at `now`, with its status, unless
    /// it is unknown (404) or deleted (410): what capture, release and void
    /// check first.
    fn undeleted(
        &self,
        account: AccountId,
        id: TokenId,
        now: Millis,
    ) -> Result<(SlotId, &Slot, Status), Rejection> {
        let (at, token) = self
            .visible(account, id, now)
            .ok_or(Rejection::TokenNotFound)?;
        match token.status_at(now) {
            Status::Deleted => Err(Rejection::Deleted),
            status => Ok((at, token, status)),
        }
    }

    /// The token in `at` as readers see it, as a replay (nothing changed).
    fn replay(&self, at: SlotId) -> Result<Changed, Rejection> {
        self.changed(at, true)
    }

    /// The token in `at` as readers see it.
    fn changed(&self, at: SlotId, replayed: bool) -> Result<Changed, Rejection> {
        let token = self.table.slot(at).ok_or(Rejection::TokenNotFound)?;
        Ok(Changed {
            token: self.table.view(token),
            replayed,
        })
    }

    /// Places a hold at `now`: checked like a redeem; a repeat of the live
    /// hold's request is a replay.
    pub(in crate::shard) fn place_hold(
        &mut self,
        command: &Hold,
        now: Millis,
    ) -> Result<Changed, Rejection> {
        let merchant = command.merchant_id.as_deref();
        let (at, token) = self
            .visible(command.account_id, command.id, now)
            .ok_or(Rejection::TokenNotFound)?;
        let ttl_secs_max = self
            .table
            .tables()
            .collections
            .get(token.collection)
            .map_or(model::collection::HOLD_TTL_SECS_DEFAULT, |c| {
                c.hold_ttl_secs_max()
            });
        if command.ttl_secs.is_some_and(|ttl| ttl > ttl_secs_max) {
            return Err(Rejection::HoldTooLong {
                max_secs: ttl_secs_max,
            });
        }
        match token.status_at(now) {
            Status::Deleted => return Err(Rejection::Deleted),
            Status::Expired => return Err(Rejection::Expired),
            Status::Redeemed => {
                let redeemed_at_ms = token
                    .extra()
                    .redemption
                    .as_ref()
                    .map_or(0, |r| r.redeemed_at_ms);
                return Err(Rejection::AlreadyRedeemed { redeemed_at_ms });
            }
            Status::Held => {
                let hold = token.extra().live_hold(now);
                let repeats = hold.is_some_and(|h| {
                    command.idempotency_key.is_some()
                        && h.idempotency_key.as_deref() == command.idempotency_key.as_deref()
                        && h.merchant_id.as_deref() == merchant
                });
                if repeats {
                    return self.replay(at);
                }
                let expires_at_ms = hold.map_or(now, |h| h.expires_at_ms);
                return Err(Rejection::Held { expires_at_ms });
            }
            Status::Active => {}
        }
        self.check_spendable(token, merchant, now)?;
        let ttl_ms = command
            .ttl_secs
            .unwrap_or(ttl_secs_max)
            .saturating_mul(1000);
        let expires_at_ms = now.saturating_add(ttl_ms).min(token.expires_at_ms());
        self.settle_hold(at, now);
        let Some(token) = self.table.slot_mut(at) else {
            return Err(Rejection::TokenNotFound);
        };
        debug_assert_eq!(token.status, Status::Active, "only an active token is held");
        self.counts.moved(token.status, Status::Held);
        token.status = Status::Held;
        token.extra_mut().lifecycle_mut().hold = Some(model::Hold {
            id: command.hold_id,
            merchant_id: merchant.map(Box::from),
            idempotency_key: command.idempotency_key.as_deref().map(Box::from),
            held_at_ms: now,
            expires_at_ms,
            held_by: Box::from(command.held_by.as_str()),
        });
        self.holds.push(expires_at_ms, at);
        self.changed(at, false)
    }

    /// Redeems a held token for its live hold, at `now`; capturing the hold
    /// of the current redemption again is a replay.
    pub(in crate::shard) fn capture_hold(
        &mut self,
        command: &Capture,
        now: Millis,
    ) -> Result<Changed, Rejection> {
        let (at, token, status) = self.undeleted(command.account_id, command.id, now)?;
        let lifecycle = token.extra().lifecycle();
        match lifecycle.hold_state(command.hold_id, now) {
            HoldState::Unknown => return Err(Rejection::HoldNotFound),
            HoldState::Ended(HoldEnd::Captured)
                if status == Status::Redeemed && lifecycle.captured == Some(command.hold_id) =>
            {
                return self.replay(at)
            }
            HoldState::Ended(_) => return Err(Rejection::HoldNotActive),
            HoldState::Live => {}
        }
        let redeemed_by = self.intern(&command.captured_by);
        let retention_ms = self.retention_ms;
        let Some(token) = self.table.slot_mut(at) else {
            return Err(Rejection::TokenNotFound);
        };
        debug_assert_eq!(token.status, Status::Held, "a live hold means held");
        self.counts.moved(token.status, Status::Redeemed);
        token.status = Status::Redeemed;
        token.free_data();
        let extra = token.extra_mut();
        let lifecycle = extra.lifecycle_mut();
        let Some(hold) = lifecycle.end_hold(HoldEnd::Captured, now) else {
            return Err(Rejection::HoldNotFound);
        };
        lifecycle.captured = Some(hold.id);
        extra.redemption = Some(Redemption {
            merchant_id: hold.merchant_id,
            idempotency_key: hold.idempotency_key,
            redeemed_at_ms: now,
            redeemed_by,
        });
        self.purges.push(now.saturating_add(retention_ms), at);
        self.changed(at, false)
    }

    /// Lets a held token go at `now`; releasing a hold that already ended
    /// (released or lapsed) is a replay, a captured one is refused.
    pub(in crate::shard) fn release_hold(
        &mut self,
        command: &Release,
        now: Millis,
    ) -> Result<Changed, Rejection> {
        let (at, token, _) = self.undeleted(command.account_id, command.id, now)?;
        match token.extra().lifecycle().hold_state(command.hold_id, now) {
            HoldState::Unknown => return Err(Rejection::HoldNotFound),
            HoldState::Ended(HoldEnd::Captured) => return Err(Rejection::HoldNotActive),
            HoldState::Ended(HoldEnd::Released | HoldEnd::Expired) => return self.replay(at),
            HoldState::Live => {}
        }
        let Some(token) = self.table.slot_mut(at) else {
            return Err(Rejection::TokenNotFound);
        };
        // A live hold ends before the token does, so the token is active.
        debug_assert!(
            now < token.expires_at_ms(),
            "a hold never outlives its token"
        );
        self.counts.moved(token.status, Status::Active);
        token.status = Status::Active;
        token
            .extra_mut()
            .lifecycle_mut()
            .end_hold(HoldEnd::Released, now);
        self.changed(at, false)
    }

    /// Undoes the token's redemption at `now` (a refund): active again (or
    /// expired past its `expiresAt`), the redemption kept among the voided
    /// ones; repeating a void's idempotency key is a replay.
    pub(in crate::shard) fn void_redemption(
        &mut self,
        command: &Void,
        now: Millis,
    ) -> Result<Changed, Rejection> {
        let (at, token, status) = self.undeleted(command.account_id, command.id, now)?;
        let lifecycle = token.extra().lifecycle();
        if let Some(key) = command.idempotency_key.as_deref() {
            let repeated = lifecycle
                .voided
                .iter()
                .any(|v| v.void_idempotency_key.as_deref() == Some(key));
            if repeated {
                return self.replay(at);
            }
        }
        let redemption = match (status, token.extra().redemption.as_ref()) {
            (Status::Redeemed, Some(redemption)) => redemption,
            _ => return Err(Rejection::NotRedeemed),
        };
        let window_secs = self
            .table
            .tables()
            .collections
            .get(token.collection)
            .map_or(model::collection::VOID_WINDOW_SECS_DEFAULT, |c| {
                c.void_window_secs()
            });
        let closed_at_ms = redemption
            .redeemed_at_ms
            .saturating_add(window_secs.saturating_mul(1000));
        if now >= closed_at_ms {
            return Err(Rejection::VoidWindowClosed { closed_at_ms });
        }
        if lifecycle.voided.len() >= VOIDS_MAX {
            return Err(Rejection::VoidLimitReached);
        }
        let retention_ms = self.retention_ms;
        let Some(token) = self.table.slot_mut(at) else {
            return Err(Rejection::TokenNotFound);
        };
        let to = if now >= token.expires_at_ms() {
            Status::Expired
        } else {
            Status::Active
        };
        self.counts.moved(token.status, to);
        token.status = to;
        let expires_at_ms = token.expires_at_ms();
        let extra = token.extra_mut();
        let Some(redemption) = extra.redemption.take() else {
            return Err(Rejection::NotRedeemed);
        };
        let lifecycle = extra.lifecycle_mut();
        let hold_id = lifecycle.captured.take();
        lifecycle.voided.push(VoidedRedemption {
            merchant_id: redemption.merchant_id,
            idempotency_key: redemption.idempotency_key,
            redeemed_at_ms: redemption.redeemed_at_ms,
            redeemed_by: Box::from(&*redemption.redeemed_by),
            hold_id,
            voided_at_ms: now,
            voided_by: Box::from(command.voided_by.as_str()),
            reason: command.reason.as_deref().map(Box::from),
            void_idempotency_key: command.idempotency_key.as_deref().map(Box::from),
        });
        match to {
            Status::Active if expires_at_ms != NEVER => self.expiries.push(expires_at_ms, at),
            Status::Expired => self
                .purges
                .push(expires_at_ms.saturating_add(retention_ms), at),
            _ => {}
        }
        self.changed(at, false)
    }

    /// What a redeem would answer at `now`, changing nothing: the token and,
    /// when it would be refused, why. Unknown tokens are the one `Err`.
    pub fn check_redeem(&self, command: &Redeem, now: Millis) -> Result<Checked, Rejection> {
        let (at, refusal) = match self.plan_redeem(command, now) {
            Ok(RedeemPlan::Spend(at) | RedeemPlan::Replay(at)) => (at, None),
            Err(Rejection::TokenNotFound) => return Err(Rejection::TokenNotFound),
            Err(refusal) => {
                let (at, _) = self
                    .visible(command.account_id, command.id, now)
                    .ok_or(Rejection::TokenNotFound)?;
                (at, Some(refusal))
            }
        };
        let token = self.table.slot(at).ok_or(Rejection::TokenNotFound)?;
        Ok(Checked {
            token: self.table.view(token),
            refusal,
        })
    }
}
