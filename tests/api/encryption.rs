//! Encryption at rest: with data keys, token `data` and `encryption` reach
//! the data dir only sealed, come back byte for byte after a restart from
//! the log alone (a crash image) or from a snapshot, and survive a key
//! rotation that `tokend compact` completes. Without keys the same values
//! are on disk in the clear, which shows the search below can find them.
//!
//! Apart because it restarts on a data dir, which a test cluster
//! (`make test-cluster`) does not have.

use crate::helpers::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use tokend::keyring::Keyring;
use tokend::wal::WalOptions;

/// Key `a`, then key `b` (test keys, public here: they protect nothing).
const KEY_A: &str = "a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "b:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";
/// Text of a token's data that is in no other file content by chance.
const SECRET_PAN: &str = "4000056655665556";
/// Text of a token's `encryption` likewise.
const SECRET_CEK: &str = "wrapped-cek-7f3a9c";

/// WAL options sealing with `keyring` (`None`: encryption at rest off).
fn wal(keyring: Option<&str>) -> WalOptions {
    WalOptions {
        keyring: Arc::new(keyring.map_or_else(Keyring::off, |k| {
            Keyring::parse(k).expect("a valid test keyring")
        })),
        ..WalOptions::default()
    }
}

/// An app on `dir` (a new one when `None`) whose values seal with `keyring`.
async fn app_on(dir: Option<Arc<tempfile::TempDir>>, keyring: Option<&str>) -> TestApp {
    let mut builder = TestApp::builder().wal(wal(keyring));
    if let Some(dir) = dir {
        builder = builder.data_dir(dir);
    }
    builder.spawn().await
}

/// Why an app on `dir` with `keyring` does not start.
async fn refusal(dir: &Arc<tempfile::TempDir>, keyring: Option<&str>) -> String {
    match TestApp::builder()
        .data_dir(Arc::clone(dir))
        .wal(wal(keyring))
        .try_spawn()
        .await
    {
        Ok(_) => panic!("started with keyring {keyring:?}"),
        Err(e) => e.to_string(),
    }
}

/// The data dir's files copied while the app runs, as a `kill -9` leaves
/// them (fsync `always`: every acknowledged change is in them).
fn crash_image(app: &TestApp) -> Arc<tempfile::TempDir> {
    let image = tempfile::tempdir().expect("a temporary dir");
    for entry in std::fs::read_dir(app.data_dir.path()).expect("the data dir reads") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().expect("a file name").to_owned();
        if path.is_file() && name != "LOCK" {
            std::fs::copy(&path, image.path().join(name)).expect("the file copies");
        }
    }
    Arc::new(image)
}

/// Whether any file of `dir` holds `text`.
fn on_disk(dir: &Path, text: &str) -> bool {
    std::fs::read_dir(dir)
        .expect("the data dir reads")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.is_file())
        .any(|path| {
            let bytes = std::fs::read(&path).expect("the file reads");
            crate::helpers::contains(&bytes, text.as_bytes())
        })
}

/// Creates tokens with data and encryption (one batch, one single); returns
/// the tenant's key and every token as created.
async fn create_secrets(app: &TestApp, tenant: &Tenant, tag: &str) -> Vec<Value> {
    let body = |n: u32| {
        json!({
            "collectionId": tenant.collection_id,
            "type": "card",
            "data": {"pan": SECRET_PAN, "n": n, "tag": tag, "nested": {"a": [1, 2.5, null]}},
            "encryption": {"cek": {"key": SECRET_CEK, "alg": "AES"}, "kek": {"key": "kms:1", "alg": "RSA"}},
            "metadata": {"order": format!("{tag}-{n}")},
        })
    };
    let mut created = app.create_batch(&tenant.key, vec![body(1), body(2)]).await;
    created.push(app.create_token(&tenant.key, &body(3)).await);
    created.push(
        app.create_token(&tenant.key, &json!({"collectionId": tenant.collection_id}))
            .await,
    );
    created
}

/// Every token reads back exactly as created.
async fn assert_unchanged(app: &TestApp, key: &str, tokens: &[Value]) {
    for token in tokens {
        assert_eq!(&app.token(key, &id_of(token)).await, token);
    }
}

#[actix_web::test]
async fn with_a_key_values_are_sealed_on_disk_and_restore_from_the_log_and_a_snapshot() {
    for keyring in [Some(KEY_A), None] {
        let app = app_on(None, keyring).await;
        let tenant = app.tenant_of("test").await;
        let tokens = create_secrets(&app, &tenant, "first").await;
        // From the log alone.
        let crashed = crash_image(&app);
        let (stopped, dir) = app.stop().await;
        stopped.expect("a clean shutdown");
        for secret in [SECRET_PAN, SECRET_CEK] {
            // Sealed with a key; in the clear without one (so the search
            // finds what is there).
            assert_eq!(
                on_disk(crashed.path(), secret),
                keyring.is_none(),
                "{secret}"
            );
            assert_eq!(on_disk(dir.path(), secret), keyring.is_none(), "{secret}");
        }
        let from_log = app_on(Some(crashed), keyring).await;
        assert_unchanged(&from_log, &tenant.key, &tokens).await;
        from_log.stop().await.0.expect("a clean shutdown");
        // From the final snapshot.
        let from_snapshot = app_on(Some(dir), keyring).await;
        assert_unchanged(&from_snapshot, &tenant.key, &tokens).await;
        from_snapshot.stop().await.0.expect("a clean shutdown");
    }
}

#[actix_web::test]
async fn plain_values_of_a_data_dir_without_keys_still_read_once_keys_are_set() {
    let app = app_on(None, None).await;
    let tenant = app.tenant_of("test").await;
    let plain = create_secrets(&app, &tenant, "plain").await;
    let crashed = crash_image(&app);
    app.stop().await.0.expect("a clean shutdown");
    let app = app_on(Some(crashed), Some(KEY_A)).await;
    assert_unchanged(&app, &tenant.key, &plain).await;
    let sealed = create_secrets(&app, &tenant, "sealed").await;
    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean shutdown");
    // The log written without keys still holds the plain values; compact
    // re-seals everything and drops that log.
    assert!(on_disk(dir.path(), SECRET_PAN));
    let keyring = Arc::new(Keyring::parse(KEY_A).expect("a valid test keyring"));
    tokend::offline::compact(dir.path(), keyring, &mut Vec::new()).expect("compact succeeds");
    assert!(!on_disk(dir.path(), SECRET_PAN));
    let app = app_on(Some(dir), Some(KEY_A)).await;
    assert_unchanged(&app, &tenant.key, &plain).await;
    assert_unchanged(&app, &tenant.key, &sealed).await;
    app.stop().await.0.expect("a clean shutdown");
}

#[actix_web::test]
async fn a_missing_or_wrong_key_fails_the_start_naming_the_key_id_and_changes_nothing() {
    let app = app_on(None, Some(KEY_A)).await;
    let tenant = app.tenant_of("test").await;
    create_secrets(&app, &tenant, "x").await;
    let crashed = crash_image(&app);
    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean shutdown");
    let wrong_bytes = "a:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";
    for dir in [crashed, dir] {
        let before = files_of(dir.path());
        for (keyring, says) in [
            (None, "TOKEND_DATA_KEY is not set"),
            (Some(KEY_B), "TOKEND_DATA_KEY does not hold"),
            (Some(wrong_bytes), "does not open"),
        ] {
            let message = refusal(&dir, keyring).await;
            assert!(message.contains("data key \"a\""), "{message}");
            assert!(message.contains(says), "{message}");
        }
        assert_eq!(files_of(dir.path()), before, "the data dir changed");
    }
}

/// Every file of `dir` but the lock, with its bytes.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("the data dir reads")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.is_file() && !path.ends_with("LOCK"))
        .map(|path| {
            let name = path.file_name().expect("a name").to_string_lossy().into();
            (name, std::fs::read(&path).expect("the file reads"))
        })
        .collect();
    files.sort();
    files
}

/// The output of `tokend inspect` on `dir` with `keyring`, or its error.
fn inspect(dir: &Path, keyring: &str) -> Result<String, String> {
    let mut out = Vec::new();
    let keyring = Arc::new(Keyring::parse(keyring).expect("a valid test keyring"));
    tokend::offline::inspect(dir, keyring, &mut out)?;
    Ok(String::from_utf8(out).expect("UTF-8"))
}

#[actix_web::test]
async fn a_rotation_completed_by_compact_leaves_the_old_key_unneeded() {
    // Values sealed under `a`.
    let app = app_on(None, Some(KEY_A)).await;
    let tenant = app.tenant_of("test").await;
    let mut tokens = create_secrets(&app, &tenant, "under-a").await;
    let (stopped, dir) = app.stop().await;
    stopped.expect("a clean shutdown");
    // `b` first: new values seal under `b`, old ones still open under `a`.
    let rotated = format!("{KEY_B},{KEY_A}");
    let app = app_on(Some(dir), Some(&rotated)).await;
    assert_unchanged(&app, &tenant.key, &tokens).await;
    tokens.extend(create_secrets(&app, &tenant, "under-b").await);
    let crashed = crash_image(&app);
    app.stop().await.0.expect("a clean shutdown");
    // The log holds values under both keys: `b` alone cannot read it.
    let out = inspect(crashed.path(), &rotated).expect("inspect succeeds");
    assert!(
        out.contains("sealing key b; sealed values read by key: b 6, a 6"),
        "{out}"
    );
    let err = inspect(crashed.path(), KEY_B).expect_err("key a is needed");
    assert!(err.contains("data key \"a\""), "{err}");
    // Compact re-seals everything under `b`; then `b` alone restores all.
    let mut out = Vec::new();
    let keyring = Arc::new(Keyring::parse(&rotated).expect("a valid test keyring"));
    tokend::offline::compact(crashed.path(), keyring, &mut out).expect("compact succeeds");
    let out = inspect(crashed.path(), KEY_B).expect("inspect succeeds with b alone");
    assert!(out.contains("sealed values read by key: b 12"), "{out}");
    let app = app_on(Some(crashed), Some(KEY_B)).await;
    assert_unchanged(&app, &tenant.key, &tokens).await;
    app.stop().await.0.expect("a clean shutdown");
}
