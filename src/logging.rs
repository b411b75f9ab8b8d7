//! Where log events go: stderr, as text for people or as JSON lines for log
//! shippers (`--log-format`), filtered by `RUST_LOG`.
//!
//! Text is coloured only when stderr is a terminal, so files and journals
//! get no escape codes. JSON puts each event on one line as an object with
//! `timestamp`, `level`, `target` and the event's fields at the top level
//! (`message`, and for the request log `request_id`, `route`, `status`, …).
//! `RUST_LOG` takes `tracing` directives (`info`, `tokend=debug`,
//! `info,tokend::access=warn`); without it, [`FILTER_DEFAULT`].

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is unset or invalid: INFO and above, with the
/// NATS client's chatter (reconnects, lag) only from WARN.
pub const FILTER_DEFAULT: &str = "info,async_nats=warn";

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, target, message, fields.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the process's log subscriber: events at or above `RUST_LOG`
/// (else [`FILTER_DEFAULT`]) to stderr in `format`. Call once, first thing.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(FILTER_DEFAULT));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_ansi(false)
            .init(),
    }
}
