//! Black-box tests of the HTTP API: each test starts the application on a
//! free port with a manual clock and talks to it over HTTP.

mod accounts;
mod collections;
mod concurrency;
mod cross_account;
mod durability;
mod errors;
mod expiry;
mod helpers;
mod metrics;
mod redeem;
mod rejected;
mod tokens_create;
mod tokens_read;
mod upgrade;
