//! `GET /openapi.json`: the document covers every route the server answers
//! and nothing else, and every error code.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The routes the server serves besides those of the README's table: the
/// document and its page.
const DOCUMENT_ROUTES: [(&str, &str); 4] = [
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/"),
    ("GET", "/docs/{file}"),
];

/// Methods probed on every documented path.
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// The README's text.
fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    std::fs::read_to_string(path).expect("the README is readable")
}

/// The `(method, path)` rows of the README's "## Routes" table.
fn readme_routes() -> BTreeSet<(String, String)> {
    let text = readme();
    let section = text
        .split("\n## Routes\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has a Routes section");
    let routes: BTreeSet<(String, String)> = section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let method = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let path = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            METHODS
                .contains(&method)
                .then(|| (method.to_owned(), path.to_owned()))
        })
        .collect();
    assert!(routes.len() > 20, "too few routes read: {routes:?}");
    routes
}

/// The error codes of the README's error table.
fn readme_codes() -> BTreeSet<String> {
    let text = readme();
    let section = text
        .split("\n### Errors\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has an Errors section");
    section
        .lines()
        .filter(|line| line.starts_with("| 4") || line.starts_with("| 5"))
        .filter_map(|line| line.split('|').nth(2))
        .flat_map(|cell| cell.split(','))
        .map(|code| code.trim().trim_matches('`').to_owned())
        .filter(|code| !code.is_empty())
        .collect()
}

async fn document(app: &TestApp) -> Value {
    let resp = app.send(app.request(Method::GET, "/openapi.json")).await;
    resp.assert_status(200);
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{resp:?}"
    );
    resp.body
}

/// Every `(METHOD, path)` of the document.
fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .filter(|m| METHODS.contains(&m.to_uppercase().as_str()))
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

#[actix_web::test]
async fn the_document_is_openapi_3_1_without_a_key() {
    let app = spawn_app().await;
    let document = document(&app).await;
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );
    for scheme in ["apiKey", "bearer", "adminKey", "adminBearer"] {
        assert!(
            document["components"]["securitySchemes"][scheme].is_object(),
            "no security scheme {scheme}"
        );
    }
    // The same bytes each time: rendered once.
    let first = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("answered");
    let second = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("answered");
    assert_eq!(
        first.bytes().await.expect("a body"),
        second.bytes().await.expect("a body")
    );
}

#[actix_web::test]
async fn the_document_lists_exactly_the_routes_of_the_readme_and_its_own() {
    let app = spawn_app().await;
    let mut expected = readme_routes();
    expected.extend(
        DOCUMENT_ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string())),
    );
    let documented = documented(&document(&app).await);
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not documented: {missing:?}; documented but not in the README: {extra:?}"
    );
}

/// `path` with its `{params}` filled: unknown ids, or a file of the page.
fn filled(path: &str) -> String {
    if path == "/docs/{file}" {
        return "/docs/index.html".to_owned();
    }
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                unknown_id()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[actix_web::test]
async fn every_documented_route_is_served_and_other_methods_are_405() {
    let app = spawn_app().await;
    let tenant = app.tenant().await;
    let document = document(&app).await;
    let documented = documented(&document);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let secured = |method: &str| {
            document["paths"][path][method.to_lowercase()]["security"]
                .as_array()
                .map(|s| s.iter().any(|r| r.get("adminKey").is_some()))
        };
        for method in METHODS {
            let url = app.url(&filled(path));
            let key = match secured(method) {
                Some(true) => ADMIN.to_owned(),
                _ => tenant.key.clone(),
            };
            let mut request = app
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).expect("a method"),
                    url,
                )
                .header("X-Api-Key", key);
            if method == "POST" {
                request = request.json(&json!({}));
            }
            let response = request.send().await.expect("answered");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if documented.contains(&(method.to_owned(), path.clone())) {
                assert!(
                    status != 405 && !(status == 404 && body["code"] == "NOT_FOUND"),
                    "{method} {path}: {status} {body}"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is not documented: {body}");
                if method != "HEAD" {
                    assert_eq!(body["code"], "METHOD_NOT_ALLOWED", "{method} {path}");
                }
            }
        }
    }
}

#[actix_web::test]
async fn every_error_code_is_documented() {
    let app = spawn_app().await;
    let document = document(&app).await;
    let codes: BTreeSet<String> = document["components"]["schemas"]["Error"]["properties"]["code"]
        ["enum"]
        .as_array()
        .expect("the Error schema lists its codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    let missing: Vec<_> = readme_codes().difference(&codes).cloned().collect();
    assert!(missing.is_empty(), "codes not in the document: {missing:?}");
    // And each operation answers them: the token redeem documents every
    // status of the codes a redeem can get.
    let redeem = &document["paths"]["/api/tokens/{id}/redeem"]["post"]["responses"];
    for status in [
        "400", "401", "403", "404", "409", "410", "413", "422", "503",
    ] {
        let description = redeem[status]["description"].as_str().unwrap_or_default();
        assert!(!description.is_empty(), "redeem does not document {status}");
    }
    assert!(redeem["404"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("TOKEN_NOT_FOUND")));
    assert!(redeem["200"]["headers"]["X-Request-Id"].is_object());
}
