//! The HTTP layer: a thin front end that authenticates, validates, routes to
//! the engine and renders. No token state lives here.
//!
//! - [`auth`]: API keys and scopes;
//! - [`checked`]: the extractor every route with a body starts with (key,
//!   scope, body, schema, decode);
//! - [`body`], [`batch`], [`query`], [`validate`]: reading and checking
//!   requests;
//! - [`plan`]: token create bodies turned into engine commands;
//! - [`render`], [`respond`]: JSON out;
//! - [`error`]: the one error type and its mapping to status codes;
//! - [`request_id`]: `X-Request-Id` on every response;
//! - [`edge`]: the connection edge below actix-http: timeouts, connection
//!   caps, the head cap, and its errors in the API's shape;
//! - [`metrics`]: `GET /metrics` and the middleware recording every request;
//! - [`accounts`], [`collections`], [`tokens`], [`lifecycle`] (holds,
//!   voids, validation, batch redeem), [`admin`], [`health`]: the
//!   handlers;
//! - [`openapi`] (`GET /openapi.json`), [`schema`], [`shapes`]: the OpenAPI
//!   document, generated from the handlers and the request types;
//!   [`docs_page`]: the interactive page over it (`GET /docs`).

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod batch;
pub mod body;
pub mod checked;
pub mod collections;
pub mod docs_page;
pub mod edge;
pub mod error;
pub mod health;
pub mod lifecycle;
pub mod metrics;
pub mod openapi;
pub mod plan;
pub mod query;
pub mod render;
pub mod request_id;
pub mod respond;
pub mod schema;
pub mod shapes;
pub mod state;
pub mod tokens;
pub mod validate;

use actix_web::{web, HttpRequest, HttpResponse};
use error::{ApiError, ErrorCode};

/// Registers every route.
///
/// The router tries routes in this order, and each route with a `{param}`
/// costs a regular-expression match when tried: static paths come first
/// (cheap string compares), then the token routes that carry traffic
/// (redeem first), then the rest. No two patterns match the same path,
/// except that `/api/tokens/batch` and `/api/tokens/redeem` must come before
/// `/api/tokens/{id}`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/health/live").route(web::get().to(health::live)))
        .service(resource("/health/ready").route(web::get().to(health::ready)))
        .service(resource("/metrics").route(web::get().to(metrics::metrics)))
        .service(resource("/api/admin/snapshot").route(web::post().to(admin::snapshot)))
        .service(resource("/api/accounts").route(web::post().to(accounts::create_account)))
        .service(
            resource("/api/collections")
                .route(web::post().to(collections::create))
                .route(web::get().to(collections::list)),
        )
        .service(resource("/api/tokens/batch").route(web::post().to(tokens::create_batch)))
        .service(resource("/api/tokens/redeem").route(web::post().to(lifecycle::redeem_batch)))
        .service(
            resource("/api/tokens")
                .route(web::post().to(tokens::create))
                .route(web::get().to(tokens::list)),
        )
        .service(resource("/api/tokens/{id}/redeem").route(web::post().to(tokens::redeem)))
        .service(resource("/api/tokens/{id}/holds").route(web::post().to(lifecycle::hold)))
        .service(
            resource("/api/tokens/{id}/holds/{holdId}/capture")
                .route(web::post().to(lifecycle::capture)),
        )
        .service(
            resource("/api/tokens/{id}/holds/{holdId}/release")
                .route(web::post().to(lifecycle::release)),
        )
        .service(
            resource("/api/tokens/{id}")
                .route(web::get().to(tokens::get))
                .route(web::head().to(tokens::head))
                .route(web::delete().to(tokens::delete)),
        )
        .service(resource("/api/tokens/{id}/validate").route(web::post().to(lifecycle::validate)))
        .service(
            resource("/api/tokens/{id}/redemption/void").route(web::post().to(lifecycle::void)),
        )
        .service(
            resource("/api/accounts/{accountId}/api-keys")
                .route(web::post().to(accounts::create_api_key))
                .route(web::get().to(accounts::list_api_keys)),
        )
        .service(
            resource("/api/accounts/{accountId}/api-keys/{keyId}")
                .route(web::delete().to(accounts::delete_api_key)),
        )
        .service(resource("/api/collections/{id}").route(web::get().to(collections::get)))
        .service(resource("/openapi.json").route(web::get().to(openapi::openapi_json)))
        .service(resource("/docs").route(web::get().to(docs_page::index)))
        .service(resource("/docs/").route(web::get().to(docs_page::page)))
        .service(resource("/docs/{file}").route(web::get().to(docs_page::file)))
        .default_service(web::to(not_found));
}

/// A route whose other methods answer 405 in the API's error format, labelled
/// for the request metrics by its pattern.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path)
        .app_data(metrics::RouteLabel::of(path))
        .default_service(web::to(method_not_allowed))
}

/// Unknown routes.
async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("No route for {} {}.", req.method(), req.path()),
    ))
}

/// Known routes with another method.
async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}.", req.method(), req.path()),
    ))
}
