//! `GET /docs`: the page renders in a headless Chromium (Debian's
//! `chromium`, which `make test` installs) and shows the token routes, its
//! scripts and styles served by the server itself.

use crate::helpers::*;
use std::path::PathBuf;
use std::process::Command;

/// Where Debian's package puts the browser; `TOKEND_CHROMIUM` overrides.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Milliseconds of virtual time the page gets to load and render.
const BUDGET_MS: u32 = 15_000;

fn chromium() -> PathBuf {
    let path = std::env::var_os("TOKEND_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CHROMIUM));
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium (`make test-tools`, which `make test` runs) \
         or set TOKEND_CHROMIUM",
        path.display()
    );
    path
}

/// The DOM of `url` once rendered.
fn rendered_dom(url: String) -> String {
    let profile = tempfile::tempdir().expect("a profile dir");
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={BUDGET_MS}"))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[actix_web::test]
async fn the_docs_page_shows_the_token_routes() {
    let app = spawn_app().await;
    let url = app.url("/docs");
    let dom = tokio::task::spawn_blocking(move || rendered_dom(url))
        .await
        .expect("the browser thread ends");
    assert!(dom.contains("swagger-ui"), "not the docs page: {dom:.2000}");
    for path in [
        "/api/tokens",
        "/api/tokens/{id}/redeem",
        "/api/tokens/{id}/holds/{holdId}/capture",
        "/api/collections",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "the page does not show {path}: {dom:.4000}"
        );
    }
}

#[actix_web::test]
async fn the_page_files_are_served_from_the_binary() {
    let app = spawn_app().await;
    let page = app
        .client
        .get(app.url("/docs/"))
        .send()
        .await
        .expect("answered");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("a page");
    assert!(html.contains("swagger-ui"), "{html:.500}");
    for file in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        let resp = app
            .client
            .get(app.url(&format!("/docs/{file}")))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status().as_u16(), 200, "{file}");
        let body = resp.text().await.expect("a body");
        if file == "swagger-initializer.js" {
            assert!(body.contains("/openapi.json"), "{body:.500}");
        }
    }
    let missing = app
        .send(app.request(reqwest::Method::GET, "/docs/no-such-file.js"))
        .await;
    missing.assert_status(404);
    assert_eq!(missing.body["code"], "NOT_FOUND");
}
