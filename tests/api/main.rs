//! Black-box tests of the HTTP API: each test starts the application on a
//! free port with a manual clock and talks to it over HTTP.

mod accounts;
mod bodies;
mod collections;
mod concurrency;
mod cross_account;
mod docs_page;
mod durability;
mod edge;
mod encryption;
mod errors;
mod expiry;
mod helpers;
mod lifecycle;
mod lifecycle_restart;
mod limits;
mod logs;
mod metrics;
// The child-process and network helpers of the NATS harness that cluster
// mode (see `helpers`) shares with the cluster suite.
#[allow(dead_code)]
#[path = "../common/net.rs"]
mod net;
mod openapi;
#[allow(dead_code)]
#[path = "../common/process.rs"]
mod process;
mod redeem;
mod rejected;
mod tokens_create;
mod tokens_read;
mod upgrade;
