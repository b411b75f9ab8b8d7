//! `tokend-load`: the HTTP load profiler of tokend (`make bench`).
//!
//! Starts a server (or targets one), sets up an account, a key, collections
//! and tokens through the API, measures the machine's HTTP ceiling on
//! `GET /health/live`, then drives one profile — `redeem`, `create`, `mixed`,
//! `hot-collection`, `batch-redeem`, `hold-capture` — or the `restore`
//! profile, and reports a table on
//! stdout, a JSON results file and an SVG plot. See `tokend-load --help` and
//! the README's "Load profiling" section.

#[path = "tokend_load/mod.rs"]
mod tokend_load;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = tokend_load::cli::Args::parse();
    tokend_load::run(args)
}
