//! Damaged files at start: a torn WAL tail is cut and logged; a damaged
//! record before the tail stops start-up naming file and offset; a damaged
//! newest snapshot falls back to the previous one plus the WAL.

use crate::api::{id_of, Api};
use crate::files::{
    self, contents, flip_byte, frames, name, FRAME_HEADER_BYTES, SNAPSHOT_HEADER_BYTES,
};
use crate::fixture::Fixture;
use crate::server::{run_tool, Server};
use serde_json::json;

#[tokio::test]
async fn a_torn_wal_tail_is_cut_logged_and_everything_before_it_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let mut fixture = Fixture::setup(&api, "torn").await;
    fixture.write_round(&api).await;
    fixture.capture(&api).await;
    server.kill9();

    // Garbage after the last record, over the zeros of the pre-allocated
    // segment: a write that was cut short.
    let segment = files::last_segment(dir.path());
    let size = std::fs::metadata(&segment).unwrap().len();
    let whole = files::frames_end(&segment);
    files::write_at(&segment, whole, &[0x5a; 7]);
    let damaged = std::fs::read(&segment).unwrap();
    // inspect reports the torn tail, calls the dir fine, and cuts nothing.
    let run = run_tool("inspect", dir.path());
    assert!(run.status.success(), "{}", run.output());
    assert!(
        run.stdout.lines().any(|l| l.contains("torn tail")
            && l.contains(&name(&segment))
            && l.contains(&format!("byte offset {whole}"))),
        "{}",
        run.output()
    );
    assert_eq!(std::fs::read(&segment).unwrap(), damaged);

    let mut server = Server::start(dir.path());
    let cut = server.log_line("torn WAL tail dropped");
    assert!(
        cut.contains(&name(&segment)) && cut.contains(&format!("byte offset {whole}")),
        "{cut}"
    );
    // Cut: the garbage is zeroed; the segment keeps its size.
    let after = std::fs::read(&segment).unwrap();
    assert_eq!(after.len() as u64, size);
    assert!(after[whole..].iter().all(|b| *b == 0));
    let api = Api::new(&server);
    fixture.verify(&api).await;

    // The last record cut in half (its second half never reached the disk:
    // zeros, as the segment was pre-allocated): that token is gone, nothing
    // before it.
    let last = api
        .post(
            "/api/tokens",
            &fixture.key,
            &json!({"collectionId": fixture.collection_id, "data": {"n": 99}}),
        )
        .await
        .expect(201);
    let last_id = id_of(&last.body);
    server.kill9();
    let segment = files::last_segment(dir.path());
    let frame = *frames(&segment).last().unwrap();
    let half = frame.offset + frame.len / 2;
    files::write_at(&segment, half, &vec![0; frame.len - frame.len / 2]);
    let mut server = Server::start(dir.path());
    let cut = server.log_line("torn WAL tail dropped");
    assert!(
        cut.contains(&name(&segment)) && cut.contains(&format!("byte offset {}", frame.offset)),
        "{cut}"
    );
    let api = Api::new(&server);
    api.get_token(&fixture.key, &last_id)
        .await
        .expect_error(404, "TOKEN_NOT_FOUND");
    fixture.verify(&api).await;

    // The cut log takes new records, and the next start finds nothing torn.
    let after = api
        .post(
            "/api/tokens",
            &fixture.key,
            &json!({"collectionId": fixture.collection_id}),
        )
        .await
        .expect(201);
    server.kill9();
    let server = Server::start(dir.path());
    assert!(
        server.log().lines_with("torn WAL tail").is_empty(),
        "{}",
        server.log().text()
    );
    let api = Api::new(&server);
    api.get_token(&fixture.key, &id_of(&after.body))
        .await
        .expect(200);
    api.get_token(&fixture.key, &last_id)
        .await
        .expect_error(404, "TOKEN_NOT_FOUND");
}

#[tokio::test]
async fn a_damaged_record_before_the_tail_stops_start_up_and_inspect_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let mut fixture = Fixture::setup(&api, "damaged").await;
    fixture.write_round(&api).await;
    server.kill9();

    let segment = files::last_segment(dir.path());
    let all = frames(&segment);
    assert!(all.len() >= 10, "{} frames", all.len());
    let frame = all[all.len() / 2];
    flip_byte(
        &segment,
        frame.offset + FRAME_HEADER_BYTES + (frame.len - FRAME_HEADER_BYTES) / 2,
    );
    let damaged = std::fs::read(&segment).unwrap();
    let offset = format!("byte offset {}", frame.offset);

    let (status, log) = Server::options(dir.path()).start_expecting_failure();
    assert!(!status.success(), "{status}");
    assert!(
        log.contains(&name(&segment)) && log.contains(&offset),
        "the error names {} and {offset}:\n{log}",
        name(&segment)
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        damaged,
        "the damaged segment is left as it was"
    );

    let run = run_tool("inspect", dir.path());
    assert_eq!(run.status.code(), Some(1), "{}", run.output());
    let output = run.output();
    assert!(
        output.contains(&name(&segment)) && output.contains(&offset),
        "{output}"
    );
    assert_eq!(std::fs::read(&segment).unwrap(), damaged);

    // Start-up still refuses: nothing was cut off silently by the attempts.
    let (status, _) = Server::options(dir.path()).start_expecting_failure();
    assert!(!status.success());
}

#[tokio::test]
async fn a_damaged_newest_snapshot_falls_back_to_the_previous_one_plus_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let mut fixture = Fixture::setup(&api, "fallback").await;
    fixture.write_round(&api).await;
    let older = api.snapshot().await;
    fixture.write_round(&api).await;
    let newer = api.snapshot().await;
    fixture.write_round(&api).await;
    fixture.capture(&api).await;
    server.kill9();

    let snapshots = files::snapshots(dir.path());
    let names: Vec<String> = snapshots.iter().map(|p| name(p)).collect();
    assert_eq!(
        names,
        [
            older["file"].as_str().unwrap(),
            newer["file"].as_str().unwrap()
        ],
        "the two snapshots are kept"
    );
    let newest = &snapshots[1];
    let len = std::fs::metadata(newest).unwrap().len() as usize;
    flip_byte(
        newest,
        SNAPSHOT_HEADER_BYTES + (len - SNAPSHOT_HEADER_BYTES) / 2,
    );
    // And a snapshot write that a crash cut short.
    let unfinished = dir.path().join("snapshot-99999999999999999999.mpk.tmp");
    std::fs::write(&unfinished, b"TOKDSNAP half").unwrap();

    // inspect names the damage and leaves the files as they are.
    let before = contents(dir.path());
    let run = run_tool("inspect", dir.path());
    assert_eq!(run.status.code(), Some(1), "{}", run.output());
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains(&names[1]) && l.contains("DAMAGED")),
        "{}",
        run.output()
    );
    assert_eq!(contents(dir.path()), before, "inspect changes nothing");

    let mut server = Server::start(dir.path());
    let skipped = server.log_line("damaged snapshot skipped");
    assert!(skipped.contains(&names[1]), "{skipped}");
    let loading = server.log_line("loading snapshot");
    assert!(loading.contains(&names[0]), "{loading}");
    server.log_line("removing unfinished snapshot file");
    assert!(!unfinished.exists(), "the unfinished snapshot is removed");
    let mut aside = newest.clone().into_os_string();
    aside.push(".damaged");
    assert!(
        std::path::Path::new(&aside).exists(),
        "the damaged snapshot is set aside"
    );
    fixture.verify(&Api::new(&server)).await;

    // A graceful stop writes a good snapshot again; the next start uses it.
    assert_eq!(server.terminate().code(), Some(0));
    let server = Server::start(dir.path());
    assert!(server.log().lines_with("damaged snapshot").is_empty());
    fixture.verify(&Api::new(&server)).await;
}
