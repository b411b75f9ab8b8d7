//! The data dir lock: one process at a time.

use crate::api::Api;
use crate::fixture::Fixture;
use crate::server::{run_tool, Server, ServerOptions};

#[tokio::test]
async fn a_live_data_dir_refuses_a_second_server_and_the_offline_tools() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let mut fixture = Fixture::setup(&api, "locked").await;
    fixture.write_round(&api).await;
    fixture.capture(&api).await;
    let shown = dir.path().display().to_string();

    let (status, log) = ServerOptions::new(dir.path()).start_expecting_failure();
    assert!(!status.success(), "a second server fails: {status}\n{log}");
    assert!(
        log.contains(&shown) && log.contains("LOCK") && log.contains("in use"),
        "the message names the dir and its lock:\n{log}"
    );

    for tool in ["inspect", "compact"] {
        let run = run_tool(tool, dir.path());
        assert!(
            !run.status.success(),
            "{tool} on a live dir fails: {}",
            run.output()
        );
        assert!(
            run.stderr.contains(&shown) && run.stderr.contains("in use"),
            "{tool} names the dir: {}",
            run.output()
        );
    }

    // The server is untouched by all that.
    fixture.verify(&api).await;
}
