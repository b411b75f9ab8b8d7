//! The shard actor: the single writer of its tokens.
//!
//! Each shard runs on its own arbiter (thread) and handles one message at a
//! time, so every create, redeem, delete and expiry of its tokens is decided
//! in one order without locks. It stamps each command with a `now` that never
//! goes backwards, so creation order is time order within the shard.

use super::command::{Outcome, Rejection, ShardCommand};
use super::state::{ListPage, ListQuery, ShardState, TimerReport};
use crate::catalog::Catalog;
use crate::clock::{Clock, Millis};
use crate::ids::{AccountId, TokenId};
use crate::model::Token;
use actix::{Actor, AsyncContext, Context, Handler, Message};
use std::sync::Arc;
use std::time::Duration;

/// Messages queued per shard before senders wait: deep enough to absorb a
/// burst from every HTTP worker, bounded so overload turns into backpressure.
const MAILBOX_CAPACITY: usize = 4_096;

/// Applies a command; replies with its outcome.
#[derive(Message)]
#[rtype(result = "Result<Outcome, Rejection>")]
pub struct Execute(pub ShardCommand);

/// Reads tokens by id.
#[derive(Message)]
#[rtype(result = "Vec<Option<Token>>")]
pub struct Fetch {
    /// The requester.
    pub account_id: AccountId,
    /// Ids owned by this shard.
    pub ids: Vec<TokenId>,
}

/// Checks idempotency keys before a multi-shard create.
#[derive(Message)]
#[rtype(result = "Result<(), Rejection>")]
pub struct Precheck {
    /// The requester.
    pub account_id: AccountId,
    /// `(id, request fingerprint)` of each idempotent token for this shard.
    pub items: Vec<(TokenId, [u8; 16])>,
}

/// One page of a list.
#[derive(Message)]
#[rtype(result = "ListPage")]
pub struct List(pub ListQuery);

/// Runs the expiry and purge timers now.
#[derive(Message)]
#[rtype(result = "TimerReport")]
pub struct RunTimers;

/// The shard actor.
pub struct Shard {
    /// The tokens and timers.
    state: ShardState,
    /// Collections and accounts, read-only here.
    catalog: Arc<Catalog>,
    /// The engine clock.
    clock: Arc<dyn Clock>,
    /// The last decision time: `now` never goes backwards within a shard.
    last_now_ms: Millis,
    /// How often the timers run on their own.
    timer_period: Duration,
}

impl Shard {
    /// A shard over `state`.
    pub fn new(
        state: ShardState,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        timer_period: Duration,
    ) -> Self {
        Self {
            state,
            catalog,
            clock,
            last_now_ms: Millis::MIN,
            timer_period,
        }
    }

    /// The decision time: the clock, but never before the previous one.
    fn now(&mut self) -> Millis {
        self.last_now_ms = self.last_now_ms.max(self.clock.now_ms());
        self.last_now_ms
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(self.timer_period, |shard, _| {
            let now = shard.now();
            shard.state.run_timers(now);
        });
    }
}

impl Handler<Execute> for Shard {
    type Result = Result<Outcome, Rejection>;

    fn handle(&mut self, Execute(command): Execute, _: &mut Self::Context) -> Self::Result {
        let now = self.now();
        self.state.apply(&command, now, &self.catalog)
    }
}

impl Handler<Fetch> for Shard {
    type Result = Vec<Option<Token>>;

    fn handle(&mut self, fetch: Fetch, _: &mut Self::Context) -> Self::Result {
        let now = self.now();
        self.state.fetch(fetch.account_id, &fetch.ids, now)
    }
}

impl Handler<Precheck> for Shard {
    type Result = Result<(), Rejection>;

    fn handle(&mut self, check: Precheck, _: &mut Self::Context) -> Self::Result {
        let now = self.now();
        self.state.precheck(check.account_id, &check.items, now)
    }
}

impl Handler<List> for Shard {
    type Result = actix::MessageResult<List>;

    fn handle(&mut self, List(query): List, _: &mut Self::Context) -> Self::Result {
        let now = self.now();
        actix::MessageResult(self.state.list(&query, now))
    }
}

impl Handler<RunTimers> for Shard {
    type Result = actix::MessageResult<RunTimers>;

    fn handle(&mut self, _: RunTimers, _: &mut Self::Context) -> Self::Result {
        let now = self.now();
        actix::MessageResult(self.state.run_timers(now))
    }
}
