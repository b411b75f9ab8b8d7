//! `GET /docs`: the interactive page of the API (Swagger UI) over
//! `/openapi.json`. Its files are compiled into the binary (the
//! `utoipa-swagger-ui` crate's vendored copy): nothing is fetched at build
//! or run time, and the page works offline.

use super::error::{ApiError, ErrorCode};
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use actix_web::{web, HttpResponse};
use std::sync::{Arc, OnceLock};
use utoipa_swagger_ui::Config;

/// Where the page lives; its files are relative to it.
pub const ROOT: &str = "/docs/";
/// Longest file name asked for under [`ROOT`].
const FILE_CHARS_MAX: usize = 128;

/// The page's configuration: the document it shows.
fn config() -> Arc<Config<'static>> {
    static CONFIG: OnceLock<Arc<Config<'static>>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        Arc::new(
            Config::from("/openapi.json")
                .try_it_out_enabled(true)
                .display_request_duration(true),
        )
    }))
}

/// `GET /docs`: to `/docs/`, where the page's relative links resolve.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    responses((status = 308, description = "To `/docs/`, the page.")),
)]
pub async fn index() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((LOCATION, ROOT))
        .finish()
}

/// `GET /docs/`: the page.
#[utoipa::path(
    get,
    path = "/docs/",
    tag = "operations",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
)]
pub async fn page() -> Result<HttpResponse, ApiError> {
    serve(String::new())
}

/// `GET /docs/{file}`: the page's files (scripts, styles, icons).
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "operations",
    params(("file" = String, Path, description = "A file of the page.")),
    responses((status = 200, description = "The file.", content_type = "application/octet-stream", body = String)),
)]
pub async fn file(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(path.into_inner())
}

/// The page's file `name` (the page itself when empty).
fn serve(name: String) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::new(ErrorCode::NotFound, format!("No file {ROOT}{name}."));
    if name.len() > FILE_CHARS_MAX {
        return Err(not_found());
    }
    let served = utoipa_swagger_ui::serve(&name, config()).map_err(|e| {
        tracing::error!(error = %e, "the docs page does not render");
        ApiError::new(ErrorCode::Internal, "Internal error.")
    })?;
    let file = served.ok_or_else(not_found)?;
    let mut response = HttpResponse::Ok();
    response
        .insert_header((CONTENT_TYPE, file.content_type))
        .insert_header((CACHE_CONTROL, "no-cache"));
    if file.gzpipped {
        response.insert_header((actix_web::http::header::CONTENT_ENCODING, "gzip"));
    }
    Ok(response.body(file.bytes.into_owned()))
}
