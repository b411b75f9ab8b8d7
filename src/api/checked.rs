//! The preamble every route with a body shares, as one extractor: who calls
//! (401), whether they may (403, or 404 for an admin route's unknown
//! account), the body read within its limit (413), as JSON of the right
//! content type (400), checked against the route's schema (422) and decoded
//! — in that order, so every route refuses the same request the same way.
//!
//! A handler names its body type; the type says, through [`CheckedBody`],
//! who may send it, its limit and schema. The handler gets a [`Checked`]
//! with both the authorized caller and the decoded body.

use super::auth::{self, Caller};
use super::body::{parse_json, read_bytes, BODY_BYTES_MAX};
use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use super::validate::decode;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use bytes::BytesMut;
use futures_util::future::LocalBoxFuture;
use jsonschema::Validator;
use serde::de::DeserializeOwned;

/// A request body, with who may send it and how it is checked.
pub trait CheckedBody: Sized + 'static {
    /// What authorizing a request yields: the account key acting, or for an
    /// admin route what the admin acts on.
    type Grant: 'static;

    /// Largest body accepted, in bytes.
    const BYTES_MAX: usize = BODY_BYTES_MAX;

    /// Whether `caller` may send this body to `req`'s route (403 or 404
    /// when not); checked before the body is read.
    fn authorize(caller: Caller, req: &HttpRequest) -> Result<Self::Grant, ApiError>;

    /// The body from its bytes, once they are within the limit: parsed as
    /// JSON, checked against the route's schema, decoded.
    fn decode(req: &HttpRequest, body: BytesMut) -> Result<Self, ApiError>;
}

/// The usual [`CheckedBody::decode`]: JSON (an empty body standing for `{}`
/// when `empty_is_object`: routes whose fields are all optional), checked
/// against `schema` (one 422 entry per problem), then decoded into `T`.
pub fn decode_json<T: DeserializeOwned>(
    req: &HttpRequest,
    body: BytesMut,
    empty_is_object: bool,
    schema: &Validator,
) -> Result<T, ApiError> {
    decode(schema, parse_json(req, &body, empty_is_object)?)
}

/// A request its caller may make, with its body read, checked and decoded.
pub struct Checked<B: CheckedBody> {
    /// What authorizing the caller yielded.
    pub caller: B::Grant,
    /// The decoded body.
    pub body: B,
}

impl<B: CheckedBody> FromRequest for Checked<B> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = auth::authenticate_fresh(req);
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let caller = match B::authorize(caller.await?, &req) {
                // A cluster node's catalog replica may not hold an account
                // created through another node a moment ago: catch up and
                // decide again (the caller is authenticated again rather
                // than cloned, so an accepted request pays nothing more).
                Err(e) if e.code == ErrorCode::AccountNotFound => {
                    let engine = AppState::of(&req)?.engine()?;
                    if !engine.catalog_replicated() {
                        return Err(e);
                    }
                    engine.catalog_catch_up().await?;
                    B::authorize(auth::identify(&req)?, &req)?
                }
                authorized => authorized?,
            };
            let bytes = read_bytes(&req, payload, B::BYTES_MAX).await?;
            let body = B::decode(&req, bytes)?;
            Ok(Checked { caller, body })
        })
    }
}
