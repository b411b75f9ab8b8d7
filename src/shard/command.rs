//! The commands a shard decides, each with its own outcome type.
//!
//! The command types themselves are plain data in [`crate::command`], shared
//! with the log; this module says how each one applies to a
//! [`ShardState`] and which outcomes change state (and so must be logged).

use super::outcome::{Changed, Created, Deleted, Redeemed, Rejection};
use super::state::ShardState;
use crate::catalog::Catalog;
use crate::clock::Millis;
use crate::command::{Capture, Create, Delete, Hold, Redeem, Release, ShardCommand, Void};

/// A command one shard decides, and what it answers.
pub trait TokenCommand: Into<ShardCommand> + Send + 'static {
    /// What a successful apply answers.
    type Outcome: Send + 'static;

    /// Applies the command decided at `now`: either every effect happens and
    /// the outcome says what, or nothing changes and the rejection says why.
    fn apply(
        &self,
        state: &mut ShardState,
        now: Millis,
        catalog: &Catalog,
    ) -> Result<Self::Outcome, Rejection>;

    /// Whether `outcome` changed the state, i.e. whether the command must be
    /// logged (a replay changes nothing and is not).
    fn changed(outcome: &Self::Outcome) -> bool;
}

impl TokenCommand for Create {
    /// Tokens created or replayed, in command order.
    type Outcome = Vec<Created>;

    fn apply(
        &self,
        state: &mut ShardState,
        now: Millis,
        catalog: &Catalog,
    ) -> Result<Vec<Created>, Rejection> {
        state.create(&self.tokens, now, catalog)
    }

    fn changed(outcome: &Vec<Created>) -> bool {
        outcome.iter().any(Created::is_new)
    }
}

impl TokenCommand for Redeem {
    type Outcome = Redeemed;

    fn apply(
        &self,
        state: &mut ShardState,
        now: Millis,
        _: &Catalog,
    ) -> Result<Redeemed, Rejection> {
        state.redeem(self, now)
    }

    fn changed(outcome: &Redeemed) -> bool {
        !outcome.replayed
    }
}

impl TokenCommand for Delete {
    type Outcome = Deleted;

    fn apply(
        &self,
        state: &mut ShardState,
        now: Millis,
        _: &Catalog,
    ) -> Result<Deleted, Rejection> {
        state.delete(self, now)
    }

    fn changed(outcome: &Deleted) -> bool {
        outcome.changed
    }
}

/// Implements [`TokenCommand`] for a lifecycle command answering
/// [`Changed`] through the named [`ShardState`] method.
macro_rules! lifecycle_command {
    ($command:ty, $method:ident) => {
        impl TokenCommand for $command {
            type Outcome = Changed;

            fn apply(
                &self,
                state: &mut ShardState,
                now: Millis,
                _: &Catalog,
            ) -> Result<Changed, Rejection> {
                state.$method(self, now)
            }

            fn changed(outcome: &Changed) -> bool {
                !outcome.replayed
            }
        }
    };
}

lifecycle_command!(Hold, place_hold);
lifecycle_command!(Capture, capture_hold);
lifecycle_command!(Release, release_hold);
lifecycle_command!(Void, void_redemption);

/// Applies a logged command (replay): whether it changed the state.
pub fn apply_logged(
    command: &ShardCommand,
    state: &mut ShardState,
    now: Millis,
    catalog: &Catalog,
) -> Result<bool, Rejection> {
    fn run<C: TokenCommand>(
        command: &C,
        state: &mut ShardState,
        now: Millis,
        catalog: &Catalog,
    ) -> Result<bool, Rejection> {
        command.apply(state, now, catalog).map(|o| C::changed(&o))
    }
    match command {
        ShardCommand::Create(c) => run(c, state, now, catalog),
        ShardCommand::Redeem(c) => run(c, state, now, catalog),
        ShardCommand::Delete(c) => run(c, state, now, catalog),
        ShardCommand::Hold(c) => run(c, state, now, catalog),
        ShardCommand::Capture(c) => run(c, state, now, catalog),
        ShardCommand::Release(c) => run(c, state, now, catalog),
        ShardCommand::Void(c) => run(c, state, now, catalog),
    }
}
