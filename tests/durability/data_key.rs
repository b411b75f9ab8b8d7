//! `TOKEND_DATA_KEY` through the real binary, and the modes of what the
//! server creates in a data dir.

use crate::api::{id_of, Api};
use crate::fixture::Fixture;
use crate::server::ServerOptions;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A test keyring (public here: it protects nothing).
const KEYRING: &str = "k-2026:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Text of a token's data.
const SECRET: &str = "data-key-secret-5105105105105100";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn on_disk(dir: &Path, text: &str) -> bool {
    std::fs::read_dir(dir)
        .expect("the data dir reads")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.is_file())
        .any(|path| {
            let bytes = std::fs::read(&path).expect("the file reads");
            crate::files::contains(&bytes, text.as_bytes())
        })
}

#[tokio::test]
async fn a_sealed_data_dir_restarts_with_its_key_and_refuses_to_start_without_it() {
    let root = tempfile::tempdir().unwrap();
    // A data dir (and its parent) the server creates itself.
    let dir = root.path().join("new").join("data");
    let options = ServerOptions::new(&dir)
        .without_admin_key()
        .env("TOKEND_DATA_KEY", KEYRING);
    let mut server = options.start();
    assert!(server.log().text().contains("encryption at rest on"));
    assert!(
        !server.log().text().contains("AAECAwQF"),
        "a key was logged"
    );
    let admin = server
        .log_line("generated admin key")
        .rsplit(' ')
        .next()
        .expect("a key")
        .trim()
        .to_owned();
    let api = Api::with_admin(&server, &admin);
    let fixture = Fixture::setup(&api, "sealed").await;
    let created = api
        .post(
            "/api/tokens",
            &fixture.key,
            &json!({"collectionId": fixture.collection_id, "data": {"secret": SECRET}}),
        )
        .await
        .expect(201);
    let id = id_of(&created.body);
    api.snapshot().await;
    server.terminate();

    assert!(!on_disk(&dir, SECRET), "the data is on disk in the clear");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&root.path().join("new")), 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        files += 1;
    }
    // The lock, the admin key digest, a snapshot, a WAL segment at least.
    assert!(files >= 4, "{files} files");

    let without = ServerOptions::new(&dir);
    let (status, log) = without.start_expecting_failure();
    assert!(!status.success());
    assert!(log.contains("data key \"k-2026\""), "{log}");
    assert!(log.contains("TOKEND_DATA_KEY is not set"), "{log}");
    let malformed = ServerOptions::new(&dir).env("TOKEND_DATA_KEY", "k-2026:c2hvcnQ=");
    let (status, log) = malformed.start_expecting_failure();
    assert!(!status.success());
    assert!(log.contains("decodes to 5 bytes, not 32"), "{log}");

    let server = ServerOptions::new(&dir)
        .without_admin_key()
        .env("TOKEND_DATA_KEY", KEYRING)
        .start();
    let api = Api::with_admin(&server, &admin);
    let read = api
        .get(&format!("/api/tokens/{id}"), &fixture.key)
        .await
        .expect(200);
    assert_eq!(read.body, created.body);
}
