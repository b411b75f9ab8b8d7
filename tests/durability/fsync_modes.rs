//! `--fsync interval` and `--fsync never` (also through `TOKEND_FSYNC`):
//! the server serves, and a process kill loses nothing acknowledged since
//! the page cache outlives the process.

use crate::api::Api;
use crate::fixture::Fixture;
use crate::server::{field, ServerOptions};

async fn kill_loses_nothing(options: ServerOptions, mode: &str) {
    let mut server = options.start();
    let ready = server.log_line("tokend ready");
    assert_eq!(field(&ready, "fsync"), Some(mode), "{ready}");
    let api = Api::new(&server);
    let mut fixture = Fixture::setup(&api, mode).await;
    fixture.write_round(&api).await;
    fixture.write_round(&api).await;
    fixture.capture(&api).await;
    // Well within the 1 s fsync interval of the last writes.
    server.kill9();

    let mut server = options.start();
    fixture.verify(&Api::new(&server)).await;
    // And a graceful stop in this mode flushes and exits 0.
    assert_eq!(
        server.terminate().code(),
        Some(0),
        "{}",
        server.log().text()
    );
    let server = options.start();
    fixture.verify(&Api::new(&server)).await;
}

#[tokio::test]
async fn fsync_interval_loses_nothing_acknowledged_on_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions::new(dir.path())
        .fsync(Some("interval"))
        .arg("--fsync-interval-ms=1000");
    kill_loses_nothing(options, "interval").await;
}

#[tokio::test]
async fn fsync_never_from_the_environment_loses_nothing_acknowledged_on_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions::new(dir.path())
        .fsync(None)
        .env("TOKEND_FSYNC", "never");
    kill_loses_nothing(options, "never").await;
}
