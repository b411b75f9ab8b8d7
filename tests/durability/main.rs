//! Crash and restart tests of the real `tokend` binary: each test starts
//! `tokend serve` on a temporary data dir, talks to it over loopback HTTP,
//! stops it with SIGTERM or SIGKILL (or damages its files) and checks what a
//! restarted server, or `tokend inspect`/`compact`, makes of the data dir.

mod api;
mod files;
mod fixture;
// Shared with the cluster suite, which uses other parts of it.
#[allow(dead_code)]
#[path = "../common/process.rs"]
mod process;
mod server;

mod admin_key;
mod corruption;
mod crash_loop;
mod data_key;
mod fsync_modes;
mod lock;
mod offline_tools;
mod restart;
