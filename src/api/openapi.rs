//! The OpenAPI 3.1 document of the API, generated from the code: paths from
//! the handlers' `#[utoipa::path]` attributes, request schemas derived from
//! the request types (the same schemas request validation compiles, see
//! [`validate`](super::validate)), response shapes from
//! [`shapes`](super::shapes), and each route's error answers from
//! [`ErrorCode::ALL`], so a new code is documented everywhere at once.
//!
//! `GET /openapi.json` answers bytes rendered once, at first use (or at
//! start: the server renders them before it listens).

use super::error::ErrorCode;
use super::{accounts, admin, collections, health, lifecycle, metrics, tokens};
use super::{docs_page, plan, shapes};
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::HttpResponse;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{HeaderBuilder, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi};

/// Security scheme: an account key in `X-Api-Key`.
pub const API_KEY: &str = "apiKey";
/// Security scheme: an account key as `Authorization: Bearer`.
pub const BEARER: &str = "bearer";
/// Security scheme: the admin key in `X-Api-Key`.
pub const ADMIN_KEY: &str = "adminKey";
/// Security scheme: the admin key as `Authorization: Bearer`.
pub const ADMIN_BEARER: &str = "adminBearer";
/// The header every response carries.
const REQUEST_ID_HEADER: &str = "X-Request-Id";

/// The document's derivation: every route, its bodies and answers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tokend",
        description = "A spend-once token engine: issue tokens into collections, redeem each \
                       exactly once, durably. Every error answers `{status, code, message, \
                       requestId, validationErrors?}`; every response carries `X-Request-Id`."
    ),
    paths(
        health::live,
        health::ready,
        metrics::metrics,
        admin::snapshot,
        accounts::create_account,
        accounts::create_api_key,
        accounts::list_api_keys,
        accounts::delete_api_key,
        collections::create,
        collections::list,
        collections::get,
        tokens::create,
        tokens::create_batch,
        tokens::list,
        tokens::get,
        tokens::head,
        tokens::delete,
        tokens::redeem,
        lifecycle::redeem_batch,
        lifecycle::hold,
        lifecycle::capture,
        lifecycle::release,
        lifecycle::void,
        lifecycle::validate,
        openapi_json,
        docs_page::index,
        docs_page::page,
        docs_page::file,
    ),
    components(schemas(
        accounts::CreateAccount,
        accounts::CreateApiKey,
        collections::CreateCollection,
        collections::MoneyBody,
        plan::TokenBody,
        plan::ChildBody,
        plan::EncryptionBody,
        plan::EncryptionKeyBody,
        super::batch::BatchCreate,
        tokens::RedeemBody,
        lifecycle::HoldBody,
        lifecycle::EmptyBody,
        lifecycle::VoidBody,
        lifecycle::RedeemBatchBody,
        lifecycle::RedemptionItem,
        crate::model::Liveness,
        crate::model::TokenType,
        shapes::ErrorShape,
    )),
    modifiers(&Security, &ErrorAnswers, &RequestIds),
    tags(
        (name = "accounts", description = "Accounts and their API keys (admin key)."),
        (name = "collections", description = "Collections: the rules and branding of their tokens."),
        (name = "tokens", description = "Tokens: create, read, list, delete, redeem."),
        (name = "lifecycle", description = "Holds, captures, releases, voids, validation, batch redeem."),
        (name = "operations", description = "Health, metrics, snapshots, this document."),
    )
)]
pub struct ApiDoc;

/// The document, built anew: the server keeps only its [`rendered`] text,
/// because the built form holds about 9 MiB of small allocations (every
/// route's error answers, each a tree of its own) for the life of the process.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// The document as JSON text, rendered once.
pub fn rendered() -> &'static [u8] {
    static RENDERED: OnceLock<Vec<u8>> = OnceLock::new();
    RENDERED.get_or_init(|| match serde_json::to_vec(&document()) {
        Ok(bytes) => bytes,
        // The document is built from this crate's types only; failing to
        // render it is a programming error caught by the first test.
        Err(e) => panic!("the OpenAPI document does not render: {e}"),
    })
}

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1).", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(rendered())
}

/// Adds the security schemes: account keys and the admin key, each in
/// `X-Api-Key` or as `Authorization: Bearer`.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let header = |description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                description,
            )))
        };
        let bearer = |description: &str| {
            let mut http = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(API_KEY, header("An account's API key."));
        components.add_security_scheme(BEARER, bearer("An account's API key."));
        components.add_security_scheme(ADMIN_KEY, header("The admin key (TOKEND_ADMIN_KEY)."));
        components.add_security_scheme(ADMIN_BEARER, bearer("The admin key (TOKEND_ADMIN_KEY)."));
    }
}

/// The operations of a path item.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Codes a route without a key can never answer.
fn needs_a_key(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unauthenticated | ErrorCode::PermissionDenied
    )
}

/// Adds to every operation one answer per error status of
/// [`ErrorCode::ALL`] (the codes of the status listed), unless the route
/// documents that status itself; routes without a key get no 401/403.
struct ErrorAnswers;

impl Modify for ErrorAnswers {
    fn modify(&self, openapi: &mut Document) {
        let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
        for &code in ErrorCode::ALL {
            by_status
                .entry(code.status().as_u16())
                .or_default()
                .push(code);
        }
        let error_ref = Ref::from_schema_name("Error");
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                let public = operation.security.as_ref().is_none_or(|s| s.is_empty());
                for (status, codes) in &by_status {
                    let key = status.to_string();
                    let codes: Vec<&str> = codes
                        .iter()
                        .filter(|c| !(public && needs_a_key(**c)))
                        .map(|c| c.as_str())
                        .collect();
                    if codes.is_empty() || operation.responses.responses.contains_key(&key) {
                        continue;
                    }
                    let schema = AllOfBuilder::new().item(error_ref.clone()).item(
                        ObjectBuilder::new()
                            .property(
                                "status",
                                ObjectBuilder::new()
                                    .schema_type(Type::Integer)
                                    .enum_values(Some([*status])),
                            )
                            .property(
                                "code",
                                ObjectBuilder::new()
                                    .schema_type(Type::String)
                                    .enum_values(Some(codes.iter().copied())),
                            ),
                    );
                    let response = ResponseBuilder::new()
                        .description(format!("Error: {}.", codes.join(", ")))
                        .content(
                            "application/json",
                            ContentBuilder::new().schema(Some(schema)).build(),
                        )
                        .build();
                    operation
                        .responses
                        .responses
                        .insert(key, RefOr::T(response));
                }
            }
        }
    }
}

/// Adds `X-Request-Id` to every answer, and `Retry-After` to the 503s.
struct RequestIds;

impl Modify for RequestIds {
    fn modify(&self, openapi: &mut Document) {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    response.headers.insert(
                        REQUEST_ID_HEADER.to_owned(),
                        RefOr::T(
                            HeaderBuilder::new()
                                .schema(Some(text()))
                                .description(Some(
                                    "Unique per request; the error body's `requestId`.",
                                ))
                                .build(),
                        ),
                    );
                    if status == "503" {
                        response.headers.insert(
                            "Retry-After".to_owned(),
                            RefOr::T(
                                HeaderBuilder::new()
                                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                                    .description(Some(
                                        "Seconds to wait before a retry (cluster codes).",
                                    ))
                                    .build(),
                            ),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every route registers through `resource`, which refuses (at start)
    /// a pattern missing from the metrics' route list; that list and the
    /// document's paths are the same, so no route is served undocumented.
    #[test]
    fn the_document_has_exactly_the_registered_routes() {
        let document = document();
        let documented: BTreeSet<&str> = document.paths.paths.keys().map(String::as_str).collect();
        let registered: BTreeSet<&str> = metrics::ROUTES.iter().copied().collect();
        assert_eq!(documented, registered);
    }

    #[test]
    fn every_operation_documents_the_error_codes_of_its_kind() {
        let rendered: serde_json::Value =
            serde_json::from_slice(rendered()).expect("the document is JSON");
        let redeem = &rendered["paths"]["/api/tokens/{id}/redeem"]["post"]["responses"];
        for code in ErrorCode::ALL {
            let status = code.status().as_u16().to_string();
            let description = redeem[&status]["description"].as_str().unwrap_or_default();
            assert!(
                description.contains(code.as_str()),
                "{status}: {description}"
            );
        }
        let live = &rendered["paths"]["/health/live"]["get"]["responses"];
        assert!(
            live["401"].is_null(),
            "a route without a key answers no 401"
        );
    }
}
