//! The shard actor: the single writer of its tokens.
//!
//! Each shard runs on its own arbiter (thread) and handles one message at a
//! time, so every create, redeem, delete and expiry of its tokens is decided
//! in one order without locks. It stamps each command with a `now` that never
//! goes backwards, so creation order is time order within the shard.
//!
//! A change is applied in memory and appended to the log in the same message
//! turn, so the log order of a shard's records is its decision order. The
//! shard never waits for the disk: it replies with the LSN the answer
//! depends on, and the caller waits for that LSN to be durable before
//! answering the client — for a rejection too, since a "409 already redeemed"
//! must not be sent for a redemption that a crash could still undo.
//!
//! A shard may move between threads: the engine starts it on a thread of its
//! own, and an HTTP worker adopts it ([`Handoff`]) so that the requests that
//! worker parses reach it without waking another thread. A shard on a worker
//! carries a [`Homing`]: should the worker's thread stop under it (the HTTP
//! server shutting down), the shard is handed to the engine's keeper as it
//! drops, which starts it again on one of the engine's threads — never after
//! a panic, which may have left the state half changed.

use super::capture::ShardCapture;
use super::command::TokenCommand;
use super::outcome::{Checked, Rejection};
use super::state::{ListPage, ListQuery, ShardState, TimerReport};
use crate::catalog::Catalog;
use crate::clock::{Clock, Millis};
use crate::command::Redeem;
use crate::ids::{AccountId, TokenId};
use crate::log::{Log, LogError, LogRecord, Lsn};
use crate::metrics::tokens::TokenGauges;
use crate::model::Token;
use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message};
use std::sync::Arc;
use std::time::Duration;

/// Messages queued per shard before senders wait, unless the engine sets
/// its own ([`Shard::with_mailbox_capacity`]): deep enough to absorb a burst
/// from every HTTP worker. The engine bounds the requests it sends a shard
/// below this (see `engine::mailbox`), so that senders never wait here.
const MAILBOX_CAPACITY: usize = 4_096;

/// A shard's answer, valid once `lsn` is durable.
#[derive(Debug)]
pub struct Decided<T> {
    /// The answer.
    pub value: T,
    /// The LSN of the last record the answer depends on (0: none).
    pub lsn: Lsn,
}

/// Applies a command; replies with its outcome. `Err` when the log refused
/// the record (the log is poisoned).
pub struct Execute<C>(pub C);

impl<C: TokenCommand> Message for Execute<C> {
    type Result = Result<Decided<Result<C::Outcome, Rejection>>, LogError>;
}

/// Applies several commands in order, in one turn (a batch redeem's part
/// for this shard); replies with each outcome. `Err` when the log refused
/// a record (the log is poisoned).
pub struct ExecuteEach<C>(pub Vec<C>);

impl<C: TokenCommand> Message for ExecuteEach<C> {
    type Result = Result<Decided<Vec<Result<C::Outcome, Rejection>>>, LogError>;
}

/// What a redeem would answer now (validation); changes nothing.
#[derive(Message)]
#[rtype(result = "Decided<Result<Checked, Rejection>>")]
pub struct Validate(pub Redeem);

/// Captures the shard for a snapshot.
#[derive(Message)]
#[rtype(result = "ShardCapture")]
pub struct Capture;

/// Reads tokens by id.
#[derive(Message)]
#[rtype(result = "Decided<Vec<Option<Arc<Token>>>>")]
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
#[rtype(result = "Decided<ListPage>")]
pub struct List(pub ListQuery);

/// Runs the expiry and purge timers now.
#[derive(Message)]
#[rtype(result = "TimerReport")]
pub struct RunTimers;

/// Stops the shard and sends it, state and all, on `0`, to be started on
/// another thread. Messages queued behind it are refused (mailbox closed):
/// the engine moves shards only while no request is in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Handoff(pub std::sync::mpsc::SyncSender<Shard>);

/// A shard on its way from a thread that stopped under it to the keeper.
pub struct Moving {
    /// Which shard (its index in the engine).
    pub index: usize,
    /// The shard, stopped, with everything it held.
    pub shard: Shard,
}

/// Where a shard goes if the thread it runs on stops under it.
pub struct Homing {
    /// Which shard it is, for the keeper.
    pub index: usize,
    /// The keeper, which starts it again on one of the engine's threads.
    pub keeper: tokio::sync::mpsc::UnboundedSender<Moving>,
}

/// The shard actor.
pub struct Shard {
    /// The tokens and timers.
    state: ShardState,
    /// Collections and accounts, read-only here.
    catalog: Arc<Catalog>,
    /// The log every change goes to.
    log: Arc<dyn Log>,
    /// LSN of this shard's last logged change: what its answers depend on.
    last_lsn: Lsn,
    /// The engine clock.
    clock: Arc<dyn Clock>,
    /// The last decision time: `now` never goes backwards within a shard.
    last_now_ms: Millis,
    /// How often the timers run on their own.
    timer_period: Duration,
    /// The state's token counts, published after each change for scrapes.
    token_gauges: Arc<TokenGauges>,
    /// Messages the actor's mailbox queues before senders wait.
    mailbox_capacity: usize,
    /// Set while it runs on a thread that is not the engine's (an HTTP
    /// worker's): where it goes if that thread stops under it.
    homing: Option<Homing>,
    /// It was handed over (its state moved out): dropping it hands nothing.
    moved: bool,
}

impl Shard {
    /// A shard over `state`.
    pub fn new(
        state: ShardState,
        catalog: Arc<Catalog>,
        log: Arc<dyn Log>,
        clock: Arc<dyn Clock>,
        timer_period: Duration,
    ) -> Self {
        let token_gauges = Arc::new(TokenGauges::default());
        token_gauges.publish(state.counts());
        Self {
            token_gauges,
            state,
            catalog,
            last_lsn: log.last_lsn(),
            log,
            clock,
            last_now_ms: Millis::MIN,
            timer_period,
            mailbox_capacity: MAILBOX_CAPACITY,
            homing: None,
            moved: false,
        }
    }

    /// The same shard, handed to the keeper should its thread stop under it
    /// (`None`: dropped with its thread, as on the engine's own).
    pub fn homed(mut self, homing: Option<Homing>) -> Self {
        self.homing = homing;
        self
    }

    /// Moves everything this shard holds into a new value, leaving this one
    /// empty and marked as moved.
    fn take(&mut self) -> Shard {
        assert!(!self.moved, "a shard is moved once");
        self.moved = true;
        Shard {
            state: std::mem::replace(&mut self.state, ShardState::new(0)),
            catalog: Arc::clone(&self.catalog),
            log: Arc::clone(&self.log),
            last_lsn: self.last_lsn,
            clock: Arc::clone(&self.clock),
            last_now_ms: self.last_now_ms,
            timer_period: self.timer_period,
            token_gauges: Arc::clone(&self.token_gauges),
            mailbox_capacity: self.mailbox_capacity,
            homing: self.homing.take(),
            moved: false,
        }
    }

    /// The same shard, queueing up to `capacity` messages before senders
    /// wait.
    pub fn with_mailbox_capacity(mut self, capacity: usize) -> Self {
        assert!(capacity > 0, "a mailbox holds at least one message");
        self.mailbox_capacity = capacity;
        self
    }

    /// This shard's token counts by status, as last published.
    pub fn token_gauges(&self) -> Arc<TokenGauges> {
        Arc::clone(&self.token_gauges)
    }

    /// Runs the expiry and purge timers, publishing the counts they change.
    fn run_timers(&mut self) -> TimerReport {
        let now = self.now();
        let report = self.state.run_timers(now);
        if report != TimerReport::default() {
            self.token_gauges.publish(self.state.counts());
        }
        report
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
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        ctx.run_interval(self.timer_period, |shard, _| {
            shard.run_timers();
        });
    }
}

impl Shard {
    /// Applies `command` decided at `now` and, when it changed the state,
    /// appends it to the log in the same turn (so log order is decision
    /// order); whether it changed anything. On a log error the change stays
    /// in memory but is never acknowledged: the log is poisoned and every
    /// later answer that depends on it fails too.
    fn decide<C: TokenCommand>(
        &mut self,
        command: C,
        now: Millis,
    ) -> Result<(Result<C::Outcome, Rejection>, bool), LogError> {
        let result = self.state.execute(&command, now, &self.catalog);
        let changed = result.as_ref().is_ok_and(C::changed);
        if changed {
            let record = LogRecord::Shard {
                now_ms: now,
                command: command.into(),
            };
            self.last_lsn = self.log.append(&record)?;
        }
        Ok((result, changed))
    }
}

impl<C: TokenCommand> Handler<Execute<C>> for Shard {
    type Result = Result<Decided<Result<C::Outcome, Rejection>>, LogError>;

    fn handle(&mut self, Execute(command): Execute<C>, _: &mut Self::Context) -> Self::Result {
        // A poisoned log acknowledges nothing; stop changing state too.
        self.log.check_writable()?;
        let now = self.now();
        let (result, changed) = self.decide(command, now)?;
        if changed {
            self.token_gauges.publish(self.state.counts());
        }
        Ok(Decided {
            value: result,
            lsn: self.last_lsn,
        })
    }
}

impl<C: TokenCommand> Handler<ExecuteEach<C>> for Shard {
    type Result = Result<Decided<Vec<Result<C::Outcome, Rejection>>>, LogError>;

    fn handle(
        &mut self,
        ExecuteEach(commands): ExecuteEach<C>,
        _: &mut Self::Context,
    ) -> Self::Result {
        self.log.check_writable()?;
        // One decision time for the whole part, as for one command.
        let now = self.now();
        let mut outcomes = Vec::with_capacity(commands.len());
        let mut changed = false;
        for command in commands {
            let (result, one_changed) = self.decide(command, now)?;
            changed |= one_changed;
            outcomes.push(result);
        }
        if changed {
            self.token_gauges.publish(self.state.counts());
        }
        Ok(Decided {
            value: outcomes,
            lsn: self.last_lsn,
        })
    }
}

impl Handler<Validate> for Shard {
    type Result = actix::MessageResult<Validate>;

    fn handle(&mut self, Validate(command): Validate, _: &mut Self::Context) -> Self::Result {
        let now = self.now();
        actix::MessageResult(Decided {
            value: self.state.check_redeem(&command, now),
            lsn: self.last_lsn,
        })
    }
}

impl Handler<Fetch> for Shard {
    type Result = actix::MessageResult<Fetch>;

    fn handle(&mut self, fetch: Fetch, _: &mut Self::Context) -> Self::Result {
        let now = self.now();
        actix::MessageResult(Decided {
            value: self.state.fetch(fetch.account_id, &fetch.ids, now),
            lsn: self.last_lsn,
        })
    }
}

impl Handler<Capture> for Shard {
    type Result = actix::MessageResult<Capture>;

    fn handle(&mut self, _: Capture, _: &mut Self::Context) -> Self::Result {
        // Every record of this shard at or below the log's current end has
        // been applied (append happens in the same turn as apply), and every
        // later one will be above it.
        let lsn = self.log.last_lsn();
        actix::MessageResult(ShardCapture::of(&self.state, lsn))
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
        actix::MessageResult(Decided {
            value: self.state.list(&query, now),
            lsn: self.last_lsn,
        })
    }
}

impl Handler<Handoff> for Shard {
    type Result = ();

    fn handle(&mut self, Handoff(to): Handoff, ctx: &mut Self::Context) {
        let shard = self.take();
        ctx.stop();
        // A taker that gave up has nothing to start it on: the shard is
        // dropped with its homing cleared, as a stopped engine's are.
        if let Err(unsent) = to.send(shard) {
            drop(unsent.0.homed(None));
        }
    }
}

impl Drop for Shard {
    /// A shard on a worker whose thread stopped under it goes to the keeper.
    /// Not after a panic: its state may be half changed, and a shard that
    /// answers nothing is better than one that answers wrong.
    fn drop(&mut self) {
        if self.moved || self.homing.is_none() || std::thread::panicking() {
            return;
        }
        let shard = self.take();
        if let Some(homing) = &shard.homing {
            let keeper = homing.keeper.clone();
            let index = homing.index;
            // A keeper that is gone (the engine stopped) drops it for good.
            if let Err(unsent) = keeper.send(Moving { index, shard }) {
                drop(unsent.0.shard.homed(None));
            }
        }
    }
}

impl Handler<RunTimers> for Shard {
    type Result = actix::MessageResult<RunTimers>;

    fn handle(&mut self, _: RunTimers, _: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.run_timers())
    }
}
