//! Admin key bootstrap without `TOKEND_ADMIN_KEY`.

use crate::api::{id_of, Api};
use crate::files::dir_contains;
use crate::server::{ServerOptions, ADMIN_KEY};
use serde_json::json;

const PROMPT: &str = "generated admin key (shown once, store it now): ";

#[tokio::test]
async fn a_generated_admin_key_is_shown_once_stored_as_a_digest_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions::new(dir.path()).without_admin_key();
    let mut server = options.start();
    let line = server.log_line("generated admin key");
    let key = line
        .split_once(PROMPT)
        .map(|(_, key)| key.trim().to_owned())
        .unwrap_or_else(|| panic!("no key in {line:?}"));
    assert!(key.len() >= 16, "{key:?}");
    assert_eq!(
        server.log().text().matches(&key).count(),
        1,
        "the key is printed once"
    );
    let digest_file = dir.path().join("admin-key.sha256");
    let digest = std::fs::read_to_string(&digest_file).expect("admin-key.sha256 is written");
    assert!(!digest.contains(&key));
    assert_eq!(digest.trim().len(), 64, "a SHA-256 hex digest: {digest:?}");

    let api = Api::with_admin(&server, &key);
    let account = api.create_account("bootstrap").await;
    let account_id = id_of(&account);
    // Not some other key: the test default one is refused.
    Api::with_admin(&server, ADMIN_KEY)
        .post(
            "/api/accounts",
            ADMIN_KEY,
            &json!({"name": "x", "liveness": "test"}),
        )
        .await
        .expect_error(401, "UNAUTHENTICATED");
    assert_eq!(server.terminate().code(), Some(0));

    let server = options.start();
    let log = server.log().text();
    assert!(!log.contains("generated admin key"), "{log}");
    assert!(!log.contains(&key), "the key is not printed again");
    let api = Api::with_admin(&server, &key);
    api.list_keys(&account_id).await.expect(200);
    api.create_account("second").await;
    assert_eq!(
        std::fs::read_to_string(&digest_file).unwrap(),
        digest,
        "the digest is kept"
    );
    if let Some(file) = dir_contains(dir.path(), &key) {
        panic!("the admin key is stored in {}", file.display());
    }
}
